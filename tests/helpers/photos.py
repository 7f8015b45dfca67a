"""Small real image-text data: scikit-image's sample photos, several views each, one caption per photo."""

from __future__ import annotations

import json
from pathlib import Path

import skimage
from PIL import Image, ImageOps

SAMPLES = {
    "astronaut.png": "an astronaut in a white space suit with the american flag",
    "brick.png": "a grey brick wall texture",
    "camera.png": "a black and white photo of a cameraman with a tripod",
    "chelsea.png": "a ginger tabby cat looking to the side",
    "coffee.png": "a cup of coffee on a saucer with a spoon",
    "coins.png": "many old coins on a dark background",
    "horse.png": "a black silhouette of a horse",
    "hubble_deep_field.jpg": "galaxies in the deep field of space",
    "moon.png": "the surface of the moon with craters",
    "page.png": "a page of printed text scanned in grey",
    "rocket.jpg": "a rocket launching into the sky",
    "retina.jpg": "a medical photo of a human retina",
    "grass.png": "a close-up texture of green grass",
    "gravel.png": "a texture of small stones and gravel",
    "logo.png": "a colourful software logo",
    "motorcycle_left.png": "a motorcycle parked in a room",
    "ihc.png": "a stained tissue sample under a microscope",
    "cell.png": "a microscope image of a biological cell",
    "color.png": "a chart of colour bands",
    "chessboard_RGB.png": "a black and white chessboard pattern",
}
VIEWS = 4  # each photo appears as several crops/flips, like several photos of one concept


def _views(img: Image.Image) -> list[Image.Image]:
    w, h = img.size
    return [img, ImageOps.mirror(img), img.crop((w // 8, h // 8, w - w // 8, h - h // 8)),
            img.crop((0, 0, w * 3 // 4, h * 3 // 4))][:VIEWS]


def write_photo_manifest(root: Path, views: int = VIEWS, thumb: int = 256,
                         labels: dict[str, str] | None = None) -> Path:
    """``root/manifest.jsonl`` with every photo in ``views`` views (group = the photo; ``label`` from
    ``labels``, whose order is then the row order), images under root/img; written once, then reused."""
    manifest = root / "manifest.jsonl"
    if manifest.exists():
        return manifest
    (root / "img").mkdir(parents=True, exist_ok=True)
    data_dir = Path(skimage.__file__).parent / "data"
    rows = []
    for name in labels or SAMPLES:
        text = SAMPLES[name]
        img = Image.open(data_dir / name).convert("RGB")
        img.thumbnail((thumb, thumb))
        stem = Path(name).stem
        for v, view in enumerate(_views(img)[:views]):
            rel = f"img/{stem}_{v}.jpg"
            view.save(root / rel, quality=90)
            row = {"id": f"{stem}-{v}", "image": rel, "text": text, "group": stem}
            if labels is not None:
                row["label"] = labels[name]
            rows.append(row)
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(manifest)
    return manifest
