"""In CI a skipped test is a failure (tests/conftest.py): a guarantee that could not be set up is unproven."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def test_a_skip_fails_in_ci_and_stays_a_skip_elsewhere(tmp_path: Path) -> None:
    shutil.copy(Path(__file__).parent / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_needs_mount.py").write_text(
        "import pytest\n\ndef test_disk_full():\n    pytest.skip('cannot mount here')\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}

    def run(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                              capture_output=True, text=True, env={**env, **extra}, cwd=tmp_path, timeout=120)

    in_ci = run(CI="true")
    assert in_ci.returncode == 1 and "skipped in CI" in in_ci.stdout and "cannot mount here" in in_ci.stdout
    local = run()
    assert local.returncode == 0 and "1 skipped" in local.stdout
