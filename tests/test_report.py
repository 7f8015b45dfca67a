"""``eval --report``: one self-contained HTML file, checked in headless Chromium as a person would.

Real data: scikit-image's bundled photographs (several views per photo), hand-labelled with a category
for zero-shot classification. ``build_photo_manifest`` is shared with the probe/zero-shot/compare tests.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from helpers.cli import run_cli
from helpers.photos import SAMPLES, write_photo_manifest

PHOTOS = {  # file: (caption, category)
    "astronaut.png": ("an astronaut in a white space suit with the american flag", "space"),
    "hubble_deep_field.jpg": ("galaxies in the deep field of space", "space"),
    "moon.png": ("the surface of the moon with craters", "space"),
    "rocket.jpg": ("a rocket launching into the sky", "space"),
    "brick.png": ("a grey brick wall texture", "texture"),
    "grass.png": ("a close-up texture of green grass", "texture"),
    "gravel.png": ("a texture of small stones and gravel", "texture"),
    "chessboard_RGB.png": ("a black and white chessboard pattern", "texture"),
    "retina.jpg": ("a medical photo of a human retina", "microscopy"),
    "ihc.png": ("a stained tissue sample under a microscope", "microscopy"),
    "cell.png": ("a microscope image of a biological cell", "microscopy"),
    "chelsea.png": ("a ginger tabby cat looking to the side", "animal"),
    "horse.png": ("a black silhouette of a horse", "animal"),
    "coffee.png": ("a cup of coffee on a saucer with a spoon", "object"),
    "coins.png": ("many old coins on a dark background", "object"),
    "camera.png": ("a black and white photo of a cameraman with a tripod", "object"),
    "motorcycle_left.png": ("a motorcycle parked in a room", "object"),
    "page.png": ("a page of printed text scanned in grey", "object"),
    "logo.png": ("a colourful software logo", "object"),
    "color.png": ("a chart of colour bands", "object"),
}
VIEWS = 3
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]


def build_photo_manifest(root: Path) -> Path:
    """Idempotent: every module of a session reuses the same folder (and so the same cached features)."""
    assert {n: t for n, (t, _) in PHOTOS.items()} == SAMPLES  # one caption per photo everywhere
    return write_photo_manifest(root, views=VIEWS, thumb=224, labels={n: label for n, (_, label) in PHOTOS.items()})


def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(manifest, feature cache dir) shared by every test module of the session."""
    base = tmp_path_factory.getbasetemp()
    return build_photo_manifest(base / "labelled-photos"), base / "photo-feature-cache"


def fit_model(manifest: Path, cache: Path, out: Path, method: str, *extra: str) -> Path:
    if not (out / "config.json").exists():
        run_cli(["fit", "--data", str(manifest), "--modalities", "image,text", "--method", method, "--dim", "32",
                 "--holdout", "0.25", "--epochs", "40", "--val-fraction", "0", "--cache", str(cache),
                 "--out", str(out), *extra])
    return out


def chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    manifest, cache = shared(tmp_path_factory)
    base = tmp_path_factory.getbasetemp()
    model_a = fit_model(manifest, cache, base / "photo-infonce", "infonce")
    model_b = fit_model(manifest, cache, base / "photo-procrustes", "procrustes")
    out = tmp_path_factory.mktemp("report")
    console = run_cli(["eval", "--model", str(model_a), "--data", str(manifest), "--split", "all",
                       "--label-field", "label", "--compare", str(model_b), "--bootstrap", "300",
                       "--cache", str(cache), "--json", str(out / "eval.json"), "--report", str(out / "report.html")])
    return {"json": json.loads((out / "eval.json").read_text()), "html": out / "report.html", "console": console}


def test_json_has_cis_and_the_report_embeds_the_same_payload(evaluated: dict[str, Any]) -> None:
    payload = evaluated["json"]
    for metrics in payload["directions"].values():
        for key in ("R@1", "R@5", "R@10", "MRR", "median_rank"):
            lo, hi = metrics["CI95"][key]
            assert lo <= metrics[key] <= hi, (key, metrics)
    html = evaluated["html"].read_text(encoding="utf-8")
    embedded = re.search(r'<script type="application/json" id="modalign-payload">(.*?)</script>', html, re.S)
    assert embedded is not None
    assert json.loads(embedded.group(1).replace("<\\/", "</")) == payload  # one source for both
    assert "http://" not in html and "https://" not in html  # nothing to fetch: opens from disk


def test_report_renders_in_chromium(evaluated: dict[str, Any], artifacts_dir: Path) -> None:
    from playwright.sync_api import sync_playwright

    payload = evaluated["json"]
    with sync_playwright() as p:
        browser = chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(evaluated["html"].as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth])")
        summary = page.eval_on_selector_all(
            "#summary-table tbody tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText))")
        zero_shot = page.inner_text("#zero-shot-table")
        compare_tables = page.eval_on_selector_all("section#compare table", "ts => ts.length")
        gallery_thumbs = page.eval_on_selector_all("#gallery .cell img", "els => els.length")
        page.screenshot(path=str(artifacts_dir / "eval-report.png"), full_page=True)
        browser.close()
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    assert all(complete and width > 0 for _, complete, width in images), images
    alts = {alt for alt, _, _ in images}
    assert {"recall at K curves", "rank histogram", "similarity heatmap", "PCA projection",
            "zero-shot confusion matrix"} <= alts
    assert gallery_thumbs >= 10
    assert compare_tables == len(payload["compare"]["directions"]) == 2
    # what a reader sees equals the JSON (3 decimals), CI brackets included
    assert [row[0] for row in summary] == list(payload["directions"])
    for row in summary:
        m = payload["directions"][row[0]]
        assert row[1] == str(m["queries"])
        assert row[2].startswith(f"{m['R@1']:.3f}") and f"[{m['CI95']['R@1'][0]:.3f}, " in row[2]
        assert row[5].startswith(f"{m['MRR']:.3f}")
        assert row[6].startswith(f"{m['median_rank']:g}")
    assert f"{payload['zero_shot']['top1']:.3f}" in zero_shot


def test_console_shows_the_comparison_and_zero_shot(evaluated: dict[str, Any]) -> None:
    text = evaluated["console"]
    assert "paired bootstrap" in text and "zero-shot image" in text


def test_audio_items_get_an_inline_player(tmp_path: Path) -> None:
    import base64
    import wave

    import numpy as np

    from modalign.evaluation.report.gallery import MAX_AUDIO_BYTES, audio_player

    clip = tmp_path / "tone.wav"
    with wave.open(str(clip), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.sin(np.arange(8000) / 5) * 8000).astype("<i2").tobytes())
    html = audio_player(clip)
    data = re.search(r'src="data:audio/wav;base64,([^"]+)"', html)
    assert data is not None and base64.b64decode(data.group(1)) == clip.read_bytes()
    big = tmp_path / "long.wav"
    big.write_bytes(clip.read_bytes() * (MAX_AUDIO_BYTES // clip.stat().st_size + 1))
    assert "<audio" not in audio_player(big) and "long.wav" in audio_player(big)
