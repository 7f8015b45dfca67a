"""Output for scripts: ``--json`` documents on stdout (people's text on stderr), ``--config`` TOML files
under command-line options, and Python names that match the CLI's."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

EXE = str(Path(sys.executable).parent / "modalign")


def _run(*args: str) -> tuple[str, str]:
    done = subprocess.run([EXE, *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout, done.stderr


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("scripting")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 6))
    rows = [{"id": f"r{i}", "vec_a": x[i].tolist(), "vec_b": (x[i, ::-1] + 0.05 * rng.normal(size=6)).tolist(),
             "group": f"g{i // 2}"} for i in range(60)]
    path = base / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_json_documents_on_stdout_and_people_text_on_stderr(manifest: Path, tmp_path: Path) -> None:
    model, index = tmp_path / "model", tmp_path / "index"
    out, err = _run("fit", "--data", str(manifest), "--modalities", "vec_a,vec_b", "--holdout", "0.25",
                    "--cache", str(tmp_path / "c"), "--out", str(model), "--json")
    doc = json.loads(out)
    assert doc["model"] == str(model) and doc["method"] == "auto" and doc["fitted"].startswith(("cca", "procrustes"))
    assert set(doc["estimate"]["directions"]) == {"vec_a->vec_b", "vec_b->vec_a"} and doc["estimate"]["chance_R@1"] > 0
    assert "saved" in err and "expected held-out R@1" in " ".join(err.split())
    out, err = _run("eval", "--model", str(model), "--data", str(manifest), "--cache", str(tmp_path / "c"),
                    "--json", "-")
    assert json.loads(out)["directions"]["vec_b->vec_a"]["chance"]["R@1"] > 0 and "R@1" in err
    out, _ = _run("index", "--model", str(model), "--data", str(manifest), "--out", str(index),
                  "--cache", str(tmp_path / "c"), "--json")
    doc = json.loads(out)
    assert doc["rows_added"] == 60 and doc["items"] == doc["counts"]["vec_a"] + doc["counts"]["vec_b"]
    listed = json.loads(_run("datasets", "list", "--json")[0])
    assert {"emoji", "icons", "speech"} <= {d["name"] for d in listed}
    assert any(e["name"] == "minilm" for e in json.loads(_run("encoders", "list", "--json")[0]))


def test_config_file_under_command_line_options(manifest: Path, tmp_path: Path) -> None:
    config = tmp_path / "modalign.toml"
    config.write_text(f'[fit]\ndata = "{manifest}"\nmodalities = "vec_a,vec_b"\nmethod = "procrustes"\n'
                      f'dim = 5\nholdout = 0.25\nout = "{tmp_path / "model"}"\ncache = "{tmp_path / "c"}"\n\n'
                      f'[eval]\nmodel = "{tmp_path / "model"}"\ndata = "{manifest}"\ncache = "{tmp_path / "c"}"\n')
    doc = json.loads(_run("fit", "--config", str(config), "--dim", "3", "--json")[0])
    assert doc["dim"] == 3 and doc["fitted"] == "procrustes"  # the file's method, the command line's dim
    assert json.loads(_run("eval", "--config", str(config), "--json", "-")[0])["split"] == "test"
    bad = tmp_path / "bad.toml"
    bad.write_text("[serve]\nport = 1\nbogus = 2\n")
    done = subprocess.run([EXE, "serve", "--config", str(bad)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "has no option 'bogus'" in " ".join(done.stderr.split())


def test_python_names_match_the_cli_and_old_names_still_work(manifest: Path) -> None:
    import modalign

    ds = modalign.PairedDataset.from_manifest(manifest)
    train, _ = ds.split(holdout=0.25)
    with pytest.warns(DeprecationWarning, match="holdout"):
        old_train, _ = ds.split(test_fraction=0.25)
    assert old_train.ids == train.ids
    model = modalign.fit(train, ["vec_a", "vec_b"], options={"cv_folds": 2, "candidates": "cca"})
    assert model.metrics["fit"]["auto"]["folds"] == 2
    with pytest.warns(DeprecationWarning, match="cv_folds"):
        modalign.fit(train, ["vec_a", "vec_b"], options={"folds": 2, "candidates": "cca"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        locked = modalign.fit(train, ["vec_a", "vec_b"], method="procrustes", lock=["vec_a"])
    assert locked.training["locked"] == ["vec_a"]
    with pytest.warns(DeprecationWarning, match="lock="):
        modalign.fit(train, ["vec_a", "vec_b"], method="procrustes", locked=["vec_a"])
