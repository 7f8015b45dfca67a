"""Alignment learning curves: held-out R@1 (both directions) vs number of training pairs, per method.

    .venv/bin/python benchmarks/alignment.py [--datasets emoji,icons] [--sizes 250,500,1000,2000,all]
        [--methods procrustes,...] [--seeds 3] [--cache /work/cache] [--json out.json] [--markdown out.md]
        [--plot out.png] [--quick]

Per dataset: one concept-disjoint held-out split (20 % of the groups, fixed seed), every layer of
both encoders extracted ONCE through the feature cache (so ``layers=auto`` costs no encoding), then
for each training size × method × seed: draw that many training pairs (rows) from the training
groups, fit with ``fit_arrays`` on the cached features and score held-out R@1 both ways. A training
size counts every pair the method sees: its validation split (10 % of the drawn groups: early
stopping, closed-form knobs) is carved out of it, so hyper-parameters never see the held-out test
concepts. The seed changes the drawn pairs, the validation carve-out and the head initialisation.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# one BLAS thread: on a shared 2-core machine OpenBLAS's spinning threads made an SVD 18× slower (measured);
# set before numpy loads (run as a script); --threads sets torch's pool
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from alignment_report import auto_summary, markdown_report, plot_curves, ratio_summary, summarize

from modalign.align.fit import encode_column, fit_arrays
from modalign.align.trainer import TrainerSettings
from modalign.data.dataset import PairedDataset
from modalign.encoders import get_encoder
from modalign.evaluation.retrieval import first_positive_ranks, metrics_from_ranks
from modalign.features import FeatureCache, item_key

log = logging.getLogger("bench.alignment")

IMAGE_TEXT = {"image": "effnet-lite0", "text": "minilm"}  # effnet-lite0: fastest image encoder, aligns best on emoji
AUDIO_TEXT = {"audio": "whisper-base", "text": "minilm"}


@dataclass(frozen=True)
class BenchData:
    """A built-in dataset as benchmarked: how it is prepared, how much of it is kept, which pair is aligned."""

    recipe: str
    encoders: dict[str, str]  # the two aligned modalities, in order → encoder
    options: dict[str, Any] = field(default_factory=dict)  # recipe options
    limit: int | None = None  # concepts prepared (the recipe's --limit): encoding all of it is too slow here
    groups: int | None = None  # concepts kept of those prepared (None = all)


#: every built-in dataset with two or more modalities; "all" pairs is capped at MAX_PAIRS
DATASETS: dict[str, BenchData] = {
    "emoji": BenchData("emoji", IMAGE_TEXT, {"include_variants": False}),  # 1,849 concepts × 4 styles, base emoji
    "icons": BenchData("icons", IMAGE_TEXT, groups=2000),  # 2,000 of the 11,120 icon concepts
    # the 1,500 most frequent of the 6,412 kanji ↔ English meanings, one image each (a subset: the images
    # encode at ~1 img/s on the shared 2-core machine)
    "kanji": BenchData("kanji", IMAGE_TEXT, limit=1500),
    "speech": BenchData("speech", AUDIO_TEXT, limit=300),  # 300 concepts × 6 voices/speeds (whisper is slow)
    "instruments": BenchData("instruments", AUDIO_TEXT),  # 128 GM instruments × 10 clips
    # English (WEB) ↔ Spanish (RV1909), the first 1,500 verses (e5 encodes ~1 verse/s on the shared machine)
    "bible-en-es": BenchData("bible-en-es", {"text": "e5", "text_es": "e5"}, limit=1500),
    # a non-English text column, so it is not the emoji run again; 600 concepts × 4 styles
    "emoji-multilingual": BenchData("emoji-multilingual", {"image": "effnet-lite0", "text_de": "e5"},
                                    {"include_variants": False, "languages": ("de",)}, limit=600),
}


def builtin_manifest(name: str, data_dir: Path) -> Path:
    """The manifest of a built-in benchmark dataset, prepared (incrementally) by its recipe when needed."""
    from modalign.data.recipes import DATASETS as RECIPES

    spec = DATASETS[name]
    return RECIPES.create(spec.recipe, **spec.options).prepare(data_dir / name, limit=spec.limit).manifest


#: what a run benchmarks per dataset name: (manifest, concepts kept or None, modality → encoder)
Selected = tuple[str | Path, int | None, dict[str, str]]

#: benchmark name → fit_arrays arguments. "+structure" and "+layer-auto" add to InfoNCE-linear, cumulatively.
METHODS: dict[str, dict[str, Any]] = {
    "procrustes": {"method": "procrustes"},
    "cca": {"method": "cca"},
    "ridge": {"method": "ridge"},
    "infonce-linear": {"method": "infonce"},
    "infonce-mlp": {"method": "infonce", "head": "mlp", "head_options": {"hidden": 512}},
    "+structure": {"method": "infonce", "options": {"structure": 10}},
    "+layer-auto": {"method": "infonce", "options": {"structure": 10}, "layers": "auto"},
    "cwcl": {"method": "cwcl"},
    "siglip": {"method": "siglip"},
    "auto": {"method": "auto"},  # the default of `modalign fit`: CV over the candidates, then a refit
    # the default fit given the rest of the training pool as unpaired items (`fit --unpaired`): each row not drawn
    # as a pair appears twice, once with each modality, shuffled, so its pairing is hidden
    "auto+unpaired": {"method": "auto", "unpaired": True},
}
#: not fitted: per (size, seed), the fitted method with the best *validation* R@1 (model selection without test)
VAL_SELECT = "val-select"
SIZES: list[int | str] = [250, 500, 1000, 2000, "all"]
MAX_PAIRS = 5000  # "all" = every training pair, capped here (the target is about ≤ 5k pairs)


@dataclass
class Prepared:
    """Cached features of one dataset, split once into a training pool and held-out test rows."""

    name: str
    modalities: list[str]
    default_layers: dict[str, str]
    train_feats: dict[str, dict[str, np.ndarray]]  # m -> layer -> (n_train, D)
    train_present: dict[str, np.ndarray]
    train_groups: list[str]
    test: dict[str, Any]  # per modality: unique-item features per layer + row_to_item; "rows": evaluated rows
    info: dict[str, Any]


def keep_groups(ds: PairedDataset, max_groups: int | None, seed: int = 0) -> PairedDataset:
    """The first ``max_groups`` groups of a seeded permutation (a smaller cap keeps a subset of a larger one)."""
    if max_groups is None:
        return ds
    groups = list(dict.fromkeys(ds.groups))
    keep = {groups[i] for i in np.random.default_rng(seed).permutation(len(groups))[:max_groups]}
    return ds.subset([i for i, g in enumerate(ds.groups) if g in keep])


def _unique_items(ds: PairedDataset, m: str, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row → unique-item index (−1 = none) and one row per unique item, as ``evaluate`` de-duplicates."""
    row_to_item = np.full(len(ds), -1, dtype=np.int64)
    first: list[int] = []
    seen: dict[bytes, int] = {}
    for row in np.flatnonzero(mask):
        key = item_key(ds.columns[m][row])
        if key not in seen:
            seen[key] = len(first)
            first.append(int(row))
        row_to_item[row] = seen[key]
    return row_to_item, np.asarray(first, dtype=np.int64)


