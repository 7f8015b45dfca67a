"""A damaged model folder through the CLI: ``index``, ``eval`` and ``serve`` each exit 2 with one line naming
the file, never a traceback (the library side is in test_model_safety.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import run_cli
from helpers.tampered import CASES, tamper
from modalign.search.store import MODEL_DIR


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(manifest, model, index) over two inline-vector modalities: no encoder, so every case is quick."""
    base = tmp_path_factory.mktemp("tampered")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 6))
    rows = [{"id": f"r{i}", "vec_a": x[i].tolist(), "vec_b": (x[i, ::-1] + 0.01 * rng.normal(size=6)).tolist(),
             "group": f"g{i // 2}"} for i in range(60)]
    manifest = base / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model, index = base / "model", base / "index"
    run_cli(["fit", "--data", str(manifest), "--modalities", "vec_a,vec_b", "--method", "procrustes", "--dim", "4",
             "--holdout", "0.25", "--cache", str(base / "cache"), "--out", str(model)])
    run_cli(["index", "--model", str(model), "--data", str(manifest), "--out", str(index),
             "--cache", str(base / "cache")])
    return manifest, model, index


def _flat(output: str) -> str:
    """The output without any whitespace: rich wraps one long message over several terminal lines."""
    assert "Traceback" not in output and output.strip(), output
    return "".join(output.split())


@pytest.mark.parametrize("case", CASES)
def test_index_and_eval_on_a_tampered_model_exit_2_naming_the_file(fitted, case: str, tmp_path: Path) -> None:
    manifest, model, _ = fitted
    bad = tmp_path / "bad-model"
    shutil.copytree(model, bad)
    expect = tamper(bad, case, "vec_a")
    said = _flat(run_cli(["index", "--model", str(bad), "--data", str(manifest), "--out", str(tmp_path / "i"),
                          "--cache", str(tmp_path / "c")], code=2))
    assert _flat(expect) in said and str(bad) in said, said
    assert not (tmp_path / "i" / "index.json").exists()
    said = _flat(run_cli(["eval", "--model", str(bad), "--data", str(manifest), "--cache", str(tmp_path / "c")],
                         code=2))
    assert _flat(expect) in said and str(bad) in said, said


@pytest.mark.parametrize("case", CASES)
def test_serve_on_an_index_whose_model_was_tampered_exits_2(fitted, case: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    def never(*_: object, **__: object) -> None:
        raise AssertionError("a tampered model got as far as listening")

    monkeypatch.setattr(uvicorn, "run", never)
    _, _, index = fitted
    bad = tmp_path / "bad-index"
    shutil.copytree(index, bad)
    expect = tamper(bad / MODEL_DIR, case, "vec_a")
    said = _flat(run_cli(["serve", "--index", str(bad), "--port", "0"], code=2))
    assert _flat(expect) in said and str(bad) in said, said
