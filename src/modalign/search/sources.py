"""Where an indexed item's source file is: paths are stored relative to the manifest's root.

A new entry whose file lies under its manifest's folder records ``path`` relative to that folder
(POSIX), the folder itself (``root``, absolute) and the folder as seen from the index folder
(``root_from_index``, e.g. ``../data``). Files outside the root (``--allow-outside-root``) and indexes
written before this keep an absolute ``path``, which is used as it is.

A relative path is resolved against the first of these folders:

1. ``data_root`` when given (``modalign serve --data-root DIR``, ``Index.open(folder, data_root=DIR)``);
2. the recorded ``root``, when that folder exists;
3. ``root_from_index`` joined to the index folder's current location, when that folder exists (the
   dataset and the index were moved together);
4. else the recorded ``root`` (the file is then missing, and the server says so).

The choice is made per root folder, not per file, so resolving costs no file-system call per hit.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

#: entry fields that locate a source file besides ``path``
ROOT_FIELDS = ("root", "root_from_index")


def entry_source(item: Path, root: Path, index_folder: Path | None) -> dict[str, Any]:
    """The location fields of a new entry for the file ``item`` of a manifest rooted at ``root``."""
    path, base = Path(item), Path(root)
    try:
        rel = path.relative_to(base)
    except ValueError:
        return {"path": str(path)}  # outside the manifest's folder: only an absolute path says where it is
    fields: dict[str, Any] = {"path": rel.as_posix(), "root": str(base)}
    if index_folder is not None:
        fields["root_from_index"] = Path(os.path.relpath(base, Path(index_folder).resolve())).as_posix()
    return fields


def is_relative(path: str | None) -> bool:
    return path is not None and not Path(path).is_absolute()


def safe_relative(path: str) -> bool:
    """A relative path that cannot leave its root (entries written by modalign never contain '..')."""
    parts = PurePosixPath(path).parts
    return bool(parts) and ".." not in parts and not PurePosixPath(path).is_absolute()


class SourceRefused(Exception):
    """A served file that is not a regular file inside its root (a link swapped in, a FIFO, a device)."""


def open_inside(path: str, root: Path | None) -> BinaryIO:
    """``path`` opened for reading, checked on the open handle, so a link swapped in after any check cannot
    win: the last component is opened without following links, the handle must be a regular file, and the
    file it really is (``/proc/self/fd``) must lie inside ``root`` (for a path recorded as absolute, with no
    root: it must be that very path, with no link on the way). Raises FileNotFoundError or SourceRefused."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)  # O_NONBLOCK: opening a FIFO does not wait for a writer
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # the last component is a link (EMLINK on some BSDs)
            raise SourceRefused("it is a symbolic link") from None
        raise FileNotFoundError(path) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SourceRefused("it is not a regular file")
        real = Path(_real_path(fd, path))
        allowed = Path(os.path.realpath(root)) if root is not None else Path(os.path.abspath(path))
        if (root is not None and not real.is_relative_to(allowed)) or (root is None and real != allowed):
            raise SourceRefused("it resolves outside the data folder")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _real_path(fd: int, path: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")  # the file the handle is, whatever the path said
    except OSError:  # no /proc: the path's resolution now (the handle is already a regular file)
        return os.path.realpath(path)


class SourceResolver:
    """Turns stored entry locations into file paths, by the rule in this module's docstring."""

    def __init__(self, index_folder: str | Path | None = None, data_root: str | Path | None = None) -> None:
        self.index_folder = Path(index_folder).resolve() if index_folder is not None else None
        self.data_root = Path(data_root).resolve() if data_root is not None else None
        self._bases: dict[tuple[str | None, str | None], Path] = {}
        self._lock = threading.Lock()

    def base(self, root: str | None, root_from_index: str | None) -> Path | None:
        """The folder relative paths of this root resolve against (None: nothing to resolve against)."""
        if self.data_root is not None:
            return self.data_root
        key = (root, root_from_index)
        with self._lock:
            found = self._bases.get(key)
        if found is not None:
            return found
        candidates = [Path(root)] if root is not None else []
        if root_from_index is not None and self.index_folder is not None:
            candidates.append(Path(os.path.normpath(self.index_folder / root_from_index)))
        for folder in candidates:
            if folder.is_dir():
                # only a folder that exists is remembered: a dataset restored while serving is then found
                with self._lock:
                    self._bases[key] = folder
                return folder
        return candidates[0] if candidates else None

    def open(self, path: str | None, root: str | None = None, root_from_index: str | None = None) -> BinaryIO:
        """The entry's source file opened by ``open_inside``: inside the folder its relative path resolves
        against, or exactly the absolute path it was indexed under."""
        full = self.resolve(path, root, root_from_index)
        if full is None:
            raise FileNotFoundError(path)
        return open_inside(full, self.base(root, root_from_index) if is_relative(path) else None)

    def resolve(self, path: str | None, root: str | None = None, root_from_index: str | None = None) -> str | None:
        """The file an entry's ``path`` names (absolute), or None for entries without a file."""
        if path is None or not is_relative(path):
            return path
        base = self.base(root, root_from_index)
        if base is None or not safe_relative(path):
            return None
        return str(base / path)
