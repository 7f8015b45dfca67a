"""``--seeds N`` / ``fit(seeds=N)``: the spread over seeds, the ensemble (save → load identical), and the one
rule (align/method_choice.py) by which training-only arguments make the default method infonce in the CLI
and the Python API alike."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.cli import run_cli
from modalign.align.fit import fit_arrays
from modalign.align.method_choice import default_method, settings_arguments, training_arguments
from modalign.align.model import AlignedModel, Branch
from modalign.align.trainer import TrainerSettings

N_GROUPS = 60


def _paired(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(N_GROUPS, 8))
    rep = np.repeat(np.arange(N_GROUPS), 2)  # two rows per group
    a = z[rep] @ rng.normal(size=(8, 24)) + 0.5 * rng.normal(size=(len(rep), 24))
    b = z[rep] @ rng.normal(size=(8, 16)) + 0.5 * rng.normal(size=(len(rep), 16))
    return a.astype(np.float32), b.astype(np.float32), [f"g{i}" for i in rep]


def _fit(a: np.ndarray, b: np.ndarray, groups: list[str], **kw):
    ones = np.ones(len(a), bool)
    return fit_arrays({"a": {"x": a}, "b": {"x": b}}, {"a": ones, "b": ones}, groups, ["a", "b"],
                      default_layers={"a": "x", "b": "x"}, method="infonce", dim=8, val_fraction=0.25,
                      settings=TrainerSettings(steps=30, batch_size=32, seed=3), **kw)


def _model(heads: dict, a: np.ndarray, b: np.ndarray) -> AlignedModel:
    return AlignedModel(branches={m: Branch(m, "vector", "vectors", {"dim": x.shape[1]}, "x", heads[m])
                                  for m, x in (("a", a), ("b", b))}, dim=8, method="infonce")


@pytest.fixture(scope="module")
def fits():
    a, b, groups = _paired()
    return a, b, _fit(a, b, groups), _fit(a, b, groups, seeds=3, ensemble=True)


def test_seeds_report_the_spread(fits) -> None:
    a, b, one, three = fits
    report = three.info["seeds"]
    assert report["seeds"] == [3, 4, 5] and len(report["per_seed"]) == 3 and report["kept"] == "ensemble"
    r1 = [r["val R@1"] for r in report["per_seed"]]
    assert report["mean"]["val R@1"] == pytest.approx(np.mean(r1))
    assert report["std"]["val R@1"] == pytest.approx(np.std(r1))
    assert {"val a->b R@1", "val b->a R@1", "val a->b MRR"} <= set(report["mean"])
    assert len({tuple(r.values()) for r in report["per_seed"]}) == 3  # the seeds really differ
    # the first run is the plain fit (seed 3): same weights, same validation score
    assert report["per_seed"][0]["val R@1"] == pytest.approx(one.info["val_R@1"])
    for m, x in (("a", a), ("b", b)):
        with torch.no_grad():
            torch.testing.assert_close(three.heads[m].members[0](torch.as_tensor(x)), one.heads[m](torch.as_tensor(x)),
                                       rtol=0, atol=0)


def test_ensemble_averages_unit_outputs_and_survives_save_load(fits, tmp_path: Path) -> None:
    a, b, _, fitted = fits
    model = _model(fitted.heads, a, b)
    head = fitted.heads["a"]
    assert head.name == "ensemble" and len(head.members) == 3
    with torch.no_grad():  # the ensemble is the mean of its members' rotated unit vectors
        x = torch.as_tensor(a)
        units = [torch.nn.functional.normalize(h(x), dim=1) for h in head.members]
        expect = torch.stack([u @ r for u, r in zip(units, head.rotations, strict=True)]).mean(0)
        torch.testing.assert_close(head(x), expect)
        rot = head.rotations
        torch.testing.assert_close(rot[0], torch.eye(8))
        torch.testing.assert_close(rot @ rot.transpose(1, 2), torch.eye(8).repeat(3, 1, 1), atol=1e-5, rtol=0)
        # the rotations bring each seed's space onto the first one's (one rotation for both modalities)
        for i in (1, 2):
            for m, xm in (("a", a), ("b", b)):
                h = fitted.heads[m]
                z0 = torch.nn.functional.normalize(h.members[0](torch.as_tensor(xm)), dim=1)
                zi = torch.nn.functional.normalize(h.members[i](torch.as_tensor(xm)), dim=1)
                assert float((zi @ h.rotations[i] * z0).sum(1).mean()) > float((zi * z0).sum(1).mean()) + 0.2
    model.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["modalities"]["a"]["head"]["name"] == "ensemble" and len(cfg["modalities"]["a"]["head"]["members"]) == 3
    loaded = AlignedModel.load(tmp_path / "m")
    for m, x in (("a", a), ("b", b)):
        np.testing.assert_array_equal(loaded.embed_features(m, x), model.embed_features(m, x))
    assert "val R@1" in fitted.info["seeds"]["ensemble"]


def test_seeds_need_a_trained_method() -> None:
    a, b, groups = _paired()
    ones = np.ones(len(a), bool)
    for method in ("cca", "auto"):
        with pytest.raises(ValueError, match="no seed to vary"):
            fit_arrays({"a": {"x": a}, "b": {"x": b}}, {"a": ones, "b": ones}, groups, ["a", "b"],
                       default_layers={"a": "x", "b": "x"}, method=method, seeds=2)
    with pytest.raises(ValueError, match="ensemble needs seeds"):
        _fit(a, b, groups, ensemble=True)


def test_training_only_arguments_rule() -> None:
    assert default_method(training_arguments()) == "auto"
    for kw in ({"epochs": 5}, {"steps": 100}, {"batch_size": 64}, {"head": "mlp"}, {"structure": 1.0},
               {"intra": 0.5}, {"workers": 2}, {"grad_chunks": 2}, {"base": "model"}, {"seeds": 3}):
        assert default_method(training_arguments(**kw)) == "infonce", kw
    assert default_method(training_arguments(epochs=5), candidates="cca") == "auto"
    # the Python API's settings/options read the same way; defaults ask for nothing
    assert training_arguments(**settings_arguments(TrainerSettings(), {})) == []
    assert training_arguments(**settings_arguments(None, None)) == []
    assert training_arguments(**settings_arguments(TrainerSettings(steps="auto"), {})) == []
    assert training_arguments(**settings_arguments(TrainerSettings(epochs=20), {})) == ["epochs"]
    assert training_arguments(**settings_arguments(TrainerSettings(steps=300), {"structure": 2.0})) == \
        ["steps", "structure"]


@pytest.fixture(scope="module")
def vector_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    a, b, groups = _paired(1)
    rows = [{"id": f"r{i}", "vec_a": a[i].tolist(), "vec_b": b[i].tolist(), "group": g} for i, g in enumerate(groups)]
    path = tmp_path_factory.mktemp("seeds") / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_python_api_uses_the_cli_rule(vector_manifest: Path, tmp_path: Path) -> None:
    import modalign
    from modalign.data.dataset import PairedDataset
    from modalign.features import FeatureCache

    ds = PairedDataset.from_manifest(vector_manifest)
    cache = FeatureCache(tmp_path / "cache")
    trained = modalign.fit(ds, ["vec_a", "vec_b"], dim=8, cache=cache, settings=TrainerSettings(epochs=2))
    assert trained.method == "infonce" and trained.training["method"] == "infonce"
    seeded = modalign.fit(ds, ["vec_a", "vec_b"], dim=8, cache=cache, seeds=2,
                          settings=TrainerSettings(steps=20, batch_size=32))
    assert seeded.method == "infonce" and seeded.metrics["fit"]["seeds"]["n"] == 2
    closed = modalign.fit(ds, ["vec_a", "vec_b"], dim=8, cache=cache, options={"candidates": "procrustes"})
    assert closed.method == "auto"


def test_cli_seeds_ensemble_table_and_rule(vector_manifest: Path, tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    common = ["fit", "--data", str(vector_manifest), "--modalities", "vec_a,vec_b", "--dim", "8", "--cache", cache]
    text = run_cli([*common, "--seeds", "3", "--ensemble", "--steps", "20", "--batch-size", "32",
                    "--out", str(tmp_path / "m")])
    assert "3 seeds 0..2" in text and "ensemble" in text and "val R@1" in text
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["method"] == "infonce" and cfg["modalities"]["vec_a"]["head"]["name"] == "ensemble"
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["fit"]["seeds"]["n"] == 3 and metrics["fit"]["seeds"]["kept"] == "ensemble"
    out = run_cli([*common, "--seeds", "2", "--method", "cca", "--out", str(tmp_path / "bad")], code=2)
    assert "--seeds" in out and "no seed to vary" in out and "Traceback" not in out
