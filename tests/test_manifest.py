"""Manifest reading and validation: every problem names its row and field."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from modalign.data import PairedDataset
from modalign.errors import ManifestError


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_reads_jsonl_with_missing_fields(tmp_path: Path) -> None:
    _image(tmp_path / "img" / "a.png")
    m = _write_jsonl(tmp_path / "m.jsonl", [
        {"id": "a", "image": "img/a.png", "text": "a red square", "group": "red"},
        {"id": "b", "image": None, "text": "nothing to see", "text_de": "nichts"},
        {"id": "c", "vec_x": [1.0, 2.0, 3.0], "text": "vector row", "meta_note": "kept"},
    ])
    ds = PairedDataset.from_manifest(m, on_error="fail")
    assert ds.ids == ["a", "b", "c"]
    assert ds.kinds == {"image": "image", "text": "text", "text_de": "text", "vec_x": "vector"}
    assert ds.present("image").tolist() == [True, False, False]
    assert ds.columns["image"][0] == (tmp_path / "img" / "a.png").resolve()
    assert ds.groups == ["red", "b", "c"]  # no group: the row is its own concept
    np.testing.assert_allclose(ds.columns["vec_x"][2], [1, 2, 3])
    assert ds.meta["meta_note"] == [None, None, "kept"]


def test_validation_lists_every_bad_row(tmp_path: Path) -> None:
    _image(tmp_path / "ok.png")
    m = _write_jsonl(tmp_path / "m.jsonl", [
        {"id": "ok", "image": "ok.png", "text": "fine"},
        {"id": "ok", "image": "ok.png", "text": "duplicate id"},
        {"id": "gone", "image": "missing.png", "text": "missing file"},
        {"id": "num", "text": 42},
        {"image": "ok.png", "text": "no id"},
        {"id": "vec", "vector": [1.0, "x"]},
        {"id": "weird", "text": "t", "colour": "red"},
        {"id": "escape", "image": "../../etc/passwd"},
    ])
    with pytest.raises(ManifestError) as info:
        PairedDataset.from_manifest(m, on_error="fail")
    msg = str(info.value)
    for expected in ["row 2, field 'id': duplicate id", "row 3, field 'image': file not found",
                     "row 4, field 'text': text must be a string", "row 5, field 'id': missing id",
                     "row 6, field 'vector'", "row 7, field 'colour': unknown field", "row 8, field 'image'"]:
        assert expected in msg, (expected, msg)
    assert "outside the manifest" in msg


def test_skip_keeps_good_rows_and_records_errors(tmp_path: Path) -> None:
    rows = [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}, {"id": "b", "text": ""}]
    m = _write_jsonl(tmp_path / "m.jsonl", rows)
    ds = PairedDataset.from_manifest(m, on_error="skip")
    assert ds.ids == ["a"]
    assert [(e.row, e.field) for e in ds.errors] == [(2, "id"), (3, "text")]


def test_error_list_is_capped_at_20(tmp_path: Path) -> None:
    m = _write_jsonl(tmp_path / "m.jsonl", [{"id": str(i), "text": i} for i in range(30)])
    with pytest.raises(ManifestError) as info:
        PairedDataset.from_manifest(m, on_error="fail")
    assert "30 problem(s)" in str(info.value)
    assert "and 10 more" in str(info.value)


def test_invalid_json_line_is_named(tmp_path: Path) -> None:
    m = tmp_path / "m.jsonl"
    m.write_text('{"id": "a", "text": "x"}\n{"id": "b", "text": \n')
    with pytest.raises(ManifestError, match=r"row 2.*invalid JSON"):
        PairedDataset.from_manifest(m, on_error="fail")


def test_csv_and_parquet_give_the_same_dataset(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text('id,image,text,group,vec_x\na,a.png,red,g1,"[1, 2]"\nb,,blue,g2,\n')
    pq.write_table(pa.table({"id": ["a", "b"], "image": ["a.png", None], "text": ["red", "blue"],
                             "group": ["g1", "g2"], "vec_x": [[1.0, 2.0], None]}), tmp_path / "m.parquet")
    a = PairedDataset.from_manifest(tmp_path / "m.csv", on_error="fail")
    b = PairedDataset.from_manifest(tmp_path / "m.parquet", on_error="fail")
    assert a.ids == b.ids and a.groups == b.groups
    assert a.columns["image"] == b.columns["image"]
    assert a.columns["text"] == b.columns["text"]
    np.testing.assert_allclose(a.columns["vec_x"][0], b.columns["vec_x"][0])
    assert a.columns["vec_x"][1] is None and b.columns["vec_x"][1] is None


def test_unsupported_suffix(tmp_path: Path) -> None:
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(ManifestError, match="unsupported manifest type"):
        PairedDataset.from_manifest(tmp_path / "m.txt")


# --- Excel exports and other encodings (issue 16) ----------------------------------------------------


def test_excel_csv_with_bom_and_crlf_is_read(tmp_path: Path) -> None:
    m = tmp_path / "excel.csv"
    m.write_bytes(b"\xef\xbb\xbfid,text,vec_x\r\na,caf\xc3\xa9,\"[1, 2]\"\r\nb,\"two\r\nlines\",\r\n")
    ds = PairedDataset.from_manifest(m, on_error="fail")
    assert ds.ids == ["a", "b"] and ds.columns["text"] == ["café", "two\r\nlines"]
    assert ds.columns["vec_x"][1] is None


def test_jsonl_with_bom_and_crlf_is_read(tmp_path: Path) -> None:
    m = tmp_path / "m.jsonl"
    m.write_bytes(b'\xef\xbb\xbf{"id": "a", "text": "x"}\r\n{"id": "b", "text": "y"}\r\n')
    assert PairedDataset.from_manifest(m, on_error="fail").ids == ["a", "b"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_invalid_utf8_rows_are_recorded_not_replaced(tmp_path: Path, suffix: str) -> None:
    m = tmp_path / f"m{suffix}"
    if suffix == ".csv":
        m.write_bytes(b"id,text\na,fine\nb,caf\xe9\nc,also fine\n")
        bad_row = 3
    else:
        m.write_bytes(b'{"id": "a", "text": "fine"}\n{"id": "b", "text": "caf\xe9"}\n{"id": "c", "text": "ok"}\n')
        bad_row = 2
    ds = PairedDataset.from_manifest(m, on_error="skip")
    assert ds.ids == ["a", "c"]
    assert all("\ufffd" not in t for t in ds.columns["text"])
    [err] = ds.errors
    assert err.row == bad_row and "invalid UTF-8" in err.reason and "0xe9" in err.reason


@pytest.mark.parametrize(("data", "needle"), [
    (b"id;text\na;x\n", "looks ';'-separated"),
    (b"id\ttext\na\tx\n", "looks tab-separated"),
    (b"ID,Text\na,x\n", "header is ['ID', 'Text']"),
    (b"\xff\xfei\x00d\x00,\x00t\x00e\x00x\x00t\x00\n\x00", "UTF-16"),
    (b"", "the file is empty"),
])
def test_no_modality_fields_names_the_cause(tmp_path: Path, data: bytes, needle: str) -> None:
    m = tmp_path / "m.csv"
    m.write_bytes(data)
    with pytest.raises(ManifestError) as info:
        PairedDataset.from_manifest(m, on_error="skip")
    assert "no modality fields" in str(info.value) and needle in str(info.value), str(info.value)


@pytest.mark.parametrize(("rows", "needle"), [
    ([], "the file has no rows"),  # needles are regular expressions
    ([{"id": "a", "Text": "x"}, {"id": "b", "Text": "y"}], "field names are lower-case"),
    ([{"id": "a", "caption": "x"}], r"the fields are \['caption'\]; name a column text\*"),
    ([{"id": "a", "text": None}, {"id": "b", "text": None}], r"the fields \['text'\] are empty \(null\) in every row"),
    ([{"id": "a", "image": "missing.png"}, {"id": "b", "image": "gone.png"}],
     r"every one of the 2 rows was rejected; the first, row [01] field 'image': file not found: missing\.png"),
    ([{"id": "a", "meta_x": 1}], r"only id, group and meta_\* fields"),
])
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_no_modality_fields_in_jsonl_or_parquet_names_the_cause(tmp_path: Path, rows: list, needle: str,
                                                                suffix: str) -> None:
    m = tmp_path / f"m{suffix}"
    if suffix == ".jsonl":
        m.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        empty = pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())})
        pq.write_table(pa.Table.from_pylist(rows) if rows else empty, m)
    with pytest.raises(ManifestError) as info:
        PairedDataset.from_manifest(m, on_error="skip")
    assert "no modality fields" in str(info.value) and re.search(needle, str(info.value)), str(info.value)


def test_vector_dim_comes_from_the_majority_not_the_first_row(tmp_path: Path) -> None:
    rows = [{"id": "short", "vector": [1.0, 2.0]}] + [{"id": f"r{i}", "vector": [i, 1.0, 2.0]} for i in range(4)]
    ds = PairedDataset.from_rows(rows, root=tmp_path, on_error="skip")
    assert ds.ids == ["r0", "r1", "r2", "r3"]
    [err] = ds.errors
    assert (err.row, err.id, err.field) == (1, "short", "vector") and "most rows of the column have 3" in err.reason


@pytest.mark.parametrize(("value", "needle"), [
    ([1e39, 0.0], "value 1e+39 is outside the float32 range"),
    ([-1e39, 0.0], "outside the float32 range"),
    ([10**400, 0], "a 401-digit integer is outside the float32 range"),
    ([float("nan"), 0.0], "NaN or inf"),
])
def test_bad_inline_vector_is_one_skipped_row(tmp_path: Path, value: list, needle: str) -> None:
    rows = [{"id": "bad", "vector": value}, {"id": "a", "vector": [1.0, 2.0]}, {"id": "b", "vector": [3.0, 4.0]}]
    ds = PairedDataset.from_rows(rows, root=tmp_path, on_error="skip")
    assert ds.ids == ["a", "b"]
    [err] = ds.errors
    assert err.id == "bad" and needle in err.reason, err
