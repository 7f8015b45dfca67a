"""Whisper audio encoders (CTranslate2, packaged weights) and the audio front end on real speech.

The clips are spoken by espeak-ng (Debian ``espeak-ng``, installed by scripts/install_system_deps.sh);
the log-mel front end is checked against transformers' independent ``WhisperFeatureExtractor``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from modalign.encoders import ENCODERS, get_encoder
from modalign.encoders.audio_io import SAMPLE_RATE, load_audio, log_mel, mel_filterbank, resample
from modalign.errors import ItemError
from modalign.features import extract

PHRASES = ("grinning face", "red apple", "hot air balloon", "thumbs up")
SPEEDS = (130, 175)


def _norm(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real speech (one file per phrase and speed) plus a stereo 44.1 kHz FLAC and three bad files."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: run scripts/install_system_deps.sh (apt-get install espeak-ng)")
    root = tmp_path_factory.mktemp("audio")
    out: dict[str, Path] = {}
    for i, phrase in enumerate(PHRASES):
        for speed in SPEEDS:
            path = root / f"p{i}_s{speed}.wav"
            subprocess.run(["espeak-ng", "-v", "en-us", "-s", str(speed), "-w", str(path), phrase], check=True)
            out[f"p{i}_s{speed}"] = path
    wave, sr = sf.read(str(out["p0_s130"]), dtype="float32")
    stereo_44k = resample(wave, sr, 44_100)
    out["flac"] = root / "stereo.flac"
    sf.write(str(out["flac"]), np.stack([stereo_44k, 0.5 * stereo_44k], axis=1), 44_100)
    out["corrupt"] = root / "corrupt.wav"
    out["corrupt"].write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(200)))
    out["silent"] = root / "silent.wav"
    sf.write(str(out["silent"]), np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)
    out["empty"] = root / "empty.wav"
    sf.write(str(out["empty"]), np.zeros(0, np.float32), SAMPLE_RATE)
    return out


def test_log_mel_matches_transformers_whisper_feature_extractor(clips: dict[str, Path]) -> None:
    from transformers import WhisperFeatureExtractor

    wave = load_audio(clips["p1_s175"])
    ref = WhisperFeatureExtractor(feature_size=80)
    assert np.abs(ref.mel_filters.T - mel_filterbank(80)).max() < 1e-9
    expected = ref(wave, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
    ours = log_mel(wave, 30 * SAMPLE_RATE)
    assert ours.shape == expected.shape == (80, 3000)
    assert np.abs(ours - expected).max() < 1e-3


def test_load_audio_decodes_resamples_and_downmixes(clips: dict[str, Path]) -> None:
    wav = load_audio(clips["p0_s130"])  # espeak-ng writes 22.05 kHz mono
    flac = load_audio(clips["flac"])  # the same speech as stereo 44.1 kHz FLAC, right channel at half level
    assert wav.dtype == flac.dtype == np.float32
    assert abs(len(flac) - len(wav)) <= 2
    n = min(len(wav), len(flac))
    assert np.corrcoef(wav[:n], flac[:n])[0, 1] > 0.99
    assert np.abs(flac).max() == pytest.approx(0.75 * np.abs(wav).max(), rel=0.05)


@pytest.mark.parametrize("bad, reason", [("corrupt", "cannot decode"), ("silent", "silent"),
                                         ("empty", "zero length")])
def test_bad_audio_raises_item_error(clips: dict[str, Path], bad: str, reason: str) -> None:
    with pytest.raises(ItemError, match=reason):
        load_audio(clips[bad])
    with pytest.raises(ItemError, match="not found"):
        load_audio(clips["p0_s130"].with_name("missing.wav"))


@pytest.fixture(scope="module")
def base():
    return get_encoder("whisper-base")


def test_registry_lists_both_whisper_encoders() -> None:
    assert {"whisper-base", "whisper-tiny"} <= set(ENCODERS.names())
    with pytest.raises(ValueError, match="window"):
        ENCODERS.create("whisper-tiny", window=31)


@pytest.mark.parametrize("name, dim", [("whisper-base", 512), ("whisper-tiny", 384)])
def test_shapes_determinism_and_batch_independence(clips: dict[str, Path], name: str, dim: int) -> None:
    enc = get_encoder(name)
    assert enc.kind == "audio" and enc.layers == ("final",) and enc.dim == dim
    items = [clips[k] for k in ("p0_s130", "p1_s175", "p2_s130", "flac")]
    feats = enc.encode(items)["final"]
    assert feats.shape == (4, dim) and feats.dtype == np.float32 and np.isfinite(feats).all()
    again = enc.encode(items, batch_size=3)["final"]
    alone = enc.encode(items[1:2])["final"]
    np.testing.assert_allclose(again, feats, rtol=0, atol=1e-4)
    np.testing.assert_allclose(alone[0], feats[1], rtol=0, atol=1e-4)
    # the stereo 44.1 kHz FLAC is the first clip resampled: nearly the same feature
    assert float(_norm(feats[0]) @ _norm(feats[3])) > 0.98


def test_same_phrase_at_another_speed_is_nearer_than_other_phrases(clips: dict[str, Path], base) -> None:
    slow = _norm(base.encode([clips[f"p{i}_s130"] for i in range(len(PHRASES))])["final"])
    fast = _norm(base.encode([clips[f"p{i}_s175"] for i in range(len(PHRASES))])["final"])
    # center on the clips' mean: raw Whisper states share a large common component
    mean = np.concatenate([slow, fast]).mean(0)
    sims = _norm(slow - mean) @ _norm(fast - mean).T
    assert (sims.argmax(axis=1) == np.arange(len(PHRASES))).all(), sims.round(2)


def test_bad_items_are_skipped_by_extract_and_named(clips: dict[str, Path], base) -> None:
    items = [clips["p0_s130"], clips["corrupt"], clips["silent"], clips["p3_s175"], clips["empty"]]
    res = extract(base, items, cache=None, on_error="skip")
    assert res.ok.tolist() == [True, False, False, True, False]
    assert res.features["final"].shape == (2, 512)
    reasons = dict(res.errors)
    assert "cannot decode" in reasons[1] and "silent" in reasons[2] and "zero length" in reasons[4]


def test_full_30s_window_option(clips: dict[str, Path]) -> None:
    enc = get_encoder("whisper-tiny", window=30.0)
    short = get_encoder("whisper-tiny")
    assert enc.cache_id != short.cache_id  # a different window is a different feature
    full = enc.encode([clips["p0_s175"]])["final"]
    fit = short.encode([clips["p0_s175"]])["final"]
    assert full.shape == (1, 384)
    assert 0.8 < float(_norm(full[0]) @ _norm(fit[0])) < 0.9999
