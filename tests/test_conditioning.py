"""PCA-whitening with shrinkage as an input conditioning (``input_norm="whiten:S"``): fitted on the training
rows, saved in the model, applied identically after save → load; the chunked and one-pass fits agree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from modalign.align.fit import fit_arrays
from modalign.align.heads import HEADS
from modalign.align.model import AlignedModel, Branch


def _paired(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 6))
    # a few dominant directions (scales 30, 10) over weaker shared signal: what whitening evens out
    a = z @ rng.normal(size=(6, 32)) + (rng.normal(size=(n, 2)) * [30.0, 10.0]) @ rng.normal(size=(2, 32))
    b = z @ rng.normal(size=(6, 20)) + 0.3 * rng.normal(size=(n, 20))
    return (a + 4.0).astype(np.float32), b.astype(np.float32)


def _covariance_spread(head, x: np.ndarray) -> float:
    with torch.no_grad():
        z = head.standardize(torch.as_tensor(x)).double()
    w = torch.linalg.eigvalsh(torch.cov(z.T))
    return float(w.max() / w[w > 1e-9].min())


def test_whitening_evens_out_the_spectrum_and_matches_the_formula() -> None:
    a, _ = _paired(400)
    l2 = HEADS.create("linear", in_dim=32, out_dim=4, input_norm="l2")
    l2.fit_input_stats(a)
    spreads = {}
    for s in (0.05, 0.5, 1.0):
        head = HEADS.create("linear", in_dim=32, out_dim=4, input_norm=f"whiten:{s}")
        head.fit_input_stats(a)
        spreads[s] = _covariance_spread(head, a)
        # brute force: l2 rows, centre, C_S^{-1/2}, mean norm 1
        x = a / np.linalg.norm(a, axis=1, keepdims=True)
        xc = (x - x.mean(0)).astype(np.float64)
        w, v = np.linalg.eigh(xc.T @ xc / len(x))
        w = (1 - s) * np.maximum(w, 0) + s * np.maximum(w, 0).mean()
        z = xc @ (v / np.sqrt(w)) @ v.T
        z /= np.linalg.norm(z, axis=1).mean()
        with torch.no_grad():
            np.testing.assert_allclose(head.standardize(torch.as_tensor(a)).numpy(), z, atol=2e-4)
    assert spreads[0.05] < spreads[0.5] < _covariance_spread(l2, a) * 1.001
    assert spreads[1.0] == pytest.approx(_covariance_spread(l2, a), rel=1e-3)  # S = 1: a multiple of l2


def test_chunked_fit_equals_one_pass() -> None:
    a, _ = _paired(300)
    one = HEADS.create("linear", in_dim=32, out_dim=4, input_norm="whiten:0.3")
    one.fit_input_stats(a)
    chunked = HEADS.create("linear", in_dim=32, out_dim=4, input_norm="whiten:0.3")
    chunked.fit_input_stats(a, chunk=64)
    for name in ("input_mean", "input_scale", "input_whiten"):
        torch.testing.assert_close(getattr(chunked, name), getattr(one, name), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bad", ["whiten:0", "whiten:1.5", "whiten:x", "l2:0.3", "pca"])
def test_bad_conditioning_is_one_clear_error(bad: str) -> None:
    with pytest.raises(ValueError, match="input_norm"):
        HEADS.create("linear", in_dim=8, out_dim=4, input_norm=bad)


@pytest.mark.parametrize("method", ["cca", "infonce"])
def test_save_load_keeps_the_whitening(method: str, tmp_path: Path) -> None:
    from modalign.align.trainer import TrainerSettings

    a, b = _paired(200)
    groups = [str(i) for i in range(200)]
    fitted = fit_arrays({"a": {"x": a}, "b": {"x": b}}, {"a": np.ones(200, bool), "b": np.ones(200, bool)},
                        groups, ["a", "b"], default_layers={"a": "x", "b": "x"}, method=method, dim=8,
                        val_fraction=0.1, input_norm="whiten:0.3", settings=TrainerSettings(steps=20, batch_size=32))
    model = AlignedModel(branches={m: Branch(m, "vector", "vectors", {"dim": x.shape[1]}, "x", fitted.heads[m])
                                   for m, x in (("a", a), ("b", b))}, dim=8, method=method)
    model.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["modalities"]["a"]["head"]["input_norm"] == "whiten:0.3"
    loaded = AlignedModel.load(tmp_path / "m")
    for m, x in (("a", a), ("b", b)):
        np.testing.assert_array_equal(loaded.embed_features(m, x), model.embed_features(m, x))
    # fitted on the training rows only (the 10 % validation groups are left out of the statistics)
    head = loaded.branch("a").head
    assert not torch.allclose(head.input_mean, torch.nn.functional.normalize(torch.as_tensor(a), dim=1).mean(0))


def test_whitened_candidates_are_known_but_not_default() -> None:
    from modalign.align.auto import CANDIDATES, select_candidates

    default = select_candidates(None)
    assert default and not any(c.input_norm.startswith("whiten") for c in default)
    whitened = select_candidates("whiten")
    assert whitened and all(c.input_norm.startswith("whiten") and not c.trained for c in whitened)
    assert {c.input_norm for c in whitened} == {"whiten:0.1", "whiten:0.3", "whiten:0.6"}
    assert not any(c.input_norm.startswith("whiten") for c in select_candidates("cca"))
    name = "cca(reg=0.3,power=2.0)+whiten0.3"
    assert select_candidates([name]) == [CANDIDATES[name]]
