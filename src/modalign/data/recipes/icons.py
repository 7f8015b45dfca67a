"""The ``icons`` recipe: Material Design Icons, Tabler and Lucide icons paired with their names and tags.

One row per (set, icon). Icons of the same name in several sets are one concept: they share a group
and one text (the name plus the tags of every set), so a text query has several relevant images.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modalign.data.recipes.base import DATASETS, DatasetRecipe, PrepareResult, Progress
from modalign.data.recipes.files import write_jsonl_atomic, write_text_atomic
from modalign.data.recipes.icon_sets import ICON_SETS, Icon, IconSet, readable
from modalign.data.recipes.install import (
    InstallError,
    install_commands,
    npm_command,
    pip_missing,
)
from modalign.data.recipes.svg_render import (
    TILE,
    RenderTask,
    check_unique_ids,
    default_workers,
    identical_image_groups,
    is_done,
    reconcile_stamp,
    render_all,
    save_stamp,
)

log = logging.getLogger(__name__)

#: libcairo2 is the C library under cairosvg
APT_PACKAGES = ("libcairo2",)
#: tags shown in ``text`` (all of them stay in ``meta_tags``); Tabler lists up to ~20, mostly filler
MAX_TEXT_TAGS = 8
#: MDI's "<name>-outline" redraws "<name>" in outline: same concept, so same group (no split leaks)
VARIANT_SUFFIXES = ("-outline",)


@dataclass
class Concept:
    group: str
    icons: list[Icon] = field(default_factory=list)

    @property
    def sets(self) -> set[str]:
        return {i.set for i in self.icons}


def group_key(name: str) -> str:
    for suffix in VARIANT_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def icon_text(name: str, icons: Sequence[Icon]) -> str:
    """``arrow left: back, previous`` — the name in words, then the sets' tags (deduplicated)."""
    title = readable(name)
    seen = {title.lower()}
    tags = []
    for icon in icons:
        for tag in icon.tags:
            if tag and tag.lower() not in seen:
                seen.add(tag.lower())
                tags.append(tag)
    return f"{title}: {', '.join(tags[:MAX_TEXT_TAGS])}" if tags else title


def build_concepts(sets: Sequence[IconSet]) -> list[Concept]:
    """Concepts drawn by the most sets first, then by name — ``limit=N`` keeps the best-covered ones."""
    by_group: dict[str, Concept] = {}
    for icon_set in sets:
        for icon in icon_set.icons():
            key = group_key(icon.name)
            by_group.setdefault(key, Concept(key)).icons.append(icon)
    order = {s.name: i for i, s in enumerate(sets)}
    for concept in by_group.values():
        concept.icons.sort(key=lambda i: (i.name, order[i.set]))
    return sorted(by_group.values(), key=lambda c: (-len(c.sets), c.group))


@DATASETS.register("icons")
class IconsRecipe(DatasetRecipe):
    name = "icons"
    description = (
        "UI icons from Material Design Icons, Tabler and Lucide, rendered black on white, paired with "
        "their names and tags; an icon name shared by several sets is one concept (one group, one text)."
    )
    modalities: tuple[str, ...] = ("image", "text")
    licence = "MDI Apache-2.0 (Pictogrammers Free License), Tabler MIT, Lucide ISC (Feather-derived icons MIT)"
    source = "npm: @mdi/svg, @tabler/icons, lucide-static; pip: cairosvg; apt: libcairo2"
    approx_size = "~11k concepts, ~14.6k images (7.2k MDI + 5.5k Tabler + 1.9k Lucide), ~30 MB"

    def __init__(self, sets: Sequence[str] | None = None, workers: int | None = None) -> None:
        unknown = [s for s in sets or () if s not in ICON_SETS]
        if unknown:
            raise ValueError(f"unknown icon set(s) {unknown}; known: {list(ICON_SETS)}")
        self.sets = [ICON_SETS[s] for s in (sets or ICON_SETS)]
        self.workers = workers if workers is not None else default_workers()

    def missing_requirements(self) -> list[str]:
        npm = [s.install_spec for s in self.sets if not s.available()]
        return install_commands(apt=list(APT_PACKAGES), npm=npm, pip=pip_missing({"cairosvg": "cairosvg"}))

    def prepare(self, out: Path, limit: int | None = None, progress: Progress | None = None) -> PrepareResult:
        if limit is not None and limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        out = Path(out)
        notes: list[str] = []
        sets = [s for s in self.sets if s.available()]
        for s in self.sets:
            if not s.available():
                notes.append(f"set {s.name!r} skipped: {s.package} is not installed "
                             f"(run: {npm_command([s.install_spec])})")
        if not sets:
            raise InstallError(f"{self.name} needs at least one icon set; run:\n  "
                               f"{npm_command([s.install_spec for s in self.sets])}")
        concepts = build_concepts(sets)
        n_concepts = len(concepts)
        concepts = concepts[:limit] if limit is not None else concepts

        stamp = {s.name: {"version": s.version(), "tile": TILE} for s in sets}
        cleared = reconcile_stamp(out, stamp, {s.name: out / "images" / s.name for s in sets})
        notes += [f"{part}: source or render settings changed, images re-rendered" for part in cleared]
        save_stamp(out, stamp)  # before rendering, so an interrupted run stays incremental

        planned: list[dict[str, Any]] = []
        tasks: list[RenderTask] = []
        for concept in concepts:
            by_name: dict[str, list[Icon]] = defaultdict(list)
            for icon in concept.icons:
                by_name[icon.name].append(icon)
            for name, icons in by_name.items():
                text = icon_text(name, icons)
                for icon in icons:
                    rel = f"images/{icon.set}/{icon.name}.png"
                    planned.append({
                        "id": f"{icon.set}__{icon.name}", "image": rel, "text": text, "group": concept.group,
                        "label": icon.category, "meta_set": icon.set, "meta_name": icon.name,
                        "meta_tags": list(icon.tags), "meta_category": icon.category,
                    })
                    if not is_done(out / rel):
                        tasks.append((str(icon.svg), str(out / rel), None))

        results = render_all(tasks, self.workers, progress)
        rows = []
        dropped: Counter[tuple[str, str]] = Counter()
        for row in planned:
            status, message = results.get(str(out / row["image"]), ("cached", ""))
            if status in ("ok", "cached"):
                rows.append(row)
            else:
                dropped[(row["meta_set"], status)] += 1
                log.info("icons: dropped %s (%s: %s)", row["id"], status, message)
        for (set_name, status), n in sorted(dropped.items()):
            notes.append(f"{set_name}: dropped {n} icon(s) ({status})")

        check_unique_ids(rows, self.name)
        write_jsonl_atomic(out / "manifest.jsonl", rows)
        counts = self._counts(rows, results, dropped)
        counts["identical_image_groups"] = identical_image_groups(out, rows)
        groups = counts["groups"]
        write_text_atomic(out / "CARD.md", _card(self, sets, counts, len(rows), n_concepts, len(concepts), notes))
        log.info("icons: %d rows, %d groups in %s", len(rows), groups, out)
        return PrepareResult(out / "manifest.jsonl", len(rows), groups, counts, notes)

    @staticmethod
    def _counts(rows: Sequence[dict[str, Any]], results: dict[str, tuple[str, str]],
                dropped: Counter[tuple[str, str]]) -> dict[str, int]:
        counts: dict[str, int] = dict(Counter(r["meta_set"] for r in rows))
        sets_per_group: dict[str, set[str]] = defaultdict(set)
        for r in rows:
            sets_per_group[r["group"]].add(r["meta_set"])
        counts["groups"] = len(sets_per_group)
        counts["groups_in_several_sets"] = sum(len(s) > 1 for s in sets_per_group.values())
        counts["unique_texts"] = len({r["text"] for r in rows})
        counts["rows_with_label"] = sum(r["label"] is not None for r in rows)
        statuses = Counter(status for status, _ in results.values())
        counts["rendered"] = statuses["ok"]
        counts["cached"] = len(rows) - statuses["ok"]
        for status in ("blank", "error"):
            n = sum(v for (_, st), v in dropped.items() if st == status)
            if n:
                counts[f"dropped_{status}"] = n
        return counts


