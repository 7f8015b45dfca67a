"""benchmarks/alignment.py --quick on a tiny real emoji set: JSON structure, values, ratio summary, evaluate parity."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

CONCEPTS = 70  # × 2 styles: 14 held-out concepts, ~110 training pairs


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory):
    from modalign.data.recipes import DATASETS

    base = tmp_path_factory.mktemp("bench-align")
    DATASETS.create("emoji", styles=["noto", "openmoji"], include_variants=False).prepare(base / "data",
                                                                                        limit=CONCEPTS)
    out = base / "out.json"
    cache = base / "cache"
    args = ["--datasets", "emoji", "--data", f"emoji={base / 'data' / 'manifest.jsonl'}", "--quick", "--sizes",
            "50,all", "--cache", str(cache), "--json", str(out), "--markdown", str(base / "table.md"),
            "--plot", str(base / "curves.png"), "-q"]
    # a child process, as `make bench-align` runs it (its one-BLAS-thread setting precedes numpy's import)
    done = subprocess.run([sys.executable, str(BENCH / "alignment.py"), *args], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), base, cache


def test_json_structure_and_values(quick) -> None:
    import alignment

    result, base, _ = quick
    runs = result["runs"]
    methods = set(alignment.METHODS)
    assert {r["method"] for r in runs} == methods | {alignment.VAL_SELECT}
    assert {str(r["size"]) for r in runs} == {"50", "all"}
    assert {r["seed"] for r in runs} == {0, 1}
    for r in runs:
        assert set(r["directions"]) == {"image->text", "text->image"}
        for d in r["directions"].values():
            assert 0.0 <= d["R@1"] <= d["R@5"] <= 1.0
            assert d["queries"] > 0
    info = result["datasets"]["emoji"]
    assert info["test_groups"] == round(0.2 * CONCEPTS)
    # 50 pairs really are 50 pairs; "all" is the whole training pool
    assert {r["n_pairs"] for r in runs if r["size"] == 50} == {50}
    assert {r["n_pairs"] for r in runs if r["size"] == "all"} == {info["train_rows"]}
    # layer-auto picked from every cached layer; the others keep the last ones
    auto = [r["layers"] for r in runs if r["method"] == "+layer-auto"]
    assert all(set(lay) == {"image", "text"} for lay in auto)
    assert {r["layers"]["image"] for r in runs if r["method"] == "procrustes"} == {"head"}
    # alignment works at all: the best method beats chance (1 / 14 concepts) on the held-out concepts
    best = max(r["directions"]["text->image"]["R@1"] for r in runs)
    assert best > 3 / info["test_groups"]

    assert (base / "curves.png").stat().st_size > 10_000
    assert "| procrustes |" in (base / "table.md").read_text()


def test_every_method_clears_a_floor_above_chance(quick) -> None:
    """Held-out R@1 (mean of both directions and the two seeds) as a multiple of chance, 1/test_groups here:
    every method with every training pair >= 1.5x but plain CCA and val-select (below), the default fit (auto)
    >= 3x at 50 pairs and with all."""
    result, _, _ = quick
    chance = 1 / result["datasets"]["emoji"]["test_groups"]

    def mean_r1(method: str, size: object) -> float:
        rows = [r for r in result["runs"] if r["method"] == method and str(r["size"]) == str(size)]
        assert len(rows) == 2, (method, size)
        return float(np.mean([d["R@1"] for r in rows for d in r["directions"].values()]))

    # plain CCA (fixed reg 0.1) on ~100 pairs of 1280-d image features fits noise: with the installed emoji
    # data of 7 December 2026 it scored R@1 0.25 / 0.14 on one seed's split and 0.0 / 0.0 on the other, at
    # this commit and before it. Its values are tested on planted data instead (test_closed_form_values.py);
    # val-select may pick it. Auto's CV chooses the regularisation and is held to 3x below.
    for method in {r["method"] for r in result["runs"]} - {"cca", "val-select"}:
        assert mean_r1(method, "all") >= 1.5 * chance, (method, mean_r1(method, "all"), chance)
    for size in (50, "all"):
        assert mean_r1("auto", size) >= 3 * chance, (size, mean_r1("auto", size), chance)


def test_summary_and_ratios_come_from_the_rows(quick) -> None:
    result, _, _ = quick
    runs, summary, ratios = result["runs"], result["summary"]["emoji"], result["ratios"]["emoji"]
    for size in ("50", "all"):
        for method, cells in summary.items():
            vals = [r["directions"]["image->text"]["R@1"] for r in result["runs"]
                    if r["method"] == method and str(r["size"]) == size]
            assert cells[size]["image->text"]["mean"] == pytest.approx(np.mean(vals))
            assert cells[size]["image->text"]["std"] == pytest.approx(np.std(vals, ddof=1))
        entry = ratios[size]
        fitted = {m: c[size]["mean"]["mean"] for m, c in summary.items() if m not in ("val-select", "auto")}
        assert entry["best"]["method"] == max(fitted, key=fitted.get)
        best = entry["best"]["method"]
        for base in ("procrustes", "infonce-linear"):
            expect = fitted[best] / fitted[base]
            assert entry["best"]["ratio_to"][base]["mean"] == pytest.approx(expect)
            assert entry["best"]["ratio_to"][base]["meets_target"] == (expect >= {"procrustes": 1.5,
                                                                                   "infonce-linear": 1.2}[base])
        # val-select repeats the row of the method with the best validation R@1 (never a test score)
        for seed in (0, 1):
            rows = [r for r in runs if str(r["size"]) == size and r["seed"] == seed]
            sel = next(r for r in rows if r["method"] == "val-select")
            fitted_rows = [r for r in rows if r["method"] != "val-select"]
            assert sel["val_R@1"] == max(r["val_R@1"] for r in fitted_rows)
            assert sel["picked"] in {r["method"] for r in fitted_rows if r["val_R@1"] == sel["val_R@1"]}


def test_heldout_scores_equal_modalign_evaluate(quick) -> None:
    """The benchmark's held-out R@1 is the library's: same model through ``modalign.evaluate``."""
    import alignment

    from modalign.align.model import AlignedModel, Branch
    from modalign.align.trainer import TrainerSettings
    from modalign.data.dataset import PairedDataset
    from modalign.evaluation import evaluate
    from modalign.features import FeatureCache

    _, base, cache_root = quick
    cache = FeatureCache(cache_root)
    manifest = base / "data" / "manifest.jsonl"
    prep = alignment.prepare("emoji", manifest, None, cache)
    rows = alignment.draw_pairs(len(prep.train_groups), "all", 0, 5000)
    heads, _, chosen, _ = alignment.fit_one(prep, alignment.METHODS["infonce-linear"], rows, 0,
                                            TrainerSettings(epochs=5))
    ours = alignment.heldout_r1(prep, heads, chosen)
    ds = PairedDataset.from_manifest(manifest)
    _, test = ds.split(0.2, seed=0)
    model = AlignedModel(branches={m: Branch(m, ds.kind(m), alignment.IMAGE_TEXT[m], {}, chosen[m], heads[m])
                                   for m in ("image", "text")}, dim=256)
    theirs = evaluate(model, test, cache)["directions"]
    for d in ("image->text", "text->image"):
        assert ours[d]["R@1"] == pytest.approx(theirs[d]["R@1"], abs=1e-6)
        assert ours[d]["queries"] == theirs[d]["queries"]


def test_the_unpaired_items_are_the_rest_of_the_pool_with_their_pairing_hidden() -> None:
    import alignment

    n, rng = 12, np.random.default_rng(0)
    feats = {"image": {"head": rng.normal(size=(n, 3)).astype(np.float32)},
             "text": {"final": rng.normal(size=(n, 2)).astype(np.float32)}}
    prep = alignment.Prepared("toy", ["image", "text"], {"image": "head", "text": "final"}, feats,
                              {"image": np.ones(n, bool), "text": np.arange(n) != 7},
                              [f"g{i}" for i in range(n)], {"groups": ["held-1", "held-2"]}, {})
    rows = np.array([0, 3, 5])
    pairs = {m: {layer: x[rows] for layer, x in feats[m].items()} for m in feats}
    out, present, groups = alignment.with_unpaired_rows(prep, pairs, {m: prep.train_present[m][rows] for m in feats},
                                                        [f"g{i}" for i in rows], rows, seed=0)
    rest = [i for i in range(n) if i not in rows]
    assert len(groups) == 3 + 2 * len(rest)
    # the pairs first, as drawn; then every other row with its image only, then with its text only
    np.testing.assert_array_equal(out["image"]["head"][:3], feats["image"]["head"][rows])
    np.testing.assert_array_equal(out["image"]["head"][3:3 + len(rest)], feats["image"]["head"][rest])
    assert present["image"][:3 + len(rest)].all() and not present["image"][3 + len(rest):].any()
    assert not present["text"][3:3 + len(rest)].any() and not out["text"]["final"][3:3 + len(rest)].any()
    texts = out["text"]["final"][3 + len(rest):]
    order = [next(i for i in rest if np.array_equal(t, feats["text"]["final"][i])) for t in texts]
    assert sorted(order) == rest and order != rest  # every text once, shuffled: the pairing is hidden
    assert present["text"][3 + len(rest):].sum() == len(rest) - 1  # row 7 has no text
    assert not set(groups) & set(prep.test["groups"])
