"""The emoji recipes on the real packaged sources (Debian fonts-noto-color-emoji + unicode-cldr-core, npm).

Needs: ``apt-get install -y fonts-noto-color-emoji unicode-cldr-core libcairo2``; the npm images are
installed here on first use when npm exists (the npm tests skip only when npm itself is missing).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from modalign.data import PairedDataset
from modalign.data.recipes import DATASETS
from modalign.data.recipes.cldr import Catalogue, CldrAnnotations, build_catalogue, codepoints_key
from modalign.data.recipes.emoji import EmojiMultilingualRecipe, EmojiRecipe
from modalign.data.recipes.emoji_render import STYLES, TILE, render_noto, to_tile
from modalign.data.recipes.install import npm_command, run_install_commands

THUMBS_UP = "\U0001f44d"
TONES = [chr(c) for c in range(0x1F3FB, 0x1F400)]


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    if not CldrAnnotations().available() or not STYLES["noto"].available():
        pytest.fail("install the apt sources: apt-get install -y fonts-noto-color-emoji unicode-cldr-core")
    return build_catalogue()


@pytest.fixture(scope="module")
def npm_styles() -> None:
    """Make sure the npm image packages are there; skip only when npm itself is unavailable."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    missing = [s.install_spec for s in STYLES.values() if s.kind == "npm" and not s.available()]
    if missing:
        run_install_commands([npm_command(missing)])


def read_manifest(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def check_rows(out: Path, rows: list[dict[str, Any]]) -> None:
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate ids"
    for row in rows:
        style = row["meta_style"]
        assert row["id"].endswith(f"__{style}")
        assert row["image"] == f"images/{style}/{row['id'].rsplit('__', 1)[0]}.png"
        assert isinstance(row["text"], str) and row["text"].strip()
        assert isinstance(row["group"], str) and row["group"]
        assert isinstance(row["meta_keywords"], list) and all(isinstance(k, str) for k in row["meta_keywords"])
        with Image.open(out / row["image"]) as img:
            assert img.size == (TILE, TILE) and img.mode == "RGB"
            arr = np.asarray(img)
        assert (arr.min(axis=2) < 200).mean() > 0.02, f"{row['image']} is (nearly) blank"
        assert (arr[0, :] == 255).all() and (arr[:, 0] == 255).all(), "white margin expected"


def test_registered() -> None:
    assert "emoji" in DATASETS and "emoji-multilingual" in DATASETS
    recipe = DATASETS.create("emoji")
    assert recipe.licence and recipe.source and recipe.description and recipe.approx_size
    for cmd in recipe.missing_requirements():
        assert cmd.startswith(("apt-get", "npm install", "/")) or " -m pip install " in cmd


def test_prepare_all_styles(tmp_path: Path, catalogue: Catalogue, npm_styles: None) -> None:
    calls: list[tuple[str, int, int]] = []
    result = EmojiRecipe().prepare(tmp_path, limit=20, progress=lambda *a: calls.append(a))
    rows = read_manifest(result.manifest)
    assert result.manifest == tmp_path / "manifest.jsonl"
    assert result.rows == len(rows) and result.groups == 20
    check_rows(tmp_path, rows)
    # the first 20 concepts (smileys) exist in every style
    assert {r["meta_style"] for r in rows} == set(STYLES)
    assert all(result.counts[s] == 20 for s in STYLES)
    assert [r["group"] for r in rows[:: len(STYLES)]] == [c.slug for c in catalogue.concepts[:20]]
    grinning = next(r for r in rows if r["meta_emoji"] == "\U0001f600")
    assert grinning["text"] == "grinning face" and grinning["group"] == "grinning-face"
    assert calls and calls[-1] == ("render", len(rows), len(rows))
    card = (tmp_path / "CARD.md").read_text(encoding="utf-8")
    for word in ("openmoji", "CC-BY-SA-4.0", "unicode-cldr-core", "skin-tone"):
        assert word in card
    ds = PairedDataset.from_manifest(result.manifest, on_error="fail")
    assert len(ds) == len(rows) and {"image", "text"} <= set(ds.modalities)

    # re-running renders nothing and leaves every image untouched
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "images").rglob("*.png")}
    calls.clear()
    again = EmojiRecipe().prepare(tmp_path, limit=20, progress=lambda *a: calls.append(a))
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "images").rglob("*.png")} == before
    assert calls[-1] == ("render", 0, 0)
    assert read_manifest(again.manifest) == rows
    assert not list(tmp_path.glob(".*.tmp"))


def test_skin_tones_fold_into_base(catalogue: Catalogue) -> None:
    thumbs = next(c for c in catalogue.concepts if c.emoji == THUMBS_UP)
    assert (thumbs.slug, thumbs.name) == ("thumbs-up", "thumbs up")
    assert sorted(v.emoji for v in thumbs.variants) == [THUMBS_UP + t for t in TONES]
    # no concept is itself a skin-tone variant; two-person tones fold into the single-code-point base
    assert not any(set(TONES) & set(c.emoji) for c in catalogue.concepts)
    handshake = next(c for c in catalogue.concepts if c.emoji == "\U0001f91d")
    assert "\U0001faf1\U0001f3fb\u200d\U0001faf2\U0001f3ff" in {v.emoji for v in handshake.variants}
    slugs = [c.slug for c in catalogue.concepts] + [v.slug for c in catalogue.concepts for v in c.variants]
    assert len(slugs) == len(set(slugs))


