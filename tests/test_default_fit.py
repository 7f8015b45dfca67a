"""The default fit (``auto``): the same model on every machine, progress as it goes, the estimate it prints,
groups made when the manifest has none, the dimension it states and the chance level eval reports."""

from __future__ import annotations

import itertools
import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from helpers.cli import run_cli
from helpers.recipes import ready_recipe

CONCEPTS = 60


def _planted(n: int, seed: int = 0, groups_of: int = 1) -> tuple[dict, dict, list[str]]:
    """Two views of n latent points (linear maps plus noise); rows come in groups of ``groups_of``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 12))
    a = z @ rng.normal(size=(12, 40)) + 0.5 * rng.normal(size=(n, 40))
    b = z @ rng.normal(size=(12, 30)) + 0.5 * rng.normal(size=(n, 30))
    ones = np.ones(n, bool)
    return ({"a": {"x": a.astype(np.float32)}, "b": {"x": b.astype(np.float32)}}, {"a": ones, "b": ones},
            [str(i // groups_of) for i in range(n)])


def _fit_auto(**kwargs):
    from modalign.align.fit import fit_arrays

    feats, present, groups = _planted(300)
    return fit_arrays(feats, present, groups, ["a", "b"], default_layers={"a": "x", "b": "x"}, method="auto",
                      dim=16, val_fraction=0.0, **kwargs)


def test_the_choice_does_not_depend_on_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A clock a thousand times slower (every reading an hour later) gives the same table, pick and heads."""
    normal = _fit_auto()
    hours = itertools.count()
    monkeypatch.setattr(time, "perf_counter", lambda: 3600.0 * next(hours))
    slowed = _fit_auto()
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in normal.info["auto"]["table"]]
    strip2 = [{k: v for k, v in r.items() if k != "seconds"} for r in slowed.info["auto"]["table"]]
    assert strip == strip2 and not any("skipped" in r for r in strip)
    assert normal.info["auto"]["picked"] == slowed.info["auto"]["picked"]
    assert slowed.info["auto"]["time_dependent"] is False
    for m in ("a", "b"):
        for (k, v), (k2, v2) in zip(normal.heads[m].state_dict().items(), slowed.heads[m].state_dict().items(),
                                    strict=True):
            assert k == k2 and bool((v == v2).all()), (m, k)  # bit-identical


def test_an_explicit_time_budget_says_the_choice_depends_on_time() -> None:
    fitted = _fit_auto(options={"candidates": "cca,infonce", "time_budget": 1e-9})
    auto = fitted.info["auto"]
    assert auto["time_dependent"] is True
    assert any("time budget" in r.get("skipped", "") for r in auto["table"] if r["method"] == "infonce")


def test_progress_is_reported_through_the_callback_and_logging(caplog: pytest.LogCaptureFixture) -> None:
    events: list[tuple[str, int, int]] = []
    with caplog.at_level(logging.INFO, logger="modalign.align.auto"):
        fitted = _fit_auto(progress=lambda stage, done, total: events.append((stage, done, total)))
    cv = [(d, t) for s, d, t in events if s == "cross-validate"]
    assert len(cv) >= 6  # every (fold, conditioning) of the grid reports
    assert [d for d, _ in cv] == sorted(d for d, _ in cv) and cv[-1][0] == cv[-1][1]  # monotone, to the end
    messages = [r.getMessage() for r in caplog.records]
    assert any("cross-validation" in m for m in messages)
    assert any(m.startswith(f"auto: picked {fitted.info['auto']['picked']}") for m in messages)


def test_the_estimate_is_recorded_by_direction_with_chance_and_runner_up() -> None:
    auto = _fit_auto().info["auto"]
    assert set(auto["cv_directions"]) == {"a->b", "b->a"}
    for d in auto["cv_directions"].values():
        assert 0.5 < d["mean"] <= 1 and d["std"] >= 0  # planted: far above chance
    assert auto["chance_R@1"] == pytest.approx(1 / 100, rel=0.05)  # 300 rows in 3 folds of ~100 singletons
    assert auto["runner_up"]["candidate"] != auto["picked"] and auto["runner_up"]["cv_R@1"] <= auto["cv_R@1"]


def test_trained_candidates_stop_after_one_fold_unless_they_rank_near_the_top() -> None:
    """Successive halving: a trained candidate far below the closed forms on fold 1 is not trained on the rest."""
    fitted = _fit_auto(options={"candidates": "cca,procrustes,siglip"})
    row = next(r for r in fitted.info["auto"]["table"] if r["method"] == "siglip")
    if "skipped" in row:
        assert row["skipped"].startswith("dropped after fold 1 of 3") and len(row["folds"]) == 1
    else:
        assert len(row["folds"]) == 3 and sorted(
            r["folds"][0] for r in fitted.info["auto"]["table"] if r.get("folds"))[-3] <= row["folds"][0]


