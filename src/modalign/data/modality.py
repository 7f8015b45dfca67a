"""Modality names and kinds: a manifest field name says what kind of data it holds."""

from __future__ import annotations

import re

#: fields that are not modalities
RESERVED_FIELDS = frozenset({"id", "group", "label", "split"})
META_PREFIX = "meta_"

KINDS = ("text", "image", "audio", "vector")
NO_MODALITIES = "no modality fields (text, image, ...) found"

_KIND_PATTERNS = [
    (re.compile(r"^text(_[A-Za-z0-9-]+)?$"), "text"),
    (re.compile(r"^image(_[A-Za-z0-9-]+)?$"), "image"),
    (re.compile(r"^audio(_[A-Za-z0-9-]+)?$"), "audio"),
    (re.compile(r"^(vector|vec_[A-Za-z0-9-]+)$"), "vector"),
]


def modality_kind(field: str) -> str | None:
    """``text``/``text_de`` → text, ``image*`` → image, ``audio*`` → audio, ``vector``/``vec_*`` → vector."""
    for pattern, kind in _KIND_PATTERNS:
        if pattern.match(field):
            return kind
    return None


def is_non_modality_field(field: str) -> bool:
    return field in RESERVED_FIELDS or field.startswith(META_PREFIX)


def language_of(modality: str) -> str | None:
    """``text_de`` → ``de``; plain ``text`` → ``en`` (the convention of the built-in datasets)."""
    if modality == "text":
        return "en"
    if modality.startswith("text_"):
        return modality[len("text_") :]
    return None


def missing_modalities_reason(fields: list[str], seen_as: str) -> str:
    """Why these field names hold no modality: another delimiter, upper case, a stray BOM, or plain naming."""
    seen = f"{seen_as} {fields!r}"
    joined = ",".join(fields)
    for sep, label in ((";", "';'-separated"), ("\t", "tab-separated"), ("|", "'|'-separated")):
        if sep in joined and any(modality_kind(part.strip()) for part in joined.split(sep)):
            return f"{NO_MODALITIES}: {seen}, which looks {label}; modalign reads comma-separated CSV"
    if any(name.startswith(("\ufeff", "\u00ef\u00bb\u00bf")) for name in fields):
        return f"{NO_MODALITIES}: {seen}, which starts with a stray byte-order mark; save the file as UTF-8"
    if any(modality_kind(name.strip().lower()) for name in fields):
        return f"{NO_MODALITIES}: {seen}; field names are lower-case without spaces (text, image_x, vec_y ...)"
    return f"{NO_MODALITIES}: {seen}; name a column text*, image*, audio*, vector or vec_*"
