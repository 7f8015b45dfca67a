"""``fit --unpaired`` end to end on real emoji: one-modality rows join the fit, held-out items are dropped from
them, the model records what it used and evaluates like any other; a paired row among them is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import run_cli
from helpers.recipes import ready_recipe
from modalign.data.dataset import PairedDataset


@pytest.fixture(scope="module")
def emoji(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    recipe = ready_recipe("emoji", styles=["noto", "openmoji"], include_variants=False)
    manifest = recipe.prepare(tmp_path_factory.mktemp("unpaired-emoji"), limit=120).manifest
    return manifest, [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_fit_with_unpaired_items_drops_the_held_out_ones_and_evaluates(emoji: tuple[Path, list[dict]],
                                                                       tmp_path: Path) -> None:
    manifest, rows = emoji
    folder = manifest.parent
    _, first = PairedDataset.from_manifest(manifest).split(0.25, seed=0)
    held = set(first.groups)
    train_rows = [r for r in rows if r["group"] not in held]
    paired, rest = train_rows[:80], train_rows[80:]
    data = _write(folder / "paired.jsonl", paired + [r for r in rows if r["group"] in held])
    _, test = PairedDataset.from_manifest(data).split(0.25, seed=0)  # the split `fit --holdout 0.25` makes
    rng = np.random.default_rng(0)
    unpaired = [{"id": f"{r['id']}-image", "group": f"{r['group']}-image", "image": r["image"]} for r in rest]
    unpaired += [{"id": f"{r['id']}-text", "group": f"{r['group']}-text", "text": r["text"]}
                 for r in rng.permutation(rest)]
    # held-out items under new ids and groups must not train: two images by their own path, one copied under
    # another name, and a held-out caption in other case and spacing
    leaks = [r for r in rows if r["group"] in set(test.groups)][:4]
    unpaired += [{"id": f"leak{i}", "group": f"leak{i}", "image": r["image"]} for i, r in enumerate(leaks[:2])]
    copied = folder / "copied-under-another-name.png"
    copied.write_bytes((folder / leaks[2]["image"]).read_bytes())
    unpaired += [{"id": "leak-copy", "group": "leak-copy", "image": copied.name},
                 {"id": "leak-text", "group": "leak-text", "text": "  " + leaks[3]["text"].upper().replace(" ", "  ")}]
    extra = _write(folder / "unpaired.jsonl", unpaired)
    out = tmp_path / "model"
    text = run_cli(["fit", "--data", str(data), "--modalities", "image,text", "--unpaired", str(extra),
                    "--holdout", "0.25", "--cache", str(tmp_path / "cache"), "--out", str(out)])
    config = json.loads((out / "config.json").read_text())
    record = config["training"]["unpaired"]
    assert record["kept"] == {"image": len(rest), "text": len(rest)}
    assert record["dropped_held_out"] == 4 and record["manifest"] == str(extra.resolve())
    assert f"unpaired items: {len(rest)} image, {len(rest)} text; 4 dropped" in text
    metrics = json.loads((out / "metrics.json").read_text())
    table = {r["candidate"] for r in metrics["fit"]["auto"]["table"]}
    assert "semi-cca(reg=0.8,ot=1.0,rounds=3)" in table  # auto tried the unpaired candidates
    run_cli(["eval", "--model", str(out), "--data", str(data), "--cache", str(tmp_path / "cache"),
             "--json", str(tmp_path / "eval.json")])
    held_out = json.loads((tmp_path / "eval.json").read_text())
    assert held_out["split"] == "test" and held_out["directions"]["image->text"]["R@1"] > 0


def test_a_paired_row_among_the_unpaired_ones_is_one_line(emoji: tuple[Path, list[dict]], tmp_path: Path) -> None:
    manifest, rows = emoji
    extra = _write(manifest.parent / "both.jsonl", [{"id": "x1", "image": rows[0]["image"]},
                                                    {"id": "x2", "image": rows[1]["image"], "text": "two"}])
    text = run_cli(["fit", "--data", str(manifest), "--modalities", "image,text", "--unpaired", str(extra),
                    "--out", str(tmp_path / "m"), "--cache", str(tmp_path / "cache")], code=2)
    assert "unpaired row 'x2' holds image and text" in text and "Traceback" not in text
