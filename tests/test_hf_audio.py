"""``hf:PATH`` for audio folders (AutoFeatureExtractor + AutoModel, every hidden state mean-pooled).

No Hugging Face-format audio model is installed here (the built-in Whisper weights are CTranslate2
files), so the folders are tiny randomly initialised models saved with ``save_pretrained``: a real
forward pass with a real feature extractor config. The Whisper-architecture folder is checked against
the built-in encoders' front end and pooling (modalign's own log-mel, the frames covering the clip)
fed to the same weights; a wav2vec2 folder fits and evaluates end to end on a few speech rows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.cli import run_cli
from modalign.encoders import get_encoder
from modalign.encoders.audio_io import SAMPLE_RATE, load_audio, log_mel
from modalign.encoders.whisper import SAMPLES_PER_FRAME

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modalign.data.recipes import DATASETS

    recipe = DATASETS.create("speech", voices=("en-us", "en-gb+f3"), speeds=(175,))
    if recipe.missing_requirements():
        pytest.fail("espeak-ng is missing; run scripts/install_system_deps.sh")
    out = tmp_path_factory.mktemp("hf-audio-speech")
    recipe.prepare(out, limit=12)
    return out / "manifest.jsonl"


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = transformers.WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                                     decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                     vocab_size=64, num_mel_bins=80, max_target_positions=16, pad_token_id=0,
                                     bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    out = tmp_path_factory.mktemp("hf-whisper")
    transformers.WhisperModel(cfg).eval().save_pretrained(out)
    transformers.WhisperFeatureExtractor(feature_size=80).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def wav2vec2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = transformers.Wav2Vec2Config(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                      intermediate_size=64, conv_dim=(32, 32, 32), conv_stride=(5, 4, 4),
                                      conv_kernel=(10, 8, 8), num_conv_pos_embeddings=16,
                                      num_conv_pos_embedding_groups=2, vocab_size=32)
    out = tmp_path_factory.mktemp("hf-wav2vec2")
    transformers.Wav2Vec2Model(cfg).eval().save_pretrained(out)
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=SAMPLE_RATE, do_normalize=True,
                                          return_attention_mask=False).save_pretrained(out)
    return out


def _clips(manifest: Path, n: int) -> list[Path]:
    rows = [json.loads(line) for line in manifest.read_text().splitlines()[:n]]
    return [manifest.parent / r["audio"] for r in rows]


def test_whisper_folder_matches_the_builtin_front_end_and_pooling(whisper_dir: Path, speech: Path) -> None:
    enc = get_encoder(f"hf:{whisper_dir}")
    assert enc.kind == "audio" and enc.layers == ("emb", "layer1", "layer2") and enc.dim == 32
    clips = _clips(speech, 3)
    feats = enc.encode(clips)
    model = transformers.WhisperModel.from_pretrained(whisper_dir).eval()
    for row, clip in enumerate(clips):
        wave = load_audio(clip)
        mel = torch.as_tensor(log_mel(wave, 30 * SAMPLE_RATE, 80))[None]  # what whisper-base feeds CTranslate2
        with torch.inference_mode():
            states = model.encoder(mel, output_hidden_states=True).hidden_states
        valid = math.ceil(len(wave) / SAMPLES_PER_FRAME)  # the built-in encoders' pooled frames
        assert 0 < valid < states[0].shape[1]
        for i, layer in enumerate(enc.layers):
            # tolerance: modalign's log-mel vs transformers' agree to ~1e-3 (test_whisper_frontend)
            np.testing.assert_allclose(feats[layer][row], states[i][0, :valid].mean(0).numpy(), atol=2e-3)


def test_wav2vec2_folder_is_batch_independent_and_fits(wav2vec2_dir: Path, speech: Path, tmp_path: Path) -> None:
    enc = get_encoder(f"hf:{wav2vec2_dir}")
    assert enc.layers == ("emb", "layer1", "layer2", "layer3") and enc.weights_sha256
    clips = _clips(speech, 4)
    together = enc.encode(clips)
    alone = enc.encode(clips[2:3])
    for layer in enc.layers:  # a clip's features do not depend on the longer or shorter clips around it
        np.testing.assert_array_equal(together[layer][2:3], alone[layer])
    assert not np.allclose(together["layer3"][0], together["layer3"][1])
    model = tmp_path / "m"
    run_cli(["fit", "--data", str(speech), "--modalities", "audio,text", "--encoders",
             f"audio=hf:{wav2vec2_dir}", "--method", "procrustes", "--layers", "audio=layer2", "--dim", "16",
             "--holdout", "0.25", "--cache", str(tmp_path / "cache"), "--out", str(model)])
    cfg = json.loads((model / "config.json").read_text())["modalities"]["audio"]
    assert cfg["encoder"]["name"] == f"hf:{wav2vec2_dir.resolve()}" and cfg["layer"] == "layer2"
    run_cli(["eval", "--model", str(model), "--data", str(speech), "--cache", str(tmp_path / "cache"),
             "--json", str(tmp_path / "eval.json")])
    payload = json.loads((tmp_path / "eval.json").read_text())
    assert payload["split"] == "test" and {"audio->text", "text->audio"} <= set(payload["directions"])
