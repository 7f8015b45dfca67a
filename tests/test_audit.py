"""``modalign audit``: out-of-fold mismatch scores, calibrated flags, duplicates and leaks, the cleaned manifest;
on constructed vectors with known swaps, and end to end on real emoji with swapped captions (CLI, report, browser)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import modalign.evaluation.audit as audit_module
from helpers.cli import run_cli
from helpers.recipes import ready_recipe
from modalign.cli import app
from modalign.data.dataset import PairedDataset
from modalign.evaluation.audit import audit, calibrated_threshold, score_pairs, separation
from modalign.features import FeatureCache


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    pos, neg = scores[labels], scores[~labels]
    return float(np.mean(pos[:, None] > neg[None, :]) + 0.5 * np.mean(pos[:, None] == neg[None, :]))


def planted(n_groups: int = 100, per_group: int = 3, swap: float = 0.1, seed: int = 0) -> tuple[
        list[dict[str, Any]], np.ndarray]:
    """Rows whose ``vec_b`` is a noisy linear view of ``vec_a``'s concept; a share ``swap`` of the rows get another
    group's ``vec_b`` (pairwise swaps). Returns the rows and which were swapped."""
    rng = np.random.default_rng(seed)
    concepts = rng.normal(size=(n_groups, 12))
    mix_a, mix_b = rng.normal(size=(12, 24)), rng.normal(size=(12, 16))
    group = np.repeat(np.arange(n_groups), per_group)
    a = concepts[group] @ mix_a + 0.3 * rng.normal(size=(len(group), 24))
    b = concepts[group] @ mix_b + 0.3 * rng.normal(size=(len(group), 16))
    swapped = np.zeros(len(group), dtype=bool)
    order = rng.permutation(len(group))
    k = int(swap * len(group)) // 2 * 2
    for i, j in zip(order[:k:2], order[1:k:2], strict=True):
        if group[i] != group[j]:
            b[[i, j]] = b[[j, i]]
            swapped[[i, j]] = True
    rows = [{"id": f"r{i}", "group": f"g{group[i]}", "vec_a": a[i].round(5).tolist(), "vec_b": b[i].round(5).tolist()}
            for i in range(len(group))]
    return rows, swapped


def test_known_swaps_are_found_and_flagged(tmp_path: Path) -> None:
    rows, swapped = planted()
    ds = PairedDataset.from_rows(rows, root=tmp_path)
    result = audit(ds, ["vec_a", "vec_b"], cache=FeatureCache(tmp_path / "cache"), method="cca")
    scores = np.array([p.mismatch for p in result.pairs])
    assert [p.row for p in result.pairs] == list(range(len(rows)))
    assert _auroc(swapped, scores) >= 0.9
    flagged = np.array([p.flagged for p in result.pairs])
    assert not flagged.any() or swapped[flagged].mean() >= 0.8  # what is flagged is a real swap
    assert result.estimated_mismatched <= 0.25  # 10% swapped; the estimate never runs away
    # a swapped row's first side matched its true partner's row better: the other row of its swap
    p = result.ranked()[0]
    assert swapped[p.row] and p.rank_ab > 1 and p.best_b >= 0
    # and the JSON names the partner, ranked most suspicious first
    doc = result.to_json()
    assert doc["pairs"][0]["id"] == p.id and doc["flagged"] == int(flagged.sum())
    assert doc["calibration"]["separation"] > 0.9
    assert doc["calibration"]["injected_swaps"] == len(result.injected) > 100


def test_a_clean_set_gets_no_flags(tmp_path: Path) -> None:
    rows, swapped = planted(swap=0.0, seed=1)
    assert not swapped.any()
    result = audit(PairedDataset.from_rows(rows, root=tmp_path), ["vec_a", "vec_b"],
                   cache=FeatureCache(tmp_path / "cache"), method="cca")
    assert len(result.flagged) <= 2 and result.estimated_mismatched < 0.03


