"""The manifest validator, error by error: every rejected row is recorded with its row number, its id, the
field and the exact reason, and the accepted ones come out as the items encoders read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modalign.data.dataset import MAX_TEXT_CHARS, PairedDataset, RowError


def _errors(rows: list, root: Path, **kwargs: object) -> tuple[PairedDataset | None, list[tuple]]:
    """The dataset (or None when no row survived) and its errors as (row, id, field, reason) tuples."""
    good = [{"id": "keep", "text": "a kept row"}]  # one good row, so that a dataset is built
    ds = PairedDataset.from_rows([*rows, *good], root=root, on_error="skip", **kwargs)
    return ds, [(e.row, e.id, e.field, e.reason) for e in ds.errors]


def test_ids_are_checked_in_order_and_named(tmp_path: Path) -> None:
    long_id = "x" * 90 + "\n"
    _, errors = _errors([
        "Expecting value: line 1 column 1",  # a line the reader could not parse arrives as its message
        {"text": "no id"},
        {"id": "   ", "text": "blank id"},
        {"id": 1.5, "text": "float id"},
        {"id": True, "text": "bool id"},
        {"id": "a\nb", "text": "newline"},
        {"id": "del\x7f", "text": "DEL"},
        {"id": "unit\x1f", "text": "unit separator"},
        {"id": long_id, "text": "long"},
        {"id": 7, "text": "an integer id is its string"},
        {"id": "7", "text": "so this one repeats it"},
    ], tmp_path)
    assert errors == [
        (1, None, "-", "Expecting value: line 1 column 1"),
        (2, None, "id", "missing id"),
        (3, None, "id", "missing id"),
        (4, None, "id", "id must be a string or integer, got float"),
        (5, None, "id", "id must be a string or integer, got bool"),
        (6, "a\\nb", "id", "id holds a control character (newline, tab, ...)"),
        (7, "del\\x7f", "id", "id holds a control character (newline, tab, ...)"),
        (8, "unit\\x1f", "id", "id holds a control character (newline, tab, ...)"),
        (9, "x" * 80, "id", "id holds a control character (newline, tab, ...)"),
        (11, "7", "id", "duplicate id (first seen at row 10)"),
    ]
    assert all(isinstance(e, RowError) for e in _errors(["bad"], tmp_path)[0].errors)  # type: ignore[union-attr]


def test_groups_are_checked_and_named(tmp_path: Path) -> None:
    ds, errors = _errors([
        {"id": "g1", "group": ["a"], "text": "list group"},
        {"id": "g2", "group": False, "text": "bool group"},
        {"id": "g3", "group": 3, "text": "an integer group is its string"},
    ], tmp_path)
    assert errors == [(1, "g1", "group", "group must be a string, got list"),
                      (2, "g2", "group", "group must be a string, got bool")]
    assert ds is not None and ds.groups[0] == "3" and ds.groups[1] == "keep"  # no group: the row's own id
    ds = PairedDataset.from_rows([{"id": "c1", "text": "no concept"}, {"id": "c2", "concept": ["x"], "text": "t"},
                                  {"id": "c3", "concept": "k", "text": "kept"}], root=tmp_path, group_by="concept")
    assert ds.groups == ["k"]
    assert [(e.row, e.id, e.field, e.reason) for e in ds.errors] == [
        (1, "c1", "concept", "no 'concept' field to group by (--group-by)"),
        (2, "c2", "concept", "group must be a string, got list")]


def test_texts_files_and_vectors_are_checked_and_named(tmp_path: Path) -> None:
    (tmp_path / "pic.png").write_bytes(b"not read here")
    (tmp_path / "v.npy").write_bytes(b"not read here")
    ds, errors = _errors([
        {"id": "t1", "text": 5},
        {"id": "t2", "text": " \n "},
        {"id": "t3", "text": "x" * (MAX_TEXT_CHARS + 1)},
        {"id": "i1", "image": 3},
        {"id": "i2", "image": "   "},
        {"id": "a1", "audio": 3},
        {"id": "i3", "image": "../outside.png"},
        {"id": "i4", "image": "missing.png"},
        {"id": "v1", "vector": {"a": 1}},
        {"id": "v2", "vec_x": "missing.npy"},
        {"id": "ok-image", "image": "pic.png", "vec_x": "v.npy", "vector": [1, 2]},
    ], tmp_path)
    assert errors == [
        (1, "t1", "text", "text must be a string, got int"),
        (2, "t2", "text", "empty text"),
        (3, "t3", "text", f"text has {MAX_TEXT_CHARS + 1} characters (limit {MAX_TEXT_CHARS})"),
        (4, "i1", "image", "image must be a file path string, got int"),
        (5, "i2", "image", "image must be a file path string, got str"),
        (6, "a1", "audio", "audio must be a file path string, got int"),
        (7, "i3", "image", "path '../outside.png' points outside the manifest's folder (use --allow-outside-root)"),
        (8, "i4", "image", "file not found: missing.png"),
        (9, "v1", "vector", "vector must be a list of numbers or a .npy path, got dict"),
        (10, "v2", "vec_x", "file not found: missing.npy"),
    ]
    assert ds is not None and ds.root == tmp_path.resolve()
    row = ds.ids.index("ok-image")
    assert ds.columns["image"][row] == (tmp_path / "pic.png").resolve()
    assert ds.columns["vec_x"][row] == (tmp_path / "v.npy").resolve()
    np.testing.assert_array_equal(ds.columns["vector"][row], np.array([1, 2], np.float32))
    assert ds.kinds == {"text": "text", "image": "image", "vec_x": "vector", "vector": "vector"}


@pytest.mark.parametrize("length", [80, 81])
def test_a_path_the_system_cannot_follow_is_one_line_cut_at_80_characters(tmp_path: Path, length: int) -> None:
    name = "d" * (length - len("/loop.png"))
    (tmp_path / name).mkdir()
    (tmp_path / name / "loop.png").symlink_to("loop.png")  # a link to itself
    value = f"{name}/loop.png"
    assert len(value) == length
    _, errors = _errors([{"id": "loop", "image": value}, {"id": "long", "image": "n" * 300 + ".png"}], tmp_path)
    shown = repr(value[:80]) + ("…" if length > 80 else "")
    assert errors == [(1, "loop", "image", f"path {shown}: a loop of symbolic links"),
                      (2, "long", "image", f"path {'n' * 80!r}…: File name too long")]


def test_unknown_fields_are_reported_once_and_meta_fields_kept(tmp_path: Path) -> None:
    ds, errors = _errors([{"id": "m1", "text": "a", "colour": "red", "meta_source": "web"},
                          {"id": "m2", "text": "b", "colour": "blue", "meta_source": None}], tmp_path)
    assert errors == [(1, "m1", "colour", "unknown field: not a modality (text*, image*, audio*, vector, vec_*) — "
                                          "prefix it with 'meta_' to keep it as metadata; the field is ignored")]
    assert ds is not None and ds.meta == {"meta_source": ["web", None, None]} and len(ds) == 3


def test_fields_after_an_id_group_meta_unknown_or_null_field_are_still_read(tmp_path: Path) -> None:
    """Each field is judged on its own: whatever comes before a modality in the row, the modality is kept."""
    rows = [{"id": "after-id", "text": "one"},
            {"group": "g", "id": "after-group", "text": "two"},
            {"id": "after-meta", "meta_note": "x", "text": "three"},
            {"id": "after-unknown", "colour": "red", "text": "four"},
            {"id": "after-null", "image": None, "text": "five"}]
    ds, errors = _errors(rows, tmp_path)
    assert [e[:3] for e in errors] == [(4, "after-unknown", "colour")]
    assert ds is not None
    assert dict(zip(ds.ids, ds.columns["text"], strict=True)) == {
        "after-id": "one", "after-group": "two", "after-meta": "three", "after-unknown": "four",
        "after-null": "five", "keep": "a kept row"}
    by_label = PairedDataset.from_rows([{"id": "a", "label": "g2", "text": "six"},
                                        {"label": "g2", "id": "b", "text": "seven"}], root=tmp_path,
                                       group_by="label")
    assert by_label.columns["text"] == ["six", "seven"] and by_label.groups == ["g2", "g2"]


def test_a_space_in_an_id_and_a_text_at_the_length_limit_are_accepted(tmp_path: Path) -> None:
    ds, errors = _errors([{"id": "a b", "text": "x" * MAX_TEXT_CHARS},
                          {"id": "c", "text": "y" * (MAX_TEXT_CHARS + 1)}], tmp_path)
    assert errors == [(2, "c", "text", f"text has {MAX_TEXT_CHARS + 1} characters (limit {MAX_TEXT_CHARS})")]
    assert ds is not None and ds.ids[0] == "a b" and len(ds.columns["text"][0]) == MAX_TEXT_CHARS


def test_a_path_outside_the_folder_is_read_when_allowed(tmp_path: Path) -> None:
    (tmp_path / "outside.png").write_bytes(b"png")
    root = tmp_path / "manifests"
    root.mkdir()
    ds = PairedDataset.from_rows([{"id": "o", "image": "../outside.png", "text": "t"}], root=root,
                                 allow_outside_root=True)
    assert ds.columns["image"] == [(tmp_path / "outside.png").resolve()]


def test_every_bad_field_of_a_row_is_reported(tmp_path: Path) -> None:
    _, errors = _errors([{"id": "two", "text": " ", "image": "missing.png", "vector": "x.npy"}], tmp_path)
    assert errors == [(1, "two", "text", "empty text"), (1, "two", "image", "file not found: missing.png"),
                      (1, "two", "vector", "file not found: x.npy")]
