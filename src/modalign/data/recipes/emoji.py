"""The ``emoji`` and ``emoji-multilingual`` recipes: emoji images in four styles paired with CLDR names.

One row per (emoji, style) image. Skin-tone variants keep their own image but share the base emoji's
group and name, so concept-disjoint splits never put 👍 in train and 👍🏽 in test.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from PIL import features

from modalign.data.recipes.base import DATASETS, DatasetRecipe, PrepareResult, Progress
from modalign.data.recipes.cldr import CldrAnnotations, Concept, build_catalogue
from modalign.data.recipes.emoji_render import (
    STYLES,
    Status,
    Style,
    dpkg_version,
    render_task,
    source_for,
    svg_renderer_available,
)
from modalign.data.recipes.files import write_jsonl_atomic
from modalign.data.recipes.install import (
    InstallError,
    apt_command,
    install_commands,
    npm_command,
    pip_missing,
)

log = logging.getLogger(__name__)

#: libcairo2 is the C library under cairosvg (OpenMoji SVGs); Pillow's raqm text layout, which joins flags,
#: keycaps, skin tones and ZWJ sequences into one Noto glyph, loads libfribidi0 at run time
APT_PACKAGES = ("fonts-noto-color-emoji", "unicode-cldr-core", "libcairo2", "libfribidi0")
PIP_PACKAGES = {"emoji": "emoji", "cairosvg": "cairosvg"}  # import name -> PyPI name
CLDR_LICENCE = "Unicode-DFS-2016 (Unicode License)"
DEFAULT_LANGUAGES = ("de", "fr", "es", "it", "pt", "ja", "zh", "ru", "ar", "hi", "ko", "nl", "pl", "tr", "sv")
PROGRESS_EVERY = 50
#: below this many images a process pool costs more than it saves
POOL_MIN_TASKS = 64


def text_field(locale: str) -> str:
    """CLDR ``zh_Hant`` → manifest field ``text_zh-Hant`` (field names allow letters, digits and '-')."""
    return "text_" + locale.replace("_", "-")


@DATASETS.register("emoji")
class EmojiRecipe(DatasetRecipe):
    name = "emoji"
    description = (
        "Emoji in four art styles (Noto, OpenMoji, Fluent 3D, Google) paired with their Unicode CLDR "
        "English names; skin-tone variants share their base emoji's group and name."
    )
    modalities: tuple[str, ...] = ("image", "text")
    licence = (
        "mixed: Noto Color Emoji OFL-1.1 / Apache-2.0, OpenMoji CC-BY-SA-4.0, Fluent Emoji MIT, "
        f"emoji-datasource-google Apache-2.0 + MIT; names: CLDR {CLDR_LICENCE}"
    )
    source = (
        "apt: fonts-noto-color-emoji, unicode-cldr-core; npm: openmoji, @lobehub/fluent-emoji-3d, "
        "emoji-datasource-google; pip: emoji, cairosvg"
    )
    approx_size = "~1.85k concepts, ~3.6k emoji with skin tones, x 4 styles = ~14k images (~105 MB)"

    def __init__(
        self, styles: Sequence[str] | None = None, include_variants: bool = True, workers: int | None = None
    ) -> None:
        unknown = [s for s in styles or () if s not in STYLES]
        if unknown:
            raise ValueError(f"unknown emoji style(s) {unknown}; known: {list(STYLES)}")
        self.styles = [STYLES[s] for s in (styles or STYLES)]
        self.include_variants = include_variants
        self.workers = workers if workers is not None else max(1, min(4, os.cpu_count() or 1))

    # ------------------------------------------------------------------ requirements
    def missing_requirements(self) -> list[str]:
        npm = [s.install_spec for s in self.styles if s.kind == "npm" and not s.available()]
        return install_commands(apt=list(APT_PACKAGES), npm=npm, pip=pip_missing(PIP_PACKAGES))

    # ------------------------------------------------------------------ prepare
    def prepare(self, out: Path, limit: int | None = None, progress: Progress | None = None) -> PrepareResult:
        if limit is not None and limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        out = Path(out)
        annotations = CldrAnnotations()
        self._check_core_sources(annotations)
        notes: list[str] = []
        catalogue = build_catalogue(annotations)
        concepts = catalogue.concepts[:limit] if limit is not None else catalogue.concepts
        notes.append(
            f"{catalogue.dropped_no_name} fully-qualified emoji have no English name in the installed CLDR "
            f"(newer than it) and were left out"
        )
        if catalogue.dropped_no_base:
            notes.append(f"{catalogue.dropped_no_base} skin-tone variants had no base concept and were left out")

        styles = []
        for style in self.styles:
            if style.suffix == ".svg" and style.available() and not svg_renderer_available():
                notes.append(f"style {style.name!r} skipped: cairosvg (pip) or libcairo2 (apt) is missing")
            elif style.available():
                styles.append(style)
            else:
                notes.append(f"style {style.name!r} skipped: {style.package} is not installed "
                             f"(run: {npm_command([style.install_spec])})")

        if any(s.name == "noto" for s in styles) and not features.check("raqm"):
            notes.append("noto: Pillow has no raqm text layout (apt: libfribidi0), so flags, keycaps, skin "
                         "tones and ZWJ sequences fall apart and are dropped as tofu")
        planned, tasks, missing = self._plan(out, concepts, styles)
        statuses = self._render(tasks, progress)
        rows: list[dict[str, Any]] = []
        dropped: Counter[tuple[str, str]] = Counter()
        for row in planned:
            status = statuses.get(str(out / row["image"]), "cached")
            if status in ("ok", "cached"):
                rows.append(row)
            else:
                dropped[(row["meta_style"], status)] += 1
        for (style_name, reason), n in sorted(dropped.items()):
            notes.append(f"{style_name}: dropped {n} image(s) ({reason})")
        for style_name, n in sorted(missing.items()):
            notes.append(f"{style_name}: {n} emoji not drawn in this style")

        self._check_ids(rows)
        write_jsonl_atomic(out / "manifest.jsonl", rows)
        counts: dict[str, int] = dict(Counter(r["meta_style"] for r in rows))
        for reason in ("blank", "tofu", "error"):
            n = sum(v for (_, st), v in dropped.items() if st == reason)
            if n:
                counts[f"dropped_{reason}"] = n
        counts.update(self._extra_counts(rows))
        groups = len({r["group"] for r in rows})
        duplicates = _identical_images(out, rows)
        _write_card(out, self, styles, counts, len(rows), groups, len(concepts), missing, duplicates, notes)
        log.info("emoji: %d rows, %d groups in %s", len(rows), groups, out)
        return PrepareResult(out / "manifest.jsonl", len(rows), groups, counts, notes)

    def _check_core_sources(self, annotations: CldrAnnotations) -> None:
        missing = []
        if not annotations.available():
            missing.append("unicode-cldr-core")
        if STYLES["noto"] in self.styles and not STYLES["noto"].available():
            missing.append("fonts-noto-color-emoji")
        if missing:
            raise InstallError(f"{self.name} needs {', '.join(missing)}; run:\n  {apt_command(missing)}")
        if importlib.util.find_spec("emoji") is None:
            raise InstallError(f"{self.name} needs the PyPI package 'emoji'; run:\n  pip install emoji")

    def _plan(
        self, out: Path, concepts: Sequence[Concept], styles: Sequence[Style]
    ) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]], Counter[str]]:
        """Manifest rows to write and render tasks for images not yet on disk."""
        indexes = {s.name: (s.index() if s.kind == "npm" else None) for s in styles}
        planned: list[dict[str, Any]] = []
        tasks: list[tuple[str, str, str]] = []
        missing: Counter[str] = Counter()
        for concept in concepts:
            items: list[tuple[str, str, str | None]] = [(concept.emoji, concept.slug, None)]
            if self.include_variants:
                items += [(v.emoji, v.slug, v.modifier) for v in concept.variants]
            texts = self._texts(concept)
            for style in styles:
                for seq, slug, modifier in items:
                    source = source_for(style, seq, indexes[style.name])
                    if source is None:
                        missing[style.name] += 1
                        continue
                    rel = f"images/{style.name}/{slug}.png"
                    planned.append({
                        "id": f"{slug}__{style.name}", "image": rel, **texts, "group": concept.slug,
                        "meta_keywords": list(concept.keywords), "meta_style": style.name,
                        "meta_emoji": seq, "meta_variant": modifier,
                    })
                    dest = out / rel
                    if not (dest.is_file() and dest.stat().st_size > 0):  # incremental: keep what exists
                        tasks.append((style.name, source, str(dest)))
        return planned, tasks, missing

    def _texts(self, concept: Concept) -> dict[str, Any]:
        return {"text": concept.name}

    def _extra_counts(self, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
        return {}

    def _render(self, tasks: list[tuple[str, str, str]], progress: Progress | None) -> dict[str, Status]:
        total = len(tasks)
        statuses: dict[str, Status] = {}
        if progress:
            progress("render", 0, total)
        results: Iterable[tuple[str, Status, str]]
        pool = None
        if self.workers > 1 and total >= POOL_MIN_TASKS:
            # fork: workers need no re-import and inherit nothing they could misuse (PIL/cairo only)
            ctx = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
            pool = ProcessPoolExecutor(self.workers, mp_context=ctx)
            results = pool.map(render_task, tasks, chunksize=16)
        else:
            results = map(render_task, tasks)
        try:
            for done, (dest, status, message) in enumerate(results, start=1):
                statuses[dest] = status
                if status not in ("ok", "cached"):
                    log.debug("emoji: %s %s: %s", dest, status, message)
                if progress and (done % PROGRESS_EVERY == 0 or done == total):
                    progress("render", done, total)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        return statuses

    @staticmethod
    def _check_ids(rows: Sequence[dict[str, Any]]) -> None:
        seen = Counter(r["id"] for r in rows)
        dupes = [i for i, n in seen.items() if n > 1]
        if dupes:  # slugs are made unique in the catalogue, so this is a bug, not bad input
            raise RuntimeError(f"duplicate emoji row ids: {dupes[:10]}")


@DATASETS.register("emoji-multilingual")
class EmojiMultilingualRecipe(EmojiRecipe):
    name = "emoji-multilingual"
    description = (
        "The emoji images paired with CLDR names in English (text) and other languages (text_de, text_fr, "
        "...); a missing translation is null."
    )
    modalities = ("image", "text", *(text_field(lang) for lang in DEFAULT_LANGUAGES))
    approx_size = EmojiRecipe.approx_size + "; names in 15 languages by default (147 CLDR locales available)"

    def __init__(
        self,
        languages: Sequence[str] = DEFAULT_LANGUAGES,
        styles: Sequence[str] | None = None,
        include_variants: bool = True,
        workers: int | None = None,
    ) -> None:
        super().__init__(styles=styles, include_variants=include_variants, workers=workers)
        self.languages = tuple(lang for lang in languages if lang != "en")
        self.modalities = ("image", "text", *(text_field(lang) for lang in self.languages))
        self._annotations = CldrAnnotations()

    def prepare(self, out: Path, limit: int | None = None, progress: Progress | None = None) -> PrepareResult:
        unknown = [lang for lang in self.languages if lang not in self._annotations.locales()]
        if unknown:
            raise ValueError(f"no CLDR annotations for {unknown}; available: {self._annotations.locales()}")
        return super().prepare(out, limit, progress)

    def _texts(self, concept: Concept) -> dict[str, Any]:
        texts = super()._texts(concept)
        for lang in self.languages:
            texts[text_field(lang)] = self._annotations.name(concept.emoji, lang)
        return texts

    def _extra_counts(self, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
        return {text_field(lang): sum(r.get(text_field(lang)) is not None for r in rows) for lang in self.languages}




def _identical_images(out: Path, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Per style, images byte-identical to an image of another group (e.g. Norway / Svalbard flags)."""
    by_hash: dict[tuple[str, str], set[str]] = {}
    for row in rows:
        digest = hashlib.sha1((out / row["image"]).read_bytes()).hexdigest()
        by_hash.setdefault((row["meta_style"], digest), set()).add(row["group"])
    counts: Counter[str] = Counter()
    for (style, _), groups in by_hash.items():
        if len(groups) > 1:
            counts[style] += len(groups)
    return dict(counts)