def prepare(name: str, manifest: str | Path, max_groups: int | None, cache: FeatureCache,
            test_fraction: float = 0.2, split_seed: int = 0, encoders: dict[str, str] | None = None) -> Prepared:
    encoders = encoders or IMAGE_TEXT
    t0 = time.perf_counter()
    ds = keep_groups(PairedDataset.from_manifest(manifest), max_groups)
    modalities = list(encoders)
    feats: dict[str, dict[str, np.ndarray]] = {}
    present: dict[str, np.ndarray] = {}
    default_layers: dict[str, str] = {}
    encoded = 0
    for m in modalities:
        enc = get_encoder(encoders[m])
        default_layers[m] = enc.default_layer
        before = _encoded_count(cache, enc)
        feats[m], present[m], _ = encode_column(ds, m, enc, cache, None)  # every layer, once
        encoded += _encoded_count(cache, enc) - before
    from modalign.data.dataset import split_indices

    train_idx, test_idx = (np.asarray(i, dtype=np.int64) for i in split_indices(ds.groups, test_fraction, split_seed))
    test_ds = ds.subset(test_idx)
    test_ok = np.all([present[m][test_idx] for m in modalities], axis=0)  # rows holding every modality
    test: dict[str, Any] = {"groups": [test_ds.groups[i] for i in np.flatnonzero(test_ok)]}
    for m in modalities:
        row_to_item, first = _unique_items(test_ds, m, test_ok)
        test[m] = {"row_to_item": row_to_item[test_ok],
                   "features": {layer: x[test_idx][first] for layer, x in feats[m].items()}}
    info = {"manifest": str(manifest), "rows": len(ds), "groups": len(set(ds.groups)),
            "train_rows": len(train_idx), "test_rows": int(test_ok.sum()),
            "test_groups": len(set(test["groups"])),
            "test_items": {m: len(next(iter(test[m]["features"].values()))) for m in modalities},
            "encoders": dict(encoders), "encoded_now": encoded, "load_s": time.perf_counter() - t0}
    return Prepared(name, modalities, default_layers,
                    {m: {layer: x[train_idx] for layer, x in feats[m].items()} for m in modalities},
                    {m: present[m][train_idx] for m in modalities}, [ds.groups[i] for i in train_idx], test, info)


