"""The three npm icon sets of the ``icons`` recipe and where each keeps its names, tags and categories.

Layouts read here (checked against the pinned versions):
- ``@mdi/svg``: ``meta.json`` = list of {name, aliases, tags, deprecated}; its ``tags`` are categories
  ("Arrow", "Home Automation"), its ``aliases`` alternative names; SVGs in ``svg/<name>.svg`` (filled).
- ``@tabler/icons``: ``icons.json`` = {name: {category, tags, styles}}; SVGs in ``icons/outline/<name>.svg``
  (stroke, ``currentColor``); about a fifth also have a ``filled`` style, which is not used.
- ``lucide-static``: ``tags.json`` = {name: [tags]}, no categories; SVGs in ``icons/<name>.svg`` (stroke,
  ``currentColor``). The folder also holds deprecated alias files that ``tags.json`` does not list.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from modalign.data.recipes.install import npm_package_dir


@dataclass(frozen=True)
class Icon:
    set: str
    name: str  # the set's own slug, e.g. "arrow-left"
    tags: tuple[str, ...]  # human-readable, in the set's order
    category: str | None
    svg: Path


@dataclass(frozen=True)
class IconSet:
    name: str
    package: str  # npm package
    install_spec: str  # pinned to the version whose layout this module reads
    licence: str
    style: str  # how it draws, for the card
    loader: Callable[[Path], list[Icon]]

    def root(self) -> Path:
        return npm_package_dir(self.package)

    def available(self) -> bool:
        return (self.root() / "package.json").is_file()

    def version(self) -> str | None:
        try:
            meta = json.loads((self.root() / "package.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return str(meta.get("version")) if meta.get("version") else None

    def icons(self) -> list[Icon]:
        """Every usable icon of the set, sorted by name; icons whose SVG is missing are left out."""
        return list(_catalogue(self, self.version()))


@lru_cache(maxsize=8)
def _catalogue(icon_set: IconSet, version: str | None) -> tuple[Icon, ...]:
    # keyed by version too, so an npm upgrade inside a long-lived process is seen
    icons = (i for i in icon_set.loader(icon_set.root()) if i.svg.is_file())
    return tuple(sorted(icons, key=lambda i: i.name))


def readable(slug: str) -> str:
    """``arrow-left-bold`` → ``arrow left bold`` (tags already in words pass through)."""
    return " ".join(slug.replace("_", "-").split("-")).strip()


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the icon catalogue {path}: {exc}") from exc


def load_mdi(root: Path) -> list[Icon]:
    meta = _load_json(root / "meta.json")
    if not isinstance(meta, list):
        raise ValueError(f"{root / 'meta.json'}: expected a list of icons")
    icons = []
    for entry in meta:
        if entry.get("deprecated"):  # slated for removal, mostly brand logos
            continue
        name = str(entry["name"])
        categories = [str(t) for t in entry.get("tags") or []]
        icons.append(Icon("mdi", name, tuple(readable(a) for a in entry.get("aliases") or []),
                          categories[0] if categories else None, root / "svg" / f"{name}.svg"))
    return icons


def load_tabler(root: Path) -> list[Icon]:
    meta = _load_json(root / "icons.json")
    if not isinstance(meta, dict):
        raise ValueError(f"{root / 'icons.json'}: expected an object of icons")
    icons = []
    for name, entry in meta.items():
        if "outline" not in (entry.get("styles") or {}):
            continue
        category = str(entry.get("category") or "").strip() or None
        icons.append(Icon("tabler", str(name), tuple(readable(str(t)) for t in entry.get("tags") or []),
                          category, root / "icons" / "outline" / f"{name}.svg"))
    return icons


def load_lucide(root: Path) -> list[Icon]:
    meta = _load_json(root / "tags.json")
    if not isinstance(meta, dict):
        raise ValueError(f"{root / 'tags.json'}: expected an object of icon tags")
    return [Icon("lucide", str(name), tuple(readable(str(t)) for t in tags or []), None,
                 root / "icons" / f"{name}.svg") for name, tags in meta.items()]


ICON_SETS: dict[str, IconSet] = {
    s.name: s
    for s in (
        IconSet("mdi", "@mdi/svg", "@mdi/svg@7.4.47",
                "Apache-2.0 (Pictogrammers Free License: icons Apache-2.0 or their own licences)",
                "filled glyphs", load_mdi),
        IconSet("tabler", "@tabler/icons", "@tabler/icons@3.52.0", "MIT", "2 px strokes (outline style)",
                load_tabler),
        IconSet("lucide", "lucide-static", "lucide-static@1.62.0",
                "ISC (icons derived from Feather: MIT)", "2 px strokes", load_lucide),
    )
}