def test_skin_tone_rows_share_group_and_text(tmp_path: Path, catalogue: Catalogue) -> None:
    limit = next(i for i, c in enumerate(catalogue.concepts) if c.emoji == THUMBS_UP) + 1
    result = EmojiRecipe(styles=["noto"]).prepare(tmp_path, limit=limit)
    rows = read_manifest(result.manifest)
    thumbs = [r for r in rows if r["meta_emoji"].startswith(THUMBS_UP)]
    assert len(thumbs) == 6
    assert {r["group"] for r in thumbs} == {"thumbs-up"} and {r["text"] for r in thumbs} == {"thumbs up"}
    assert {r["meta_variant"] for r in thumbs} == {None, "light skin tone", "medium-light skin tone",
                                                   "medium skin tone", "medium-dark skin tone", "dark skin tone"}
    check_rows(tmp_path, thumbs)
    # the tones really are different pictures
    pixels = {np.asarray(Image.open(tmp_path / r["image"])).tobytes() for r in thumbs}
    assert len(pixels) == 6
    assert result.groups == limit and result.counts == {"noto": len(rows)}


def test_multilingual(tmp_path: Path, catalogue: Catalogue) -> None:
    recipe = EmojiMultilingualRecipe(styles=["noto"])  # the texts are what is tested here
    result = recipe.prepare(tmp_path, limit=20)
    rows = read_manifest(result.manifest)
    check_rows(tmp_path, rows)
    fields = [m for m in recipe.modalities if m.startswith("text_")]
    assert len(fields) >= 10
    for row in rows:
        assert sum(bool(row.get(f)) for f in fields) >= 10, row["id"]
    grinning = next(r for r in rows if r["meta_emoji"] == "\U0001f600")
    assert grinning["text"] == "grinning face"
    assert grinning["text_de"] == "grinsendes Gesicht" and grinning["text_fr"] == "visage rieur"
    assert all(result.counts[f] == len(rows) for f in fields)
    ds = PairedDataset.from_manifest(result.manifest, on_error="fail")
    assert set(fields) <= set(ds.modalities)


def test_cldr_inheritance() -> None:
    cldr = CldrAnnotations()
    de = cldr.name(THUMBS_UP, "de")
    assert de == "Daumen hoch"
    assert cldr.chain("de_CH") == ["de_CH", "de"]
    assert cldr.name(THUMBS_UP, "de_CH") == de  # de_CH only overrides a few entries
    assert cldr.chain("en_GB")[:2] == ["en_GB", "en_001"] and cldr.chain("en_GB")[-1] == "en"
    assert cldr.name(THUMBS_UP, "xx") is None  # no file, no root fallback: a missing translation is None
    # a flag name comes from annotationsDerived
    assert cldr.name("\U0001f1e9\U0001f1ea", "fr") == "drapeau : Allemagne"  # no-break space normalized
    assert codepoints_key("#\ufe0f\u20e3") == "23-20e3"


def test_blank_and_tofu_are_detected() -> None:
    assert to_tile(Image.new("RGBA", (64, 64), (0, 0, 0, 0))) is None
    assert to_tile(Image.new("RGBA", (64, 64), (255, 255, 255, 255))) is None
    assert render_noto("\U0001f1fd\U0001f1fd")[1] == "tofu"  # no such flag: the font draws a '?' flag
    assert render_noto("\U0001f436\u200d\U0001f431")[1] == "tofu"  # not a real ZWJ sequence
    img, status = render_noto("A")  # the emoji font has no Latin letters: nothing is drawn
    assert status == "tofu" or img is None or to_tile(img) is None
    img, status = render_noto(THUMBS_UP)
    assert status == "ok" and img is not None and to_tile(img) is not None


def test_missing_npm_style_is_skipped_with_a_note(
    tmp_path: Path, catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modalign.data.recipes import emoji_render

    monkeypatch.setattr(emoji_render, "npm_package_dir", lambda package: tmp_path / "no-npm" / package)
    recipe = EmojiRecipe(styles=["noto", "openmoji"])
    assert any("openmoji@" in cmd for cmd in recipe.missing_requirements())
    result = recipe.prepare(tmp_path / "out", limit=3)
    assert result.counts == {"noto": 3}
    assert any("openmoji" in note and "skipped" in note for note in result.notes)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown emoji style"):
        EmojiRecipe(styles=["clipart"])
    with pytest.raises(ValueError, match="no CLDR annotations"):
        EmojiMultilingualRecipe(languages=["xx"]).prepare(Path("/nonexistent"), limit=1)