def _card(recipe: IconsRecipe, sets: Sequence[IconSet], counts: dict[str, int], rows: int, n_concepts: int,
          n_kept: int, notes: Sequence[str]) -> str:
    lines = [
        f"# {recipe.name}", "", recipe.description, "",
        f"{rows} rows, {counts['groups']} groups ({n_kept} of {n_concepts} concepts kept). Images: {TILE}x{TILE} "
        "RGB PNG, the icon's full viewBox rendered black on white with cairosvg (no crop, so the sets' "
        "own padding and relative sizes are kept).", "",
        "## Sources", "", "| set | npm package | version | licence | drawing | rows |", "|---|---|---|---|---|---|",
    ]
    for s in sets:
        lines.append(f"| {s.name} | {s.package} | {s.version() or '?'} | {s.licence} | {s.style} | "
                     f"{counts.get(s.name, 0)} |")
    lines += [
        "", "Redistributing the images means keeping each set's licence notice (MDI: Pictogrammers Free "
        "License; Lucide: ISC plus Feather's MIT for the icons it lists).", "",
        "## Counts", "", "| count | value |", "|---|---|",
        *(f"| {k} | {v} |" for k, v in counts.items() if k not in {s.name for s in sets}),
        "", "## Rows, texts and groups", "",
        "- `id` = `<set>__<icon name>`; `image` = `images/<set>/<icon name>.png`.",
        f"- `text` = the icon name in words, then up to {MAX_TEXT_TAGS} tags: `arrow left: arrow back, "
        "direction, ...`. Icons of the same name in several sets share one text whose tags merge those of "
        "every set (MDI: its aliases; Tabler and Lucide: their tags), deduplicated.",
        "- `group` = the icon name; MDI's `<name>-outline` (and the two Tabler/Lucide `*-outline` icons) join "
        "the group `<name>`, so a concept and its outline redraw never land on both sides of a split.",
        "- `label` / `meta_category` = the set's own category (MDI: first of its categories such as \"Arrow\"; "
        "Tabler: e.g. \"Arrows\"); null for Lucide, which ships no categories. The two taxonomies differ, so "
        "zero-shot classification should use one set at a time (`meta_set`).",
        "- `meta_tags` = that set's own tags (all of them), `meta_name` = its slug.",
        "- Concepts are ordered by the number of sets that draw them, then by name; `limit=N` keeps the "
        "first N concepts (all their images).",
        "", "## Known noise", "",
        "- Names are terse UI jargon (\"chevron double left\", \"dots vertical\", \"a b 2\"); numbered "
        "redraws (`-2`, `-3`) keep their digits.",
        "- Many concepts differ only by a modifier drawn as a small badge (`bell`, `bell off`, `bell plus`, "
        "`bell check`): hard negatives for retrieval.",
        "- MDI tags are categories and aliases, Tabler tags include filler words and single letters, Lucide "
        "tags are synonyms: text quality differs by set.",
        "- Deprecated MDI icons and Tabler's `filled` style are left out; Lucide's alias files are skipped.",
        "- `identical_image_groups` counts groups whose image is byte-identical to another group's "
        "(renamed duplicates inside a set).",
        "", "## Notes from the last prepare", "",
    ]
    lines += [f"- {note}" for note in notes] or ["- none"]
    return "\n".join(lines) + "\n"
