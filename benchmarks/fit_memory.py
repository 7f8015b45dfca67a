"""Peak memory of ``fit`` on a large cached dataset: features streamed from the cache vs loaded whole.

    .venv/bin/python benchmarks/fit_memory.py [--rows 100000,400000] [--json out.json]

For each size, a feature cache holding ``rows`` pairs of minilm features (384-d, two text columns) is
written straight into cache shards, then three child processes run on it and report their peak RSS
(VmHWM), peak anonymous memory (sampled RssAnon: VmHWM also counts the mapped shard pages, which are
page cache the kernel can drop) and wall time:

- ``floor``: import modalign + torch and read the manifest (what any run pays before features);
- ``in_memory``: every column extracted into arrays (``encode_column(stream=False)``, the path before
  streaming) and the same ``fit_arrays``;
- ``streamed``: ``modalign.align.fit`` as users call it (columns are ``CachedMatrix`` views over the
  memory-mapped shards; batches, stats chunks and a capped validation subset are read from disk).

Both fits run 1 epoch of InfoNCE (linear heads, batch 256) and must reach the same validation R@1.
The features are real minilm embeddings of 1,000 CLDR emoji names (and "an icon of <name>"), each
repeated with 2 % Gaussian noise so every row is distinct: encoding 800k texts on a 2-core machine
would take hours and would not change what is measured (memory), only the numbers inside the rows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SHARD_ROWS = 8192
MODALITIES = ("text", "text_en")


def status_mb() -> dict[str, float]:
    """VmHWM (peak RSS), RssAnon (the process's own memory) and RssFile (mapped file pages) now, in MiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmHWM", "RssAnon", "RssFile"):
            out[key] = int(line.split()[1]) / 1024
    return out


class AnonPeak:
    """Samples RssAnon / RssFile every 20 ms: VmHWM also counts the memory-mapped shard pages a streamed
    epoch touches, which are page cache the kernel drops under pressure, not memory the process holds."""

    def __init__(self) -> None:
        import threading

        self.anon = self.file = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            now = status_mb()
            self.anon, self.file = max(self.anon, now["RssAnon"]), max(self.file, now["RssFile"])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def prepare(folder: Path, rows: int) -> tuple[Path, Path]:
    """A manifest of ``rows`` pairs + a cache holding both columns' minilm features (final layer)."""
    import emoji

    from modalign.encoders import get_encoder
    from modalign.features import FeatureCache, extract
    from modalign.features.keys import item_key

    names = sorted({d["en"].strip(":").replace("_", " ") for d in emoji.EMOJI_DATA.values()})[:1000]
    enc = get_encoder("minilm")
    layer = enc.default_layer
    real_cache = FeatureCache(folder / "real")
    base = {"text": names, "text_en": [f"an icon of {n}" for n in names]}
    real = {m: extract(enc, base[m], real_cache, layers=[layer]).features[layer] for m in MODALITIES}

    cache = FeatureCache(folder / "cache")
    store = cache.store(enc.cache_id, enc.layer_dims)
    manifest = folder / "manifest.jsonl"
    rng = np.random.default_rng(0)
    with manifest.open("w") as fh:
        for start in range(0, rows, SHARD_ROWS):
            idx = np.arange(start, min(rows, start + SHARD_ROWS))
            texts = {m: [f"{base[m][i % 1000]} #{i}" for i in idx] for m in MODALITIES}
            for m in MODALITIES:
                x = real[m][idx % 1000]
                x = x + 0.02 * np.linalg.norm(x, axis=1, keepdims=True) / np.sqrt(x.shape[1]) * \
                    rng.standard_normal(x.shape).astype(np.float32)
                store.append([item_key(t) for t in texts[m]], {layer: x.astype(np.float32)})
            for j, i in enumerate(idx):
                fh.write(json.dumps({"id": f"r{i}", "text": texts["text"][j], "text_en": texts["text_en"][j]}) + "\n")
    return manifest, cache.root


def child(mode: str, manifest: Path, cache_root: Path) -> dict[str, Any]:
    import torch

    from modalign.align import fit
    from modalign.align.fit import encode_column, fit_arrays
    from modalign.align.trainer import TrainerSettings
    from modalign.data import PairedDataset
    from modalign.encoders import get_encoder
    from modalign.features import FeatureCache

    torch.set_num_threads(2)
    sampler = AnonPeak()
    t0 = time.perf_counter()
    dataset = PairedDataset.from_manifest(manifest)
    cache = FeatureCache(cache_root)
    settings = TrainerSettings(epochs=1, batch_size=256)
    out: dict[str, Any] = {"mode": mode, "rows": len(dataset)}
    if mode == "streamed":
        model = fit(dataset, list(MODALITIES), cache=cache, settings=settings)
        out["val_R@1"] = model.metrics["fit"]["val_R@1"]
    elif mode == "in_memory":
        enc = get_encoder("minilm")
        feats, present = {}, {}
        for m in MODALITIES:
            feats[m], present[m], _ = encode_column(dataset, m, enc, cache, [enc.default_layer], stream=False)
        result = fit_arrays(feats, present, dataset.groups, list(MODALITIES),
                            default_layers={m: enc.default_layer for m in MODALITIES}, settings=settings)
        out["val_R@1"] = result.info["val_R@1"]
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    sampler.stop()
    out["peak_rss_mb"] = round(status_mb()["VmHWM"], 1)
    out["peak_anon_mb"] = round(sampler.anon, 1)
    out["peak_file_mb"] = round(sampler.file, 1)
    return out


def run_child(mode: str, manifest: Path, cache_root: Path) -> dict[str, Any]:
    res = subprocess.run([sys.executable, __file__, "--child", mode, "--manifest", str(manifest),
                          "--cache", str(cache_root)], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="100000,400000")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child")
    parser.add_argument("--manifest", type=Path)
    parser.add_argument("--cache", type=Path)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.manifest, args.cache)))
        return
    results = []
    for rows in (int(r) for r in args.rows.split(",")):
        with tempfile.TemporaryDirectory(prefix="fitmem-") as tmp:
            manifest, cache_root = prepare(Path(tmp), rows)
            feature_mb = rows * len(MODALITIES) * 384 * 4 / 2**20
            runs = {mode: run_child(mode, manifest, cache_root) for mode in ("floor", "in_memory", "streamed")}
        row = {"rows": rows, "feature_mb": round(feature_mb, 1),
               **{f"{m}_{k}": r[f"peak_{k}"] for m, r in runs.items() for k in ("rss_mb", "anon_mb", "file_mb")},
               "in_memory_wall_s": runs["in_memory"]["wall_s"], "streamed_wall_s": runs["streamed"]["wall_s"],
               "in_memory_val_R@1": runs["in_memory"]["val_R@1"], "streamed_val_R@1": runs["streamed"]["val_R@1"]}
        results.append(row)
        print(json.dumps(row), flush=True)
    print("\n| pairs | feature bytes | floor: anon | in-memory fit: anon (RSS) | streamed fit: anon (RSS, of it "
          "mapped shards) | in-memory / streamed wall | val R@1 (both) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['rows']:,} | {r['feature_mb']:.0f} MiB | {r['floor_anon_mb']:.0f} MiB | "
              f"{r['in_memory_anon_mb']:.0f} MiB ({r['in_memory_rss_mb']:.0f}) | "
              f"{r['streamed_anon_mb']:.0f} MiB ({r['streamed_rss_mb']:.0f}, {r['streamed_file_mb']:.0f}) | "
              f"{r['in_memory_wall_s']:.0f} s / {r['streamed_wall_s']:.0f} s | "
              f"{r['in_memory_val_R@1']:.3f} / {r['streamed_val_R@1']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
