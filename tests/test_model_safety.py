"""Models load without executing code: JSON validated by pydantic, weights from safetensors only."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from helpers.tampered import CASES, tamper
from modalign import PairedDataset, fit, load
from modalign.align import TrainerSettings
from modalign.errors import ConfigError
from modalign.features import FeatureCache


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 12))
    rows = [{"id": str(i), "vec_a": x[i].tolist(), "vec_b": (x[i] @ np.eye(12)[::-1]).tolist()} for i in range(80)]
    ds = PairedDataset.from_rows(rows, root=".")
    root = tmp_path_factory.mktemp("model")
    model = fit(ds, ["vec_a", "vec_b"], dim=8, cache=FeatureCache(root / "cache"), settings=TrainerSettings(epochs=3))
    return model.save(root / "m")


class _Boom:
    def __reduce__(self):  # the classic pickle code-execution payload
        return (Path("/tmp/modalign-pwned").touch, ())


def test_pickle_payload_in_model_dir_is_refused(model_dir: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    (bad / "heads.pt").write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(ConfigError, match="never load pickled"):
        load(bad)
    assert not Path("/tmp/modalign-pwned").exists()


def test_pickle_disguised_as_safetensors_is_rejected(model_dir: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    (bad / "heads.safetensors").write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(ConfigError, match=r"heads\.safetensors"):
        load(bad)  # refused (too small for its heads, or not safetensors): one ConfigError naming it, nothing run
    assert not Path("/tmp/modalign-pwned").exists()


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c.update(dim=-3), "dim"),
    (lambda c: c["modalities"]["vec_a"].update(kind="smell"), "kind"),
    (lambda c: c.update(format="something.else"), "format"),
    (lambda c: c.update(unexpected=1), "unexpected"),
])
def test_invalid_config_names_the_field(model_dir: Path, tmp_path: Path, edit, message: str) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    edit(cfg)
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=message):
        load(bad)


def test_roundtrip(model_dir: Path, tmp_path: Path) -> None:
    """A saved model loads back the same: config, metrics and bit-identical embeddings, saved again as well."""
    model = load(model_dir)
    assert model.modalities == ["vec_a", "vec_b"] and model.dim == 8
    again = load(model.save(tmp_path / "again"))
    assert again.config() == model.config() and again.metrics == model.metrics
    x = np.random.default_rng(1).normal(size=(7, 12)).astype("float32")
    for m in model.modalities:
        np.testing.assert_array_equal(again.embed_features(m, x), model.embed_features(m, x))


def _small_model(tmp_path):
    from modalign.align.fit import fit_arrays
    from modalign.align.model import AlignedModel, Branch

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 6)).astype("float32"), rng.normal(size=(40, 5)).astype("float32")
    fitted = fit_arrays({"a": {"x": a}, "b": {"x": b}}, {"a": np.ones(40, bool), "b": np.ones(40, bool)},
                        [str(i) for i in range(40)], ["a", "b"], default_layers={"a": "x", "b": "x"},
                        method="procrustes", dim=4, val_fraction=0.0)
    model = AlignedModel(branches={m: Branch(m, "vector", "vectors", {"dim": x.shape[1]}, "x", fitted.heads[m])
                                   for m, x in (("a", a), ("b", b))}, dim=4, method="procrustes")
    return model.save(tmp_path / "model")


@pytest.mark.parametrize("case", CASES)
def test_a_tampered_model_folder_is_one_clean_error(case, tmp_path):
    from modalign.align.model import AlignedModel

    folder = _small_model(tmp_path)
    expect = tamper(folder, case, "a")
    with pytest.raises(ConfigError) as info:
        AlignedModel.load(folder)
    assert expect in str(info.value) and "\n" not in str(info.value), str(info.value)
