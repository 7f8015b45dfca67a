"""Built-in dataset recipes: each turns packaged sources (apt/npm/pip) into a manifest directory."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from modalign._registry import Registry

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total) — the CLI turns it into a progress bar."""


@dataclass
class PrepareResult:
    manifest: Path
    rows: int
    groups: int
    counts: dict[str, int] = field(default_factory=dict)  # e.g. rows per style/modality
    notes: list[str] = field(default_factory=list)


class DatasetRecipe(ABC):
    """Base class. Subclasses set the metadata and implement ``prepare``."""

    name: str
    description: str
    modalities: tuple[str, ...]
    licence: str
    source: str  # human-readable install source, e.g. "apt: fonts-noto-color-emoji; npm: openmoji"
    approx_size: str

    @abstractmethod
    def missing_requirements(self) -> list[str]:
        """Shell commands that would install what is missing (empty when ready)."""

    def install_requirements(self) -> None:
        """Run the commands of ``missing_requirements`` (needs root for apt); raise with the command on failure."""
        from modalign.data.recipes.install import run_install_commands

        run_install_commands(self.missing_requirements())

    @abstractmethod
    def prepare(self, out: Path, limit: int | None = None, progress: Progress | None = None) -> PrepareResult:
        """Write ``out/manifest.jsonl`` (+ files, ``CARD.md``); incremental when re-run."""


DATASETS: Registry[DatasetRecipe] = Registry("dataset")
