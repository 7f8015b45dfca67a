"""The ``bible-en-es`` recipe: verse-aligned English (WEB, KJV) and Spanish (Reina-Valera 1909) Bibles.

One row per verse of the KJV versification: ``text`` = World English Bible, ``text_es`` = Reina-Valera
1909, ``text_kjv`` = King James Version. ``group`` = the verse itself: a group is a concept whose rows
are all positives of each other (the losses and validation use it that way), and one verse is one
meaning; chapter groups would teach "same chapter" instead of "same verse". ``meta_chapter`` keeps
the chapter for analysis.
Sources are the Debian SWORD modules, read with pysword; OSIS markup is removed here (not with
pysword's cleaner, which glues words around footnotes: "Godcreated").
"""

from __future__ import annotations

import functools
import html
import importlib.util
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modalign.data.recipes.base import DATASETS, DatasetRecipe, PrepareResult, Progress
from modalign.data.recipes.files import write_jsonl_atomic
from modalign.data.recipes.install import InstallError, apt_command, install_commands, pip_missing

log = logging.getLogger(__name__)

SWORD_ROOT = Path(os.environ.get("MODALIGN_SWORD_PATH", "/usr/share/sword"))
PROGRESS_EVERY = 200


@dataclass(frozen=True)
class Version:
    field: str
    module: str  # SWORD module key
    package: str  # Debian package
    title: str
    language: str
    licence: str


#: the first one defines the verse list (KJV versification; the Spanish module uses it too)
VERSIONS = (
    Version("text_kjv", "engKJV2006eb", "sword-text-kjv", "King James Version (1769 text)", "en",
            "public domain (outside the UK, where the Crown's letters patent restrict printing)"),
    Version("text", "engWEB2015eb", "sword-text-web", "World English Bible", "en",
            "public domain (dedicated by its translators)"),
    Version("text_es", "spaRV1909eb", "sword-text-sparv", "Reina-Valera 1909", "es", "public domain"),
)
FIELD_ORDER = ("text", "text_es", "text_kjv")

_NOTE = re.compile(r"<note\b[^>]*>.*?</note>", re.S)
_NON_CANONICAL_TITLE = re.compile(r"<title\b(?![^>]*canonical=\"true\")[^>]*>.*?</title>", re.S)
_TAG = re.compile(r"<[^>]+>")
#: adjacent word elements with no space between them in the source ("de</w><transChange>la casa")
_ADJACENT_WORDS = re.compile(r"(</(?:w|transChange)>)(<(?:w|transChange)\b)")
#: a chapter's closing milestone ends the verse; WEB appends its whole glossary after Rev 22:21
_TRAILER = re.compile(r"<chapter\b[^>]*\beID=.*", re.S)
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?’”)\]])")
_SPACE_AFTER_OPEN = re.compile(r"([“‘(\[¿¡])\s+")
_DROP_CAP = re.compile(r"^([A-ZÁÉÍÓÚÑ]{2,})(?=\s+[a-záéíóúñ])")


def clean_osis(raw: str, first_of_chapter: bool = False) -> str:
    """OSIS verse markup → plain text: footnotes and editorial headings dropped, tags removed.

    A footnote stands where a space was ("God<note>…</note><w>created"), so it becomes a space;
    chapter-initial drop caps ("EN el principio") are lower-cased after their first letter.
    """
    text = _TRAILER.sub("", raw)
    text = _NOTE.sub(" ", text)
    text = _NON_CANONICAL_TITLE.sub(" ", text)
    text = _TAG.sub("", _ADJACENT_WORDS.sub(r"\1 \2", text))
    text = html.unescape(text).replace("¶", " ")
    text = " ".join(text.split())
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _SPACE_AFTER_OPEN.sub(r"\1", text)
    if first_of_chapter:
        text = _DROP_CAP.sub(lambda m: m.group(1).capitalize(), text)
    return text


@dataclass(frozen=True)
class VerseRef:
    book: str  # OSIS book id, e.g. "Gen"
    book_name: str  # pysword's name, e.g. "Genesis"
    chapter: int
    verse: int
    testament: str

    @property
    def id(self) -> str:
        return f"{self.book}.{self.chapter}.{self.verse}"

    @property
    def group(self) -> str:
        return f"{self.book}.{self.chapter}"


