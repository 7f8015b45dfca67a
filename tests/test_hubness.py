"""Hubness-aware retrieval: CSLS and inverted softmax against brute force, a constructed hub, NaN, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import run_cli
from helpers.photos import write_photo_manifest
from modalign.evaluation.hubness import Hubness, choose_parameter, csls, inverted_softmax, knn_mean
from modalign.evaluation.retrieval import first_positive_ranks, metrics_from_ranks


def _brute_csls(sim: np.ndarray, k: int) -> np.ndarray:
    q, d = sim.shape
    out = np.empty_like(sim)
    for i in range(q):
        for j in range(d):
            row = sorted((v for v in sim[i] if np.isfinite(v)), reverse=True)[:k]
            col = sorted((v for v in sim[:, j] if np.isfinite(v)), reverse=True)[:k]
            out[i, j] = 2 * sim[i, j] - sum(row) / len(row) - sum(col) / len(col)
    return out


def _brute_isoftmax(sim: np.ndarray, beta: float) -> np.ndarray:
    q, d = sim.shape
    out = np.empty_like(sim)
    for j in range(d):
        z = sum(np.exp(beta * sim[i2, j]) for i2 in range(q) if np.isfinite(sim[i2, j]))
        for i in range(q):
            out[i, j] = np.exp(beta * sim[i, j]) / z
    return out


@pytest.fixture
def sim() -> np.ndarray:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(7, 5)), rng.normal(size=(9, 5))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


@pytest.mark.parametrize("k", [1, 3, 8, 50])
@pytest.mark.parametrize("chunk", [2, 1024])
def test_csls_equals_brute_force(sim: np.ndarray, k: int, chunk: int) -> None:
    np.testing.assert_allclose(csls(sim, k, chunk=chunk), _brute_csls(sim, k), atol=1e-12)
    # the other direction is the transpose: r_D and r_Q swap
    np.testing.assert_allclose(csls(sim.T, k, chunk=chunk), csls(sim, k).T, atol=1e-12)


@pytest.mark.parametrize("beta", [1.0, 30.0, 500.0])
@pytest.mark.parametrize("chunk", [3, 1024])
def test_inverted_softmax_equals_brute_force(sim: np.ndarray, beta: float, chunk: int) -> None:
    brute = _brute_isoftmax(sim, beta)
    np.testing.assert_allclose(inverted_softmax(sim, beta, chunk=chunk), brute, rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(inverted_softmax(sim, beta, chunk=chunk).sum(axis=0), 1.0)  # columns normalised
    logp = inverted_softmax(sim, beta, chunk=chunk, log=True)
    np.testing.assert_allclose(np.exp(logp), brute, rtol=1e-9, atol=1e-300)


def test_float32_stays_float32(sim: np.ndarray) -> None:
    s = sim.astype(np.float32)
    assert csls(s).dtype == np.float32 and inverted_softmax(s, log=True).dtype == np.float32
    np.testing.assert_allclose(csls(s, 3), _brute_csls(sim, 3), atol=1e-5)


def _hub_case() -> tuple[np.ndarray, np.ndarray]:
    """Queries that share a common direction, their documents that lack it, and one document on it."""
    rng = np.random.default_rng(0)
    n, dim = 40, 64
    u = rng.normal(size=(n, dim))
    common = np.zeros(dim)
    common[0] = 1.0
    u[:, 0] = 0.0
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    queries = 0.7 * common + 0.6 * u
    docs = u + 0.5 * rng.normal(size=(n, dim)) / np.sqrt(dim)
    docs[:, 0] = 0.0
    docs = np.vstack([docs, common])  # document n: the hub, relevant to no query
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    rel = np.zeros((n, n + 1), dtype=bool)
    rel[np.arange(n), np.arange(n)] = True
    return queries @ docs.T, rel


def test_a_constructed_hub_is_demoted() -> None:
    sim, rel = _hub_case()
    hub = sim.shape[1] - 1
    assert (sim.argmax(axis=1) == hub).mean() > 0.9  # by cosine the hub tops almost every list
    r1 = metrics_from_ranks(first_positive_ranks(sim, rel))["R@1"]
    r1_csls = metrics_from_ranks(first_positive_ranks(csls(sim, 10), rel))["R@1"]
    r1_isoft = metrics_from_ranks(first_positive_ranks(inverted_softmax(sim, 30.0, log=True), rel))["R@1"]
    assert r1 < 0.1
    assert r1_csls > 0.9 and r1_isoft > 0.9, (r1, r1_csls, r1_isoft)
    assert (csls(sim, 10).argmax(axis=1) == hub).mean() < 0.1


def test_choose_parameter_scores_the_grid_and_breaks_ties_towards_the_paper() -> None:
    sim, rel = _hub_case()
    k, scores = choose_parameter("csls", [(sim, rel), (sim.T, rel.T)])
    assert set(scores) == {1, 2, 3, 5, 10, 20}  # 50 > the larger side (41): the same as 41, tried once
    assert scores[k] == max(scores.values())
    # every value ranks an identity matrix perfectly: the tie goes to the papers' k = 10 and β = 30
    eye, eye_rel = np.eye(6), np.eye(6, dtype=bool)
    assert choose_parameter("csls", [(eye, eye_rel)])[0] == 5  # the nearest grid value to 10 within k <= 6
    assert choose_parameter("csls", [(np.eye(20), np.eye(20, dtype=bool))])[0] == 10
    assert choose_parameter("isoftmax", [(eye, eye_rel)])[0] == 30.0


def test_nan_never_helps_a_query(sim: np.ndarray) -> None:
    rel = np.zeros(sim.shape, dtype=bool)
    rel[np.arange(7), np.arange(7)] = True
    s = sim.copy()
    s[np.arange(7), np.arange(7)] = 5.0  # every positive would win by far
    s[0, 0] = np.nan  # query 0's positive is NaN: never a hit
    s[1, 4] = np.nan  # a NaN negative of query 1: ranks above its positive
    for scored in (csls(s, 3), inverted_softmax(s, 30.0, log=True), inverted_softmax(s, 30.0)):
        ranks = first_positive_ranks(scored, rel)
        assert ranks[0] == s.shape[1]  # last
        assert ranks[1] == 2
        assert (ranks[2:] == 1).all()
        # a NaN stays in its own cell: the rest of its row and column are finite
        finite = np.isfinite(scored)
        assert finite.sum() == s.size - 2 and not finite[0, 0] and not finite[1, 4]
    # the neighbour means and normalisers leave the NaN out, as if the cell did not exist
    np.testing.assert_allclose(csls(s, 3)[np.isfinite(s)], _brute_csls(s, 3)[np.isfinite(s)], atol=1e-12)
    np.testing.assert_allclose(inverted_softmax(s, 2.0)[np.isfinite(s)], _brute_isoftmax(s, 2.0)[np.isfinite(s)])
    assert np.isnan(knn_mean(np.full((2, 3), np.nan), 2)).all()
    all_nan = s.copy()
    all_nan[:, 2] = np.nan  # a document with no finite score: its column is NaN, nothing else changes
    out = csls(all_nan, 3)
    assert np.isnan(out[:, 2]).all() and np.isfinite(np.delete(out, 2, axis=1)[np.delete(np.isfinite(s), 2, 1)]).all()


def test_bad_parameters_are_errors() -> None:
    with pytest.raises(ValueError, match="positive integer"):
        Hubness("csls", 2.5)
    with pytest.raises(ValueError, match="positive number"):
        Hubness("isoftmax", float("nan"))
    with pytest.raises(ValueError, match="one of"):
        Hubness("nope", 1.0)
    with pytest.raises(ValueError):
        knn_mean(np.eye(2), 0)


# ----------------------------------------------------------------------------------- modalign eval --hubness


@pytest.fixture(scope="module")
def photo_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_photo_manifest(tmp_path_factory.mktemp("hub-photos"))


@pytest.fixture(scope="module")
def fitted(photo_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(cache, model with a validation split, model without one), Procrustes in 16 dimensions."""
    base = tmp_path_factory.mktemp("hub-models")
    cache = base / "cache"
    models = []
    for name, val in (("with-val", "0.1"), ("no-val", "0")):
        run_cli(["fit", "--data", str(photo_manifest), "--modalities", "image,text", "--method", "procrustes",
                 "--dim", "16", "--holdout", "0.25", "--val-fraction", val, "--cache", str(cache),
                 "--out", str(base / name)])
        models.append(base / name)
    return cache, models[0], models[1]


