"""Feature cache against its storage: read-only folders, a full disk, garbage files, file modes, and
two processes sharing one cache (they split the encoding instead of both doing all of it)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import run_cli
from helpers.slow_extract import SlowHashEncoder, items
from modalign._io import atomic_write_bytes, file_mode
from modalign.errors import ConfigError, ModalignError, StorageError
from modalign.features import FeatureCache, extract
from test_report import shared

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def _mounted(args: list[str], target: Path) -> Iterator[None]:
    """Mount (bind read-only, or a tiny tmpfs); skip where this machine does not allow mounting."""
    target.mkdir(exist_ok=True)
    done = subprocess.run(["mount", *args, str(target)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(target)], capture_output=True, check=False)


def test_read_only_cache_that_holds_everything_serves_reads(tmp_path: Path) -> None:
    src, ro = tmp_path / "cache", tmp_path / "ro"
    first = extract(SlowHashEncoder(), items(20), FeatureCache(src), shard_size=8)
    with _mounted(["--bind", "-o", "ro", str(src)], ro):
        again = extract(SlowHashEncoder(), items(20), FeatureCache(ro), shard_size=8)
        assert again.n_encoded == 0
        np.testing.assert_array_equal(again.features["only"], first.features["only"])
        # a row it lacks cannot be stored there: one clean error naming the folder
        with pytest.raises(StorageError, match=r"/ro/.*read-only"):
            extract(SlowHashEncoder(), [*items(20), "not cached yet"], FeatureCache(ro), shard_size=8)


def test_full_disk_is_one_error_naming_the_path(tmp_path: Path) -> None:
    small = tmp_path / "small"
    with _mounted(["-t", "tmpfs", "-o", "size=64k", "tmpfs"], small):
        with pytest.raises(StorageError, match=str(small)) as info:
            extract(SlowHashEncoder(), items(4000), FeatureCache(small), shard_size=1000)
        assert isinstance(info.value, ModalignError)  # the CLI turns these into one line and exit 2
        assert "No space left" in str(info.value)
        assert not [p for p in small.rglob("*.tmp")]  # the failed temp file is gone


def test_garbage_info_json_names_the_file(tmp_path: Path) -> None:
    extract(SlowHashEncoder(), items(4), FeatureCache(tmp_path), shard_size=8)
    (info,) = tmp_path.glob("*/info.json")
    info.write_bytes(b'{"cache_id": "x\x01y"}')
    with pytest.raises(ConfigError, match=r"info\.json"):
        extract(SlowHashEncoder(), items(4), FeatureCache(tmp_path), shard_size=8)


def test_files_respect_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        assert file_mode() == 0o644
        atomic_write_bytes(tmp_path / "x.json", b"{}")
        extract(SlowHashEncoder(), items(10), FeatureCache(tmp_path / "c"), shard_size=8)
    finally:
        os.umask(old)
    written = [tmp_path / "x.json", *(tmp_path / "c").glob("*/*.json"), *(tmp_path / "c").glob("*/*.safetensors")]
    assert len(written) >= 4
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {oct(0o644)}


def test_two_processes_share_the_encoding(tmp_path: Path) -> None:
    n = 96
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    path = str(ROOT / "tests") + os.pathsep + os.environ.get("PYTHONPATH", "")
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=path)
    procs = [subprocess.Popen([sys.executable, "-m", "helpers.shared_extract", str(tmp_path / "cache"),
                               str(barrier), name, str(n)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
             for name in ("a", "b")]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    encoded = [int(line.split()[1]) for out in outs for line in out.splitlines() if line.startswith("encoded")]
    oks = [int(line.split()[2]) for out in outs for line in out.splitlines() if line.startswith("encoded")]
    assert oks == [n, n]
    assert sum(encoded) == n, f"rows encoded by each process: {encoded}"
    # the cache holds every row exactly once
    again = extract(SlowHashEncoder(), items(n), FeatureCache(tmp_path / "cache"), shard_size=8)
    assert again.n_encoded == 0
    cache = FeatureCache(tmp_path / "cache")
    assert len(cache.store(SlowHashEncoder().cache_id, SlowHashEncoder().layer_dims)) == n


def test_model_heads_are_written_atomically(tmp_path: Path) -> None:
    import torch

    from modalign.align import AlignedModel, Branch, load
    from modalign.align.heads import HEADS

    small = tmp_path / "small"
    with _mounted(["-t", "tmpfs", "-o", "size=256k", "tmpfs"], small):
        head = HEADS.create("linear", in_dim=64, out_dim=32)
        model = AlignedModel(branches={m: Branch(m, "vector", "vectors", {"dim": 64}, "vector", head.eval())
                                       for m in ("a", "b")}, dim=32, method="infonce")
        model.save(small / "m")
        before = (small / "m" / "heads.safetensors").read_bytes()
        filler = small / "filler"
        st = os.statvfs(small)
        filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - len(before) // 2))  # room for half a file
        with torch.no_grad():
            for p in head.parameters():
                p.add_(1.0)
        with pytest.raises(StorageError, match=r"heads\.safetensors"):
            model.save(small / "m")
        assert (small / "m" / "heads.safetensors").read_bytes() == before  # the old model is intact
        filler.unlink()
        load(small / "m")


def _one_clean_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert "Traceback" not in output and lines, output
    return " ".join(lines[-3:])  # rich may wrap the one message over a few terminal lines


def test_cli_fit_on_a_full_disk_or_read_only_cache(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """`modalign fit` with its cache or its output on a full disk exits 2 with one line naming the path; a
    read-only cache that already holds every feature serves the fit."""
    manifest, _ = shared(tmp_path_factory)
    fit = ["fit", "--data", str(manifest), "--modalities", "image,text", "--method", "procrustes", "--dim", "16",
           "--holdout", "0.25"]
    full = tmp_path / "full"
    with _mounted(["-t", "tmpfs", "-o", "size=64k", "tmpfs"], full):
        said = _one_clean_line(run_cli([*fit, "--cache", str(full / "cache"), "--out", str(tmp_path / "m0")], code=2))
        assert "No space left" in said and str(full) in said.replace("\n", ""), said
    cache = tmp_path / "cache"
    run_cli([*fit, "--cache", str(cache), "--out", str(tmp_path / "m1")])
    with _mounted(["-t", "tmpfs", "-o", "size=64k", "tmpfs"], full):
        said = _one_clean_line(run_cli([*fit, "--cache", str(cache), "--out", str(full / "model")], code=2))
        assert "No space left" in said, said
        assert not (full / "model" / "heads.safetensors").exists()  # never a half-written model
    ro = tmp_path / "ro"
    with _mounted(["--bind", "-o", "ro", str(cache)], ro):
        run_cli([*fit, "--cache", str(ro), "--out", str(tmp_path / "m2")])
    assert (tmp_path / "m2" / "heads.safetensors").is_file()


def test_cli_fit_on_a_read_only_cache_that_lacks_features(tmp_path: Path,
                                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    """The features it would have to store cannot go there: exit 2, one line naming the read-only folder."""
    manifest, _ = shared(tmp_path_factory)
    empty, ro = tmp_path / "empty", tmp_path / "ro"
    empty.mkdir()
    with _mounted(["--bind", "-o", "ro", str(empty)], ro):
        output = run_cli(["fit", "--data", str(manifest), "--modalities", "image,text", "--method", "procrustes",
                          "--dim", "16", "--holdout", "0.25", "--cache", str(ro), "--out", str(tmp_path / "m")],
                         code=2)
    said = "".join(output.split())
    assert "Traceback" not in output and str(ro) in said and "read-only" in said.lower(), output
    assert not (tmp_path / "m" / "heads.safetensors").exists()
