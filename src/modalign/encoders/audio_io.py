"""Audio decoding, resampling and Whisper's log-mel front end (soundfile + scipy + numpy).

Every failure to use one clip (unreadable, empty, silent, non-finite) becomes an
:class:`~modalign.errors.ItemError` naming the item, so a bad file in a manifest is reported and
skipped instead of surfacing as a libsndfile traceback.

The log-mel spectrogram follows OpenAI Whisper's ``log_mel_spectrogram`` exactly: 16 kHz mono,
400-sample periodic Hann window, hop 160 (100 frames/s), centered STFT with reflect padding (the last
frame dropped), power spectrum through an 80-band Slaney mel filterbank (librosa's default), log10
clamped at 1e-10, floored 8 decades under the maximum, then ``(x + 4) / 4``.
"""

from __future__ import annotations

from functools import lru_cache
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np

from modalign.data.audio_levels import SILENCE_RMS
from modalign.errors import ItemError

SAMPLE_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160
#: Whisper's encoder sees at most 30 s (3000 mel frames -> 1500 encoder frames)
MAX_SECONDS = 30.0
#: refuse files longer than this before decoding them whole (memory guard; Whisper reads 30 s anyway)
MAX_FILE_SECONDS = 600.0
#: sample rates real recordings use; a corrupt header can claim any 32-bit rate, and resampling from
#: such a rate builds a filter of billions of taps (found by tests/test_fuzz.py)
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 768_000


def check_audio_header(path: Path) -> None:
    """ItemError unless ``path``'s header is audio soundfile reads, at a real sample rate and length: a
    bogus or huge file is refused before anyone hashes or decodes it."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError, TypeError) as exc:
        raise ItemError(path, f"cannot decode audio: {exc}") from None
    if not MIN_SAMPLE_RATE <= int(info.samplerate) <= MAX_SAMPLE_RATE:
        raise ItemError(path, f"unsupported sample rate {info.samplerate} Hz (expected "
                              f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz; is the header corrupt?)")
    if info.frames > MAX_FILE_SECONDS * info.samplerate:
        raise ItemError(path, f"audio is {info.frames / info.samplerate:.0f} s long, above {MAX_FILE_SECONDS:.0f} s")


def load_audio(item: Any, sample_rate: int = SAMPLE_RATE, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Decode ``item`` (a path to wav/ogg/flac/...) to mono float32 at ``sample_rate``, cut to ``max_seconds``.

    Raises ``ItemError`` for unreadable, empty, non-finite or silent audio.
    """
    if not isinstance(item, str | Path):
        raise ItemError(item, f"audio encoder got {type(item).__name__}, expected a file path")
    import soundfile as sf

    path = Path(item)
    if not path.is_file():
        raise ItemError(item, "audio file not found")
    try:
        with sf.SoundFile(str(path)) as fh:
            native_sr = int(fh.samplerate)
            if not MIN_SAMPLE_RATE <= native_sr <= MAX_SAMPLE_RATE:
                raise ItemError(item, f"unsupported sample rate {native_sr} Hz (expected "
                                      f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz; is the header corrupt?)")
            if fh.frames > MAX_FILE_SECONDS * native_sr:
                raise ItemError(item, f"audio is {fh.frames / native_sr:.0f} s long, above {MAX_FILE_SECONDS:.0f} s")
            # only what the encoder will see is decoded (plus a little slack for the resampling filter)
            frames = min(int(fh.frames), int((max_seconds + 0.1) * native_sr)) if fh.frames > 0 else -1
            # block by block, mixed to mono as it goes: 8 channels at 384 kHz never sit in memory at once
            blocks = [b.mean(axis=1) if b.shape[1] > 1 else b[:, 0]
                      for b in fh.blocks(blocksize=1 << 16, frames=frames, dtype="float32", always_2d=True)]
    except ItemError:
        raise
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError, TypeError) as exc:
        raise ItemError(item, f"cannot decode audio: {exc}") from None
    wave = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    if wave.size == 0:
        raise ItemError(item, "audio has no samples (zero length)")
    if not np.all(np.isfinite(wave)):
        raise ItemError(item, "audio has NaN or infinite samples")
    wave = resample(wave, native_sr, sample_rate)
    wave = wave[: int(max_seconds * sample_rate)]
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    if rms < SILENCE_RMS:
        raise ItemError(item, f"audio is silent (RMS {rms:.2g} < {SILENCE_RMS:g})")
    return np.ascontiguousarray(wave, dtype=np.float32)


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling (scipy's ``resample_poly``, Kaiser-windowed FIR): exact rational ratio."""
    if orig_sr == target_sr:
        return wave.astype(np.float32, copy=False)
    if orig_sr <= 0:
        raise ValueError(f"invalid sample rate {orig_sr}")
    from scipy.signal import resample_poly

    g = gcd(int(orig_sr), int(target_sr))
    return resample_poly(wave.astype(np.float64), target_sr // g, orig_sr // g).astype(np.float32)


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa ``htk=False``)."""
    f_sp = 200.0 / 3
    mels = freq / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(freq >= min_log_hz, min_log_mel + np.log(np.maximum(freq, 1e-10) / min_log_hz) / logstep, mels)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)


@lru_cache(maxsize=4)
def mel_filterbank(n_mels: int = 80, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular Slaney-normalised filters, as ``librosa.filters.mel``."""
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    mel_points = np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(sample_rate / 2.0)), n_mels + 2)
    hz_points = _mel_to_hz(mel_points)
    fdiff = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]  # Slaney: constant energy per band
    weights.setflags(write=False)
    return weights


@lru_cache(maxsize=1)
def _hann(n: int = N_FFT) -> np.ndarray:
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)  # periodic, as torch.hann_window
    window.setflags(write=False)
    return window


def log_mel(wave: np.ndarray, n_samples: int, n_mels: int = 80) -> np.ndarray:
    """(n_mels, n_samples // 160) Whisper log-mel of ``wave`` zero-padded (or cut) to ``n_samples``."""
    audio = np.zeros(n_samples, dtype=np.float64)
    audio[: min(len(wave), n_samples)] = wave[:n_samples]
    pad = N_FFT // 2
    padded = np.pad(audio, pad, mode="reflect")
    n_frames = 1 + (len(padded) - N_FFT) // HOP_LENGTH
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH][:n_frames]
    spectrum = np.fft.rfft(frames * _hann(), axis=-1)
    power = (spectrum.real**2 + spectrum.imag**2)[:-1]  # Whisper drops the last STFT frame
    mel = power @ mel_filterbank(n_mels).T
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return np.ascontiguousarray(((log_spec + 4.0) / 4.0).T, dtype=np.float32)
