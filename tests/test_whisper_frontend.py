"""Our Whisper log-mel front end (``encoders.audio_io.log_mel``, kept to avoid loading transformers'
feature extractor in every encoder process) against transformers' ``WhisperFeatureExtractor``."""

from __future__ import annotations

import numpy as np
import pytest

from modalign.encoders.audio_io import SAMPLE_RATE, log_mel

transformers = pytest.importorskip("transformers")

#: float32 vs float64 STFT and filterbank rounding; log-mel values span about [-1, 1.5]
TOLERANCE = 1e-3


def _reference(wave: np.ndarray, n_samples: int, n_mels: int) -> np.ndarray:
    fe = transformers.WhisperFeatureExtractor(feature_size=n_mels, n_samples=n_samples)  # default args: no download
    out = fe(wave, sampling_rate=SAMPLE_RATE, return_tensors="np", padding="max_length", max_length=n_samples)
    return np.asarray(out["input_features"][0], dtype=np.float32)


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("seconds", [0.7, 3.0])
def test_log_mel_matches_transformers(n_mels: int, seconds: float) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    wave = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.normal(size=len(t))).astype(np.float32)
    n_samples = 4 * SAMPLE_RATE
    ours = log_mel(wave, n_samples, n_mels)  # (n_mels, frames), as transformers gives it
    ref = _reference(wave, n_samples, n_mels)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=TOLERANCE, rtol=0)