@pytest.mark.parametrize("anchor", [None, "b"])
def test_the_grid_scores_match_a_separate_fit_of_each_candidate(anchor: str | None) -> None:
    """The shared-decomposition grid gives each candidate the CV score that fitting it alone gives, with either
    modality as the anchor (Procrustes maps the other one onto it, so the anchor changes the scores)."""
    from modalign.align.auto import CANDIDATES, candidate_context, cross_validate, group_folds, select_candidates
    from modalign.align.methods import METHODS, FitContext
    from modalign.align.trainer import TrainData, validation_score

    feats, present, groups = _planted(240)
    data = TrainData({m: feats[m]["x"] for m in ("a", "b")}, dict(present), np.array([int(g) for g in groups]))
    ctx = FitContext(["a", "b"], data, None, dim=16, options={"anchor": anchor} if anchor else {})
    rows = {r["candidate"]: r for r in cross_validate(ctx, select_candidates(None), 3)}
    parts = group_folds(data.groups, 3, 0)

    def take(idx: np.ndarray) -> TrainData:
        return TrainData({m: x[idx] for m, x in data.features.items()}, {m: p[idx] for m, p in data.present.items()},
                         data.groups[idx])

    for name in ("cca(reg=0.3,power=2.0)+l2", "cca(reg=0.8,power=0.0)", "procrustes(whiten=True)",
                 "procrustes(whiten=False)+l2"):
        cand = CANDIDATES[name]
        scores = []
        for f in range(3):
            train = take(np.concatenate([parts[j] for j in range(3) if j != f]))
            heads, _ = METHODS.get(cand.method)(candidate_context(ctx, cand, train, None))
            scores.append(validation_score(heads, take(parts[f]), [("a", "b")]))
        np.testing.assert_allclose(rows[name]["folds"], scores, atol=1e-9, err_msg=name)


def test_dimension_capped_by_rows_is_stated() -> None:
    from modalign.align.fit import dim_reason

    assert "training" in dim_reason(99, 256, (), {"a": 40, "b": 30}, 100)
    assert "locked" in dim_reason(40, 256, ("a",), {"a": 40, "b": 30}, 100)


def test_chance_level_on_a_hand_case_with_multi_positive_groups() -> None:
    """Brute force over every ordering of a 5-item gallery: queries with 1, 2 and 3 relevant items."""
    from modalign.evaluation.retrieval import chance_metrics

    rel = np.array([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 1]], dtype=bool)
    expect: dict[str, list[float]] = {"R@1": [], "R@2": [], "MRR": []}
    for q in rel:
        firsts = [[q[i] for i in perm].index(True) + 1 for perm in itertools.permutations(range(5))]
        expect["R@1"].append(np.mean([f <= 1 for f in firsts]))
        expect["R@2"].append(np.mean([f <= 2 for f in firsts]))
        expect["MRR"].append(np.mean([1 / f for f in firsts]))
    got = chance_metrics(rel, (1, 2))
    for key, values in expect.items():
        assert got[key] == pytest.approx(np.mean(values), abs=1e-12), key
    assert got["R@1"] == pytest.approx((1 / 5 + 2 / 5 + 3 / 5) / 3)


def test_rows_with_identical_text_or_file_are_grouped_when_no_group_is_given(tmp_path: Path) -> None:
    from modalign.data.dataset import PairedDataset
    from modalign.errors import ManifestError

    (tmp_path / "x.png").write_bytes(b"\x89PNG same bytes")
    (tmp_path / "y.png").write_bytes(b"\x89PNG same bytes")
    (tmp_path / "z.png").write_bytes(b"\x89PNG other bytes")
    rows = [{"id": "1", "image": "x.png", "text": "A red  Fox"}, {"id": "2", "image": "z.png", "text": "a red fox"},
            {"id": "3", "image": "y.png", "text": "a cat"}, {"id": "4", "image": "z.png", "text": "a dog"},
            {"id": "5", "text": "a bird"}]
    ds = PairedDataset.from_rows(rows, tmp_path)
    # 1~2 (text), 1~3 (file bytes), 2~4 (same file): one concept; 5 alone
    assert ds.groups == ["1", "1", "1", "1", "5"]
    assert ds.grouping == {"by": "identical text or file", "merged_rows": 3}
    named = PairedDataset.from_rows([{**r, "group": r["id"]} for r in rows], tmp_path)
    assert named.groups == ["1", "2", "3", "4", "5"] and named.grouping == {"by": "group"}
    by_field = PairedDataset.from_rows([{**r, "meta_concept": r["id"][0]} for r in rows], tmp_path,
                                       group_by="meta_concept")
    assert by_field.groups == ["1", "2", "3", "4", "5"] and by_field.grouping == {"by": "meta_concept"}
    with pytest.raises(ManifestError, match="no 'meta_concept' field to group by"):
        PairedDataset.from_rows(rows, tmp_path, group_by="meta_concept")