class SwordLibrary:
    """The installed SWORD modules, each read book by book (pysword decompresses a whole book per verse
    otherwise, which makes one pass over the Bible take hours)."""

    def __init__(self, root: Path = SWORD_ROOT) -> None:
        from pysword.modules import SwordModules

        self.root = root
        self._modules = SwordModules(str(root))
        self.available = set(self._modules.parse_modules())
        self._bibles: dict[str, Any] = {}

    def bible(self, module: str) -> Any:
        if module not in self._bibles:
            if module not in self.available:
                raise InstallError(f"SWORD module {module} is not installed under {self.root}")
            bible = self._modules.get_bible_from_module(module)
            # pysword re-inflates the block (one whole book) for every verse: memoise the last blocks
            if hasattr(bible, "_decompressed_text"):
                bible._decompressed_text = functools.lru_cache(maxsize=4)(bible._decompressed_text)
            self._bibles[module] = bible
        return self._bibles[module]

    def verses(self, module: str) -> Iterator[VerseRef]:
        structure = self.bible(module).get_structure().get_books()
        for testament in ("ot", "nt"):
            for book in structure.get(testament, []):
                for chapter, length in enumerate(book.chapter_lengths, start=1):
                    for verse in range(1, length + 1):
                        yield VerseRef(book.osis_name, book.name, chapter, verse, testament)

    def raw(self, module: str, ref: VerseRef) -> str | None:
        """Markup of one verse, or None when this module's versification has no such verse."""
        try:
            texts = list(self.bible(module).get_iter(books=[ref.book_name], chapters=[ref.chapter],
                                                     verses=[ref.verse], clean=False))
        except (ValueError, KeyError, IndexError):
            return None
        return texts[0] if texts else None


@DATASETS.register("bible-en-es")
class BibleEnEsRecipe(DatasetRecipe):
    name = "bible-en-es"
    description = (
        "Verse-aligned Bibles: World English Bible (text), Reina-Valera 1909 Spanish (text_es) and King James "
        "Version (text_kjv); one row per verse."
    )
    modalities = FIELD_ORDER
    licence = "public domain (WEB, RV1909; KJV outside the UK)"
    source = "apt: sword-text-web, sword-text-sparv, sword-text-kjv; pip: pysword"
    approx_size = "31.1k verses x 3 versions, 1189 chapters (~13 MB of text)"

    def missing_requirements(self) -> list[str]:
        return install_commands(apt=[v.package for v in VERSIONS], pip=pip_missing({"pysword": "pysword"}))

    def prepare(self, out: Path, limit: int | None = None, progress: Progress | None = None) -> PrepareResult:
        if limit is not None and limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        out = Path(out)
        if importlib.util.find_spec("pysword") is None:
            raise InstallError(f"{self.name} needs the PyPI package 'pysword'; run:\n  pip install pysword")
        library = SwordLibrary()
        missing = [v for v in VERSIONS if v.module not in library.available]
        if missing:
            raise InstallError(f"{self.name} needs {', '.join(v.package for v in missing)}; run:\n  "
                               f"{apt_command([v.package for v in missing])}")
        versions = {v.field: _dpkg_version(v.package) for v in VERSIONS}
        stamp = {"limit": limit, "versions": versions, "recipe_version": 3}
        stamp_path = out / ".bible-en-es.json"
        if (out / "manifest.jsonl").is_file() and stamp_path.is_file() and _read_json(stamp_path) == stamp:
            return self._result_from_existing(out)  # incremental: same sources and limit, nothing to redo

        refs = list(library.verses(VERSIONS[0].module))
        refs = refs[:limit] if limit is not None else refs
        rows, counts, notes = self._rows(library, refs, progress)
        _check_rows(rows)
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(out / "manifest.jsonl", rows)
        groups = len({r["group"] for r in rows})
        _write_card(out, self, rows, groups, counts, versions, notes)
        _write_atomic(stamp_path, json.dumps(stamp))
        log.info("bible-en-es: %d rows, %d groups in %s", len(rows), groups, out)
        return PrepareResult(out / "manifest.jsonl", len(rows), groups, counts, notes)

    def _rows(
        self, library: SwordLibrary, refs: list[VerseRef], progress: Progress | None
    ) -> tuple[list[dict[str, Any]], dict[str, int], list[str]]:
        rows: list[dict[str, Any]] = []
        counts: Counter[str] = Counter()
        dropped: list[str] = []
        for done, ref in enumerate(refs, start=1):
            row: dict[str, Any] = {"id": ref.id}
            for v in VERSIONS:
                raw = library.raw(v.module, ref)
                text = clean_osis(raw, first_of_chapter=ref.verse == 1) if raw else ""
                row[v.field] = text or None  # an empty verse (omitted in that translation) is missing
                counts[v.field] += bool(text)
            present = sum(row[f] is not None for f in FIELD_ORDER)
            if present < 2:  # nothing to pair
                dropped.append(ref.id)
            else:
                rows.append({"id": ref.id, **{f: row[f] for f in FIELD_ORDER}, "group": ref.id,
                             "meta_chapter": ref.group, "meta_book": ref.book, "meta_testament": ref.testament})
            if progress and (done % PROGRESS_EVERY == 0 or done == len(refs)):
                progress("read verses", done, len(refs))
        notes = []
        if dropped:
            notes.append(f"{len(dropped)} verse(s) present in fewer than two versions were left out: "
                         + ", ".join(dropped[:10]) + (" ..." if len(dropped) > 10 else ""))
        for f in FIELD_ORDER:
            n_missing = sum(r[f] is None for r in rows)
            if n_missing:
                notes.append(f"{f}: {n_missing} verse(s) empty in this version (null)")
            dup = sum(n - 1 for n in Counter(r[f] for r in rows if r[f]).values() if n > 1)
            counts[f"{f}_repeated_texts"] = dup
        return rows, dict(counts), notes

    def _result_from_existing(self, out: Path) -> PrepareResult:
        rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
        counts = {f: sum(r.get(f) is not None for r in rows) for f in FIELD_ORDER}
        return PrepareResult(out / "manifest.jsonl", len(rows), len({r["group"] for r in rows}), counts,
                             ["up to date: same sources and limit as the last prepare"])


