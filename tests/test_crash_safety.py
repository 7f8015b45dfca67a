"""SIGKILL during extraction, repeatedly: the final cache equals a clean run's, nothing lost or doubled."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

HELPER = Path(__file__).parent / "helpers" / "slow_extract.py"
N = 1000


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONHASHSEED="0")
    env["PYTHONPATH"] = str(Path(__file__).parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cached_keys(cache_dir: Path) -> list[bytes]:
    folder = next(p for p in cache_dir.iterdir() if p.is_dir())
    index = json.loads((folder / "index.json").read_text())
    keys: list[bytes] = []
    for entry in index["shards"]:
        data = load_file(str(folder / entry["file"]))
        assert len(data["keys"]) == entry["rows"]
        keys += [bytes(k) for k in data["keys"]]
    return keys


def test_sigkill_mid_extraction_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    killed_cache = tmp_path / "killed"
    rng = random.Random(7)
    kills = 0
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, str(HELPER), str(killed_cache), str(N)], env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None
        # Kill after a random number of progress reports (not after a wall-clock delay, which a
        # fast machine outruns), then a little later so the kill also lands mid-batch/mid-write.
        target = rng.randint(3, 12)
        seen = 0
        for line in proc.stdout:
            seen += line.startswith("progress")
            if seen >= target:
                time.sleep(rng.uniform(0.0, 0.03))
                break
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.stdout.close()
        proc.wait(timeout=30)
    assert kills >= 5
    done = subprocess.run([sys.executable, str(HELPER), str(killed_cache), str(N), str(tmp_path / "killed.npy")],
                          env=_env(), capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip().splitlines()[-1].startswith("done")
    clean = subprocess.run([sys.executable, str(HELPER), str(tmp_path / "clean"), str(N), str(tmp_path / "clean.npy")],
                           env=_env(), capture_output=True, text=True, timeout=120, check=True)
    assert clean.stdout.strip().splitlines()[-1] == f"done {N}"
    np.testing.assert_array_equal(np.load(tmp_path / "killed.npy"), np.load(tmp_path / "clean.npy"))
    keys = _cached_keys(killed_cache)
    assert len(keys) == N and len(set(keys)) == N  # 0 lost, 0 duplicated
    assert sorted(keys) == sorted(_cached_keys(tmp_path / "clean"))
