"""What a file *is*, from its first bytes: uploads and served files never trust names or headers."""

from __future__ import annotations

from pathlib import Path

#: (kind, MIME type) by magic bytes; RIFF containers are told apart by their form type
_SIGNATURES: list[tuple[bytes, int, str, str]] = [
    (b"\x89PNG\r\n\x1a\n", 0, "image", "image/png"),
    (b"\xff\xd8\xff", 0, "image", "image/jpeg"),
    (b"GIF87a", 0, "image", "image/gif"),
    (b"GIF89a", 0, "image", "image/gif"),
    (b"BM", 0, "image", "image/bmp"),
    (b"II*\x00", 0, "image", "image/tiff"),
    (b"MM\x00*", 0, "image", "image/tiff"),
    (b"OggS", 0, "audio", "audio/ogg"),
    (b"fLaC", 0, "audio", "audio/flac"),
    (b"ID3", 0, "audio", "audio/mpeg"),
]
HEAD_BYTES = 16
#: every MIME type ``sniff`` can answer (the content types a served item may have)
MIME_TYPES = (*dict.fromkeys(mime for *_, mime in _SIGNATURES), "image/webp", "audio/wav")


def sniff(head: bytes) -> tuple[str, str] | None:
    """(kind, MIME type) of data starting with ``head`` (≥ 12 bytes), or None when unknown."""
    if head[:4] == b"RIFF" and len(head) >= 12:
        form = head[8:12]
        if form == b"WEBP":
            return "image", "image/webp"
        if form == b"WAVE":
            return "audio", "audio/wav"
        return None
    for magic, offset, kind, mime in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return kind, mime
    # MPEG audio frame sync without an ID3 tag
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06:
        return "audio", "audio/mpeg"
    return None


def sniff_file(path: str | Path) -> tuple[str, str] | None:
    with open(path, "rb") as fh:
        return sniff(fh.read(HEAD_BYTES))


def suffix_for(mime: str) -> str:
    """A file suffix for decoders that look at it (audio readers)."""
    return {"audio/wav": ".wav", "audio/ogg": ".ogg", "audio/flac": ".flac", "audio/mpeg": ".mp3"}.get(mime, "")
