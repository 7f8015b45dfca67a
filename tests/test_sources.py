"""How the search layer opens an entry's source file (``search.sources``), on a real folder: links swapped in,
FIFOs, folders, paths out of the root, relative entries resolved against the root that still exists."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from modalign.search.sources import (
    SourceRefused,
    SourceResolver,
    entry_source,
    is_relative,
    open_inside,
    safe_relative,
)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """data/a.txt, data/sub/b.txt, outside/secret.txt, and links: data/link -> outside/secret.txt,
    data/dirlink -> outside, data/inner -> data/a.txt (a link that stays inside)."""
    data, outside = tmp_path / "data", tmp_path / "outside"
    (data / "sub").mkdir(parents=True)
    outside.mkdir()
    (data / "a.txt").write_bytes(b"a")
    (data / "sub" / "b.txt").write_bytes(b"b")
    (outside / "secret.txt").write_bytes(b"secret")
    (data / "link").symlink_to(outside / "secret.txt")
    (data / "dirlink").symlink_to(outside)
    (data / "inner").symlink_to(data / "a.txt")
    os.mkfifo(data / "fifo")
    return data


def test_regular_files_inside_the_root_open_in_blocking_mode(tree: Path) -> None:
    for rel, content in (("a.txt", b"a"), ("sub/b.txt", b"b")):
        with open_inside(str(tree / rel), tree) as fh:
            assert fh.read() == content
            assert os.get_blocking(fh.fileno())
    with open_inside(str(tree / "a.txt"), None) as fh:  # absolute entry, no root: that very path
        assert fh.read() == b"a"


@pytest.mark.parametrize(("name", "reason"), [
    ("link", "symbolic link"),  # the last component is a link (out of the root)
    ("inner", "symbolic link"),  # even a link that stays inside: links are never followed at the last step
    ("fifo", "not a regular file"),  # and opening it does not wait for a writer
    ("sub", "not a regular file"),
    ("dirlink/secret.txt", "outside the data folder"),  # a link earlier in the path, out of the root
])
def test_refused_and_no_descriptor_leaks(tree: Path, name: str, reason: str) -> None:
    before = _open_fds()
    with pytest.raises(SourceRefused, match=reason):
        open_inside(str(tree / name), tree)
    assert _open_fds() == before


def test_an_absolute_entry_through_a_linked_folder_is_refused(tree: Path) -> None:
    with pytest.raises(SourceRefused, match="outside"):
        open_inside(str(tree / "dirlink" / "secret.txt"), None)


def test_missing_is_file_not_found(tree: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_inside(str(tree / "nope.txt"), tree)


def test_relative_path_rules() -> None:
    assert is_relative("a/b.png") and not is_relative("/a/b.png") and not is_relative(None)
    assert safe_relative("a/b.png") and safe_relative("./a.png")
    for bad in ("../a.png", "a/../../b.png", "/etc/passwd", ""):
        assert not safe_relative(bad), bad


def test_entry_source_fields(tmp_path: Path) -> None:
    root, index = tmp_path / "data", tmp_path / "idx"
    assert entry_source(root / "img" / "x.png", root, None) == {"path": "img/x.png", "root": str(root)}
    assert entry_source(root / "img" / "x.png", root, index) == {"path": "img/x.png", "root": str(root),
                                                                 "root_from_index": "../data"}
    assert entry_source(tmp_path / "elsewhere.png", root, index) == {"path": str(tmp_path / "elsewhere.png")}


def test_resolver_uses_the_root_that_exists(tree: Path, tmp_path: Path) -> None:
    index = tmp_path / "idx"
    index.mkdir()
    gone = str(tmp_path / "moved-away")
    # the recorded root is gone: the index-relative one is used
    resolver = SourceResolver(index)
    assert resolver.resolve("a.txt", gone, "../data") == str(tree / "a.txt")
    with resolver.open("sub/b.txt", gone, "../data") as fh:
        assert fh.read() == b"b"
    # the recorded root wins when it exists; --data-root wins over both
    assert SourceResolver(index).resolve("a.txt", str(tree), "../nowhere") == str(tree / "a.txt")
    other = tmp_path / "other"
    other.mkdir()
    assert SourceResolver(index, other).resolve("a.txt", str(tree), "../data") == str(other / "a.txt")
    # nothing to resolve against, an unsafe path, and an entry without a file
    assert SourceResolver().resolve("a.txt", None, None) is None
    assert SourceResolver(index).resolve("../a.txt", str(tree), None) is None
    assert SourceResolver(index).resolve(None) is None
    assert SourceResolver(index).resolve(str(tree / "a.txt")) == str(tree / "a.txt")
    with pytest.raises(FileNotFoundError):
        SourceResolver(index).open("../a.txt", str(tree), None)
    with pytest.raises(SourceRefused):
        SourceResolver(index).open("link", str(tree), None)


def test_the_handle_closes_on_exec_and_refusals_say_exactly_why(tree: Path) -> None:
    with open_inside(str(tree / "a.txt"), tree) as fh:  # a child process (a worker, a converter) never inherits it
        assert fcntl.fcntl(fh.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    for name, reason in (("link", "it is a symbolic link"), ("fifo", "it is not a regular file"),
                         ("dirlink/secret.txt", "it resolves outside the data folder")):
        with pytest.raises(SourceRefused) as info:
            open_inside(str(tree / name), tree)
        assert str(info.value) == reason
    missing = str(tree / "nope.txt")
    with pytest.raises(FileNotFoundError) as lost:
        open_inside(missing, tree)
    assert lost.value.args == (missing,)
    with pytest.raises(FileNotFoundError) as unsafe:
        SourceResolver().open("../a.txt", str(tree), None)
    assert unsafe.value.args == ("../a.txt",)


def test_a_linked_folder_that_stays_inside_the_root_is_followed(tree: Path, tmp_path: Path) -> None:
    (tree / "alias").symlink_to(tree / "sub")  # a folder link inside the data folder, to a folder inside it
    with open_inside(str(tree / "alias" / "b.txt"), tree) as fh:
        assert fh.read() == b"b"
    with SourceResolver(tmp_path).open("alias/b.txt", str(tree), None) as fh:  # a relative entry: its root decides
        assert fh.read() == b"b"
    # an absolute entry is that very file, wherever the recorded root is
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_bytes(b"e")
    with SourceResolver(tmp_path).open(str(elsewhere), str(tree), None) as fh:
        assert fh.read() == b"e"


def test_a_recorded_root_that_is_gone_still_names_the_file(tree: Path, tmp_path: Path) -> None:
    """With no folder on disk to prefer, the recorded root is the answer (the file then reads as missing), and
    each root keeps its own base."""
    gone = str(tmp_path / "moved-away")
    resolver = SourceResolver()
    assert resolver.base(gone, None) == Path(gone)
    assert resolver.resolve("a.txt", gone, None) == str(Path(gone) / "a.txt")
    assert resolver.base(str(tree), None) == tree and resolver.base(gone, None) == Path(gone)
