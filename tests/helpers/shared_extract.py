"""Subprocess target for the concurrent-fit test: wait for the other process, then extract the same items."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from helpers.slow_extract import SlowHashEncoder, items
from modalign.features import FeatureCache, extract

if __name__ == "__main__":
    cache_dir, barrier, me, n = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    (barrier / me).touch()
    deadline = time.monotonic() + 60
    while len(list(barrier.iterdir())) < 2 and time.monotonic() < deadline:  # start together
        time.sleep(0.01)
    res = extract(SlowHashEncoder(), items(n), FeatureCache(cache_dir), shard_size=8)
    print("encoded", res.n_encoded, int(res.ok.sum()), flush=True)
