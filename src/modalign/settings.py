"""The user's own settings file: ``$MODALIGN_CONFIG``, else ``~/.config/modalign/config.toml``.

Only what a user decides once for every run lives here. Today that is the code a saved model or index
may run when it is opened::

    [trust]
    encoders = ["py:my_package.encoders:make_encoder", "my-plugin"]

A file that is missing is an empty one; a file that does not parse is an error naming it.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from modalign.errors import ConfigError


def settings_path() -> Path:
    given = os.environ.get("MODALIGN_CONFIG", "").strip()
    return Path(given).expanduser() if given else Path("~/.config/modalign/config.toml").expanduser()


def read_settings() -> dict[str, Any]:
    path = settings_path()
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the settings file: {exc}") from None


def trusted_encoders() -> set[str]:
    """Encoder specs (``py:MODULE:FACTORY``, plugin names) the user allows saved models to load."""
    value = (read_settings().get("trust") or {}).get("encoders", [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{settings_path()}: [trust] encoders must be a list of encoder specs (strings)")
    return {v.strip() for v in value}
