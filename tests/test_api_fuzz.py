"""A peer's API fuzzer against a real ``modalign serve``: Schemathesis generates requests from the published
OpenAPI schema (examples and seed bounded) and finds no 5xx and no answer that breaks that schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cli import run_cli
from helpers.recipes import ready_recipe
from test_server import serve

CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


@pytest.fixture(scope="module")
def icon_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("api-fuzz")
    manifest = ready_recipe("icons").prepare(base / "data", limit=12).manifest
    run_cli(["fit", "--data", str(manifest), "--modalities", "image,text", "--method", "procrustes", "--dim", "8",
             "--cache", str(base / "cache"), "--out", str(base / "model")])
    run_cli(["index", "--model", str(base / "model"), "--data", str(manifest), "--out", str(base / "index"),
             "--cache", str(base / "cache")])
    return base / "index"


def test_schemathesis_finds_no_server_error_and_no_schema_break(icon_index: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "schemathesis"
    with serve(icon_index) as url:  # run in tmp_path: schemathesis keeps a cache folder in its working directory
        proc = subprocess.run([str(exe), "run", f"{url}/openapi.json", "--checks", CHECKS, "--max-examples", "40",
                               "--seed", "0", "--request-timeout", "60", "--no-color"],
                              capture_output=True, text=True, timeout=600, cwd=tmp_path)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report[-6000:]
    assert " passed" in report and "failures" not in report.lower().split("summary")[-1].replace("0 failures", "")
