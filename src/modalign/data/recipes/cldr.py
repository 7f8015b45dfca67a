"""Unicode CLDR emoji annotations (Debian ``unicode-cldr-core``) and the emoji concept catalogue.

A *concept* is one fully-qualified emoji without skin-tone modifiers; its skin-tone variants are
kept as ``variants`` so they can share the concept's group and name.
"""

from __future__ import annotations

import os
import re
import unicodedata
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

CLDR_DIR = Path(os.environ.get("MODALIGN_CLDR_DIR", "/usr/share/unicode/cldr/common"))

FE0F = "\ufe0f"
#: Emoji_Modifier (Fitzpatrick skin tones); variants carrying them fold into their base concept
MODIFIERS = frozenset(chr(c) for c in range(0x1F3FB, 0x1F400))
#: CLDR marks "inherit from the parent locale" with this placeholder
INHERIT_MARKER = "↑↑↑"

# Multi-person sequences whose modifier-free form is not itself an emoji: Unicode's neutral base is
# a single code point (e.g. 🫱🏻‍🫲🏼 is a skin-toned 🤝).
_MULTI_PERSON_BASE = {
    "\U0001faf1\u200d\U0001faf2": "\U0001f91d",  # handshake
    "\U0001f9d1\u200d\u2764\u200d\U0001f48b\u200d\U0001f9d1": "\U0001f48f",  # kiss
    "\U0001f9d1\u200d\u2764\u200d\U0001f9d1": "\U0001f491",  # couple with heart
    "\U0001f469\u200d\U0001f91d\u200d\U0001f469": "\U0001f46d",  # women holding hands
    "\U0001f469\u200d\U0001f91d\u200d\U0001f468": "\U0001f46b",  # woman and man holding hands
    "\U0001f468\u200d\U0001f91d\u200d\U0001f468": "\U0001f46c",  # men holding hands
}


def strip_fe0f(seq: str) -> str:
    """CLDR keys drop U+FE0F (variation selector-16), so every lookup goes through this."""
    return seq.replace(FE0F, "")


def codepoints_key(seq: str) -> str:
    """``'👍🏽'`` → ``'1f44d-1f3fd'``: FE0F-free lowercase hex, the key the image packages' files share."""
    return "-".join(f"{ord(ch):x}" for ch in strip_fe0f(seq))


def slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


@dataclass(frozen=True)
class Annotation:
    name: str | None
    keywords: tuple[str, ...] = ()


class CldrAnnotations:
    """Emoji names (``type="tts"``) and keywords per locale, resolved along CLDR's parent chain.

    ``annotations/`` and ``annotationsDerived/`` (flags, ZWJ sequences, skin tones) are merged. The chain
    stops before ``root``: a root fallback would present untranslated placeholders as translations.
    """

    def __init__(self, cldr_dir: Path = CLDR_DIR) -> None:
        self.cldr_dir = cldr_dir
        self._cache: dict[str, dict[str, Annotation]] = {}
        self._parents = _parent_locales(cldr_dir)

    def available(self) -> bool:
        return (self.cldr_dir / "annotations" / "en.xml").is_file()

    def locales(self) -> list[str]:
        return sorted(p.stem for p in (self.cldr_dir / "annotations").glob("*.xml") if p.stem != "root")

    def parent(self, locale: str) -> str | None:
        if locale in self._parents:
            parent = self._parents[locale]
        elif "_" in locale:
            parent = locale.rsplit("_", 1)[0]
        else:
            return None
        return None if parent == "root" else parent

    def chain(self, locale: str) -> list[str]:
        out: list[str] = []
        loc: str | None = locale
        while loc is not None and loc not in out:
            out.append(loc)
            loc = self.parent(loc)
        return out

    def resolved(self, locale: str) -> dict[str, Annotation]:
        """FE0F-free sequence → annotation for ``locale``, children overriding parents field by field."""
        if locale not in self._cache:
            merged: dict[str, tuple[str | None, tuple[str, ...]]] = {}
            for loc in reversed(self.chain(locale)):  # parents first, children override
                for sub in ("annotations", "annotationsDerived"):
                    for cp, (name, keywords) in _read_file(self.cldr_dir / sub / f"{loc}.xml").items():
                        old_name, old_keywords = merged.get(cp, (None, ()))
                        merged[cp] = (name or old_name, keywords or old_keywords)
            self._cache[locale] = {cp: Annotation(n, k) for cp, (n, k) in merged.items()}
        return self._cache[locale]

    def name(self, seq: str, locale: str) -> str | None:
        ann = self.resolved(locale).get(strip_fe0f(seq))
        return ann.name if ann else None


@lru_cache(maxsize=512)
def _read_file(path: Path) -> dict[str, tuple[str | None, tuple[str, ...]]]:
    if not path.is_file():
        return {}
    out: dict[str, tuple[str | None, tuple[str, ...]]] = {}
    for el in ET.parse(path).getroot().iter("annotation"):
        cp = el.get("cp")
        text = " ".join((el.text or "").split())  # CLDR uses no-break spaces (fr "drapeau\u202f: ...")
        if not cp or not text or text == INHERIT_MARKER:
            continue
        name, keywords = out.get(cp, (None, ()))
        if el.get("type") == "tts":
            name = text
        else:
            keywords = tuple(k.strip() for k in text.split("|") if k.strip() and k.strip() != INHERIT_MARKER)
        out[cp] = (name, keywords)
    return out


