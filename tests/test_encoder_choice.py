"""``encoders={M: "auto"}``: the candidate set auto's CV scores best on a sample of whole groups is the one it
also scores best on every row; only the winner encodes every row; the choice is saved like any encoder."""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers.cli import run_cli
from helpers.recipes import ready_recipe
from modalign.align import fit
from modalign.align.encoder_choice import (
    CANDIDATES_FOR_KIND,
    EncoderSelection,
    EncoderTrial,
    auto_modalities,
    candidate_sets,
    choose_encoders,
    encode_sample,
    label_of,
    sample_rows,
)
from modalign.align.fit import fit_arrays
from modalign.data.dataset import PairedDataset
from modalign.encoders.base import Encoder
from modalign.encoders.combined import CombinedEncoder
from modalign.features import FeatureCache, extract

CONCEPTS, PER_CONCEPT, LATENT, WIDTH = 150, 2, 8, 24


class LatentText(Encoder):
    """Reads "c17/a1" and returns concept 17's latent vector through a fixed mixing, plus item noise of
    ``noise`` (seeded by the text): a lower noise is a better encoder of the same concepts."""

    name = "latent-text"
    kind = "text"
    batch_size = 64

    def __init__(self, noise: float, mixing_seed: int = 0) -> None:
        self.noise = noise
        self.mixing_seed = mixing_seed
        self.items_seen = 0

    def config(self) -> dict[str, Any]:
        return {"noise": self.noise, "mixing_seed": self.mixing_seed}

    @property
    def dim(self) -> int:
        return WIDTH

    @property
    def layers(self) -> tuple[str, ...]:
        return ("out",)

    def _encode_batch(self, items: Sequence[Any], layers: Sequence[str]) -> dict[str, np.ndarray]:
        self.items_seen += len(items)
        latent = np.random.default_rng(99).normal(size=(CONCEPTS, LATENT))
        mixing = np.random.default_rng(self.mixing_seed).normal(size=(LATENT, WIDTH))
        rows = []
        for text in items:
            concept = int(text.split("/")[0][1:])
            noise = np.random.default_rng(zlib.crc32(f"{text}|{self.mixing_seed}".encode())).normal(size=WIDTH)
            rows.append(latent[concept] @ mixing + self.noise * noise)
        return {"out": np.asarray(rows, np.float32)}


def latent_dataset() -> PairedDataset:
    ids, groups, a, b = [], [], [], []
    for c in range(CONCEPTS):
        for k in range(PER_CONCEPT):
            ids.append(f"r{c}-{k}")
            groups.append(f"c{c}")
            a.append(f"c{c}/a{k}")
            b.append(f"c{c}/b{k}")
    return PairedDataset(ids=ids, groups=groups, columns={"a": a, "b": b}, kinds={"a": "text", "b": "text"})


def _cv_on_rows(ds: PairedDataset, encoder_a: Encoder, encoder_b: Encoder, cache: FeatureCache) -> float:
    feats, present = {}, {}
    for m, enc in (("a", encoder_a), ("b", encoder_b)):
        res = extract(enc, ds.items(m), cache, layers=["out"])
        feats[m], present[m] = {"out": res.features["out"]}, res.ok
    info = fit_arrays(feats, present, ds.groups, ["a", "b"], default_layers={"a": "out", "b": "out"},
                      method="auto", dim=16, val_fraction=0.0).info
    return float(info["auto"]["cv_R@1"])


def test_the_choice_on_a_sample_is_the_choice_on_every_row(tmp_path: Path) -> None:
    ds = latent_dataset()
    cache = FeatureCache(tmp_path / "cache")
    candidates = [LatentText(7.0), LatentText(3.0), LatentText(4.5)]
    partner = LatentText(3.0, mixing_seed=1)
    full = {label_of(c): _cv_on_rows(ds, c, partner, cache) for c in candidates}
    assert len(set(full.values())) == 3  # the case separates them ...
    assert max(full.values()) < 0.95  # ... and is not trivial
    fresh = [LatentText(c.noise) for c in candidates]

    def fit_sample(feats: Any, present: Any, groups: list[str], layers: dict[str, str]) -> dict[str, Any]:
        return fit_arrays(feats, present, groups, ["a", "b"], default_layers=layers, method="auto", dim=16,
                          val_fraction=0.0).info

    encoders, selection = choose_encoders(
        ds, ["a", "b"], {"a": ("auto", {"candidates": fresh, "sample_rows": 100}), "b": partner},
        FeatureCache(tmp_path / "cache2"), fit_sample, seed=0)
    assert selection is not None
    assert selection.chosen["a"] == max(full, key=full.__getitem__) == "latent-text(mixing_seed=0, noise=3.0)"
    assert encoders["a"] is fresh[1] and encoders["b"] is partner
    assert selection.sample_rows == 100 and selection.sample_groups == 50
    assert all(c.items_seen == 100 for c in fresh)  # each candidate encoded the sample, nothing more
    scored = {t.encoder: t.cv_r1 for t in selection.trials}
    assert set(scored) == set(full) and all(t.seconds_per_item is not None for t in selection.trials)
    assert selection.remaining_rows == {"a": CONCEPTS * PER_CONCEPT - 100}


