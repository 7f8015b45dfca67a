"""Every file of the hand-made bad-input corpus goes through the real path and gives its documented error.

The corpus is written by ``tests/bad_inputs/make_corpus.py``; ``tests/bad_inputs/expected.json`` maps
each file to the path it is fed through and the substring its error must contain. Images go through
the real dinov2-s encoder, audio through whisper-tiny, vectors through the vectors encoder, all via
``modalign.features.extract``; manifests through ``PairedDataset.from_manifest``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from modalign.data import PairedDataset
from modalign.encoders.registry import get_encoder
from modalign.errors import ItemError, ManifestError
from modalign.features import extract

CORPUS_DIR = Path(__file__).resolve().parent / "bad_inputs"
EXPECTED: dict[str, dict[str, str]] = json.loads((CORPUS_DIR / "expected.json").read_text())


def _by_path(kind: str) -> list[str]:
    return sorted(name for name, spec in EXPECTED.items() if spec["path"] == kind)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS_DIR / "make_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.build(tmp_path_factory.mktemp("bad-inputs") / "corpus")
    tone = (np.sin(np.arange(16_000) * 2 * np.pi * 440 / 16_000) * 8000).astype("<i2")
    with wave.open(str(out / "good.wav"), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(16_000)
        fh.writeframes(tone.tobytes())
    np.save(out / "good.npy", np.arange(4, dtype=np.float32))
    return out


def test_corpus_is_big_enough_and_complete(corpus: Path) -> None:
    assert len(EXPECTED) >= 20
    for name in EXPECTED:
        assert (corpus / name).is_file(), name


def _extract_errors(encoder: Any, corpus: Path, names: list[str], good: str) -> dict[str, str]:
    """One skip-mode extraction over the good file + every bad file; the good one must come through."""
    items = [corpus / good] + [corpus / n for n in names]
    res = extract(encoder, items, cache=None, on_error="skip")
    assert res.ok.tolist() == [True] + [False] * len(names), res.errors
    assert all(np.isfinite(arr).all() for arr in res.features.values())
    return {names[i - 1]: reason for i, reason in res.errors}


@pytest.fixture(scope="module")
def image_errors(corpus: Path) -> dict[str, str]:
    return _extract_errors(get_encoder("dinov2-s"), corpus, _by_path("image"), "good.png")


@pytest.fixture(scope="module")
def audio_errors(corpus: Path) -> dict[str, str]:
    return _extract_errors(get_encoder("whisper-tiny"), corpus, _by_path("audio"), "good.wav")


@pytest.fixture(scope="module")
def vector_errors(corpus: Path) -> dict[str, str]:
    return _extract_errors(get_encoder("vectors", dim=4), corpus, _by_path("vector"), "good.npy")


@pytest.mark.parametrize("name", _by_path("image"))
def test_bad_image(name: str, image_errors: dict[str, str]) -> None:
    assert EXPECTED[name]["error"] in image_errors[name]


@pytest.mark.parametrize("name", _by_path("audio"))
def test_bad_audio(name: str, audio_errors: dict[str, str]) -> None:
    assert EXPECTED[name]["error"] in audio_errors[name]


@pytest.mark.parametrize("name", _by_path("vector"))
def test_bad_vector(name: str, vector_errors: dict[str, str]) -> None:
    assert EXPECTED[name]["error"] in vector_errors[name]


@pytest.mark.parametrize("name", _by_path("manifest"))
def test_bad_manifest(name: str, corpus: Path) -> None:
    with pytest.raises(ManifestError) as info:
        PairedDataset.from_manifest(corpus / name, on_error="fail")
    assert EXPECTED[name]["error"] in str(info.value)


def test_fail_mode_stops_at_first_bad_item(corpus: Path) -> None:
    items = [corpus / "good.npy", corpus / "pickle.npy", corpus / "nan.npy"]
    with pytest.raises(ItemError) as info:
        extract(get_encoder("vectors", dim=4), items, cache=None, on_error="fail")
    assert "pickle.npy" in str(info.value) and "allow_pickle=False" in str(info.value)


# --- the CLI: `modalign fit` on a manifest mixing good and bad rows -----------------------------------

BAD_ROWS: list[tuple[dict[str, Any], str, str]] = [  # (row, field, error substring)
    ({"id": "nan", "vec_b": "nan.npy"}, "vec_b", "NaN or inf"),
    ({"id": "pickled", "vec_b": "pickle.npy"}, "vec_b", "allow_pickle=False"),
    ({"id": "wrongdim", "vec_b": "wrong_dim.npy"}, "vec_b", "expected (4,)"),
    ({"id": "gone", "vec_b": "no_such.npy"}, "vec_b", "file not found"),
    ({"id": "escape", "vec_b": "../../../etc/hostname"}, "vec_b", "outside the manifest"),
    ({"id": "typed", "vec_a": "not a vector at all"}, "vec_a", "file not found"),
    ({"id": "inline_nan", "vec_a": [1.0, float("nan"), 0.0, 0.0]}, "vec_a", "NaN or inf"),
    ({"id": "g0", "vec_a": [1.0, 2.0, 3.0, 4.0]}, "id", "duplicate id"),
]


@pytest.fixture(scope="module")
def mixed_manifest(corpus: Path) -> Path:
    root = corpus.parent / "mixed"
    root.mkdir()
    for name in ("nan.npy", "pickle.npy", "wrong_dim.npy"):
        shutil.copy(corpus / name, root / name)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(40):
        a = rng.normal(size=4)
        np.save(root / f"b{i}.npy", (a[::-1] + 0.05 * rng.normal(size=4)).astype(np.float32))
        lines.append(json.dumps({"id": f"g{i}", "vec_a": a.round(5).tolist(), "vec_b": f"b{i}.npy"}))
    # bad rows go after the good ones: the vectors encoder reads its dim from the first row
    for row, _, _ in BAD_ROWS:
        row = {"vec_a": [0.1, 0.2, 0.3, 0.4], **row} if "vec_a" not in row else {"vec_b": "b0.npy", **row}
        lines.append(json.dumps(row))  # json writes NaN for the inline NaN row, as real exports do
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    # rows that pass the manifest check and only fail in the encoder
    (root / "encoder_only.jsonl").write_text("\n".join(lines[:43]) + "\n")
    return root / "manifest.jsonl"


def _fit(manifest: Path, out: Path, on_error: str) -> Any:
    from modalign.cli import app

    args = ["fit", "--data", str(manifest), "--modalities", "vec_a,vec_b", "--method", "procrustes",
            "--dim", "4", "--out", str(out), "--cache", str(out.parent / "cache"), "--on-error", on_error]
    return CliRunner().invoke(app, args)


def test_cli_skip_writes_errors_jsonl(mixed_manifest: Path) -> None:
    out = mixed_manifest.parent / "model-skip"
    result = _fit(mixed_manifest, out, "skip")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "skipped" in result.output
    records = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    for row, field, reason in BAD_ROWS:
        hits = [r for r in records if r["id"] == row["id"] and r["field"] == field and reason in r["reason"]]
        assert hits, (row, field, reason, records)
    assert all({"id", "field", "reason"} <= set(r) for r in records)


def test_cli_fail_names_the_first_error(mixed_manifest: Path) -> None:
    result = _fit(mixed_manifest, mixed_manifest.parent / "model-fail", "fail")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    # the manifest is checked before any encoding: its bad rows are named with row number and field
    assert "row 44, field 'vec_b': file not found: no_such.npy" in result.output, result.output
    assert not (mixed_manifest.parent / "model-fail" / "heads.safetensors").exists()


def test_cli_fail_names_the_first_encoder_error(mixed_manifest: Path) -> None:
    out = mixed_manifest.parent / "model-fail-enc"
    result = _fit(mixed_manifest.parent / "encoder_only.jsonl", out, "fail")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "nan.npy" in result.output and "NaN or inf" in result.output, result.output
    assert "pickle.npy" not in result.output  # it stopped at the first one
    assert not (out / "heads.safetensors").exists()


def test_cli_bad_first_rows_do_not_decide_the_vector_dim(mixed_manifest: Path, corpus: Path) -> None:
    """Bad rows first (short inline vector, unreadable .npy files): the dim comes from the majority."""
    root = mixed_manifest.parent
    for name in ("strings.npy", "zero_byte.npy", "huge_shape.npy", "overflow.npy"):
        shutil.copy(corpus / name, root / name)
    first = [({"id": "short", "vec_a": [1.0, 2.0], "vec_b": "b0.npy"}, "vec_a", "most rows of the column have 4"),
             ({"id": "huge_int", "vec_a": [10**400, 0, 0, 0], "vec_b": "b0.npy"}, "vec_a", "401-digit integer"),
             ({"id": "strings", "vec_a": [1, 2, 3, 4], "vec_b": "strings.npy"}, "vec_b", "not numbers"),
             ({"id": "empty", "vec_a": [1, 2, 3, 4], "vec_b": "zero_byte.npy"}, "vec_b", "empty (0 bytes)"),
             ({"id": "huge", "vec_a": [1, 2, 3, 4], "vec_b": "huge_shape.npy"}, "vec_b", "header claims shape"),
             ({"id": "over", "vec_a": [1, 2, 3, 4], "vec_b": "overflow.npy"}, "vec_b", "outside the float32 range")]
    good = mixed_manifest.read_text().splitlines()[:40]
    manifest = root / "bad_first.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r, _, _ in first) + "\n".join(good) + "\n")
    out = root / "model-bad-first"
    result = _fit(manifest, out, "skip")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    records = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    for row, field, reason in first:
        assert [r for r in records if r["id"] == row["id"] and r["field"] == field and reason in r["reason"]], (
            row, records)
