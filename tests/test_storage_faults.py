"""The storage guarantees of tests/test_cache_storage.py, on any machine: the same code paths driven by injected
errors (ENOSPC from the fsync a full disk fails at, EROFS from the lock and temp files of a read-only folder)
instead of a tmpfs or a read-only bind mount, which need root and ``mount``."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from filelock import FileLock

from helpers.cli import run_cli
from helpers.slow_extract import SlowHashEncoder, items
from modalign.errors import ModalignError, StorageError
from modalign.features import FeatureCache, extract
from test_report import shared


def _failing(code: int, inside: Path, real: Callable[[int], None]) -> Callable[[int], None]:
    """``real(fd)`` that raises OSError(code) for a file descriptor open on a file in ``inside``."""

    def call(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(inside)):
            raise OSError(code, os.strerror(code))
        real(fd)

    return call


def _full_disk(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    monkeypatch.setattr(os, "fsync", _failing(errno.ENOSPC, folder, os.fsync))


def _read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """What a read-only folder refuses modalign: its lock file and the temp files of atomic writes."""
    real_acquire, real_mkstemp = FileLock.acquire, tempfile.mkstemp

    def acquire(self: FileLock, *args: Any, **kwargs: Any) -> Any:
        if str(self.lock_file).startswith(str(folder)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_acquire(self, *args, **kwargs)

    def mkstemp(*args: Any, **kwargs: Any) -> Any:
        if str(kwargs.get("dir", "")).startswith(str(folder)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(FileLock, "acquire", acquire)
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_full_disk_is_one_error_naming_the_path_and_leaves_no_temp_file(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    with monkeypatch.context() as patch:
        _full_disk(patch, cache)
        with pytest.raises(StorageError, match=str(cache)) as info:
            extract(SlowHashEncoder(), items(40), FeatureCache(cache), shard_size=16)
    assert isinstance(info.value, ModalignError)
    assert "No space left" in str(info.value)
    assert not list(cache.rglob("*.tmp"))
    # the disk has room again: nothing half-written is read back, every row is encoded and stored once
    again = extract(SlowHashEncoder(), items(40), FeatureCache(cache), shard_size=16)
    assert again.n_encoded == 40
    assert extract(SlowHashEncoder(), items(40), FeatureCache(cache), shard_size=16).n_encoded == 0


def test_read_only_cache_serves_what_it_holds_and_names_the_folder_for_the_rest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    first = extract(SlowHashEncoder(), items(20), FeatureCache(cache), shard_size=8)
    with monkeypatch.context() as patch:
        _read_only(patch, cache)
        again = extract(SlowHashEncoder(), items(20), FeatureCache(cache), shard_size=8)
        assert again.n_encoded == 0
        np.testing.assert_array_equal(again.features["only"], first.features["only"])
        with pytest.raises(StorageError, match=rf"{cache}.*read-only"):
            extract(SlowHashEncoder(), [*items(20), "not cached yet"], FeatureCache(cache), shard_size=8)


def test_a_model_save_that_fails_leaves_the_old_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from modalign.align import AlignedModel, Branch, load
    from modalign.align.heads import HEADS

    head = HEADS.create("linear", in_dim=64, out_dim=32)
    model = AlignedModel(branches={m: Branch(m, "vector", "vectors", {"dim": 64}, "vector", head.eval())
                                   for m in ("a", "b")}, dim=32, method="infonce")
    model.save(tmp_path / "m")
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}
    with torch.no_grad():
        for p in head.parameters():
            p.add_(1.0)
    with monkeypatch.context() as patch:
        _full_disk(patch, tmp_path)
        with pytest.raises(StorageError, match="No space left"):
            model.save(tmp_path / "m")
    assert {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name != "m"]  # no temporary folder left beside it
    load(tmp_path / "m")


def _one_clean_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert "Traceback" not in output and lines, output
    return "".join(" ".join(lines[-3:]).split())  # rich may wrap the one message over a few terminal lines


def test_cli_fit_on_a_full_disk_or_a_read_only_cache(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    manifest, _ = shared(tmp_path_factory)
    fit = ["fit", "--data", str(manifest), "--modalities", "image,text", "--method", "procrustes", "--dim", "16",
           "--holdout", "0.25"]
    cache, out = tmp_path / "cache", tmp_path / "out"
    with monkeypatch.context() as patch:
        _full_disk(patch, cache)
        said = _one_clean_line(run_cli([*fit, "--cache", str(cache), "--out", str(tmp_path / "m0")], code=2))
    assert "Nospaceleft" in said and str(cache) in said, said
    run_cli([*fit, "--cache", str(cache), "--out", str(tmp_path / "m1")])
    with monkeypatch.context() as patch:
        _full_disk(patch, out)
        said = _one_clean_line(run_cli([*fit, "--cache", str(cache), "--out", str(out / "model")], code=2))
    assert "Nospaceleft" in said, said
    assert not (out / "model" / "heads.safetensors").exists()  # never a half-written model
    empty = tmp_path / "empty"
    empty.mkdir()
    with monkeypatch.context() as patch:
        _read_only(patch, cache)
        _read_only(patch, empty)
        run_cli([*fit, "--cache", str(cache), "--out", str(tmp_path / "m2")])  # it holds every feature
        said = _one_clean_line(run_cli([*fit, "--cache", str(empty), "--out", str(tmp_path / "m3")], code=2))
    assert (tmp_path / "m2" / "heads.safetensors").is_file()
    assert str(empty) in said and "read-only" in said.lower(), said
    assert not (tmp_path / "m3" / "heads.safetensors").exists()
