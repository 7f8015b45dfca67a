"""Which groups a model trained on, kept as short digests so that ``eval`` can tell when it scores them.

A digest, not the name: group names can be private (patient ids, product SKUs), and 8 bytes of
BLAKE2b per group keep config.json small while making an accidental collision negligible.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

SCHEME = "blake2b-64"


def group_digest(group: str) -> str:
    return hashlib.blake2b(str(group).encode("utf-8"), digest_size=8).hexdigest()


def record(groups: Iterable[str]) -> dict[str, Any]:
    """The ``training["trained_groups"]`` block: the sorted digests of every group fit saw."""
    values = sorted({group_digest(g) for g in groups})
    return {"scheme": SCHEME, "n": len(values), "digests": values}


def rows_in_training(training: Mapping[str, Any], groups: Iterable[str]) -> int | None:
    """How many of ``groups`` (one per evaluated row) the model trained on; None when it did not record it."""
    block = training.get("trained_groups")
    if not isinstance(block, Mapping) or block.get("scheme") != SCHEME or not isinstance(block.get("digests"), list):
        return None
    seen = set(block["digests"])
    return sum(group_digest(g) in seen for g in groups)
