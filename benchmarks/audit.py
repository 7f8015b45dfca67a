"""How well `modalign audit` finds corrupted pairs, and what cleaning gives back.

    .venv/bin/python benchmarks/audit.py [--datasets emoji,icons,speech,instruments,emoji-multilingual]
        [--rates 0.02,0.05,0.10] [--kinds swap,copy] [--seeds 3] [--max-rows 1000] [--test-fraction 0.2]
        [--json out.json] [--markdown out.md]

Per dataset: the built-in recipe's rows (capped at ``--max-rows`` by whole groups, seeded), one
concept-disjoint held-out split (``--test-fraction`` of the groups), features of the default encoders from the
cache.
Per corruption kind, rate and seed, the training rows are corrupted on the second modality:

- ``swap``: pairs of rows from different groups exchange their second item (a caption on the wrong image);
- ``copy``: a row takes the second item of the nearest earlier row of another group (a label copied from
  the row above).

The audit runs exactly as ``modalign audit`` does by default (``score_pairs`` with auto heads in 5 group folds,
then ``calibrated_threshold``), on the corrupted training rows only; the held-out rows are never audited nor
corrupted. Reported: AUROC and precision@K (K = the number corrupted) of the mismatch score, the flags'
precision and recall, the estimated share against the true one, and the held-out R@1 (mean of both directions)
of the default fit trained on the corrupted rows, on them minus the flagged rows, on them minus exactly the
corrupted rows (the ceiling of any cleaning that drops rows), and on the true clean rows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as benchmarks/alignment.py: one BLAS thread on 2 cores
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from alignment import DATASETS, Prepared, builtin_manifest, heldout_r1, prepare

from modalign.align.fit import fit_arrays
from modalign.data.dataset import PairedDataset
from modalign.evaluation.audit import calibrated_threshold, score_pairs, separation
from modalign.features import FeatureCache

log = logging.getLogger("bench.audit")

DEFAULT_DATASETS = ["emoji", "icons", "speech", "instruments", "emoji-multilingual"]


def capped_groups(manifest: Path, max_rows: int) -> int:
    """How many groups (of a seeded order) hold about ``max_rows`` rows."""
    ds = PairedDataset.from_manifest(manifest)
    per_group = len(ds) / max(1, len(set(ds.groups)))
    return max(10, int(max_rows / per_group))


def corrupt(groups: list[str], kind: str, rate: float, seed: int) -> np.ndarray:
    """``source[i]``: the row whose second item row i now holds (== i where untouched)."""
    n = len(groups)
    rng = np.random.default_rng(seed)
    source = np.arange(n)
    k = round(rate * n)
    if kind == "swap":
        order = rng.permutation(n)
        free = set(order.tolist())
        done = 0
        for i in order:
            if done >= k:
                break
            if i not in free:
                continue
            partner = next((j for j in order if j in free and groups[j] != groups[i]), None)
            if partner is None:
                break
            free -= {int(i), int(partner)}
            source[i], source[partner] = partner, i
            done += 2
    elif kind == "copy":
        for i in rng.choice(np.arange(1, n), size=min(k, n - 1), replace=False):
            j = i - 1
            while j >= 0 and groups[j] == groups[i]:
                j -= 1
            if j >= 0:
                source[i] = j
    else:
        raise ValueError(f"unknown corruption {kind!r}")
    return source


def _keys(x: np.ndarray) -> list[bytes]:
    return [hashlib.blake2b(row.tobytes(), digest_size=12).digest() for row in np.ascontiguousarray(x)]


def fit_r1(prep: Prepared, feats: dict[str, np.ndarray], rows: np.ndarray) -> float:
    a, b = prep.modalities
    ones = np.ones(len(rows), dtype=bool)
    fitted = fit_arrays({m: {prep.default_layers[m]: feats[m][rows]} for m in (a, b)}, {a: ones, b: ones},
                        [prep.train_groups[i] for i in rows], [a, b], default_layers=prep.default_layers,
                        method="auto", dim=256, val_fraction=0.1)
    r1 = heldout_r1(prep, fitted.heads, fitted.chosen)
    return float(np.mean([d["R@1"] for d in r1.values()]))


def run_one(prep: Prepared, kind: str, rate: float, seed: int) -> dict[str, Any]:
    a, b = prep.modalities
    xa = np.asarray(prep.train_feats[a][prep.default_layers[a]], dtype=np.float32)
    xb_clean = np.asarray(prep.train_feats[b][prep.default_layers[b]], dtype=np.float32)
    groups = prep.train_groups
    source = corrupt(groups, kind, rate, seed)
    xb = xb_clean[source]
    keys_a, keys_b = _keys(xa), _keys(xb)
    bad = np.array([keys_b[i] != _keys(xb_clean[i:i + 1])[0] for i in range(len(xb))])  # a different item now
    t0 = time.perf_counter()
    scored, injected = score_pairs(xa, xb, groups, keys_a, keys_b, seed=seed)
    audit_s = time.perf_counter() - t0
    scores = np.array([s["mismatch"] for s in scored])
    threshold, share = calibrated_threshold(scores, injected)
    flagged = scores >= threshold if threshold is not None else np.zeros(len(scores), dtype=bool)
    k = int(bad.sum())
    top = np.argsort(-scores)[:k]
    feats = {a: xa, b: xb}
    every = np.arange(len(xa))
    r1_noisy = fit_r1(prep, feats, every)
    r1_cleaned = fit_r1(prep, feats, every[~flagged])
    # the ceiling of any cleaning that drops rows: exactly the corrupted ones gone
    r1_dropped_exactly = fit_r1(prep, feats, every[~bad])
    return {"dataset": prep.name, "kind": kind, "rate": rate, "seed": seed, "rows": len(xa), "corrupted": k,
            # AUROC of the corrupted rows against the others: the same rank statistic the calibration uses
            "auroc": separation(scores[~bad], scores[bad]) if 0 < k < len(bad) else None,
            "precision_at_k": float(bad[top].mean()) if k else None,
            "flagged": int(flagged.sum()),
            "flag_precision": float(bad[flagged].mean()) if flagged.any() else None,
            "flag_recall": float(flagged[bad].mean()) if k else None,
            "estimated_share": share, "true_share": k / len(bad), "threshold": threshold,
            "r1_noisy": r1_noisy, "r1_cleaned": r1_cleaned, "r1_dropped_exactly": r1_dropped_exactly,
            "audit_s": audit_s}


def summarize(runs: list[dict[str, Any]], clean: dict[str, float]) -> list[dict[str, Any]]:
    cells: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for r in runs:
        cells.setdefault((r["dataset"], r["kind"], r["rate"]), []).append(r)
    out = []
    for (name, kind, rate), rows in cells.items():
        def stat(key: str, rows: list[dict[str, Any]] = rows) -> tuple[float | None, float | None]:
            vals = [r[key] for r in rows if r[key] is not None]
            return (float(np.mean(vals)), float(np.std(vals))) if vals else (None, None)

        noisy, cleaned, exact = stat("r1_noisy")[0], stat("r1_cleaned")[0], stat("r1_dropped_exactly")[0]
        lost = clean[name] - noisy if noisy is not None else None

        def share_of_lost(r1: float | None, lost: float | None = lost, noisy: float | None = noisy) -> float | None:
            return (r1 - noisy) / lost if lost and lost > 0.005 and r1 is not None and noisy is not None else None
        out.append({"dataset": name, "kind": kind, "rate": rate, "seeds": len(rows), "auroc": stat("auroc"),
                    "precision_at_k": stat("precision_at_k"), "flagged": stat("flagged")[0],
                    "flag_precision": stat("flag_precision")[0], "flag_recall": stat("flag_recall")[0],
                    "estimated_share": stat("estimated_share")[0], "r1_noisy": noisy, "r1_cleaned": cleaned,
                    "r1_dropped_exactly": exact, "r1_clean": clean[name], "recovered": share_of_lost(cleaned),
                    "recovered_by_exact_drop": share_of_lost(exact)})
    return out


def markdown(summary: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    def f(v: Any, digits: int = 3) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    lines = [f"Command: `{meta['command']}` · {meta['date']} · {meta['machine']}", "",
             "| dataset | corruption | rate | AUROC (mean ± std) | P@K | flagged | flag precision | flag recall | "
             "est. share | R@1 noisy | R@1 cleaned | R@1 exact drop | R@1 clean | recovered | exact drop recovers |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in summary:
        auc = "-" if c["auroc"][0] is None else f"{c['auroc'][0]:.3f} ± {c['auroc'][1]:.3f}"
        rec = "-" if c["recovered"] is None else f"{c['recovered']:.0%}"
        ceiling = "-" if c.get("recovered_by_exact_drop") is None else f"{c['recovered_by_exact_drop']:.0%}"
        lines.append(f"| {c['dataset']} | {c['kind']} | {c['rate']:.0%} | {auc} | {f(c['precision_at_k'][0], 2)} | "
                     f"{c['flagged']:.0f} | {f(c['flag_precision'], 2)} | {f(c['flag_recall'], 2)} | "
                     f"{f(c['estimated_share'], 3)} | {f(c['r1_noisy'])} | {f(c['r1_cleaned'])} | "
                     f"{f(c.get('r1_dropped_exactly'))} | {f(c['r1_clean'])} | {rec} | {ceiling} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(DEFAULT_DATASETS))
    p.add_argument("--kinds", default="swap,copy")
    p.add_argument("--rates", default="0.02,0.05,0.10")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--max-rows", type=int, default=1000, help="rows kept per dataset (whole groups, seeded)")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="share of the kept groups held out for R@1 (a larger one measures R@1 more finely)")
    p.add_argument("--data-dir", type=Path, default=Path("bench-data"))
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--markdown", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cache = FeatureCache(args.cache)
    runs: list[dict[str, Any]] = []
    clean: dict[str, float] = {}
    meta = {"command": "python benchmarks/audit.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores, {sys.platform}"}
    for name in args.datasets.split(","):
        spec = DATASETS[name]
        manifest = builtin_manifest(name, args.data_dir)
        prep = prepare(name, manifest, capped_groups(manifest, args.max_rows), cache, test_fraction=args.test_fraction,
                       encoders=spec.encoders)
        clean[name] = fit_r1(prep, {m: np.asarray(prep.train_feats[m][prep.default_layers[m]], dtype=np.float32)
                                    for m in prep.modalities}, np.arange(len(prep.train_groups)))
        log.info("%s: %d training rows, held-out R@1 of the clean fit %.3f", name, len(prep.train_groups), clean[name])
        for kind in args.kinds.split(","):
            for rate in (float(r) for r in args.rates.split(",")):
                for seed in range(args.seeds):
                    r = run_one(prep, kind, rate, seed)
                    runs.append(r)
                    log.info("%s %s %.0f%% seed %d: AUROC %.3f, flagged %d (precision %s), R@1 %.3f -> %.3f "
                             "(clean %.3f), audit %.0f s", name, kind, 100 * rate, seed, r["auroc"] or 0, r["flagged"],
                             r["flag_precision"], r["r1_noisy"], r["r1_cleaned"], clean[name], r["audit_s"])
                    doc = {"meta": meta, "clean_r1": clean, "runs": runs, "summary": summarize(runs, clean)}
                    if args.json:
                        args.json.write_text(json.dumps(doc, indent=2))
                    if args.markdown:
                        args.markdown.write_text(markdown(doc["summary"], meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
