"""Feature cache: hit on rerun, resume after an interrupted extraction, corrupt shards recomputed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modalign.encoders.base import Encoder
from modalign.errors import ItemError
from modalign.features import FeatureCache, extract


class CountingEncoder(Encoder):
    """Deterministic text 'encoder' that counts calls and can be made to crash after N items."""

    name = "counting"
    kind = "text"
    batch_size = 8

    def __init__(self, crash_after: int | None = None) -> None:
        self.calls = 0
        self.crash_after = crash_after

    @property
    def dim(self) -> int:
        return 4

    @property
    def layers(self) -> tuple[str, ...]:
        return ("a", "b")

    def _encode_batch(self, items: Sequence[Any], layers: Sequence[str]) -> dict[str, np.ndarray]:
        for item in items:
            if item == "BAD":
                raise ItemError(item, "bad on purpose")
        if self.crash_after is not None and self.calls + len(items) > self.crash_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls += len(items)
        base = np.array([[len(t), sum(map(ord, t)) % 97, t.count("a"), 1.0] for t in items], np.float32)
        return {"a": base, "b": base * 2}


ITEMS = [f"item {i} {'a' * (i % 5)}" for i in range(100)]


def test_second_run_encodes_nothing(tmp_path: Path) -> None:
    enc = CountingEncoder()
    first = extract(enc, ITEMS, FeatureCache(tmp_path), shard_size=16)
    assert first.n_encoded == 100 and enc.calls == 100
    enc2 = CountingEncoder()
    second = extract(enc2, ITEMS, FeatureCache(tmp_path), shard_size=16)
    assert second.n_encoded == 0 and enc2.calls == 0
    for layer in ("a", "b"):
        np.testing.assert_array_equal(first.features[layer], second.features[layer])


def test_duplicates_are_encoded_once(tmp_path: Path) -> None:
    enc = CountingEncoder()
    res = extract(enc, ITEMS[:10] * 3, FeatureCache(tmp_path))
    assert enc.calls == 10 and res.features["a"].shape == (30, 4)


def test_resume_after_interruption(tmp_path: Path) -> None:
    crashing = CountingEncoder(crash_after=50)
    with pytest.raises(KeyboardInterrupt):
        extract(crashing, ITEMS, FeatureCache(tmp_path), shard_size=16)
    assert crashing.calls == 48  # three complete shards of 16 were written before the "kill"
    resumed = CountingEncoder()
    res = extract(resumed, ITEMS, FeatureCache(tmp_path), shard_size=16)
    assert resumed.calls == 100 - 48
    clean = extract(CountingEncoder(), ITEMS, None)
    np.testing.assert_array_equal(res.features["a"], clean.features["a"])


def test_corrupt_shard_is_detected_and_recomputed(tmp_path: Path) -> None:
    extract(CountingEncoder(), ITEMS, FeatureCache(tmp_path), shard_size=32)
    shard = sorted(tmp_path.rglob("shard-000002.safetensors"))[0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])  # truncated
    enc = CountingEncoder()
    res = extract(enc, ITEMS, FeatureCache(tmp_path), shard_size=32)
    assert enc.calls == 32
    np.testing.assert_array_equal(res.features["b"], extract(CountingEncoder(), ITEMS, None).features["b"])


def test_flipped_byte_is_caught_by_checksum(tmp_path: Path) -> None:
    extract(CountingEncoder(), ITEMS, FeatureCache(tmp_path), shard_size=50)
    shard = sorted(tmp_path.rglob("shard-000001.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF  # inside the float payload: still parses, wrong numbers
    shard.write_bytes(bytes(data))
    enc = CountingEncoder()
    res = extract(enc, ITEMS, FeatureCache(tmp_path), shard_size=50)
    assert enc.calls == 50
    np.testing.assert_array_equal(res.features["a"], extract(CountingEncoder(), ITEMS, None).features["a"])


def test_bad_items_are_skipped_and_named(tmp_path: Path) -> None:
    items = ["fine", "BAD", "also fine"]
    res = extract(CountingEncoder(), items, FeatureCache(tmp_path))
    assert res.ok.tolist() == [True, False, True]
    assert res.errors == [(1, "bad on purpose")]
    with pytest.raises(ItemError, match="bad on purpose"):
        extract(CountingEncoder(), items, FeatureCache(tmp_path), on_error="fail")


def test_orphan_files_from_a_killed_write_are_removed(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    extract(CountingEncoder(), ITEMS[:20], cache, shard_size=10)
    folder = next(p for p in tmp_path.iterdir() if p.is_dir())
    (folder / "shard-000099.safetensors").write_bytes(b"partial")
    (folder / ".shard-000100.safetensors.abc.tmp").write_bytes(b"partial")
    enc = CountingEncoder()
    extract(enc, ITEMS[:20], FeatureCache(tmp_path), shard_size=10)
    assert enc.calls == 0
    assert not (folder / "shard-000099.safetensors").exists()
    assert not list(folder.glob(".*.tmp"))
