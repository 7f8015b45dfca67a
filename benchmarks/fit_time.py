"""What the default fit costs: ``modalign fit`` with no options ÷ one ``modalign fit --method cca``.

    .venv/bin/python benchmarks/fit_time.py [--sizes 300,3698,12500] [--repeats 3] [--cache DIR] \\
        [--data-dir DIR] [--json out.json] [--markdown out.md]

The baseline is what a user would run instead of the default: one closed-form fit (``--method cca``,
which tunes its knobs on a validation split), through the same CLI, on the same manifest, with the
features cached (a first fit of each manifest fills the cache and is not timed). The two commands run
alternately (A B A B ...) in one process tree, so a busy machine slows both alike; each is timed
``--repeats`` times and the ratio is of the medians. ``--sizes`` are manifest rows, each fitted with
``--holdout 0.2`` (training rows ~80 % of them): the first rows of ~N/2 icon concepts for 300, the demo's
emoji set (3,698 rows, 2,958 for training) for 3k, the first 12,500 icons (~10k training) for 10k.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from modalign.data.recipes import DATASETS

MODALIGN = str(Path(sys.executable).parent / "modalign")


def manifest_for(pairs: int, data_dir: Path) -> Path:
    """A real image–text manifest of about ``pairs`` rows."""
    if pairs <= 1000:  # icons: ~3.5 rows per concept, cut to exactly `pairs` rows
        prepared = DATASETS.create("icons").prepare(data_dir / "icons-small", limit=pairs // 2).manifest
        lines = prepared.read_text().splitlines()[:pairs]
        out = prepared.parent / f"first-{pairs}.jsonl"  # beside it: its image paths are relative
        out.write_text("\n".join(lines) + "\n")
        return out
    if pairs <= 5000:  # the demo's data: Noto + OpenMoji, base emoji (3,698 rows)
        recipe = DATASETS.create("emoji", styles=["noto", "openmoji"], include_variants=False)
        return recipe.prepare(data_dir / "emoji-demo").manifest
    prepared = DATASETS.create("icons").prepare(data_dir / "icons-all").manifest  # all ~14.6k icons
    lines = prepared.read_text().splitlines()[:pairs]
    out = prepared.parent / f"first-{pairs}.jsonl"
    out.write_text("\n".join(lines) + "\n")
    return out


def fit(manifest: Path, out: Path, cache: Path, *extra: str) -> tuple[float, str]:
    """Wall seconds of one CLI fit, and its stdout."""
    cmd = [MODALIGN, "fit", "--data", str(manifest), "--modalities", "image,text", "--holdout", "0.2",
           "--cache", str(cache), "--out", str(out), *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    seconds = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="300,3698,12500", help="manifest rows (80 %% train)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cache", type=Path, default=Path(os.environ.get("MODALIGN_CACHE", "~/.cache/modalign"))
                   .expanduser())
    p.add_argument("--data-dir", type=Path, default=Path("data/bench-fit-time"))
    p.add_argument("--work", type=Path, default=Path("/tmp/modalign-fit-time"))
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    args = p.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for pairs in (int(s) for s in args.sizes.split(",")):
        manifest = manifest_for(pairs, args.data_dir)
        n_rows = len(manifest.read_text().splitlines())
        fit(manifest, args.work / "warm", args.cache, "--method", "cca")  # fills the feature cache; not timed
        times: dict[str, list[float]] = {"default": [], "cca": []}
        picked = ""
        for _ in range(args.repeats):
            seconds, _out = fit(manifest, args.work / "default", args.cache)
            times["default"].append(seconds)
            seconds, _out = fit(manifest, args.work / "cca", args.cache, "--method", "cca")
            times["cca"].append(seconds)
        metrics = json.loads((args.work / "default" / "metrics.json").read_text())
        auto = metrics["fit"]["auto"]
        picked = auto["picked"]
        row = {"pairs": n_rows, "train_rows": auto["cv_rows"], "manifest": manifest.name,
               "default_s": times["default"], "cca_s": times["cca"],
               "ratio": statistics.median(times["default"]) / statistics.median(times["cca"]),
               "cv_seconds": auto["cv_seconds"], "candidates": len(auto["table"]), "picked": picked,
               "cv_R@1": auto["cv_R@1"]}
        rows.append(row)
        print(f"{n_rows} rows: default {statistics.median(times['default']):.1f} s, cca "
              f"{statistics.median(times['cca']):.1f} s, ratio {row['ratio']:.2f} (picked {picked})", flush=True)
    result = {"date": date.today().isoformat(), "machine": f"{os.cpu_count()} cores, {platform.machine()}",
              "command": " ".join(["benchmarks/fit_time.py", *sys.argv[1:]]), "repeats": args.repeats, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.markdown:
        lines = [f"Default fit ÷ one `--method cca` fit, features cached, median of {args.repeats} alternating runs "
                 f"({result['machine']}, {result['date']}; `{result['command']}`).", "",
                 "| manifest rows | training rows | default fit s | `--method cca` s | ratio | auto's CV s | picked |",
                 "|---:|---:|---:|---:|---:|---:|---|"]
        for r in rows:
            lines.append(f"| {r['pairs']:,} | {r['train_rows']:,} | {statistics.median(r['default_s']):.1f} | "
                         f"{statistics.median(r['cca_s']):.1f} | {r['ratio']:.2f}× | {r['cv_seconds']:.1f} | "
                         f"`{r['picked']}` |")
        args.markdown.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
