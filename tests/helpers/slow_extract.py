"""Subprocess target for the SIGKILL test: extracts features slowly so it can be killed mid-way."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from modalign.encoders.base import Encoder
from modalign.features import FeatureCache, extract


class SlowHashEncoder(Encoder):
    name = "slow-hash"
    kind = "text"
    batch_size = 4

    @property
    def dim(self) -> int:
        return 8

    @property
    def layers(self) -> tuple[str, ...]:
        return ("only",)

    def _encode_batch(self, items: Sequence[Any], layers: Sequence[str]) -> dict[str, np.ndarray]:
        time.sleep(0.01)
        rows = [np.random.default_rng(abs(hash(t)) % (2**32)).normal(size=8) for t in items]
        return {"only": np.asarray(rows, np.float32)}


def items(n: int) -> list[str]:
    return [f"sentence number {i}" for i in range(n)]


if __name__ == "__main__":
    cache_dir, n = sys.argv[1], int(sys.argv[2])
    # one line per batch so the test can kill after real progress, whatever the machine's speed
    res = extract(SlowHashEncoder(), items(n), FeatureCache(cache_dir), shard_size=8,
                  progress=lambda k: print("progress", k, flush=True))
    np.save(sys.argv[3], res.features["only"]) if len(sys.argv) > 3 else None
    print("done", res.n_encoded)
