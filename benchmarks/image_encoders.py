"""One image encoder against another under the default fit: held-out R@1 per dataset, and images/s.

    .venv/bin/python benchmarks/image_encoders.py --data-dir DIR [--encoders effnet-lite0,effnet-lite2]
        [--datasets emoji:400g,emoji-multilingual,icons,kanji] [--rows 1000] [--splits 3] [--cache DIR]

Per dataset (``NAME`` keeps whole groups of a seeded permutation up to ``--rows`` rows; ``NAME:Kg`` keeps the
first K groups instead), ``--splits`` seeded concept-disjoint splits (20 % held out); on each, the default
fit (``modalign.fit``, method auto) with each image encoder at its default layer and the default text
encoder, scored with ``modalign.evaluate``: R@1 as the mean of text→image and image→text. Speed: 64 images
of the first dataset, each encoder in torch and onnx (its default threads), after one warm-up batch.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from alignment import keep_groups  # the same seeded choice of groups as the alignment benchmark
from PIL import Image

from modalign import evaluate, fit
from modalign.data.dataset import PairedDataset
from modalign.encoders import get_encoder
from modalign.features import FeatureCache


def subset(ds: PairedDataset, spec: str, rows: int) -> PairedDataset:
    """``Kg``: the first K groups of the seeded order ``alignment.keep_groups`` uses; else as many of them as
    fit in ``rows`` rows."""
    if spec.endswith("g"):
        return keep_groups(ds, int(spec[:-1]))
    names = list(dict.fromkeys(ds.groups))
    counts = Counter(ds.groups)
    total = taken = 0
    for i in np.random.default_rng(0).permutation(len(names)):
        if total + counts[names[i]] > rows:
            break
        total += counts[names[i]]
        taken += 1
    return keep_groups(ds, taken)


def speed(encoders: list[str], images: list[Image.Image]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name in encoders:
        for runtime in ("torch", "onnx"):
            enc = get_encoder(name, runtime=runtime)
            enc.encode(images[:8])
            start = time.perf_counter()
            enc.encode(images)
            out.setdefault(name, {})[runtime] = len(images) / (time.perf_counter() - start)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--encoders", default="effnet-lite0,effnet-lite2")
    ap.add_argument("--datasets", default="emoji:400g,emoji-multilingual,icons,kanji")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--splits", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=Path("benchmarks/image-encoders-results.json"))
    ap.add_argument("--markdown", type=Path, default=Path("benchmarks/image-encoders-results.md"))
    args = ap.parse_args()
    cache = FeatureCache(args.cache) if args.cache else FeatureCache()
    encoders = args.encoders.split(",")
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "datasets": {}}
    for i, item in enumerate(args.datasets.split(",")):
        name, _, spec = item.partition(":")
        ds = subset(PairedDataset.from_manifest(args.data_dir / name / "manifest.jsonl"), spec, args.rows)
        if i == 0:
            results["images_per_s"] = speed(encoders, [Image.open(p).convert("RGB") for p in ds.columns["image"][:64]])
        scores: dict[str, list[float]] = {e: [] for e in encoders}
        for seed in range(args.splits):
            train, test = ds.split(0.2, seed=seed)
            for enc in encoders:
                model = fit(train, ["image", "text"], cache=cache, encoders={"image": (enc, {})})
                d = evaluate(model, test, cache)["directions"]
                scores[enc].append((d["text->image"]["R@1"] + d["image->text"]["R@1"]) / 2)
                print(json.dumps({"dataset": name, "seed": seed, "encoder": enc, "r1": scores[enc][-1]}), flush=True)
        results["datasets"][name] = {"rows": len(ds), "scores": scores}
    args.json.write_text(json.dumps(results, indent=2))
    head = " | ".join(encoders)
    lines = [f"Held-out R@1 (mean of both directions) of the default fit, {args.splits} seeded splits, mean ± std; "
             f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores.\n", f"| dataset | rows | {head} | ratio |",
             "|---|---:|" + "---:|" * (len(encoders) + 1)]
    for name, d in results["datasets"].items():
        means = [float(np.mean(d["scores"][e])) for e in encoders]
        cells = " | ".join(f"{m:.3f} ± {float(np.std(d['scores'][e])):.3f}" for m, e in zip(means, encoders,
                                                                                           strict=True))
        lines.append(f"| {name} | {d['rows']} | {cells} | {means[-1] / means[0]:.2f} |")
    lines.append("\nImages/s (64 images, default threads): " + "; ".join(
        f"{e} torch {v['torch']:.0f}, onnx {v['onnx']:.0f}" for e, v in results["images_per_s"].items()))
    args.markdown.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