def _eval(model: Path, manifest: Path, cache: Path, out: Path, *extra: str) -> tuple[dict, str]:
    text = run_cli(["eval", "--model", str(model), "--data", str(manifest), "--json", str(out), "--cache",
                    str(cache), "--bootstrap", "100", "--no-crosslingual", *extra])
    return json.loads(out.read_text()), text


def test_eval_csls_chosen_on_the_fit_validation_split(photo_manifest: Path, fitted: tuple[Path, Path, Path],
                                                      tmp_path: Path) -> None:
    cache, with_val, _ = fitted
    plain, _ = _eval(with_val, photo_manifest, cache, tmp_path / "plain.json")
    assert "hubness" not in plain  # --hubness none (the default) adds nothing
    hub, text = _eval(with_val, photo_manifest, cache, tmp_path / "csls.json", "--hubness", "csls")
    block = hub["hubness"]
    assert block["method"] == "csls" and isinstance(block["k"], int) and block["k"] >= 1
    # 15 training concepts, 10% of them (2) validated on; the whole test split (5 concepts) is scored
    assert block["chosen_on"] == {"part": "validation", "rows": 8, "groups": 2}
    assert block["scored_on"] == {"part": "test", "rows": 20, "groups": 5}
    assert hub["n"] == plain["n"] == 20 and hub["split"] == "test"
    # the validation split shows 8 images: k above 8 would be the same as 8, so the grid stops at 5
    assert set(block["grid_MRR"]) == {"1", "2", "3", "5"} and str(block["k"]) in block["grid_MRR"]
    assert "hubness: csls k=" in text and "procrustes + csls" in text
    for direction in ("text->image", "image->text"):
        assert 0.0 <= hub["directions"][direction]["R@1"] <= 1.0
        assert hub["directions"][direction]["queries"] == plain["directions"][direction]["queries"]
        # the plain cosine metrics of the same rows ride along, equal to an eval without --hubness
        cosine = block["cosine_directions"][direction]
        assert cosine == {k: plain["directions"][direction][k] for k in cosine}