@pytest.fixture(scope="module")
def icons(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real icons without their group column: the same caption under two icon sets is one concept."""
    root = tmp_path_factory.mktemp("default-fit")
    manifest = ready_recipe("icons").prepare(root / "icons", limit=CONCEPTS).manifest
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    out = manifest.parent / "nogroup.jsonl"
    out.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "group"}) + "\n" for r in rows))
    return out


def test_fit_cli_prints_the_estimate_and_the_card_shows_only_what_was_fitted(icons: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    text = run_cli(["fit", "--data", str(icons), "--modalities", "image,text", "--holdout", "0.2",
                    "--cache", str(icons.parent / "cache"), "--out", str(out)])
    flat = " ".join(text.split())
    assert "expected held-out R@1" in flat and "chance" in flat and "runner-up" in flat
    assert "row(s) share an identical text or file" in flat
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    auto = metrics["fit"]["auto"]
    assert config["training"]["grouping"]["merged_rows"] > 0
    if config["training"]["dim"] != 256:  # CCA is capped by the rows: said, and recorded with its reason
        assert config["training"]["dim_requested"] == 256 and "training rows" in config["training"]["dim_note"]
        assert "instead of --dim 256" in flat
    card = (out / "README.md").read_text()
    assert f"Method `{auto['picked']}` (chosen by `auto`)" in card
    for unused in ("lr", "epochs", "batch_size", "weight_decay", "'steps'"):
        assert unused not in card, unused
    assert "validation)" not in card  # auto's closed forms use every training row: no train/validation split
    # eval: the chance column, the JSON's "chance", the report names the chosen candidate
    report, js = tmp_path / "r.html", tmp_path / "e.json"
    text = run_cli(["eval", "--model", str(out), "--data", str(icons), "--cache", str(icons.parent / "cache"),
                    "--json", str(js), "--report", str(report)])
    assert "chance" in text
    payload = json.loads(js.read_text())
    for d in payload["directions"].values():
        assert 0 < d["chance"]["R@1"] < d["chance"]["R@5"] < d["chance"]["R@10"] <= 1
        assert d["R@1"] > 2 * d["chance"]["R@1"]
    assert f"auto → {auto['picked']}" in report.read_text()


def test_eval_warns_when_test_rows_share_a_text_with_training_rows(icons: Path, tmp_path: Path) -> None:
    """Groups given by the manifest that split identical captions apart: eval says its score is optimistic."""
    rows = [json.loads(line) for line in icons.read_text().splitlines()]
    leaky = icons.parent / "leaky.jsonl"
    leaky.write_text("".join(json.dumps({**r, "group": r["id"]}) + "\n" for r in rows))
    out = tmp_path / "model"
    run_cli(["fit", "--data", str(leaky), "--modalities", "image,text", "--holdout", "0.3", "--method", "cca",
             "--cache", str(icons.parent / "cache"), "--out", str(out)])
    js = tmp_path / "e.json"
    text = run_cli(["eval", "--model", str(out), "--data", str(leaky), "--cache", str(icons.parent / "cache"),
                    "--json", str(js)])
    assert "identical to a training row" in " ".join(text.split())
    assert json.loads(js.read_text())["test_rows_sharing_items_with_training"] > 0
    assert load_file(str(out / "heads.safetensors"))


def test_dir_of_the_package_lists_the_public_api() -> None:
    import modalign

    assert {"fit", "load", "evaluate", "PairedDataset", "AlignedModel", "Encoder"} <= set(dir(modalign))
    assert "importlib" not in dir(modalign)


def test_fit_help_groups_its_options_into_panels_at_80_columns() -> None:
    from typer.testing import CliRunner

    from modalign.cli import app

    text = CliRunner().invoke(app, ["fit", "--help"], env={"COLUMNS": "80"}).output
    order = [text.index(f"─ {panel} ") for panel in ("Basics", "Method", "Training", "Encoders & runtime",
                                                        "Scale-out", "Advanced")]
    assert all(o > 0 for o in order)
    assert "required, unless" in " ".join(text.split())
    assert "``" not in text and "<bool>" not in text  # no raw markup, no type shown for a flag
    assert text.count("[required]") >= 2  # --data and --out
    top = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "80"}).output
    assert "MODALIGN_CACHE" in top and "Exit codes" in top


def test_every_option_of_every_command_has_help_and_completion_works() -> None:
    import os
    import subprocess
    import sys

    import typer.main

    from modalign.cli import app

    missing = []

    def walk(command: object, path: list[str]) -> None:
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, [*path, name])
        for p in getattr(command, "params", []):
            if getattr(p, "param_type_name", "") == "option" and not (getattr(p, "help", "") or "").strip():
                missing.append(f"{' '.join(path)} {p.opts}")

    walk(typer.main.get_command(app), [])
    assert not missing, missing
    # the shell named, not detected from whatever process runs the tests (typer's documented test switch)
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    script = subprocess.run([str(Path(sys.executable).parent / "modalign"), "--show-completion", "bash"],
                            capture_output=True, text=True, env=env, timeout=120, check=True).stdout
    assert "_modalign_completion" in script
