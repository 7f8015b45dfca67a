"""Crash-safe file writes shared by the feature cache, the model folder and the search index.

Everything here sits below every other layer (it imports only ``modalign.errors``), so features,
align and search use one implementation of: atomic replace (temp file + fsync + rename + fsync of
the folder), streamed SHA-256, cross-process locks (``filelock``) and umask-respecting file modes.
A failed write (disk full, read-only, no permission) raises ``StorageError`` naming the path.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from modalign.errors import StorageError


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (other threads may be creating files)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # no /proc: the classic swap-and-restore
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 less the umask (mkstemp alone gives 0600)."""
    return 0o666 & ~current_umask()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (bounded memory)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of ``path``, which must be a regular file of at most ``limit`` bytes: a FIFO does not hang
    the reader and a link to /dev/zero does not fill memory. Raises StorageError naming the path."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise storage_error(path, "read it", exc) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StorageError(f"{path}: not a regular file; refusing to read it")
        if info.st_size > limit:
            raise StorageError(f"{path}: {info.st_size:,} bytes, more than the {limit:,} this file may hold")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise storage_error(path, "read it", exc) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise StorageError(f"{path}: more than the {limit:,} bytes this file may hold")
    return data


def finite_json(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None (JSON has no NaN, and a file holding one
    breaks strict readers); a dict also gets ``notes`` naming each field that held one."""
    notes: list[str] = []

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            notes.append(f"{path}: {value} written as null")
            return None
        if isinstance(value, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    clean = walk(obj, "")
    if notes and isinstance(clean, dict):
        clean["notes"] = [*clean.get("notes", []), *notes]
    return clean


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: some file systems refuse fsync on folders)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def storage_error(path: Path, action: str, exc: BaseException) -> StorageError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
    return StorageError(f"{path}: cannot {action}: {reason}")


def atomic_write_with(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` fills a temp file next to ``path``; it is then fsynced and renamed onto ``path``.

    For writers that only take a file name (faiss, safetensors ``save_file``). Any failure removes the
    temp file, leaves ``path`` as it was and raises ``StorageError`` naming ``path``.
    """
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise storage_error(path, "write", exc) from None
    tmp = Path(name)
    try:
        os.close(fd)
        write(tmp)
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, (OSError, RuntimeError)) or type(exc).__name__ == "SafetensorError":
            raise storage_error(path, "write", exc) from None
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically: readers see the old file or the new one, never a part."""

    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()

    atomic_write_with(path, write)


@contextlib.contextmanager
def file_lock(path: Path, wait: bool = True) -> Iterator[None]:
    """Exclusive cross-process lock on ``path`` (created if needed, never deleted).

    ``wait=False`` raises ``filelock.Timeout`` at once when another process holds it. A lock file
    that cannot be created (read-only folder, no permission) raises ``StorageError``.
    """
    lock = FileLock(path, timeout=-1 if wait else 0)
    try:
        lock.acquire()
    except Timeout:
        raise
    except OSError as exc:
        raise storage_error(path, "take the lock", exc) from None
    try:
        yield
    finally:
        lock.release()


def replace_folder(target: Path, build: Callable[[Path], None], owned: set[str]) -> None:
    """Write a folder whole: ``build`` fills a sibling temporary folder, which then takes ``target``'s place in
    one rename (a crash leaves the old folder or the new one, never a mix). An existing ``target`` may hold
    only names in ``owned`` (what this writer makes); it is swapped out and removed.

    Hand-written: no kept library swaps two folders atomically; Linux's renameat2(RENAME_EXCHANGE) does,
    and elsewhere the old folder is moved aside first (a crash in between leaves no ``target``, and the
    old folder under ``.NAME.old-*`` beside it).
    """
    target = Path(target)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.tmp-"))
    except OSError as exc:
        raise storage_error(parent, "create a folder", exc) from None
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        build(tmp)
        fsync_dir(tmp)
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            raise StorageError(f"{target}: exists and is not a folder")
        if target.is_dir():
            foreign = sorted(p.name for p in target.iterdir() if p.name not in owned)
            if foreign:
                raise StorageError(f"{target}: holds files modalign did not write ({', '.join(foreign[:5])}); "
                                   "not replacing it")
            if not _exchange(tmp, target):
                old = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.old-"))
                os.rename(target, old / "x")
                os.rename(tmp, target)
                tmp = old
        else:
            os.rename(tmp, target)
            tmp = Path()
        fsync_dir(parent)
    except OSError as exc:
        raise storage_error(target, "write the folder", exc) from None
    finally:
        if tmp != Path():
            shutil.rmtree(tmp, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EPERM):  # no such call, or a file system without exchange
        return False
    raise OSError(err, os.strerror(err), str(b))
