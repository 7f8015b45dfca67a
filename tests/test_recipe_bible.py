"""The ``bible-en-es`` recipe on a small limit: real SWORD modules, clean verse-aligned rows, a card."""

from __future__ import annotations

import json

import pytest

from modalign.data.dataset import PairedDataset
from modalign.data.recipes import DATASETS
from modalign.data.recipes.bible import clean_osis


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("bible")
    recipe = DATASETS.create("bible-en-es")
    assert recipe.missing_requirements() == [], "run scripts/install_system_deps.sh (sword-text-* + pysword)"
    return out, recipe.prepare(out, limit=40)


def test_rows_are_verse_aligned_and_clean(prepared) -> None:
    out, result = prepared
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert result.rows == len(rows) == 40 and result.groups == 40  # Gen 1 (31 verses) + Gen 2:1-9
    assert rows[0]["id"] == "Gen.1.1" and rows[-1]["id"] == "Gen.2.9"
    assert rows[0]["text"] == "In the beginning, God created the heavens and the earth."  # WEB, footnote removed
    assert rows[0]["text_kjv"] == "In the beginning God created the heaven and the earth."
    assert rows[0]["text_es"] == "En el principio crió Dios los cielos y la tierra."  # drop cap "EN" fixed
    assert all(r["group"] == r["id"] for r in rows)  # one verse = one concept (positives in training)
    assert {r["meta_chapter"] for r in rows} == {"Gen.1", "Gen.2"}
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        for field in ("text", "text_es", "text_kjv"):
            assert r[field] and r[field] == r[field].strip() and "<" not in r[field] and "¶" not in r[field]
    assert result.counts["text_es"] == 40


def test_manifest_loads_with_three_text_modalities(prepared) -> None:
    out, _ = prepared
    ds = PairedDataset.from_manifest(out / "manifest.jsonl", on_error="fail")
    assert ds.modalities == ["text", "text_es", "text_kjv"]
    assert all(ds.kinds[m] == "text" for m in ds.modalities)
    train, test = ds.split(0.5, seed=0)
    assert not set(train.groups) & set(test.groups) and len(test) == 20


def test_card_and_incremental_rerun(prepared) -> None:
    out, _ = prepared
    card = (out / "CARD.md").read_text(encoding="utf-8")
    assert "Reina-Valera 1909" in card and "public domain" in card and "40 rows (verses), 40 groups, 2 chapters" in card
    mtime = (out / "manifest.jsonl").stat().st_mtime_ns
    again = DATASETS.create("bible-en-es").prepare(out, limit=40)
    assert again.rows == 40 and "up to date" in again.notes[0]
    assert (out / "manifest.jsonl").stat().st_mtime_ns == mtime


def test_clean_osis_handles_notes_and_adjacent_words() -> None:
    raw = ('<w lemma="x">God</w><note placement="foot">The Hebrew word …</note><w lemma="y">created</w> '
           '<w>que son de</w><transChange type="added">la casa de</transChange><w>Narciso</w> , ¶ x '
           '<title type="section">Heading</title>end.<chapter eID="Rev.22"/> glossary')
    assert clean_osis(raw) == "God created que son de la casa de Narciso, x end."
    assert clean_osis("<w>EN el</w> principio", first_of_chapter=True) == "En el principio"
    assert clean_osis("<w>EN el</w> principio") == "EN el principio"
