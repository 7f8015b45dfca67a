"""Zero-shot classification: class text = normalised mean of prompt-template embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from modalign.cli import app
from modalign.evaluation.zeroshot import read_labels, read_templates, row_labels, zero_shot
from test_report import PHOTOS, fit_model, shared


@pytest.fixture(scope="module")
def photo_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from modalign import PairedDataset, load
    from modalign.features import FeatureCache

    manifest, cache = shared(tmp_path_factory)
    model_dir = fit_model(manifest, cache, tmp_path_factory.getbasetemp() / "photo-infonce", "infonce")
    return {"model": load(model_dir), "data": PairedDataset.from_manifest(manifest), "cache": FeatureCache(cache),
            "manifest": manifest, "model_dir": model_dir, "cache_dir": cache}


def test_labels_and_templates_files(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("# classes\nspace\ttravel in space\n\nanimal\n")
    assert read_labels(labels) == [("space", "travel in space"), ("animal", "animal")]
    labels.write_text("space\nspace\n")
    with pytest.raises(ValueError, match="line 2: class 'space' is listed twice"):
        read_labels(labels)
    templates = tmp_path / "t.txt"
    templates.write_text("a photo of {}\nno placeholder\n")
    with pytest.raises(ValueError, match="line 2"):
        read_templates(templates)


def test_with_one_template_and_text_labels_it_is_image_to_text_retrieval(photo_model: dict[str, Any]) -> None:
    from modalign.evaluation import evaluate_detailed

    model, data, cache = photo_model["model"], photo_model["data"], photo_model["cache"]
    result = evaluate_detailed(model, data, cache)
    z = zero_shot(model, data, label_field="text", templates=["{}"], cache=cache, embeddings=result.embeddings,
                  n_boot=200)
    # classes = the captions, class embedding = the caption's own embedding, one caption per image
    assert z["n"] == result.directions["image->text"].metrics["queries"] == len(PHOTOS) * 3
    assert z["top1"] == pytest.approx(result.directions["image->text"].metrics["R@1"])
    assert z["top5"] == pytest.approx(result.directions["image->text"].metrics["R@5"])


def test_category_zero_shot_by_hand(photo_model: dict[str, Any]) -> None:
    model, data, cache = photo_model["model"], photo_model["data"], photo_model["cache"]
    templates = ["{}", "a photo of {}"]
    z = zero_shot(model, data, label_field="label", templates=templates, cache=cache, n_boot=200)
    classes = sorted({label for _, label in PHOTOS.values()})
    assert z["classes"] == classes and z["chance_top1"] == pytest.approx(1 / len(classes))
    # recompute: mean of the template embeddings, renormalised; argmax over classes
    w = np.stack([model.encode("text", [t.replace("{}", c) for t in templates], cache=cache).mean(0) for c in classes])
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    images = model.encode("image", data.items("image"), cache=cache)
    truth = np.array([classes.index(label) for label in data.meta["label"]])
    pred = (images @ w.T).argmax(axis=1)
    assert z["top1"] == pytest.approx(np.mean(pred == truth))
    conf = np.array(z["confusion"])
    assert conf.sum() == z["n"] == len(data)
    assert [z["per_class"][c]["n"] for c in classes] == conf.sum(axis=1).tolist()
    recalls = [z["per_class"][c]["recall"] for c in classes]
    assert z["mean_per_class_recall"] == pytest.approx(np.mean(recalls))
    assert z["top5"] >= z["top1"]
    for key in ("top1", "top5", "mean_per_class_recall"):
        lo, hi = z["CI95"][key]
        assert lo <= z[key] <= hi


def test_label_errors_are_clear(photo_model: dict[str, Any]) -> None:
    data = photo_model["data"]
    with pytest.raises(ValueError, match="label field 'nope' is not in the data; fields that can hold labels"):
        row_labels(data, "nope")
    result = CliRunner().invoke(app, ["eval", "--model", str(photo_model["model_dir"]), "--data",
                                      str(photo_model["manifest"]), "--label-field", "nope",
                                      "--cache", str(photo_model["cache_dir"])])
    assert result.exit_code == 2
    assert "zero-shot: label field 'nope' is not in the data" in result.output
    assert "Traceback" not in result.output