def _check_rows(rows: list[dict[str, Any]]) -> None:
    ids = Counter(r["id"] for r in rows)
    dupes = [i for i, n in ids.items() if n > 1]
    if dupes:  # ids come from the versification, so this is a bug, not bad input
        raise RuntimeError(f"duplicate verse ids: {dupes[:10]}")
    blank = [(r["id"], f) for r in rows for f in FIELD_ORDER if r[f] is not None and not r[f].strip()]
    if blank:
        raise RuntimeError(f"blank verse texts slipped through: {blank[:10]}")


def _dpkg_version(package: str) -> str | None:
    import subprocess

    res = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True,
                         check=False)
    return res.stdout.strip() or None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_card(out: Path, recipe: BibleEnEsRecipe, rows: list[dict[str, Any]], groups: int,
                counts: dict[str, int], versions: dict[str, str | None], notes: list[str]) -> None:
    by_field = {v.field: v for v in VERSIONS}
    lines = [
        f"# {recipe.name}", "", recipe.description, "",
        f"{len(rows)} rows (verses), {groups} groups, {len({r['meta_chapter'] for r in rows})} chapters, "
        f"{len({r['meta_book'] for r in rows})} books.", "",
        "## Sources", "", "| field | version | language | Debian package | package version | licence |",
        "|---|---|---|---|---|---|",
    ]
    for f in FIELD_ORDER:
        v = by_field[f]
        lines.append(f"| `{f}` | {v.title} (SWORD `{v.module}`) | {v.language} | {v.package} | "
                     f"{versions.get(f) or '?'} | {v.licence} |")
    lines += [
        "", "Licences as stated in each package's /usr/share/doc/<package>/copyright (the Debian packaging "
        "itself is GPL-2+). pysword (MIT) reads the modules.", "",
        "## Verses per version", "", "| field | verses with text | texts repeated elsewhere in the set |",
        "|---|---|---|",
    ]
    lines += [f"| `{f}` | {counts.get(f, 0)} | {counts.get(f + '_repeated_texts', 0)} |" for f in FIELD_ORDER]
    lines += [
        "", "## Rows and groups", "",
        "- `id` = OSIS reference `Book.chapter.verse` in the KJV versification (Protestant canon, 66 books, "
        "canonical order); `limit=N` keeps the first N verses (Genesis first).",
        "- `group` = the verse id: one verse is one concept (its translations are its row). Trainers treat "
        "rows of one group as positives, so chapter groups would blur verses together; the price is that a "
        "held-out verse may have its neighbours (same names, same story) in training.",
        "- `meta_chapter` (`Book.chapter`), `meta_book`, `meta_testament` (`ot`/`nt`) for filtering.",
        "- A verse empty in one version is null there; a verse with fewer than two versions is left out.",
        "",
        "## Cleaning and known noise", "",
        "- OSIS markup removed; footnotes (`<note>`) and non-canonical section headings dropped; canonical "
        "titles (psalm superscriptions) kept in their verse; paragraph marks (¶) removed.",
        "- The WEB module uses the NRSVA versification, joined to the KJV one by reference: where the two "
        "number verses differently (a handful of places, e.g. 3 John 1:14-15) rows pair slightly different "
        "text.",
        "- KJV and RV1909 are archaic (\"thee\", \"crió\"); RV1909 keeps the old accent on \"á\". Chapter-initial "
        "drop caps (\"EN el principio\") are lower-cased.",
        "- Repeated verses (refrains such as Psalm 136's, genealogies) make identical texts in different "
        "chapters (counted above): retrieval counts any row sharing the text as a hit.",
        "", "## Notes from the last prepare", "",
    ]
    lines += [f"- {note}" for note in notes] or ["- none"]
    _write_atomic(out / "CARD.md", "\n".join(lines) + "\n")