def test_fit_encodes_every_row_only_with_the_winner_and_saves_it(tmp_path: Path) -> None:
    ds = latent_dataset()
    candidates = [LatentText(2.5), LatentText(0.9)]
    model = fit(ds, ["a", "b"], encoders={"a": ("auto", {"candidates": candidates, "sample_rows": 60}),
                                          "b": LatentText(0.9, mixing_seed=1)},
                cache=FeatureCache(tmp_path / "cache"), dim=16)
    assert model.branches["a"].encoder == "latent-text"
    assert model.branches["a"].encoder_config == {"noise": 0.9, "mixing_seed": 0}
    assert candidates[0].items_seen == 60 and candidates[1].items_seen == len(ds)
    choice = model.metrics["encoders"]
    assert choice["chosen"] == {"a": "latent-text(mixing_seed=0, noise=0.9)"}
    assert [t["encoder"] for t in choice["trials"]] == [label_of(c) for c in candidates]
    assert choice["estimated_encode_seconds"]["a"] is not None


def test_sample_rows_take_whole_groups_in_a_seeded_order() -> None:
    groups = [f"g{i // 3}" for i in range(30)]  # 10 groups of 3 rows
    rows = sample_rows(groups, 7, seed=1)
    assert len(rows) == 9 and list(rows) == sorted(rows)  # whole groups: 3 of them
    taken = {groups[r] for r in rows}
    assert all(sum(groups[r] == g for r in rows) == 3 for g in taken)
    assert list(sample_rows(groups, 7, seed=1)) == list(rows)
    assert any(list(sample_rows(groups, 7, seed=s)) != list(rows) for s in range(2, 6))
    assert len(sample_rows(groups, 100, seed=0)) == 30


def test_auto_options_are_checked_by_name() -> None:
    assert auto_modalities({"image": "auto", "text": "minilm", "x": ("auto", {"sample_rows": 50})}) == ["image", "x"]
    assert candidate_sets("image", {}) == list(CANDIDATES_FOR_KIND["image"])
    assert candidate_sets("image", {"candidates": ["effnet-lite2", " dinov2-s", "effnet-lite2"]}) == \
        ["effnet-lite2", "dinov2-s"]
    assert candidate_sets("text", {"candidates": "e5"}) == ["e5"]
    with pytest.raises(ValueError, match="not runtime"):
        candidate_sets("image", {"runtime": "onnx"})
    with pytest.raises(ValueError, match="no candidates for vector"):
        candidate_sets("vector", {})
    with pytest.raises(ValueError, match="list of encoder specs"):
        candidate_sets("image", {"candidates": []})
    with pytest.raises(ValueError, match="cannot itself be auto"):
        candidate_sets("image", {"candidates": ["auto"]})


def test_a_failing_candidate_is_recorded_and_the_others_still_compete(tmp_path: Path) -> None:
    ds = latent_dataset()

    def fit_sample(feats: Any, present: Any, groups: list[str], layers: dict[str, str]) -> dict[str, Any]:
        return fit_arrays(feats, present, groups, ["a", "b"], default_layers=layers, method="auto", dim=16,
                          val_fraction=0.0).info

    good = LatentText(0.9)
    encoders, selection = choose_encoders(
        ds, ["a", "b"], {"a": ("auto", {"candidates": ["hf:/nonexistent/model", good], "sample_rows": 60}),
                         "b": LatentText(0.9, mixing_seed=1)}, None, fit_sample)
    assert encoders["a"] is good and selection is not None
    failed = selection.trials[0]
    assert failed.cv_r1 is None and "nonexistent" in (failed.error or "")
    with pytest.raises(ValueError, match="no candidate for 'a' could be scored"):
        choose_encoders(ds, ["a", "b"], {"a": ("auto", {"candidates": ["hf:/nonexistent/model"]}),
                                         "b": LatentText(0.9)}, None, fit_sample)


