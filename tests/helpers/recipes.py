"""Built-in dataset recipes for tests: created with options, failing (never skipping) when a source is missing."""

from __future__ import annotations

from typing import Any

import pytest

from modalign.data.recipes import DATASETS


def ready_recipe(name: str, **options: Any) -> Any:
    """The recipe ``name`` with ``options``; a missing apt/npm/pip source fails the test with its install step."""
    recipe = DATASETS.create(name, **options)
    missing = recipe.missing_requirements()
    if missing:
        pytest.fail(f"{name} sources are missing; run scripts/install_system_deps.sh: " + "; ".join(missing))
    return recipe
