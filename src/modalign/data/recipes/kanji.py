"""The ``kanji`` recipe: KanjiVG stroke drawings paired with KANJIDIC2 meanings (en, es, fr, pt).

One row per kanji, which is also its group. The drawings lose KanjiVG's stroke-order numbers before
rendering: they are digits in the picture that have nothing to do with the meaning.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modalign.data.recipes.base import DATASETS, DatasetRecipe, PrepareResult, Progress
from modalign.data.recipes.files import write_jsonl_atomic, write_text_atomic
from modalign.data.recipes.install import InstallError, apt_command, install_commands, pip_missing
from modalign.data.recipes.kanji_sources import (
    KANJIDIC_PATH,
    LANGUAGES,
    KanjiEntry,
    kanjivg_dir,
    kanjivg_files,
    read_kanjidic,
    strip_stroke_numbers,
)
from modalign.data.recipes.svg_render import (
    TILE,
    RenderTask,
    check_unique_ids,
    default_workers,
    dpkg_version,
    identical_image_groups,
    is_done,
    package_version,
    reconcile_stamp,
    render_all,
    save_stamp,
)

log = logging.getLogger(__name__)

APT_PACKAGES = ("kanjidic-xml", "libcairo2")
PIP_PACKAGES = {"cairosvg": "cairosvg"}  # import name -> PyPI name
#: the first release whose layout (bare ``kanji/*.svg`` files in site-packages) this recipe reads
KANJIVG_SPEC = "kanjivg>=20260714"


def text_of(meanings: Sequence[str] | None) -> str | None:
    return ", ".join(meanings) if meanings else None


def frequency_order(entry: KanjiEntry) -> tuple[int, int, int]:
    """Most used first: newspaper frequency rank, then school grade, then code point."""
    big = 1 << 30
    return (entry.freq or big, entry.grade or big, ord(entry.literal))


@DATASETS.register("kanji")
class KanjiRecipe(DatasetRecipe):
    name = "kanji"
    description = (
        "Kanji drawn as KanjiVG stroke outlines (stroke-order numbers removed) paired with their KANJIDIC2 "
        "meanings: English in text, Spanish/French/Portuguese in text_es/text_fr/text_pt (null when missing)."
    )
    modalities: tuple[str, ...] = ("image", "text", *(f"text_{lang}" for lang in LANGUAGES))
    licence = "KanjiVG CC BY-SA 3.0 (Ulrich Apel); KANJIDIC2 CC BY-SA (EDRDG licence)"
    source = "pip: kanjivg, cairosvg; apt: kanjidic-xml, libcairo2"
    approx_size = "~6.4k kanji, one image each (~25 MB)"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers if workers is not None else default_workers()

    def missing_requirements(self) -> list[str]:
        pip = pip_missing(PIP_PACKAGES) + ([f"'{KANJIVG_SPEC}'"] if kanjivg_dir() is None else [])
        return install_commands(apt=list(APT_PACKAGES), pip=pip)

    def prepare(self, out: Path, limit: int | None = None, progress: Progress | None = None) -> PrepareResult:
        if limit is not None and limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        out = Path(out)
        folder = kanjivg_dir()
        if folder is None:
            raise InstallError(f"{self.name} needs the PyPI package 'kanjivg'; run:\n  "
                               f"{sys.executable} -m pip install '{KANJIVG_SPEC}'")
        if not KANJIDIC_PATH.is_file():
            raise InstallError(f"{self.name} needs KANJIDIC2 ({KANJIDIC_PATH}); run:\n  "
                               f"{apt_command(['kanjidic-xml'])}")
        if progress:
            progress("read KANJIDIC2", 0, 1)
        kanjidic = read_kanjidic()
        if progress:
            progress("read KANJIDIC2", 1, 1)
        drawings = kanjivg_files(folder)
        entries = sorted((e for e in kanjidic.entries if e.code in drawings), key=frequency_order)
        notes = [
            f"{len(kanjidic.entries) - len(entries)} KANJIDIC2 kanji with English meanings have no KanjiVG "
            "drawing and were left out",
            f"{len(drawings) - len(entries)} KanjiVG drawings (kana, Latin letters, symbols, kanji without "
            "English meanings) were left out",
        ]
        n_available = len(entries)
        entries = entries[:limit] if limit is not None else entries

        stamp = {"kanji": {"kanjivg": package_version("kanjivg"), "tile": TILE, "numbers": "removed"}}
        cleared = reconcile_stamp(out, stamp, {"kanji": out / "images"})
        notes += ["KanjiVG or render settings changed; images re-rendered" for _ in cleared]
        save_stamp(out, stamp)  # before rendering, so an interrupted run stays incremental

        planned = [self._row(e) for e in entries]
        tasks: list[RenderTask] = [
            (str(drawings[e.code]), str(out / row["image"]), strip_stroke_numbers)
            for e, row in zip(entries, planned, strict=True) if not is_done(out / row["image"])
        ]
        results = render_all(tasks, self.workers, progress)
        rows = []
        dropped: Counter[str] = Counter()
        for row in planned:
            status, message = results.get(str(out / row["image"]), ("cached", ""))
            if status in ("ok", "cached"):
                rows.append(row)
            else:
                dropped[status] += 1
                log.info("kanji: dropped %s (%s: %s)", row["id"], status, message)
        notes += [f"dropped {n} drawing(s) ({status})" for status, n in sorted(dropped.items())]

        check_unique_ids(rows, self.name)
        write_jsonl_atomic(out / "manifest.jsonl", rows)
        counts = self._counts(rows, results, dropped)
        counts["identical_image_groups"] = identical_image_groups(out, rows)
        write_text_atomic(out / "CARD.md", _card(self, counts, kanjidic.version, n_available, notes))
        log.info("kanji: %d rows in %s", len(rows), out)
        return PrepareResult(out / "manifest.jsonl", len(rows), len(rows), counts, notes)

    @staticmethod
    def _row(entry: KanjiEntry) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": f"kanji_{entry.code}", "image": f"images/{entry.code}.png",
            "text": text_of(entry.meanings.get("en")),
        }
        row.update({f"text_{lang}": text_of(entry.meanings.get(lang)) for lang in LANGUAGES})
        row.update({
            "group": entry.literal, "meta_kanji": entry.literal, "meta_grade": entry.grade,
            "meta_jlpt": entry.jlpt, "meta_freq": entry.freq, "meta_strokes": entry.strokes,
            "meta_flags": list(entry.flags),
        })
        return row

    @staticmethod
    def _counts(rows: Sequence[dict[str, Any]], results: dict[str, tuple[str, str]],
                dropped: Counter[str]) -> dict[str, int]:
        counts: dict[str, int] = {"kanji": len(rows)}
        for field in ("text", *(f"text_{lang}" for lang in LANGUAGES)):
            counts[field] = sum(r[field] is not None for r in rows)
        texts = Counter(r["text"] for r in rows)
        counts["rows_sharing_english_text"] = sum(n for n in texts.values() if n > 1)
        counts["with_frequency_rank"] = sum(r["meta_freq"] is not None for r in rows)
        statuses = Counter(status for status, _ in results.values())
        counts["rendered"] = statuses["ok"]
        counts["cached"] = len(rows) - statuses["ok"]
        counts.update({f"dropped_{status}": n for status, n in dropped.items()})
        return counts


def _card(recipe: KanjiRecipe, counts: dict[str, int], kanjidic_version: str | None, n_available: int,
          notes: Sequence[str]) -> str:
    lines = [
        f"# {recipe.name}", "", recipe.description, "",
        f"{counts['kanji']} rows = {counts['kanji']} groups ({n_available} kanji have both a drawing and an English "
        f"meaning). Images: {TILE}x{TILE} RGB PNG, KanjiVG's 109x109 canvas rendered black on white with cairosvg, "
        "strokes 3 units wide (about 2.6 px).", "",
        "## Sources", "", "| part | package | version | licence |", "|---|---|---|---|",
        f"| stroke drawings | pip: kanjivg | {package_version('kanjivg') or '?'} | CC BY-SA 3.0, © Ulrich Apel "
        "(KanjiVG, https://kanjivg.tagaini.net) |",
        f"| meanings | apt: kanjidic-xml | {dpkg_version('kanjidic-xml') or '?'} (KANJIDIC2 database "
        f"{kanjidic_version or '?'}) | CC BY-SA, EDRDG General Dictionary Licence (the Debian copyright file "
        "states version 3.0; EDRDG's current licence page states 4.0) |", "",
        "Both are share-alike: a redistributed copy of this dataset must carry the same licences and "
        "attribute KanjiVG and the EDRDG.", "",
        "## Counts", "", "| count | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in counts.items()),
        "", "## Rows, texts and groups", "",
        "- `id` = `kanji_<code point, 5 hex digits>`; `group` = `meta_kanji` = the character itself.",
        "- `text` = the English KANJIDIC2 meanings joined with \", \" (\"water\", \"Asia, rank next, come "
        "after, -ous\"); `text_es`, `text_fr`, `text_pt` likewise, null where KANJIDIC2 has none.",
        "- The markers \"(kokuji)\" (a kanji made in Japan) and \"(phantom kanji)\" are not meanings: they are "
        "dropped from the text and kept in `meta_flags`.",
        "- `meta_grade` (Jōyō school grade, 8 = secondary, 9-10 = name kanji), `meta_jlpt` (old 4-level JLPT), "
        "`meta_freq` (newspaper frequency rank 1-2501), `meta_strokes`.",
        "- Rows are ordered most frequent first (frequency rank, then grade, then code point); `limit=N` keeps "
        "the N most used kanji.",
        "- Only the standard drawing of each kanji is used (KanjiVG's `-Kaisho`, `-HzFst`, ... variants are not).",
        "", "## Known noise", "",
        "- Several kanji share the same meanings (`rows_sharing_english_text`): a text query then has several "
        "correct images, and evaluation counts any of them.",
        "- Meanings of rare kanji are terse, archaic or generic (\"place name\", \"name of a Chinese river\"); "
        "the other languages cover mostly the ~2.5k common kanji.",
        "- Old/new forms (亞/亜) are separate kanji with near-identical meanings and similar drawings.",
        "", "## Notes from the last prepare", "",
    ]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"
