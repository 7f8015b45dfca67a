"""Content hash of an encoder's weight files, memoised by (path, mtime, size) so repeated calls are cheap."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 1 << 20
_MEMO: dict[tuple[str, int, int], str] = {}
_GUARD = threading.Lock()


def weight_files(path: str | Path) -> list[Path]:
    """The files that define a model at ``path``: the file itself, or every file under a folder.

    Hidden files and ``__pycache__`` are skipped: they change without the model changing.
    """
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such file or folder")
    files = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).parts
        if p.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in rel):
            files.append(p)
    return files


def stat_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_mtime_ns, st.st_size)


def file_sha256(path: Path) -> str:
    key = stat_key(path)
    with _GUARD:
        known = _MEMO.get(key)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    value = digest.hexdigest()
    with _GUARD:
        _MEMO[key] = value
    return value


def files_sha256(files: Iterable[Path], root: Path | None = None) -> str:
    """One sha256 over (relative name, file sha256) pairs: renaming a file inside a folder changes it too."""
    digest = hashlib.sha256()
    for f in sorted(files):
        name = str(f.relative_to(root)) if root is not None and f.is_relative_to(root) else f.name
        digest.update(f"{name}\0{file_sha256(f)}\n".encode())
    return digest.hexdigest()


def path_sha256(path: str | Path) -> str:
    root = Path(path)
    return files_sha256(weight_files(root), root if root.is_dir() else None)


def path_stamp(path: str | Path) -> tuple[tuple[str, int, int], ...]:
    """Stat signature of the weight files (no reading): tells a live encoder that its files changed."""
    return tuple(stat_key(f) for f in weight_files(path))