def _encoded_count(cache: FeatureCache, enc: Any) -> int:
    return len(cache.store(enc.cache_id, enc.layer_dims))


def heldout_r1(prep: Prepared, heads: dict[str, Any], chosen: dict[str, str]) -> dict[str, dict[str, float]]:
    """R@1/R@5/MRR both directions on the held-out concepts (same relevance rule as ``modalign.evaluate``)."""
    a, b = prep.modalities
    emb = {}
    with torch.no_grad():
        for m in (a, b):
            x = torch.as_tensor(prep.test[m]["features"][chosen[m]])
            emb[m] = torch.nn.functional.normalize(heads[m].eval()(x), dim=1).numpy()
    ra, rb = prep.test[a]["row_to_item"], prep.test[b]["row_to_item"]
    rel = np.zeros((len(emb[a]), len(emb[b])), dtype=bool)
    rel[ra, rb] = True  # an item is relevant when the two share a row
    sim = emb[a] @ emb[b].T
    out = {}
    for q, t, s, r in ((a, b, sim, rel), (b, a, sim.T, rel.T)):
        metrics = metrics_from_ranks(first_positive_ranks(s, r), ks=(1, 5))
        out[f"{q}->{t}"] = {k: metrics[k] for k in ("R@1", "R@5", "MRR", "queries")}
    return out


def draw_pairs(n_pool: int, size: int | str, seed: int, cap: int) -> np.ndarray:
    n = min(n_pool, cap) if size == "all" else int(size)
    return np.sort(np.random.default_rng(1000 + seed).permutation(n_pool)[:n])


def fit_one(prep: Prepared, spec: dict[str, Any], rows: np.ndarray, seed: int,
            settings: TrainerSettings) -> tuple[dict[str, Any], dict[str, Any], dict[str, str], float]:
    auto = spec.get("layers") == "auto"
    feats = {m: {layer: x[rows] for layer, x in prep.train_feats[m].items()
                 if auto or layer == prep.default_layers[m]} for m in prep.modalities}
    present = {m: p[rows] for m, p in prep.train_present.items()}
    groups = [prep.train_groups[i] for i in rows]
    if spec.get("unpaired"):
        feats, present, groups = with_unpaired_rows(prep, feats, present, groups, rows, seed)
    t0 = time.perf_counter()
    fitted = fit_arrays(feats, present, groups, prep.modalities,
                        default_layers=prep.default_layers, method=spec["method"], head=spec.get("head", "linear"),
                        head_options=spec.get("head_options"), dim=256, layers=spec.get("layers", "last"),
                        val_fraction=0.1, settings=TrainerSettings(**{**vars(settings), "seed": seed}),
                        options=spec.get("options"))
    return fitted.heads, fitted.info, fitted.chosen, time.perf_counter() - t0


