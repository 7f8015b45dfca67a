"""Install the system/npm/pip packages a recipe needs, or say exactly what to run."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from modalign.errors import ModalignError

log = logging.getLogger(__name__)

#: npm packages are installed here (outside the repo, shared by every dataset and run)
NPM_PREFIX = Path(os.environ.get("MODALIGN_NPM_PREFIX", Path.home() / ".cache" / "modalign" / "npm"))


class InstallError(ModalignError):
    pass


def npm_package_dir(package: str) -> Path:
    """Where ``npm_install`` puts ``package`` (its folder under node_modules)."""
    return NPM_PREFIX / "node_modules" / package


def apt_missing(packages: list[str]) -> list[str]:
    """Debian packages of ``packages`` that are not installed."""
    missing = []
    for pkg in packages:
        res = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True, check=False
        )
        if "install ok installed" not in res.stdout:
            missing.append(pkg)
    return missing


def apt_command(packages: list[str]) -> str:
    return "apt-get update && apt-get install -y " + " ".join(packages)


def npm_command(packages: list[str]) -> str:
    return f"npm install --prefix {NPM_PREFIX} --no-audit --no-fund " + " ".join(packages)


def pip_missing(packages: dict[str, str]) -> list[str]:
    """The pip specs of ``{module: spec}`` whose module cannot be imported."""
    return [spec for module, spec in packages.items() if importlib.util.find_spec(module) is None]


def install_commands(apt: Sequence[str] = (), npm: Sequence[str] = (), pip: Sequence[str] = ()) -> list[str]:
    """Shell commands installing the given *missing* packages (the apt names are checked here too)."""
    commands = []
    missing_apt = apt_missing(list(apt))
    if missing_apt:
        commands.append(apt_command(missing_apt))
    if npm:
        commands.append(npm_command(list(npm)))
    if pip:
        commands.append(f"{sys.executable} -m pip install " + " ".join(pip))
    return commands


def run_install_commands(commands: list[str]) -> None:
    """Run shell install commands; apt needs root, so without it raise with the command to run."""
    for cmd in commands:
        if cmd.startswith("apt-get") and hasattr(os, "geteuid") and os.geteuid() != 0:
            raise InstallError(f"root is needed to install system packages; run:\n  sudo sh -c '{cmd}'")
        if cmd.startswith("npm") and shutil.which("npm") is None:
            raise InstallError(f"npm is not installed; install Node.js/npm, then run:\n  {cmd}")
        if cmd.startswith("npm"):
            NPM_PREFIX.mkdir(parents=True, exist_ok=True)
        log.info("installing: %s", cmd)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        res = subprocess.run(cmd, shell=True, capture_output=True, text=True, env=env, check=False)
        if res.returncode != 0:
            raise InstallError(f"install command failed ({res.returncode}):\n  {cmd}\n{res.stderr[-2000:]}")
