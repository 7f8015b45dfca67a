"""``build_head``: a head from its saved config, after every built-in head has registered itself.

Its own module above the implementations (which import ``base``), so rebuilding a head needs no import
of the package from inside ``base`` (that was an import cycle).
"""

from __future__ import annotations

from typing import Any

from modalign.align.heads import ensemble, identity, linear, mlp, moe  # noqa: F401  (importing registers them)
from modalign.align.heads.base import HEADS, Head


def build_head(config: dict[str, Any]) -> Head:
    cfg = dict(config)
    name = cfg.pop("name")
    return HEADS.create(name, **cfg)