def with_unpaired_rows(prep: Prepared, feats: dict[str, dict[str, np.ndarray]], present: dict[str, np.ndarray],
                       groups: list[str], rows: np.ndarray, seed: int) -> tuple[dict, dict, list[str]]:
    """The drawn pairs followed by every other row of the training pool twice, once holding only the first
    modality and once only the second, the second copies shuffled: unpaired items whose pairing is hidden.
    Held-out rows are never in the pool (``prepare`` split them off), so none can be an unpaired item."""
    rest = np.setdiff1d(np.arange(len(prep.train_groups)), rows)
    shuffled = rest[np.random.default_rng(2000 + seed).permutation(len(rest))]
    a, b = prep.modalities
    assert not {prep.train_groups[i] for i in rest} & set(prep.test["groups"]), "a held-out group is in the pool"
    out_feats: dict[str, dict[str, np.ndarray]] = {}
    out_present: dict[str, np.ndarray] = {}
    for m, own in ((a, rest), (b, shuffled)):
        nothing = np.zeros(len(rest), bool)
        mine = prep.train_present[m][own]
        out_present[m] = np.concatenate([present[m], mine, nothing] if m == a else [present[m], nothing, mine])
        out_feats[m] = {}
        for layer, x in feats[m].items():
            zeros, items = np.zeros((len(rest), x.shape[1]), x.dtype), prep.train_feats[m][layer][own]
            out_feats[m][layer] = np.concatenate([x, items, zeros] if m == a else [x, zeros, items])
    # the items keep their concept's group, as a user's corpus would: auto's CV then leaves the unpaired items
    # of the concepts a fold scores out of that fold's training
    out_groups = groups + [prep.train_groups[i] for i in rest] + [prep.train_groups[i] for i in shuffled]
    return out_feats, out_present, out_groups


def run(datasets: dict[str, Selected], methods: Sequence[str], sizes: Sequence[int | str],
        seeds: Sequence[int], cache: FeatureCache, settings: TrainerSettings, cap: int = MAX_PAIRS,
        progress: bool = False, checkpoint: Path | None = None) -> dict[str, Any]:
    rows_out: list[dict[str, Any]] = []
    infos: dict[str, Any] = {}
    t_start = time.perf_counter()
    def partial() -> dict[str, Any]:
        return {"config": {"methods": list(methods), "sizes": list(sizes), "seeds": list(seeds), "max_pairs": cap,
                           "settings": vars(settings),
                           "method_specs": {m: METHODS[m] for m in methods}},
                "datasets": infos, "runs": rows_out, "wall_s": time.perf_counter() - t_start}

    for name, (manifest, max_groups, encoders) in datasets.items():
        prep = prepare(name, manifest, max_groups, cache, encoders=encoders)
        infos[name] = prep.info
        n_pool = len(prep.train_groups)
        t_fit = time.perf_counter()
        for size in sizes:
            if size != "all" and int(size) > n_pool:
                log.warning("%s: %s pairs asked, only %d in the training pool: size skipped", name, size, n_pool)
                continue
            for seed in seeds:
                pair_rows = draw_pairs(n_pool, size, seed, cap)
                for method in methods:
                    heads, info, chosen, secs = fit_one(prep, METHODS[method], pair_rows, seed, settings)
                    row = {"dataset": name, "method": method, "size": size, "n_pairs": len(pair_rows),
                           "seed": seed, "val_R@1": info.get("val_R@1"), "layers": chosen, "fit_s": secs,
                           "epochs": info.get("epochs_run"), "params": info.get("params"),
                           "picked": (info.get("auto") or {}).get("picked"),
                           "unpaired": info.get("unpaired"),
                           "directions": heldout_r1(prep, heads, chosen)}
                    rows_out.append(row)
                    if progress:
                        d = row["directions"]
                        print(f"{name:6s} {size!s:>5} s{seed} {method:15s} "
                              + " ".join(f"{k} {v['R@1']:.3f}" for k, v in d.items())
                              + f" val {row['val_R@1'] or float('nan'):.3f} ep {row['epochs']} {secs:5.1f}s",
                              flush=True)
                rows_out.extend(_val_select(rows_out, name, size, seed, methods))
                if checkpoint is not None:  # a partial result survives an interrupted run
                    checkpoint.write_text(json.dumps(finish(partial()), indent=1, default=float))
        infos[name]["fit_eval_s"] = time.perf_counter() - t_fit

    return finish(partial())


def finish(result: dict[str, Any]) -> dict[str, Any]:
    result["summary"] = summarize(result["runs"])
    result["ratios"] = ratio_summary(result["summary"])
    result["auto"] = auto_summary(result["summary"])
    return result


