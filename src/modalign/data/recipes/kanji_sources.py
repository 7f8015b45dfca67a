"""Readers for the two sources of the ``kanji`` recipe: KanjiVG stroke SVGs and KANJIDIC2 meanings.

- PyPI ``kanjivg`` installs bare files, ``site-packages/kanji/<5-hex code point>.svg`` (plus variant
  drawings ``<code>-Kaisho.svg`` etc., not used). Each SVG has a ``kvg:StrokePaths_<code>`` group (the
  strokes) and a ``kvg:StrokeNumbers_<code>`` group of ``<text>`` labels (the stroke order numbers).
- Debian ``kanjidic-xml`` installs ``/usr/share/edict/kanjidic2.xml.gz``: one ``<character>`` per kanji with
  ``<meaning>`` elements (English without ``m_lang``; ``m_lang="es"|"fr"|"pt"`` for the others).
"""

from __future__ import annotations

import gzip
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

KANJIDIC_PATH = Path(os.environ.get("MODALIGN_KANJIDIC", "/usr/share/edict/kanjidic2.xml.gz"))
LANGUAGES = ("es", "fr", "pt")
#: KANJIDIC2 meanings that are editorial markers, not meanings
MARKERS = {"(kokuji)": "kokuji", "(phantom kanji)": "phantom"}
SVG_NS = "http://www.w3.org/2000/svg"

_BASE_FILE = re.compile(r"^[0-9a-f]{5}\.svg$")


@dataclass
class KanjiEntry:
    literal: str
    meanings: dict[str, list[str]] = field(default_factory=dict)  # "en"/"es"/"fr"/"pt" -> meanings
    grade: int | None = None
    jlpt: int | None = None
    freq: int | None = None  # rank among the 2,500 most used kanji in newspapers (1 = most)
    strokes: int | None = None
    flags: list[str] = field(default_factory=list)  # "kokuji", "phantom"

    @property
    def code(self) -> str:
        """KanjiVG's file stem: the code point as 5 lower-case hex digits."""
        return f"{ord(self.literal):05x}"


def kanjivg_dir() -> Path | None:
    """The ``kanji`` folder the ``kanjivg`` wheel installed, or None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("kanjivg")
    except PackageNotFoundError:
        return None
    folder = Path(str(dist.locate_file("kanji")))
    return folder if folder.is_dir() else None


def kanjivg_files(folder: Path) -> dict[str, Path]:
    """Code (``06c34``) → the standard drawing of that character."""
    return {p.name[:-4]: p for p in folder.iterdir() if _BASE_FILE.match(p.name)}


def strip_stroke_numbers(svg: bytes) -> bytes:
    """Remove KanjiVG's stroke-order numbers (the StrokeNumbers group and any other ``<text>``)."""
    # re-serialized with ns0: prefixes, which cairosvg reads like the original
    root = ET.fromstring(svg)
    for parent in list(root.iter()):
        for child in list(parent):
            is_numbers = child.get("id", "").startswith("kvg:StrokeNumbers")
            if is_numbers or child.tag in (f"{{{SVG_NS}}}text", "text"):
                parent.remove(child)
    out: bytes = ET.tostring(root, encoding="utf-8")
    return out


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


@dataclass
class Kanjidic:
    version: str | None  # KANJIDIC2's own database_version, e.g. "2022-235"
    entries: list[KanjiEntry]


@lru_cache(maxsize=2)
def read_kanjidic(path: Path = KANJIDIC_PATH) -> Kanjidic:
    """Every KANJIDIC2 character that has at least one English meaning, in file order."""
    entries = []
    version = None
    with gzip.open(path) if path.suffix == ".gz" else path.open("rb") as fh:
        for _, elem in ET.iterparse(fh, events=("end",)):
            if elem.tag == "database_version":
                version = (elem.text or "").strip() or None
            if elem.tag != "character":
                continue
            entry = KanjiEntry(elem.findtext("literal") or "")
            for m in elem.iter("meaning"):
                text = (m.text or "").strip()
                lang = m.get("m_lang", "en")
                if lang == "en" and text in MARKERS:
                    entry.flags.append(MARKERS[text])
                elif text:
                    entry.meanings.setdefault(lang, []).append(text)
            entry.grade = _int(elem.findtext("misc/grade"))
            entry.jlpt = _int(elem.findtext("misc/jlpt"))
            entry.freq = _int(elem.findtext("misc/freq"))
            entry.strokes = _int(elem.findtext("misc/stroke_count"))
            if len(entry.literal) == 1 and entry.meanings.get("en"):
                entries.append(entry)
            elem.clear()  # the file is ~15 MB of XML; keep memory flat
    return Kanjidic(version, entries)