def test_no_row_is_scored_by_heads_that_trained_on_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fit receives only rows of other folds (checked on a marker column), and poisoning one row's
    features moves no score of the rows in its fold: their heads never saw it."""
    rows, _ = planted(n_groups=60, swap=0.1, seed=2)
    xa = np.array([r["vec_a"] for r in rows], dtype=np.float32)
    xb = np.array([r["vec_b"] for r in rows], dtype=np.float32)
    xa[:, 0] = np.arange(len(rows))  # a marker: the row number
    groups = [r["group"] for r in rows]
    seen: list[set[int]] = []
    real_fit = audit_module.fit_arrays

    def recording_fit(features: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append({int(v) for v in features["a"]["x"][:, 0]})
        return real_fit(features, *args, **kwargs)

    monkeypatch.setattr(audit_module, "fit_arrays", recording_fit)
    keys_a, keys_b = [("a", i) for i in range(len(rows))], [("b", i) for i in range(len(rows))]
    before, _ = score_pairs(xa, xb, groups, keys_a, keys_b, folds=5, method="cca")
    folds = audit_module.group_folds(np.array([int(g[1:]) for g in groups]), 5, seed=0)
    assert len(seen) == 5
    for trained_on, fold in zip(seen, folds, strict=True):
        assert not trained_on & set(fold.tolist())
        assert trained_on | set(fold.tolist()) == set(range(len(rows)))
    victim = int(folds[2][0])
    poisoned_a, poisoned_b = xa.copy(), xb.copy()
    poisoned_a[victim, 1:] *= 50.0
    poisoned_b[victim] = -poisoned_b[victim] * 50.0
    after, _ = score_pairs(poisoned_a, poisoned_b, groups, keys_a, keys_b, folds=5, method="cca")
    for row in folds[2]:
        if row != victim:
            assert after[row]["cosine"] == pytest.approx(before[row]["cosine"], abs=1e-6)
    assert any(abs(after[r]["cosine"] - before[r]["cosine"]) > 1e-4 for r in folds[0])  # other folds did see it


def test_duplicates_and_leaks_across_groups(tmp_path: Path) -> None:
    rows, _ = planted(n_groups=40, swap=0.0, seed=3)
    rows[5] = {**rows[4], "id": "copy-of-r4"}  # the same pair twice (same group)
    rows[10]["vec_a"] = list(rows[60]["vec_a"])  # one vector under two groups: a leak
    rows[20]["vec_b"] = [v * 1.001 for v in rows[90]["vec_b"]]  # nearly identical, two groups
    rows[31]["vec_b"] = list(rows[30]["vec_b"])  # one vector twice in a group (the other sides differ)
    ds = PairedDataset.from_rows(rows, root=tmp_path)
    result = audit(ds, ["vec_a", "vec_b"], cache=FeatureCache(tmp_path / "cache"), method="cca")
    kinds = {(c.kind, c.modality, tuple(sorted(ds.ids[r] for r in c.rows))) for c in result.duplicates}
    assert ("pair", "vec_a+vec_b", ("copy-of-r4", "r4")) in kinds
    assert ("identical", "vec_b", ("r30", "r31")) in kinds
    # each leak joins the two rows' groups (with the near copies of that item inside its concept, if any)
    by_row = {ds.ids[r]: c for c in result.leaks for r in c.rows}
    assert by_row["r10"] is by_row["r60"] and by_row["r20"] is by_row["r90"]
    assert by_row["r10"].modality == "vec_a" and by_row["r20"].modality == "vec_b"
    assert by_row["r10"].groups[:2] == [rows[10]["group"], rows[60]["group"]]
    assert by_row["r20"].cosine is not None and by_row["r20"].cosine >= 0.97
    keep, groups = result.clean(ds.groups)
    assert 5 not in keep and 4 in keep  # a repeated pair keeps its first row
    assert groups[10] == groups[60] and groups[20] == groups[90]  # leaking groups merged
    assert len(set(groups)) == len(set(ds.groups)) - 2


def test_calibration_by_hand() -> None:
    rng = np.random.default_rng(4)
    clean, swaps = rng.normal(0, 1, 900), rng.normal(4, 1, 100)
    injected = rng.normal(4, 1, 1000)
    scores = np.concatenate([clean, swaps])
    threshold, share = calibrated_threshold(scores, injected)
    assert share == pytest.approx(0.1, abs=0.03)
    assert threshold is not None and 1.0 < threshold < 3.5
    flagged = scores >= threshold
    # the threshold lets the flags be about TARGET_PRECISION (70%) mismatches, catching nearly all of them
    assert flagged[900:].mean() > 0.9
    assert 0.6 <= flagged[900:].sum() / flagged.sum() <= 0.85
    assert separation(scores, injected) == pytest.approx(_auroc(np.r_[np.zeros(1000, bool), np.ones(1000, bool)],
                                                                np.r_[scores, injected]), abs=1e-9)
    # indistinguishable: nothing flagged
    assert calibrated_threshold(rng.normal(size=500), rng.normal(size=500)) == (None, 0.0)


# ------------------------------------------------------------------------------------------ real data, CLI
CONCEPTS = 60


@pytest.fixture(scope="module")
def swapped_emoji(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    """60 emoji concepts in two styles; 10% of the captions swapped between rows of different concepts."""
    root = tmp_path_factory.mktemp("audit-emoji")
    manifest = ready_recipe("emoji", styles=["noto", "openmoji"], include_variants=False).prepare(
        root, limit=CONCEPTS).manifest
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rng = np.random.default_rng(0)
    order, swapped = rng.permutation(len(rows)), set()
    for i, j in zip(order[: len(rows) // 10: 2], order[1: len(rows) // 10: 2], strict=False):
        if rows[i]["group"] != rows[j]["group"]:
            rows[i]["text"], rows[j]["text"] = rows[j]["text"], rows[i]["text"]
            swapped |= {rows[i]["id"], rows[j]["id"]}
    noisy = root / "noisy.jsonl"
    noisy.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return noisy, swapped


def test_cli_audit_on_real_emoji(swapped_emoji: tuple[Path, set[str]], tmp_path: Path) -> None:
    noisy, swapped = swapped_emoji
    out, clean = tmp_path / "audit", noisy.parent / "clean.jsonl"
    said = run_cli(["audit", "--data", str(noisy), "--cache", str(noisy.parent / "cache"), "--out", str(out),
                    "--write-clean", str(clean), "--json", str(tmp_path / "a.json")])
    assert "estimated mismatched" in said and "most suspicious pairs" in said
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc == json.loads((out / "audit.json").read_text())
    labels = np.array([p["id"] in swapped for p in doc["pairs"]])
    scores = np.array([p["mismatch"] for p in doc["pairs"]])
    assert _auroc(labels, scores) >= 0.8, _auroc(labels, scores)
    # pairs.csv and pairs.jsonl: the same ranking
    csv_ids = [line.split(",")[1] for line in (out / "pairs.csv").read_text().splitlines()[1:]]
    assert csv_ids == [json.loads(x)["id"] for x in (out / "pairs.jsonl").read_text().splitlines()]
    assert csv_ids == [p["id"] for p in doc["pairs"]]
    # the cleaned manifest reads back: the flagged rows are gone, every other row is there with its files
    back = PairedDataset.from_manifest(clean)
    flagged = {p["id"] for p in doc["pairs"] if p["flagged"]}
    assert set(back.ids) == {p["id"] for p in doc["pairs"]} - flagged
    assert all(Path(p).is_file() for p in back.columns["image"])
    assert not back.errors
    # --json - prints the JSON alone on stdout
    printed = CliRunner().invoke(app, ["audit", "--data", str(clean), "--cache", str(noisy.parent / "cache"),
                                       "--method", "cca", "--json", "-"])
    assert printed.exit_code == 0 and json.loads(printed.stdout)["rows"] == len(back)


def test_cli_audit_errors_are_one_line(swapped_emoji: tuple[Path, set[str]], tmp_path: Path) -> None:
    noisy, _ = swapped_emoji
    said = run_cli(["audit", "--data", str(noisy), "--modalities", "image,nope"], code=2)
    assert "'nope' is not in" in said and "Traceback" not in said
    said = run_cli(["audit", "--data", str(noisy), "--modalities", "image"], code=2)
    assert "exactly two" in said
    tiny = noisy.parent / "tiny.jsonl"
    tiny.write_text("".join(line + "\n" for line in noisy.read_text().splitlines()[:6]))
    said = run_cli(["audit", "--data", str(tiny), "--cache", str(noisy.parent / "cache")], code=2)
    assert "needs at least" in " ".join(said.split())


def test_audit_report_in_chromium(swapped_emoji: tuple[Path, set[str]], tmp_path: Path, artifacts_dir: Path) -> None:
    from playwright.sync_api import sync_playwright

    from test_report import chromium

    noisy, _ = swapped_emoji
    out = tmp_path / "audit"
    run_cli(["audit", "--data", str(noisy), "--cache", str(noisy.parent / "cache"), "--method", "cca",
             "--out", str(out)])
    doc = json.loads((out / "audit.json").read_text())
    with sync_playwright() as p:
        browser = chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto((out / "report.html").as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth])")
        rows = page.eval_on_selector_all("#suspicious .grow", "els => els.map(e => e.dataset.id)")
        flagged_cells = page.eval_on_selector_all("#suspicious .cell.miss", "els => els.length")
        summary = page.inner_text("#summary")
        page.screenshot(path=str(artifacts_dir / "audit-report.png"), full_page=True)
        browser.close()
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    assert all(complete and width > 0 for _, complete, width in images), images
    assert "score histogram" in {alt for alt, _, _ in images}
    assert rows == [p["id"] for p in doc["pairs"][: len(rows)]] and len(rows) == min(24, len(doc["pairs"]))
    assert flagged_cells == 2 * sum(p["flagged"] for p in doc["pairs"][: len(rows)])
    assert f"{doc['estimated_mismatched']:.1%}" in summary and str(doc["flagged"]) in summary


def test_cli_audit_to_a_folder_it_cannot_write_is_one_line(swapped_emoji: tuple[Path, set[str]],
                                                           tmp_path: Path) -> None:
    noisy, _ = swapped_emoji
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    said = run_cli(["audit", "--data", str(noisy), "--cache", str(noisy.parent / "cache"), "--method", "cca",
                    "--json", str(blocker / "audit.json")], code=2)
    assert "Traceback" not in said and "audit.json" in "".join(said.split())


def test_union_find_names_a_set_after_its_first_member() -> None:
    from modalign.data.union_find import UnionFind

    sets: UnionFind[str] = UnionFind(["a", "b", "c", "d"])
    sets.join("d", "c")
    sets.join("c", "b")
    assert {sets.find(x) for x in "bcd"} == {"b"} and sets.find("a") == "a"
    sets.join("d", "a")
    assert {sets.find(x) for x in "abcd"} == {"a"}
    assert sets.find("new") == "new"  # an unseen item is its own set