def test_selection_json_rounds_and_estimates_the_rest() -> None:
    trials = [EncoderTrial("image", "x", 0.51234, 0.01, "cca", 2.0, 0.02), EncoderTrial("image", "y", 0.3, 0.02)]
    sel = EncoderSelection({"image": "x"}, trials, 100, 40, 5.0, {"image": 900})
    doc = sel.to_json()
    assert doc["estimated_encode_seconds"] == {"image": 18.0}
    assert doc["trials"][0]["cv_r1"] == 0.5123 and doc["chosen"] == {"image": "x"}
    cached = EncoderSelection({"image": "y"}, trials, 100, 40, 5.0, {"image": 900})
    assert cached.to_json()["estimated_encode_seconds"] == {"image": None}


@pytest.fixture(scope="module")
def emoji_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    recipe = ready_recipe("emoji", styles=["noto", "openmoji"], include_variants=False)
    return recipe.prepare(tmp_path_factory.mktemp("encoder-auto-emoji"), limit=60).manifest


def test_fit_cli_chooses_the_image_encoder_on_real_emoji_and_says_what_it_cost(emoji_manifest: Path,
                                                                              tmp_path: Path) -> None:
    out = tmp_path / "model"
    text = run_cli(["fit", "--data", str(emoji_manifest), "--modalities", "image,text", "--encoders", "image=auto",
                    "--encoder-option", 'image.candidates=["effnet-lite0","effnet-lite2"]',
                    "--encoder-option", "image.sample_rows=60", "--holdout", "0.25", "--dim", "32",
                    "--cache", str(tmp_path / "cache"), "--out", str(out)])
    metrics = json.loads((out / "metrics.json").read_text())
    choice = metrics["encoders"]
    trials = {t["encoder"]: t for t in choice["trials"]}
    assert set(trials) == {"effnet-lite0", "effnet-lite2"}
    assert all(t["cv_r1"] is not None and t["cv_r1"] > 0 and t["encode_seconds"] > 0 for t in trials.values())
    best = max(trials.values(), key=lambda t: (t["cv_r1"], -t["cv_std"]))["encoder"]
    assert choice["chosen"] == {"image": best}
    assert choice["sample_rows"] >= 60 and choice["estimated_encode_seconds"]["image"] is not None
    assert "image encoder" in text and f"auto picked {best}" in text and "encoding the sample took" in text
    config = json.loads((out / "config.json").read_text())
    assert config["modalities"]["image"]["encoder"]["name"] == best  # saved like any chosen encoder
    # the saved model encodes with the winner: eval runs on it like on any model
    run_cli(["eval", "--model", str(out), "--data", str(emoji_manifest), "--cache", str(tmp_path / "cache"),
             "--json", str(tmp_path / "eval.json")])
    held_out = json.loads((tmp_path / "eval.json").read_text())
    assert held_out["split"] == "test" and held_out["directions"]["image->text"]["R@1"] > 0


def test_fit_cli_refuses_a_layer_name_for_an_auto_encoder_in_one_line(emoji_manifest: Path, tmp_path: Path) -> None:
    text = run_cli(["fit", "--data", str(emoji_manifest), "--modalities", "image,text", "--encoders", "image=auto",
                    "--layers", "image=head", "--out", str(tmp_path / "m")], code=2)
    assert "a layer name belongs to one encoder" in text and "Traceback" not in text
    text = run_cli(["fit", "--data", str(emoji_manifest), "--modalities", "image,text", "--encoders", "image=auto",
                    "--runtime", "image=onnx", "--out", str(tmp_path / "m")], code=2)
    assert "encoder auto takes the options" in text and "Traceback" not in text


def test_a_combined_candidate_is_assembled_from_its_parts_cache_exactly(tmp_path: Path) -> None:
    ds = latent_dataset().subset(list(range(40)))
    cache = FeatureCache(tmp_path / "cache")
    first, second = LatentText(1.0), LatentText(2.0, mixing_seed=5)
    for part in (first, second):
        encode_sample(ds, "a", part, cache)
    seen = (first.items_seen, second.items_seen)
    combined = CombinedEncoder([first, second])
    feats, present, encoded = encode_sample(ds, "a", combined, cache)
    assert encoded == 0 and (first.items_seen, second.items_seen) == seen  # no second pass over the parts
    direct = extract(CombinedEncoder([LatentText(1.0), LatentText(2.0, mixing_seed=5)]), ds.items("a"), None,
                     layers=["concat"])
    assert present.all()
    np.testing.assert_array_equal(feats["concat"], direct.features["concat"])