def test_eval_without_validation_split_chooses_on_half_and_scores_the_other(
        photo_manifest: Path, fitted: tuple[Path, Path, Path], tmp_path: Path) -> None:
    cache, _, no_val = fitted
    plain, _ = _eval(no_val, photo_manifest, cache, tmp_path / "plain.json")
    hub, _ = _eval(no_val, photo_manifest, cache, tmp_path / "isoft.json", "--hubness", "isoftmax")
    block = hub["hubness"]
    chosen, scored = block["chosen_on"], block["scored_on"]
    assert chosen["part"] == "test half" and chosen["seed"] == 0 and scored["part"] == "test other half"
    assert chosen["rows"] + scored["rows"] == plain["n"] == 20 and chosen["groups"] + scored["groups"] == 5
    assert hub["n"] == scored["rows"]  # every metric is on the half not used for choosing
    for direction, cosine in block["cosine_directions"].items():  # the baseline is on that half too
        assert cosine["queries"] == hub["directions"][direction]["queries"] < plain["directions"][direction]["queries"]
    assert block["beta"] in {1.0, 3.0, 10.0, 20.0, 30.0, 50.0, 100.0}
    again, _ = _eval(no_val, photo_manifest, cache, tmp_path / "again.json", "--hubness", "isoftmax")
    assert again["hubness"] == block and again["directions"] == hub["directions"]  # seeded: the same half


def test_eval_given_parameter_and_bad_combinations(photo_manifest: Path, fitted: tuple[Path, Path, Path],
                                                   tmp_path: Path) -> None:
    cache, with_val, _ = fitted
    hub, _ = _eval(with_val, photo_manifest, cache, tmp_path / "k3.json", "--hubness", "csls", "--hubness-k", "3")
    block = {k: v for k, v in hub["hubness"].items() if k != "cosine_directions"}
    assert block == {"method": "csls", "k": 3, "chosen_on": {"part": "given"},
                     "scored_on": {"part": "test", "rows": 20, "groups": 5}}
    base = ["eval", "--model", str(with_val), "--data", str(photo_manifest), "--cache", str(cache)]
    for extra, message in ((["--hubness", "isoftmax", "--hubness-k", "5"], "--hubness-k is the parameter"),
                           (["--hubness-k", "5"], "--hubness-k is the parameter"),
                           (["--hubness", "csls", "--hubness-k", "2.5"], "positive integer or auto"),
                           (["--hubness", "isoftmax", "--hubness-beta", "-1"], "positive number or auto"),
                           (["--hubness", "mnn"], "--hubness must be one of")):
        assert message in run_cli([*base, *extra], code=2)
