"""Throughput of modalign against the raw encoders, head training speed, DDP scaling, demo peak RSS.

    .venv/bin/python benchmarks/throughput.py [--n 64] [--parts extract,train,chunks,stream,ddp,demo] [--json out.json]

(a) extraction items/s through ``modalign.features.extract`` (fresh cache: hashing + encoding +
    shard writes) vs the same encoder's ``encode`` called in a loop with the same batch size (best of
    ``--repeat`` alternating runs);
(b) ``fit_arrays`` with the defaults (linear heads, InfoNCE, early stopping) on 5k cached pairs: time to
    fit and pairs/s; ``chunks``: GradCache 4 chunks vs 1 on batches of 1024; ``stream``: training from
    memory-mapped cache shards vs in RAM;
(c) DDP with 2 gloo workers vs 1: wall-time ratio and the largest gap between the loss curves;
(d) peak RSS of ``modalign demo --limit 100`` (resource.getrusage of the child).
Timings on a shared machine are noisy: compare ratios measured within one run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ENCODERS = {"minilm": "text", "e5": "text", "dinov2-s": "image", "effnet-lite0": "image", "whisper-tiny": "audio"}


def _items(kind: str, n: int, tmp: Path) -> list[Any]:
    import emoji

    names = sorted({d["en"].strip(":").replace("_", " ") for d in emoji.EMOJI_DATA.values()})
    if kind == "text":
        return names[:n]
    if kind == "image":
        import skimage.data
        from PIL import Image

        photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
        out = []
        for i in range(n):  # distinct files (crops) so the content-addressed cache cannot dedupe them
            img = photos[i % len(photos)]
            path = tmp / f"img{i}.png"
            Image.fromarray(img[i % 37 :, i % 41 :]).save(path)
            out.append(path)
        return out
    import soundfile as sf

    sr = 16000
    out = []
    for i in range(n):  # one-second chirps of different pitch
        t = np.arange(sr) / sr
        wave = 0.3 * np.sin(2 * np.pi * (200 + 7 * i) * t * (1 + t)).astype(np.float32)
        path = tmp / f"a{i}.wav"
        sf.write(path, wave, sr)
        out.append(path)
    return out


#: encoders fast enough that a few seconds of items would make fixed per-run costs look like overhead
FAST = {"minilm", "whisper-tiny"}


def bench_extract(n: int, n_fast: int, repeat: int) -> dict[str, Any]:
    """Best and median of ``repeat`` alternating runs each (a fresh cache every time): the machine is shared.

    Both sides batch by the encoder's own ``batch_size``: the raw loop calls ``encode`` on that many items
    at a time, ``extract`` (default shard size) hands the encoder a shard and it batches inside."""
    from modalign.encoders import get_encoder
    from modalign.features import FeatureCache, extract

    rows = {}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        for name, kind in ENCODERS.items():
            count = n_fast if name in FAST else n
            items = _items(kind, count, tmp)
            enc = get_encoder(name)
            batch = enc.batch_size
            enc.encode(items[:2], layers=list(enc.layers))  # warm-up: weights loaded, kernels picked
            raw, ours = [], []
            for r in range(repeat):
                t0 = time.perf_counter()
                for s in range(0, count, batch):
                    enc.encode(items[s : s + batch], layers=list(enc.layers))
                raw.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                extract(enc, items, FeatureCache(tmp / f"cache-{name}-{r}"))
                ours.append(time.perf_counter() - t0)
            rows[name] = {"items": count, "batch": batch, "raw_items_s": count / min(raw),
                          "modalign_items_s": count / min(ours), "overhead": min(ours) / min(raw),
                          "overhead_median": float(np.median(ours) / np.median(raw))}
    return rows


def _pairs(n_unique: int, tile: int):
    from modalign.align.trainer import TrainData
    from modalign.encoders import get_encoder
    from modalign.features import extract

    names = _items("text", n_unique, Path("."))
    enc = get_encoder("minilm")
    a = extract(enc, names, layers=["layer3"]).features["layer3"]
    b = extract(enc, [f"a picture of {x}" for x in names], layers=[enc.default_layer]).features[enc.default_layer]
    g = np.tile(np.arange(len(names)), tile)  # tiled rows share a group: they are positives of each other
    n = len(g)
    return TrainData(features={"a": np.tile(a, (tile, 1)), "b": np.tile(b, (tile, 1))},
                     present={"a": np.ones(n, bool), "b": np.ones(n, bool)}, groups=g)


def _heads(train):
    import torch

    from modalign.align.heads.linear import LinearHead

    torch.manual_seed(0)
    heads = {m: LinearHead(x.shape[1], 256) for m, x in train.features.items()}
    for m, h in heads.items():
        h.fit_input_stats(train.features[m])
    return heads


def bench_train(train, epochs: int) -> dict[str, Any]:
    """The real path: ``fit_arrays`` (linear heads, InfoNCE, 10% validation, early stopping), defaults."""
    from modalign.align.fit import fit_arrays

    feats = {m: {"x": x} for m, x in train.features.items()}
    t0, c0 = time.perf_counter(), time.process_time()
    res = fit_arrays(feats, train.present, [str(g) for g in train.groups], list(feats),
                     default_layers={m: "x" for m in feats})
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    ran = res.info["epochs_run"]
    return {"pairs": len(train), "fit_s": wall, "fit_cpu_s": cpu, "epochs_run": ran,
            "best_epoch": res.info["best_epoch"], "pairs_s": res.n_train * ran / wall, "val_R@1": res.info["val_R@1"]}


def bench_grad_chunks(train, epochs: int, batch: int = 1024) -> dict[str, Any]:
    """GradCache: one batch of ``batch`` in 1 vs 4 chunks (same gradients, an extra forward per chunk)."""
    from modalign.align.losses.combined import build_loss
    from modalign.align.trainer import TrainerSettings, train_heads

    out: dict[str, Any] = {"batch": batch, "epochs": epochs}
    curves = {}
    for chunks in (1, 4):
        settings = TrainerSettings(epochs=epochs, batch_size=batch, grad_chunks=chunks, patience=epochs)
        t0 = time.perf_counter()
        res = train_heads(_heads(train), build_loss("infonce"), train, None, settings)
        out[f"chunks{chunks}_s"] = time.perf_counter() - t0
        curves[chunks] = np.array([h["loss"] for h in res.history])
    out["time_ratio_4_over_1"] = out["chunks4_s"] / out["chunks1_s"]
    out["max_loss_curve_gap"] = float(np.max(np.abs(curves[4] - curves[1])))
    return out


def bench_streamed(n_unique: int, tile: int, epochs: int) -> dict[str, Any]:
    """Training from memory-mapped cache shards (CachedMatrix) vs the same features in RAM."""
    from modalign.align.losses.combined import build_loss
    from modalign.align.trainer import TrainData, TrainerSettings, train_heads
    from modalign.encoders import get_encoder
    from modalign.features import FeatureCache, extract
    from modalign.features.reader import open_matrix

    names = _items("text", n_unique, Path("."))
    enc = get_encoder("minilm")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(tmp)
        items = {"a": names, "b": [f"a picture of {x}" for x in names]}
        layers = {"a": "layer3", "b": enc.default_layer}
        for m in items:
            extract(enc, items[m], cache)
        g = np.tile(np.arange(len(names)), tile)
        disk = {m: open_matrix(cache, enc, items[m] * tile, layers[m])[0] for m in items}
        ram = {m: np.asarray(x) for m, x in disk.items()}
        settings = TrainerSettings(epochs=epochs, batch_size=256, patience=epochs)
        for label, feats in (("ram", ram), ("streamed", disk)):
            data = TrainData(features=feats, present={m: np.ones(len(g), bool) for m in feats}, groups=g)
            t0 = time.perf_counter()
            train_heads(_heads(TrainData(features=ram, present=data.present, groups=g)), build_loss("infonce"),
                        data, None, settings)
            out[f"{label}_s"] = time.perf_counter() - t0
    out["pairs"] = len(g)
    out["time_ratio_streamed_over_ram"] = out["streamed_s"] / out["ram_s"]
    return out


def bench_ddp(train, epochs: int) -> dict[str, Any]:
    from modalign.align.ddp import train_ddp
    from modalign.align.losses.combined import build_loss
    from modalign.align.trainer import TrainerSettings

    settings = TrainerSettings(epochs=epochs, batch_size=256)
    out: dict[str, Any] = {}
    curves = {}
    for w in (1, 2):
        t0 = time.perf_counter()
        res = train_ddp(_heads(train), build_loss("infonce"), train, settings, workers=w)
        out[f"workers{w}_s"] = time.perf_counter() - t0
        curves[w] = np.asarray(res.history)
        if w == 2:
            out["max_rank_divergence"] = res.max_rank_divergence
    out["speedup_2_over_1"] = out["workers1_s"] / out["workers2_s"]
    out["max_loss_curve_gap"] = float(np.max(np.abs(curves[1] - curves[2])))
    out["loss_curve_1"], out["loss_curve_2"] = curves[1].tolist(), curves[2].tolist()
    return out


def bench_demo(limit: int) -> dict[str, Any]:
    exe = Path(sys.executable).with_name("modalign")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run([str(exe), "demo", "--limit", str(limit), "--out", tmp], capture_output=True, text=True)
        wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB, the largest child
    return {"limit": limit, "exit_code": proc.returncode, "wall_s": wall, "peak_rss_mb": peak_kb / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="items per image encoder for (a)")
    ap.add_argument("--n-fast", type=int, default=512, help="items per text/audio encoder for (a)")
    ap.add_argument("--unique", type=int, default=1000, help="real pairs, tiled to 5k rows for (b)/(c)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--demo-limit", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3, help="alternating runs per encoder for (a); best of")
    ap.add_argument("--parts", default="extract,train,chunks,stream,ddp,demo")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    results: dict[str, Any] = {}
    if "demo" in parts:  # first: getrusage(CHILDREN) would otherwise also count the DDP workers
        results["demo"] = bench_demo(args.demo_limit)
        print(json.dumps({"demo": results["demo"]}), flush=True)
    if "extract" in parts:
        results["extract"] = bench_extract(args.n, args.n_fast, args.repeat)
        print(json.dumps({"extract": results["extract"]}), flush=True)
    if parts & {"train", "ddp", "chunks"}:
        train = _pairs(args.unique, max(1, 5000 // args.unique))
        if "train" in parts:
            results["train"] = bench_train(train, args.epochs)
            print(json.dumps({"train": results["train"]}), flush=True)
        if "chunks" in parts:
            results["chunks"] = bench_grad_chunks(train, args.epochs)
            print(json.dumps({"chunks": results["chunks"]}), flush=True)
        if "ddp" in parts:
            results["ddp"] = bench_ddp(train, args.epochs)
            print(json.dumps({"ddp": results["ddp"]}), flush=True)
    if "stream" in parts:
        results["stream"] = bench_streamed(args.unique, max(1, 5000 // args.unique), args.epochs)
        print(json.dumps({"stream": results["stream"]}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
