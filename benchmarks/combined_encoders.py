"""Several encoders (or layers) per modality: held-out R@1 of image encoders alone and combined.

    .venv/bin/python benchmarks/combined_encoders.py [--datasets emoji,icons] [--groups emoji=1000]
        [--methods auto,procrustes] [--variants NAME,...] [--cache /tmp/exp/cache] [--data-dir data/bench]
        [--json benchmarks/combined-encoders-results.json] [--markdown benchmarks/combined-encoders-results.md]

Per dataset: the concept-disjoint held-out split of benchmarks/alignment.py (20 % of the groups, seed 0),
text always MiniLM (``minilm``, the default), the image side one of VARIANTS. Every part's layers come
from the feature cache (each base encoder extracted once), and a combined variant is assembled exactly
as ``CombinedEncoder`` does (each part L2-normalised per row, then concatenated: tests/test_combined_layers.py
checks that this is exactly its output), so ``--encoders image=effnet-lite0+dinov2-s`` costs no second
encoding here. One extra variant, not a library feature, centres each part on its *training*
mean before the L2 step, to see whether data-based per-part centring would matter. Fits use
``fit_arrays`` with the settings of a default ``modalign fit`` (``--method auto``: 3-fold group CV,
90 s budget, step schedule; or ``--method procrustes``) on every training row; seed 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# one BLAS thread on the shared 2-core machine (see benchmarks/alignment.py); set before numpy loads
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from alignment import Prepared, _unique_items, builtin_manifest, fit_one, heldout_r1, keep_groups

from modalign.align.fit import encode_column
from modalign.align.trainer import TrainerSettings
from modalign.data.dataset import PairedDataset, split_indices
from modalign.encoders import get_encoder
from modalign.encoders.combined import unit_rows
from modalign.features import FeatureCache

TEXT = ("minilm", "layer6")
#: groups kept per dataset, as benchmarks/alignment.py keeps them (None = all)
GROUPS: dict[str, int | None] = {"emoji": None, "icons": 2000}
#: variant → (parts as (encoder, layer), the `modalign fit` flags that give it, centre parts on train mean)
VARIANTS: dict[str, tuple[list[tuple[str, str]], str, bool]] = {
    "effnet-lite0": ([("effnet-lite0", "head")], "--encoders image=effnet-lite0", False),
    "dinov2-s": ([("dinov2-s", "final")], "--encoders image=dinov2-s", False),
    "dinov2-s[block8]": ([("dinov2-s", "block8")], "--encoders image=dinov2-s --layers image=block8", False),
    "effnet-lite0[head+stage7]": ([("effnet-lite0", "head"), ("effnet-lite0", "stage7")],
                                  "--encoders image=effnet-lite0 --layers image=head+stage7", False),
    "effnet-lite0+dinov2-s": ([("effnet-lite0", "head"), ("dinov2-s", "final")],
                              "--encoders image=effnet-lite0+dinov2-s", False),
    "effnet-lite0+dinov2-s[head+block8]": ([("effnet-lite0", "head"), ("dinov2-s", "block8")],
                                           "--encoders image=effnet-lite0+dinov2-s --layers image=head+block8", False),
    "effnet-lite0+dinov2-s (parts centred)": ([("effnet-lite0", "head"), ("dinov2-s", "final")],
                                             "(not a CLI option: each part centred on its training mean, then L2)",
                                             True),
}
METHODS = {"auto": {"method": "auto", "options": {"candidates": "all", "cv_folds": 3}},
           "procrustes": {"method": "procrustes"}}


def load_parts(ds: PairedDataset, cache: FeatureCache, parts: set[tuple[str, str]]) -> tuple[dict[Any, Any], Any]:
    """{(encoder, layer): all-rows matrix} for the image parts, plus the rows every image part has."""
    feats: dict[tuple[str, str], np.ndarray] = {}
    ok = ds.present("image").copy()
    for name in sorted({e for e, _ in parts}):
        layers = sorted({layer for e, layer in parts if e == name})
        got, present, _ = encode_column(ds, "image", get_encoder(name), cache, layers)
        ok &= present
        feats.update({(name, layer): np.asarray(got[layer]) for layer in layers})
    return feats, ok


def variant_features(parts: list[tuple[str, str]], centre: bool, feats: dict[Any, np.ndarray],
                     train_idx: np.ndarray) -> np.ndarray:
    if len(parts) == 1:
        return feats[parts[0]]  # one encoder, one layer: the raw features, as `modalign fit` gets them
    chunks = []
    for part in parts:
        x = feats[part]
        if centre:
            x = x - x[train_idx].mean(0)
        chunks.append(unit_rows(x))
    return np.concatenate(chunks, axis=1)


def prepared(name: str, image: np.ndarray, text: np.ndarray, ok: np.ndarray, ds: PairedDataset,
             train_idx: np.ndarray, test_idx: np.ndarray) -> Prepared:
    feats = {"image": image, "text": text}
    test_ds = ds.subset(test_idx)
    test_ok = ok[test_idx]
    test: dict[str, Any] = {"groups": [test_ds.groups[i] for i in np.flatnonzero(test_ok)]}
    for m, x in feats.items():
        row_to_item, first = _unique_items(test_ds, m, test_ok)
        test[m] = {"row_to_item": row_to_item[test_ok], "features": {"feat": x[test_idx][first]}}
    train = train_idx[ok[train_idx]]
    info = {"rows": len(ds), "groups": len(set(ds.groups)), "train_rows": len(train), "test_rows": int(test_ok.sum()),
            "image_dim": int(image.shape[1])}
    return Prepared(name, ["image", "text"], {"image": "feat", "text": "feat"},
                    {m: {"feat": x[train]} for m, x in feats.items()},
                    {m: np.ones(len(train), dtype=bool) for m in feats}, [ds.groups[i] for i in train], test, info)


def run(datasets: dict[str, tuple[Path, int | None]], variants: Sequence[str], methods: Sequence[str],
        cache: FeatureCache, log: bool = True) -> dict[str, Any]:
    settings = TrainerSettings(steps="auto")  # what `modalign fit` trains with by default
    rows: list[dict[str, Any]] = []
    infos: dict[str, Any] = {}
    t_start = time.perf_counter()
    for name, (manifest, max_groups) in datasets.items():
        ds = keep_groups(PairedDataset.from_manifest(manifest), max_groups)
        wanted = {p for v in variants for p in VARIANTS[v][0]}
        t0 = time.perf_counter()
        feats, ok = load_parts(ds, cache, wanted)
        tfeat, tok, _ = encode_column(ds, "text", get_encoder(TEXT[0]), cache, [TEXT[1]])
        ok &= tok
        train_idx, test_idx = (np.asarray(i, dtype=np.int64) for i in split_indices(ds.groups, 0.2, 0))
        infos[name] = {"manifest": str(manifest), "max_groups": max_groups, "load_s": time.perf_counter() - t0}
        for variant in variants:
            parts, flags, centre = VARIANTS[variant]
            prep = prepared(name, variant_features(parts, centre, feats, train_idx), np.asarray(tfeat[TEXT[1]]),
                            ok, ds, train_idx, test_idx)
            infos[name].update({k: v for k, v in prep.info.items() if k != "image_dim"})
            for method in methods:
                all_rows = np.arange(len(prep.train_groups))
                heads, info, chosen, secs = fit_one(prep, METHODS[method], all_rows, 0, settings)
                d = heldout_r1(prep, heads, chosen)
                row = {"dataset": name, "variant": variant, "flags": flags, "method": method,
                       "image_dim": prep.info["image_dim"], "picked": (info.get("auto") or {}).get("picked"),
                       "fit_s": secs, "text->image R@1": d["text->image"]["R@1"],
                       "image->text R@1": d["image->text"]["R@1"], "directions": d}
                rows.append(row)
                if log:
                    print(f"{name:6s} {variant:38s} {method:10s} t->i {row['text->image R@1']:.3f} "
                          f"i->t {row['image->text R@1']:.3f} {secs:5.0f}s {row['picked'] or ''}", flush=True)
    return {"config": {"text": list(TEXT), "variants": {v: VARIANTS[v][1] for v in variants},
                       "methods": {m: METHODS[m] for m in methods}, "seed": 0, "test_fraction": 0.2},
            "datasets": infos, "runs": rows, "wall_s": time.perf_counter() - t_start}


def merge(paths: Sequence[Path]) -> dict[str, Any]:
    """One result from runs of separate processes (e.g. one per dataset, run side by side)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    out = {"config": parts[0]["config"], "datasets": {}, "runs": [], "wall_s": {}}
    for part in parts:
        out["datasets"].update(part["datasets"])
        out["runs"].extend(part["runs"])
        out["wall_s"][",".join(part["datasets"])] = part["wall_s"]
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = ["Held-out R@1 (text→image / image→text), text = minilm, one seed (0); "
             "`auto` = the default `modalign fit`.", ""]
    methods = list(result["config"]["methods"])
    for name, info in result["datasets"].items():
        lines += [f"**{name}**: {info['train_rows']} training rows, {info['test_rows']} held-out rows "
                  f"({info['groups']} groups)", "",
                  "| image encoder | dim | " + " | ".join(f"{m} t→i | {m} i→t" for m in methods) + " | auto picked |",
                  "|---|---:|" + "---:|---:|" * len(methods) + "---|"]
        for variant in result["config"]["variants"]:
            runs = {r["method"]: r for r in result["runs"] if r["dataset"] == name and r["variant"] == variant}
            if not runs:
                continue
            cells = [f"{runs[m]['text->image R@1']:.3f} | {runs[m]['image->text R@1']:.3f}" if m in runs else " | "
                     for m in methods]
            picked = runs.get("auto", {}).get("picked") or ""
            lines.append(f"| {variant} | {next(iter(runs.values()))['image_dim']} | " + " | ".join(cells)
                         + f" | {picked} |")
        lines.append("")
    lines.append("Flags: " + "; ".join(f"{v}: `{f}`" for v, f in result["config"]["variants"].items()))
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default="emoji,icons")
    p.add_argument("--groups", action="append", default=[], metavar="NAME=N",
                   help="keep N groups of NAME (a seeded prefix; default as in benchmarks/alignment.py)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names from VARIANTS")
    p.add_argument("--cache", default=None)
    p.add_argument("--data-dir", type=Path, default=Path("data/bench"))
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--merge", type=Path, nargs="+", help="combine the --json files of runs (one per dataset)")
    args = p.parse_args(argv)
    if args.merge:
        result = merge(args.merge)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1, default=float))
        if args.markdown:
            args.markdown.write_text(markdown(result))
        print(markdown(result))
        return 0
    torch.set_num_threads(args.threads)
    groups = {k: int(v) for k, v in (g.split("=", 1) for g in args.groups)}
    datasets = {n: (builtin_manifest(n, args.data_dir), groups.get(n, GROUPS.get(n)))
                for n in args.datasets.split(",")}
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    result = run(datasets, variants, args.methods.split(","), FeatureCache(args.cache))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))
    md = markdown(result)
    if args.markdown:
        args.markdown.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
