"""The ``icons`` recipe on the real npm icon sets (@mdi/svg, @tabler/icons, lucide-static).

Needs npm (``scripts/install_system_deps.sh`` installs the three packages; missing ones are installed
here on first use) and libcairo2 for cairosvg.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from modalign.cli import app
from modalign.data import PairedDataset
from modalign.data.recipes import DATASETS
from modalign.data.recipes.icon_sets import ICON_SETS, Icon
from modalign.data.recipes.icons import IconsRecipe, build_concepts, icon_text
from modalign.data.recipes.install import npm_command, run_install_commands
from modalign.data.recipes.svg_render import MIN_INK_FRACTION, STAMP_FILE, TILE, ink_fraction, render_task

LIMIT = 12


@pytest.fixture(scope="module")
def icon_sets() -> None:
    if shutil.which("npm") is None:
        pytest.fail("npm is needed for the icons dataset; run scripts/install_system_deps.sh")
    missing = [s.install_spec for s in ICON_SETS.values() if not s.available()]
    if missing:
        run_install_commands([npm_command(missing)])


@pytest.fixture(scope="module")
def prepared(icon_sets: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dataset prepared once through the CLI, as a user would."""
    out = tmp_path_factory.mktemp("icons")
    res = CliRunner().invoke(app, ["datasets", "prepare", "icons", "--out", str(out), "--limit", str(LIMIT),
                                   "--no-install"])
    assert res.exit_code == 0, res.output
    assert "prepared icons" in res.output
    return out


def read_rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def test_listed_with_metadata() -> None:
    res = CliRunner().invoke(app, ["datasets", "list"])
    assert res.exit_code == 0, res.output
    assert "icons" in res.output
    recipe = DATASETS.create("icons")
    assert recipe.modalities == ("image", "text")
    assert "Apache-2.0" in recipe.licence and "MIT" in recipe.licence and "ISC" in recipe.licence


def test_manifest_well_formed(prepared: Path) -> None:
    ds = PairedDataset.from_manifest(prepared / "manifest.jsonl", on_error="fail")
    assert ds.kinds == {"image": "image", "text": "text"}
    assert len(set(ds.ids)) == len(ds.ids)
    assert len(set(ds.groups)) == LIMIT
    assert all(p.is_file() for p in ds.columns["image"])
    rows = read_rows(prepared)
    for row in rows:
        assert row["id"] == f"{row['meta_set']}__{row['meta_name']}"
        assert row["text"].startswith(row["meta_name"].replace("-", " "))
        assert row["label"] == row["meta_category"]
    assert {r["meta_set"] for r in rows} == set(ICON_SETS)
    assert any(r["label"] for r in rows if r["meta_set"] == "tabler")
    assert (prepared / "CARD.md").read_text(encoding="utf-8").count("| mdi | @mdi/svg |") == 1


def test_images_are_non_blank_tiles(prepared: Path) -> None:
    digests = set()
    for row in read_rows(prepared):
        with Image.open(prepared / row["image"]) as img:
            assert img.size == (TILE, TILE) and img.mode == "RGB"
            arr = np.asarray(img)
        assert ink_fraction(Image.fromarray(arr)) >= MIN_INK_FRACTION, row["image"]
        assert (arr.min(axis=2) < 64).any(), f"{row['image']}: stroke icons must render black, not grey"
        assert (arr[0] == 255).all() or (arr[-1] == 255).all(), f"{row['image']}: white background expected"
        digests.add(arr.tobytes())
    assert len(digests) == len(read_rows(prepared))


def test_names_deduplicated_across_sets(prepared: Path) -> None:
    rows = read_rows(prepared)
    by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_name[row["meta_name"]].append(row)
    # concepts drawn by all three sets come first, so every kept plain name has three images, one text
    plain = [name for name in by_name if not name.endswith("-outline")]
    assert len(plain) == LIMIT
    for name in plain:
        assert sorted(r["meta_set"] for r in by_name[name]) == sorted(ICON_SETS), name
        assert len({r["text"] for r in by_name[name]}) == 1
        assert len({r["group"] for r in by_name[name]}) == 1
    # MDI's outline redraw joins its concept's group but keeps its own name
    outline = [r for r in rows if r["meta_name"].endswith("-outline")]
    assert outline, "expected an MDI '-outline' icon among the first concepts (e.g. archive-outline)"
    for row in outline:
        assert row["group"] == row["meta_name"].removesuffix("-outline")
        assert row["group"] in by_name and row["text"] != by_name[row["group"]][0]["text"]


def test_text_merges_tags_of_every_set(tmp_path: Path) -> None:
    svg = tmp_path / "x.svg"
    icons = [Icon("mdi", "arrow-left", ("arrow back",), "Arrow", svg),
             Icon("tabler", "arrow-left", ("direction", "Arrow Back", "arrow left"), "Arrows", svg),
             Icon("lucide", "arrow-left", ("previous",), None, svg)]
    assert icon_text("arrow-left", icons) == "arrow left: arrow back, direction, previous"
    assert icon_text("bell", [Icon("lucide", "bell", (), None, svg)]) == "bell"


def test_concept_order_and_limit_are_deterministic(icon_sets: None, prepared: Path) -> None:
    concepts = build_concepts(list(ICON_SETS.values()))
    assert len({c.group for c in concepts}) == len(concepts)
    n_sets = [len(c.sets) for c in concepts]
    assert n_sets == sorted(n_sets, reverse=True) and n_sets[0] == 3
    assert [c.group for c in concepts[:LIMIT]] == list(dict.fromkeys(r["group"] for r in read_rows(prepared)))
    names = {(i.set, i.name) for c in concepts for i in c.icons}
    assert ("mdi", "arrow-left") in names and ("lucide", "arrow-left") in names
    assert sum(len(c.icons) for c in concepts) == len(names)


def test_rerun_is_incremental(prepared: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in (prepared / "images").rglob("*.png")}
    again = IconsRecipe(workers=1).prepare(prepared, limit=LIMIT)
    assert again.counts["rendered"] == 0 and again.counts["cached"] == again.rows == len(before)
    assert {p: p.stat().st_mtime_ns for p in before} == before

    more = IconsRecipe(workers=1).prepare(prepared, limit=LIMIT + 2)
    assert more.groups == LIMIT + 2
    assert more.counts["rendered"] == more.rows - len(before) > 0

    # a changed source version re-renders that set only
    stamp = json.loads((prepared / STAMP_FILE).read_text())
    stamp["lucide"]["version"] = "0.0.0"
    (prepared / STAMP_FILE).write_text(json.dumps(stamp))
    redo = IconsRecipe(workers=1).prepare(prepared, limit=LIMIT + 2)
    assert redo.counts["rendered"] == redo.counts["lucide"] > 0
    IconsRecipe(workers=1).prepare(prepared, limit=LIMIT)  # leave the fixture as it was for other tests


def test_blank_or_broken_svg_is_dropped_not_written(tmp_path: Path) -> None:
    blank = tmp_path / "blank.svg"
    blank.write_text('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><path d="M0 0" '
                     'stroke="currentColor"/></svg>')
    broken = tmp_path / "broken.svg"
    broken.write_text("<svg><path")
    for src, status in ((blank, "blank"), (broken, "error")):
        dest = tmp_path / f"{src.stem}.png"
        _, got, message = render_task((str(src), str(dest), None))
        assert got == status, message
        assert not dest.exists()
