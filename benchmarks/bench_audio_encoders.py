"""Throughput (clips/s) of the Whisper audio encoders on real espeak-ng speech, as ratios to
``whisper-base`` (int8, default window) measured in the same run.

    .venv/bin/python benchmarks/bench_audio_encoders.py [--n 24] [--full-window]

Timings on a shared machine are noisy: compare the ratios, not the absolute numbers. ``--full-window``
adds Whisper's trained 30 s window (slow: several seconds per clip).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from modalign.encoders import get_encoder

PHRASES = ["grinning face", "red apple", "hot air balloon", "thumbs up", "flag: United Kingdom",
           "woman in motorized wheelchair facing right", "keycap: 7", "face with tears of joy"]


def synthesize(root: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        path = root / f"{i}.wav"
        speed = 130 if i % 2 else 175
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", str(speed), "-w", str(path),
                        f"{PHRASES[i % len(PHRASES)]} {i}"], check=True)
        paths.append(path)
    return paths


def rate(fn, n: int) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=24, help="clips per measurement")
    parser.add_argument("--full-window", action="store_true", help="also measure window=30 (slow)")
    args = parser.parse_args()
    configs = [("whisper-base", {}), ("whisper-base", {"compute_type": "float32"}),
               ("whisper-tiny", {}), ("whisper-tiny", {"compute_type": "float32"})]
    if args.full_window:
        configs += [("whisper-base", {"window": 30.0}), ("whisper-tiny", {"window": 30.0})]
    with tempfile.TemporaryDirectory() as tmp:
        clips = synthesize(Path(tmp), args.n)
        results = {}
        for name, cfg in configs:
            enc = get_encoder(name, **cfg)
            enc.encode(clips[:2])  # warm up (first allocations)
            n = args.n if cfg.get("window", 0) == 0 else max(2, args.n // 8)
            results[f"{name} {cfg or 'default'}"] = rate(lambda enc=enc, n=n: enc.encode(clips[:n]), n)
    ref = next(iter(results.values()))
    print(json.dumps({k: {"clips_per_s": round(v, 2), "ratio_to_base": round(v / ref, 2)}
                      for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