def _parent_locales(cldr_dir: Path) -> dict[str, str]:
    path = cldr_dir / "supplemental" / "supplementalData.xml"
    if not path.is_file():
        return {}
    parents: dict[str, str] = {}
    for el in ET.parse(path).getroot().iter("parentLocale"):
        parent = el.get("parent", "root")
        for loc in (el.get("locales") or "").split():
            parents[loc] = parent
    return parents


def emoji_order(cldr_dir: Path = CLDR_DIR) -> dict[str, int]:
    """FE0F-free sequence → rank in CLDR's emoji collation (root.xml), i.e. the usual emoji-picker order."""
    path = cldr_dir / "collation" / "root.xml"
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    start = text.find("START AUTOGENERATED EMOJI ORDER")
    end = text.find("]]>", start)
    ranks: dict[str, int] = {}
    for line in text[start:end].splitlines():
        line = line.strip()
        if line.startswith("<*"):  # a run of single code points
            items = list(line[2:].strip())
        elif line.startswith("< "):  # one sequence, maybe with "= alias << variant" tails
            items = [re.split(r"\s+(?:=|<<)\s+", line[2:].strip())[0].strip("'")]
        else:
            continue
        for item in items:
            ranks.setdefault(strip_fe0f(item), len(ranks))
    return ranks


@dataclass(frozen=True)
class Variant:
    emoji: str
    slug: str
    modifier: str  # e.g. "light skin tone" or "light skin tone, dark skin tone"


@dataclass(frozen=True)
class Concept:
    emoji: str  # fully qualified
    slug: str
    name: str  # English CLDR tts name
    keywords: tuple[str, ...]
    variants: tuple[Variant, ...] = field(default=())


@dataclass
class Catalogue:
    concepts: list[Concept]
    dropped_no_name: int  # fully-qualified emoji newer than the installed CLDR (no English name)
    dropped_no_base: int  # modifier variants whose base concept could not be found


def build_catalogue(annotations: CldrAnnotations | None = None) -> Catalogue:
    """Every fully-qualified emoji with an English CLDR name, variants folded, in CLDR emoji order."""
    import emoji as emoji_pkg  # PyPI ``emoji``: the list of fully-qualified sequences

    annotations = annotations or CldrAnnotations()
    english = annotations.resolved("en")
    fully_qualified = emoji_pkg.STATUS["fully_qualified"]
    named: list[str] = []
    dropped_no_name = 0
    for seq, info in emoji_pkg.EMOJI_DATA.items():
        if info.get("status") != fully_qualified:
            continue
        ann = english.get(strip_fe0f(seq))
        if ann is None or not ann.name:
            dropped_no_name += 1
            continue
        named.append(seq)

    bases = [s for s in named if not MODIFIERS.intersection(s)]
    base_by_key = {strip_fe0f(s): s for s in bases}
    variants_of: dict[str, list[str]] = {s: [] for s in bases}
    dropped_no_base = 0
    for seq in named:
        if not MODIFIERS.intersection(seq):
            continue
        plain = strip_fe0f("".join(ch for ch in seq if ch not in MODIFIERS))
        base = base_by_key.get(_MULTI_PERSON_BASE.get(plain, plain))
        if base is None:
            dropped_no_base += 1
            continue
        variants_of[base].append(seq)

    ranks = emoji_order(annotations.cldr_dir)
    unranked = len(ranks) + 1

    def sort_key(seq: str) -> tuple[int, int, tuple[int, ...]]:
        key = strip_fe0f(seq)
        # unlisted sequences (flags, newer emoji) sit after their first code point's block
        rank = ranks.get(key)
        return (rank, 0, ()) if rank is not None else (ranks.get(key[0], unranked), 1, tuple(map(ord, key)))

    slugs = _unique_slugs([*bases, *(v for vs in variants_of.values() for v in vs)], english)
    tone_names = {m: (english.get(m) or Annotation(None)).name or f"{ord(m):x}" for m in MODIFIERS}
    concepts = []
    for seq in sorted(bases, key=sort_key):
        ann = english[strip_fe0f(seq)]
        variants = tuple(
            Variant(v, slugs[v], ", ".join(tone_names[ch] for ch in v if ch in MODIFIERS))
            for v in sorted(variants_of[seq], key=lambda s: tuple(map(ord, s)))
        )
        concepts.append(Concept(seq, slugs[seq], ann.name or "", ann.keywords, variants))
    return Catalogue(concepts, dropped_no_name, dropped_no_base)


def _unique_slugs(seqs: list[str], english: dict[str, Annotation]) -> dict[str, str]:
    # computed over the whole catalogue so a slug never depends on ``limit``
    slugs = {s: slugify(english[strip_fe0f(s)].name or "") or codepoints_key(s) for s in seqs}
    counts: dict[str, int] = {}
    for slug in slugs.values():
        counts[slug] = counts.get(slug, 0) + 1
    return {s: (slug if counts[slug] == 1 else f"{slug}-{codepoints_key(s)}") for s, slug in slugs.items()}