def merge(paths: Sequence[Path]) -> dict[str, Any]:
    """One result from several partial runs (e.g. one process per dataset × seed, run side by side)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    out = {"config": parts[0]["config"], "datasets": {}, "runs": [], "parts": []}
    for part in parts:
        for name, info in part["datasets"].items():
            out["datasets"].setdefault(name, info)
        out["runs"].extend(part["runs"])
        out["parts"].append({"datasets": list(part["datasets"]), "seeds": part["config"]["seeds"],
                             "wall_s": part["wall_s"],
                             "fit_eval_s": {n: i.get("fit_eval_s") for n, i in part["datasets"].items()}})
    out["config"]["seeds"] = sorted({r["seed"] for r in out["runs"]})
    out["wall_s"] = max(p["wall_s"] for p in parts)
    out["cpu_s_fits"] = sum(r["fit_s"] for r in out["runs"] if r["method"] != VAL_SELECT)
    return finish(out)


def _val_select(rows: list[dict[str, Any]], name: str, size: int | str, seed: int,
                methods: Sequence[str]) -> list[dict[str, Any]]:
    cands = [r for r in rows if r["dataset"] == name and r["size"] == size and r["seed"] == seed
             and r["method"] in methods and not r["method"].startswith("auto") and r["val_R@1"] is not None]
    if len(cands) < 2:
        return []
    best = max(cands, key=lambda r: r["val_R@1"])
    return [{**best, "method": VAL_SELECT, "picked": best["method"], "fit_s": sum(r["fit_s"] for r in cands)}]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default=",".join(DATASETS), help="names from DATASETS (or given with --data)")
    p.add_argument("--data", action="append", default=[], metavar="NAME=MANIFEST[:GROUPS]",
                   help="use this manifest for NAME (optionally keep only GROUPS concepts)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--sizes", help=f"training sizes (default {','.join(map(str, SIZES))}; --quick: 100,all)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--only-seeds", help="run just these seeds (e.g. 0 or 1,2), to split a run over processes")
    p.add_argument("--merge", type=Path, nargs="+", help="combine the --json files of partial runs; fit nothing")
    p.add_argument("--max-pairs", type=int, default=MAX_PAIRS)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--patience", type=int, default=6)
    p.add_argument("--cache", default=None, help="feature cache (default: modalign's user cache)")
    p.add_argument("--data-dir", type=Path, default=Path("data/bench"),
                   help="where built-in datasets are prepared (re-runs reuse them)")
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    p.add_argument("--plot", type=Path)
    p.add_argument("--quick", action="store_true", help="smoke test: sizes 100,all, 2 seeds, 15 epochs")
    p.add_argument("--threads", type=int, default=1, help="torch threads (BLAS: OPENBLAS_NUM_THREADS)")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    datasets: dict[str, Selected] = {}
    overrides = dict(d.split("=", 1) for d in args.data)
    for name in [] if args.merge else args.datasets.split(","):  # a merge fits (and prepares) nothing
        if name in overrides:
            path, _, groups = overrides[name].partition(":")
            encoders = DATASETS[name].encoders if name in DATASETS else IMAGE_TEXT
            datasets[name] = (path, int(groups) if groups else None, encoders)
        elif name in DATASETS:
            datasets[name] = (builtin_manifest(name, args.data_dir), DATASETS[name].groups, DATASETS[name].encoders)
        else:
            p.error(f"unknown dataset {name!r}: pass --data {name}=MANIFEST")
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method(s) {unknown}; known: {list(METHODS)}")
    seeds, epochs, patience = args.seeds, args.epochs, args.patience
    if args.quick:  # smoke test
        seeds, epochs, patience = 2, 15, 5
    default_sizes = "100,all" if args.quick else ",".join(map(str, SIZES))
    sizes: list[int | str] = [s if s == "all" else int(s) for s in (args.sizes or default_sizes).split(",")]
    torch.set_num_threads(args.threads)
    settings = TrainerSettings(epochs=epochs, patience=patience)
    seed_list = [int(s) for s in args.only_seeds.split(",")] if args.only_seeds else list(range(seeds))
    if args.merge:
        result = merge(args.merge)
    else:
        result = run(datasets, methods, sizes, seed_list, FeatureCache(args.cache), settings, args.max_pairs,
                     progress=not args.quiet, checkpoint=args.json)
    md = markdown_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))
    if args.markdown:
        args.markdown.write_text(md)
    if args.plot:
        plot_curves(result, args.plot)
    if not args.quiet:
        print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
