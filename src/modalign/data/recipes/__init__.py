"""Dataset recipes; importing this package registers every built-in one."""

from modalign.data.recipes import (
    bible,  # noqa: F401
    emoji,  # noqa: F401
    icons,  # noqa: F401
    instruments,  # noqa: F401
    kanji,  # noqa: F401
    speech,  # noqa: F401
)
from modalign.data.recipes.base import DATASETS, DatasetRecipe, PrepareResult

__all__ = ["DATASETS", "DatasetRecipe", "PrepareResult"]