def _write_card(
    out: Path, recipe: EmojiRecipe, styles: Sequence[Style], counts: dict[str, int], rows: int, groups: int,
    concepts: int, missing: Counter[str], duplicates: dict[str, int], notes: Sequence[str],
) -> None:
    lines = [
        f"# {recipe.name}", "", recipe.description, "",
        f"{rows} rows, {groups} groups ({concepts} concepts requested). Images: 96x96 RGB PNG, content "
        "cropped to its drawn area and centered on white with a 4 px margin.", "",
        "## Sources", "", "| part | package | version | licence |", "|---|---|---|---|",
    ]
    for style in styles:
        lines.append(f"| images `{style.name}` | {style.kind}: {style.package} | {style.version() or '?'} | "
                     f"{style.licence} |")
    lines.append(f"| names, keywords | apt: unicode-cldr-core | {dpkg_version('unicode-cldr-core') or '?'} | "
                 f"{CLDR_LICENCE} |")
    emoji_version = _pip_version("emoji")
    lines += [
        f"| emoji list | pip: emoji | {emoji_version or '?'} | BSD-3-Clause |", "",
        "Redistributing the images means following each licence (OpenMoji's CC BY-SA 4.0 asks for "
        "attribution and share-alike).", "",
        "## Rows per style", "", "| style | rows | emoji the style does not draw | identical to another "
        "concept's image |", "|---|---|---|---|",
    ]
    for style in styles:
        lines.append(f"| {style.name} | {counts.get(style.name, 0)} | {missing.get(style.name, 0)} | "
                     f"{duplicates.get(style.name, 0)} |")
    extra = {k: v for k, v in counts.items() if k.startswith("text_")}
    if extra:
        lines += ["", "## Names per language (rows with a name)", "", "| field | rows |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in extra.items()]
    lines += [
        "", "## Rows and groups", "",
        "- `id` = `<slug>__<style>`; `group` = the slug of the concept: one fully-qualified emoji without "
        "skin-tone modifiers (U+1F3FB–1F3FF).",
        "- Skin-tone variants (including two-person combinations such as 🫱🏻‍🫲🏿 → 🤝) are folded into their "
        "base concept: same `group`, same `text` (the base emoji's CLDR name); their own tone is in "
        "`meta_variant`." if recipe.include_variants else "- Skin-tone variants are not included.",
        "- Gender and hair-style sequences (👩‍🚒, 👨‍🦰) are concepts of their own, as CLDR names them apart.",
        "- `text` is the English CLDR short name (`type=\"tts\"`); `meta_keywords` the English CLDR keywords.",
        "- Concepts follow CLDR's emoji collation order (smileys first); `limit=N` keeps the first N.",
        "",
        "## Known noise", "",
        "- Names are short (1-5 words) and literal; many are near-synonyms (\"grinning face\", \"grinning "
        "face with big eyes\").",
        "- Some styles lack some emoji (table above); the Noto font and `google` share Google's artwork "
        "(different versions), so these two styles are close to duplicates; `google` images are 64 px, "
        "upscaled.",
        "- Some concepts share one picture: flags of territories that use their country's flag (Norway / "
        "Svalbard / Bouvet Island) and, in OpenMoji, 'person' / 'man' hair-style sequences; counted above.",
        "- Images that render blank or as a fallback glyph ('?' flag, split-up ZWJ sequence) are dropped.",
        "", "## Notes from the last prepare", "",
    ]
    lines += [f"- {note}" for note in notes]
    tmp = out / f".CARD.md.{os.getpid()}.tmp"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, out / "CARD.md")


def _pip_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None
