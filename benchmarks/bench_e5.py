"""Throughput of the ``e5`` text encoder, as ratios to ``minilm`` measured in the same run.

    .venv/bin/python benchmarks/bench_e5.py [--n 128]

Timings on a shared machine are noisy: compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import time

from modalign.encoders import get_encoder

SENTENCES = [
    "In the beginning God created the heaven and the earth.",
    "En el principio crió Dios los cielos y la tierra.",
    "The earth was formless and empty, and darkness was on the surface of the deep.",
    "Y la tierra estaba desordenada y vacía, y las tinieblas estaban sobre la haz del abismo.",
    "grinning face with big eyes",
    "visage souriant aux grands yeux",
]


def rate(fn, n: int) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=128, help="texts per measurement")
    args = parser.parse_args()
    texts = [f"{SENTENCES[i % len(SENTENCES)]} ({i})" for i in range(args.n)]  # unique texts, mixed lengths
    e5, minilm = get_encoder("e5"), get_encoder("minilm")
    e5.encode(texts[:4]), minilm.encode(texts[:4])  # warm up (load, first allocations)
    results = {"minilm batch 64": rate(lambda: minilm.encode(texts, layers=["layer6"], batch_size=64), args.n)}
    for bs in (8, 64):
        results[f"e5 batch {bs}"] = rate(lambda bs=bs: e5.encode(texts, batch_size=bs), args.n)
    threads = e5.threads
    e5.threads = 1
    results["e5 batch 64, 1 thread"] = rate(lambda: e5.encode(texts, batch_size=64), args.n)
    e5.threads = threads
    results["e5 one text per call"] = rate(lambda: [e5.encode([t]) for t in texts[:16]], 16)
    base = results["minilm batch 64"]
    print(json.dumps({k: {"texts_per_s": round(v, 2), "vs_minilm": round(v / base, 3)} for k, v in results.items()},
                     indent=2))


if __name__ == "__main__":
    main()
