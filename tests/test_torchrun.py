"""``modalign fit`` under torchrun: the launcher's ranks train exactly like ``--workers`` spawned ones.

Real pairs: the Noto and OpenMoji renderings of the same 24 emoji (two image modalities through
EfficientNet-Lite0, which loads in about a second per rank). The ``--workers 2`` run is the reference;
torchrun (one node with 2 processes, and 2 "nodes" of one process on localhost with c10d rendezvous)
must save the same heads, with only rank 0 writing and printing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

from helpers.recipes import ready_recipe
from modalign.cli import app

CONCEPTS = 24
BIN = Path(sys.executable).parent
TIMEOUT = 300  # a hung rendezvous fails the test instead of hanging CI


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One row per emoji: ``image`` (Noto) and ``image_openmoji`` (OpenMoji), group = the concept."""
    root = tmp_path_factory.mktemp("torchrun-emoji")
    ready_recipe("emoji", styles=["noto", "openmoji"], include_variants=False).prepare(root, limit=CONCEPTS)
    by_group: dict[str, dict[str, str]] = {}
    for line in (root / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        by_group.setdefault(row["group"], {})[row["meta_style"]] = row["image"]
    rows = [{"id": g, "image": s["noto"], "image_openmoji": s["openmoji"], "group": g}
            for g, s in by_group.items() if {"noto", "openmoji"} <= set(s)]
    assert len(rows) >= CONCEPTS - 2
    manifest = root / "pairs.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return manifest


def _fit_args(manifest: Path, cache: Path, out: Path) -> list[str]:
    return ["fit", "--data", str(manifest), "--modalities", "image,image_openmoji", "--dim", "16", "--epochs", "3",
            "--batch-size", "16", "--val-fraction", "0", "--seed", "3", "--cache", str(cache), "--out", str(out)]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    return {**env, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=TIMEOUT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def reference(pairs: Path) -> dict[str, np.ndarray]:
    """``modalign fit --workers 2`` (spawned gloo workers); also fills the shared feature cache."""
    out = pairs.parent / "ref-model"
    res = CliRunner().invoke(app, [*_fit_args(pairs, pairs.parent / "cache", out), "--workers", "2"])
    assert res.exit_code == 0, res.output
    return load_file(str(out / "heads.safetensors"))


def _assert_same_heads(out: Path, reference: dict[str, np.ndarray]) -> None:
    heads = load_file(str(out / "heads.safetensors"))
    assert sorted(heads) == sorted(reference)
    for k in reference:
        np.testing.assert_allclose(heads[k], reference[k], atol=1e-5, rtol=1e-5, err_msg=k)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fit"]["epochs_run"] == 3


def test_torchrun_one_node_two_ranks_equals_workers(pairs: Path, reference: dict[str, np.ndarray],
                                                    tmp_path: Path) -> None:
    out = tmp_path / "model"
    res = _run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "modalign",
                *_fit_args(pairs, pairs.parent / "cache", out)])
    _assert_same_heads(out, reference)
    assert res.stdout.count("saved") == 1, res.stdout  # rank 1 prints nothing


def test_torchrun_two_nodes_on_localhost(pairs: Path, reference: dict[str, np.ndarray], tmp_path: Path) -> None:
    """Two torchrun agents (one process each) meet through c10d rendezvous. Both are LOCAL_RANK 0 of their
    "node" and share a fresh feature cache: rank 0 encodes, node 1 then finds everything cached."""
    from modalign.align.ddp import free_port

    out, cache = tmp_path / "model", tmp_path / "cache"
    port = free_port()
    agents = [subprocess.Popen(
        [str(BIN / "torchrun"), "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(node),
         "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "modalign-test",
         "-m", "modalign", *_fit_args(pairs, cache, out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()) for node in (0, 1)]
    try:
        outputs = [a.communicate(timeout=TIMEOUT) for a in agents]
    finally:
        for a in agents:
            if a.poll() is None:
                a.kill()
    for a, (stdout, stderr) in zip(agents, outputs, strict=True):
        assert a.returncode == 0, stdout[-3000:] + stderr[-3000:]
    _assert_same_heads(out, reference)
    assert sum(stdout.count("saved") for stdout, _ in outputs) == 1
    n_pairs = len(pairs.read_text().splitlines())
    rows = [e["rows"] for index in cache.glob("*/index.json") for e in json.loads(index.read_text())["shards"]]
    assert sum(rows) == 2 * n_pairs  # both images of every pair cached once, not once per node


def test_workers_under_a_launcher_is_a_clear_error(pairs: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    args = _fit_args(pairs, tmp_path / "cache", tmp_path / "model")
    res = CliRunner().invoke(app, [*args, "--workers", "2"])
    assert res.exit_code == 2, res.output
    assert "--workers 2 under a launcher" in res.output and "drop --workers" in res.output
    assert not (tmp_path / "model").exists()
    monkeypatch.setenv("RANK", "x")
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "RANK='x'" in res.output and "Traceback" not in res.output
