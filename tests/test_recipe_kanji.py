"""The ``kanji`` recipe on the real sources: PyPI ``kanjivg`` drawings + Debian ``kanjidic-xml`` meanings.

Needs: ``apt-get install -y kanjidic-xml libcairo2`` (scripts/install_system_deps.sh) and
``pip install kanjivg`` (the ``test`` extra).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from modalign.cli import app
from modalign.data import PairedDataset
from modalign.data.recipes import DATASETS
from modalign.data.recipes.kanji import KanjiRecipe
from modalign.data.recipes.kanji_sources import (
    KANJIDIC_PATH,
    MARKERS,
    Kanjidic,
    kanjivg_dir,
    kanjivg_files,
    read_kanjidic,
    strip_stroke_numbers,
)
from modalign.data.recipes.svg_render import MIN_INK_FRACTION, TILE, ink_fraction, render_svg

LIMIT = 10
WATER = "06c34"  # 水: four strokes, four stroke-number labels


@pytest.fixture(scope="module")
def kanjidic() -> Kanjidic:
    if not KANJIDIC_PATH.is_file() or kanjivg_dir() is None:
        pytest.fail("install the sources: apt-get install -y kanjidic-xml; pip install kanjivg")
    return read_kanjidic()


@pytest.fixture(scope="module")
def prepared(kanjidic: Kanjidic, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kanji")
    res = CliRunner().invoke(app, ["datasets", "prepare", "kanji", "--out", str(out), "--limit", str(LIMIT),
                                   "--no-install"])
    assert res.exit_code == 0, res.output
    return out


def read_rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def water_svg() -> bytes:
    folder = kanjivg_dir()
    assert folder is not None
    return (folder / f"{WATER}.svg").read_bytes()


def test_registered() -> None:
    recipe = DATASETS.create("kanji")
    assert recipe.modalities == ("image", "text", "text_es", "text_fr", "text_pt")
    assert "CC BY-SA 3.0" in recipe.licence and "KANJIDIC2" in recipe.licence


def test_manifest_well_formed(prepared: Path) -> None:
    ds = PairedDataset.from_manifest(prepared / "manifest.jsonl", on_error="fail")
    assert set(ds.kinds) == {"image", "text", "text_es", "text_fr", "text_pt"}
    assert len(ds) == LIMIT and len(set(ds.ids)) == LIMIT and len(set(ds.groups)) == LIMIT
    rows = read_rows(prepared)
    # most used kanji first: 日 (day, sun) has newspaper frequency rank 1
    assert rows[0]["group"] == "日" and "sun" in rows[0]["text"] and rows[0]["meta_freq"] == 1
    assert [r["meta_freq"] for r in rows] == sorted(r["meta_freq"] for r in rows)
    for row in rows:
        assert row["group"] == row["meta_kanji"] and len(row["group"]) == 1
        assert row["id"] == f"kanji_{ord(row['group']):05x}"
        assert row["text"] and all(marker not in row["text"] for marker in MARKERS)
    # the common kanji have meanings in the three other languages too
    assert all(r["text_es"] and r["text_fr"] and r["text_pt"] for r in rows)
    card = (prepared / "CARD.md").read_text(encoding="utf-8")
    assert "CC BY-SA 3.0" in card and f"{LIMIT} rows" in card


def test_kanjidic_reader(kanjidic: Kanjidic) -> None:
    assert kanjidic.version and len(kanjidic.entries) > 10_000
    by_literal = {e.literal: e for e in kanjidic.entries}
    assert by_literal["水"].meanings["en"][0] == "water"
    assert by_literal["水"].meanings["fr"][0] == "eau"
    # "(kokuji)" marks a Japan-made kanji; it is a flag, never a meaning
    flagged = [e for e in kanjidic.entries if "kokuji" in e.flags]
    assert len(flagged) > 100
    assert all(m not in MARKERS for e in kanjidic.entries for m in e.meanings.get("en", []))


def test_stroke_numbers_removed() -> None:
    raw = water_svg()
    assert b"StrokeNumbers" in raw and raw.count(b"<text") == 4
    clean = strip_stroke_numbers(raw)
    assert b"StrokeNumbers" not in clean and b"<text" not in clean and b":text" not in clean
    assert clean.count(b"<ns0:path") + clean.count(b"<path") == raw.count(b"<path") == 4

    with_numbers = np.asarray(render_svg(raw)).astype(int)
    without = np.asarray(render_svg(clean)).astype(int)
    changed = (with_numbers != without).any(axis=2)
    assert changed.sum() > 20, "the labels should be visible in the raw rendering"
    # every changed pixel is label ink (KanjiVG draws labels in grey #808080) on white in the clean image
    assert (without[changed] == 255).all()
    assert ink_fraction(Image.fromarray(without.astype(np.uint8))) < ink_fraction(
        Image.fromarray(with_numbers.astype(np.uint8)))


def test_prepared_images_are_clean_non_blank(prepared: Path) -> None:
    folder = kanjivg_dir()
    assert folder is not None
    files = kanjivg_files(folder)
    for row in read_rows(prepared):
        with Image.open(prepared / row["image"]) as img:
            assert img.size == (TILE, TILE) and img.mode == "RGB"
            arr = np.asarray(img)
        assert ink_fraction(img) >= MIN_INK_FRACTION, row["image"]
        code = row["id"].removeprefix("kanji_")
        expected = np.asarray(render_svg(strip_stroke_numbers(files[code].read_bytes())))
        assert np.array_equal(arr, expected), f"{row['image']} is not the label-free rendering"


def test_rerun_is_incremental(prepared: Path) -> None:
    manifest = (prepared / "manifest.jsonl").read_bytes()
    before = {p: p.stat().st_mtime_ns for p in (prepared / "images").glob("*.png")}
    again = KanjiRecipe(workers=1).prepare(prepared, limit=LIMIT)
    assert again.counts["rendered"] == 0 and again.rows == LIMIT
    assert (prepared / "manifest.jsonl").read_bytes() == manifest
    assert {p: p.stat().st_mtime_ns for p in before} == before
    more = KanjiRecipe(workers=1).prepare(prepared, limit=LIMIT + 3)
    assert more.counts["rendered"] == 3 and more.rows == LIMIT + 3
    assert read_rows(prepared)[:LIMIT] == [json.loads(line) for line in manifest.decode().splitlines()]
