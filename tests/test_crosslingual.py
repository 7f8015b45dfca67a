"""Cross-lingual metrics: MRV and per-language ranks on a hand-built case, then ``modalign eval`` on real verses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from modalign.cli import app
from modalign.evaluation.crosslingual import mean_rank_variance, pivot_ranks
from modalign.evaluation.evaluate import ModalityEmbeddings


def _unit(rows: list[list[float]]) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _emb(name: str, row_to_item: list[int], vectors: list[list[float]]) -> ModalityEmbeddings:
    r = np.asarray(row_to_item, dtype=np.int64)
    first = [int(np.flatnonzero(r == i)[0]) for i in range(len(vectors))]
    return ModalityEmbeddings(name, r, np.asarray(first), _unit(vectors))


@pytest.fixture()
def hand_built() -> dict[str, ModalityEmbeddings]:
    # pivot items p0, p1, p2 (rows 0-2); row 3 repeats row 0 exactly; row 4 lacks language b
    pivot = _emb("image", [0, 1, 2, 0, 3], [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])
    a = _emb("text", [0, 1, 2, 0, 3], [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])  # perfect: ranks 1, 1, 1
    # b0 = p0 (rank 1); b1 is closer to p2 than to p1 (rank 2); b2 is closest to p0, then p1 (rank 3)
    b = _emb("text_es", [0, 1, 2, 0, -1], [[1, 0, 0], [0, 0.5, 1], [1, 0.4, 0.2]])
    return {"image": pivot, "text": a, "text_es": b}


def test_mean_rank_variance_exact() -> None:
    assert mean_rank_variance(np.array([[1, 3], [2, 2]])) == pytest.approx(0.5)
    assert mean_rank_variance(np.array([[1, 2, 3]])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="2 languages"):
        mean_rank_variance(np.array([[1], [2]]))


def test_pivot_ranks_hand_built(hand_built: dict[str, ModalityEmbeddings]) -> None:
    pr = pivot_ranks(hand_built, ["text", "text_es"], "image")
    np.testing.assert_array_equal(pr["rows"], [0, 1, 2, 3])  # row 4 lacks text_es
    # L -> image: row 3 duplicates row 0, so 3 instances
    np.testing.assert_array_equal(pr["to"], [[1, 1], [1, 2], [1, 3]])
    assert mean_rank_variance(pr["to"]) == pytest.approx((0 + 0.25 + 1) / 3)
    # image -> L: p0 finds b0 first; p1: b1 (0.447) beats b2 (0.365); p2: b1 (0.894) beats b2 (0.183)
    np.testing.assert_array_equal(pr["from"], [[1, 1], [1, 1], [1, 2]])
    assert mean_rank_variance(pr["from"]) == pytest.approx(0.25 / 3)
    np.testing.assert_array_equal(pr["to_by_language"]["text_es"], [1, 2, 3])
    with pytest.raises(ValueError, match="2 languages"):
        pivot_ranks(hand_built, ["text"], "image")


@pytest.fixture(scope="module")
def verses(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modalign.data.recipes import DATASETS

    out = tmp_path_factory.mktemp("bible-xl")
    return DATASETS.create("bible-en-es").prepare(out, limit=24).manifest  # Gen 1:1-24


def test_eval_cli_reports_crosslingual(verses: Path, tmp_path: Path, session_cache) -> None:
    runner = CliRunner()
    model = tmp_path / "model"
    cache = str(session_cache.root)
    res = runner.invoke(app, ["fit", "--data", str(verses), "--modalities", "text,text_es,text_kjv",
                              "--encoders", "text=minilm,text_es=e5,text_kjv=minilm", "--epochs", "5",
                              "--val-fraction", "0", "--dim", "64", "--cache", cache, "--out", str(model)])
    assert res.exit_code == 0, res.output
    out_json = tmp_path / "eval.json"
    res = runner.invoke(app, ["eval", "--model", str(model), "--data", str(verses), "--cache", cache,
                              "--json", str(out_json)])
    assert res.exit_code == 0, res.output
    assert "cross-lingual" in res.output and "MRV" in res.output
    payload = json.loads(out_json.read_text())
    assert {"n", "directions", "modality_gap"} <= set(payload)  # the existing keys stay
    xl = payload["crosslingual"]
    assert xl["languages"] == ["text", "text_es", "text_kjv"]
    assert set(xl["pairs"]) == {"text->text_es", "text_es->text", "text->text_kjv", "text_kjv->text",
                                "text_es->text_kjv", "text_kjv->text_es"}
    assert xl["pairs"]["text->text_es"] == payload["directions"]["text->text_es"]
    es = xl["pivots"]["text_es"]
    assert es["languages"] == ["text", "text_kjv"] and es["n_rows"] == 24 and es["instances_to"] == 24
    assert es["MRV_to"] >= 0 and es["MRV_from"] >= 0
    assert es["to"]["text"]["queries"] == 24
    # every row has every language, so the pivot ranks (own code path) must equal eval's direction ranks
    for key in ("R@1", "R@5", "MRR", "median_rank"):
        assert es["to"]["text"][key] == pytest.approx(payload["directions"]["text->text_es"][key])
        assert es["from"]["text_kjv"][key] == pytest.approx(payload["directions"]["text_es->text_kjv"][key])
    assert xl["MRV"] == pytest.approx(np.mean([p["MRV_to"] for p in xl["pivots"].values()]))

    res = runner.invoke(app, ["eval", "--model", str(model), "--data", str(verses), "--cache", cache,
                              "--json", str(out_json), "--no-crosslingual"])
    assert res.exit_code == 0, res.output
    assert "crosslingual" not in json.loads(out_json.read_text())
