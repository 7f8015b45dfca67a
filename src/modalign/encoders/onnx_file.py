"""``onnx:PATH``: an ONNX image model run with onnxruntime, with a small preprocessing spec.

Preprocessing is the one the built-in ONNX encoder uses (``image_io.load_batch``): RGB, shorter side
resized to ``size`` and center-cropped (``crop=False``: squashed), scaled to [0, 1] and standardised
with ``mean``/``std`` (ImageNet by default), NCHW float32.

Layers are the graph's outputs, or, with ``outputs``, any intermediate tensors: a list of tensor
names, or ``{layer: tensor}``. The graph is cut after them, so nothing downstream (e.g. a task
decoder) runs. Outputs (B, D) are used as they are, (B, T, D) token sequences are pooled
(``pooling="cls"``: token 0, or ``"mean"``), (B, C, H, W) maps are average-pooled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modalign.encoders.base import Encoder
from modalign.encoders.errors import EncoderLoadError
from modalign.encoders.image_io import IMAGENET_MEAN, IMAGENET_STD, load_batch
from modalign.encoders.onnx_graph import prune_graph

POOLINGS = ("cls", "mean")


def cut_graph(model: Any, tensors: Sequence[str]) -> Any:
    """Make ``tensors`` the graph's outputs and drop the nodes and weights nothing needs any more."""
    from onnx import TensorProto, helper

    graph = model.graph
    produced = {out for node in graph.node for out in node.output} | {i.name for i in graph.input}
    missing = [t for t in tensors if t not in produced]
    if missing:
        raise EncoderLoadError(f"the ONNX graph has no tensor(s) {missing}")
    del graph.output[:]
    graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in tensors)
    prune_graph(graph, set(tensors))
    return model


class OnnxImageEncoder(Encoder):
    """An ONNX image model; one layer per output (see the module docstring)."""

    name = "onnx"
    kind = "image"
    version = "1"
    batch_size = 16

    def __init__(self, path: Path, size: int = 224, crop: bool = True,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 outputs: Sequence[str] | Mapping[str, str] | None = None, pooling: str = "cls",
                 input: str | None = None, threads: int = 2) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"onnx: pooling must be one of {POOLINGS}, got {pooling!r}")
        if len(mean) != 3 or len(std) != 3:
            raise ValueError("onnx: mean and std need 3 values (R, G, B)")
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise EncoderLoadError("onnx: encoders need: pip install onnxruntime") from exc
        self.path = Path(path)
        if not self.path.is_file():
            raise EncoderLoadError(f"onnx:{path}: file not found")
        self.size, self.crop, self.pooling, self.threads = int(size), bool(crop), pooling, int(threads)
        self.mean, self.std = [float(v) for v in mean], [float(v) for v in std]
        self.outputs = dict(outputs) if isinstance(outputs, Mapping) else \
            ({t: t for t in outputs} if outputs is not None else None)
        source: Any = str(self.path)
        if self.outputs is not None:
            import onnx

            source = cut_graph(onnx.load(str(self.path)), list(self.outputs.values())).SerializeToString()
        opts = ort.SessionOptions()
        # a fixed thread count and sequential execution keep features deterministic on one machine
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])
        self._input = input or self._session.get_inputs()[0].name
        tensors = [o.name for o in self._session.get_outputs()]
        self._tensor_of = self.outputs or {t: t for t in tensors}
        # dims are only known after a run when the outputs are intermediate tensors
        probe = self._run(np.zeros((1, 3, self.size, self.size), np.float32), list(self._tensor_of))
        self._dims = {layer: int(arr.shape[1]) for layer, arr in probe.items()}

    def _run(self, pixels: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
        outs = self._session.run([self._tensor_of[layer] for layer in layers], {self._input: pixels})
        result = {}
        for layer, arr in zip(layers, outs, strict=True):
            arr = np.asarray(arr, dtype=np.float32)
            if arr.ndim == 3:
                arr = arr[:, 0] if self.pooling == "cls" else arr.mean(1)
            elif arr.ndim == 4:
                arr = arr.mean(axis=(2, 3))
            elif arr.ndim != 2:
                raise EncoderLoadError(f"onnx:{self.path}: output {self._tensor_of[layer]!r} has shape "
                                       f"{arr.shape}; expected (B, D), (B, T, D) or (B, C, H, W)")
            result[layer] = np.ascontiguousarray(arr)
        return result

    @property
    def dim(self) -> int:
        return self._dims[self.layers[-1]]

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self._tensor_of)

    @property
    def layer_dims(self) -> dict[str, int]:
        return dict(self._dims)

    def config(self) -> dict[str, Any]:
        return {"size": self.size, "crop": self.crop, "mean": self.mean, "std": self.std,
                "outputs": self.outputs, "pooling": self.pooling}

    def weight_files(self) -> Sequence[Path]:
        return [self.path]

    def _encode_batch(self, items: Sequence[Any], layers: Sequence[str]) -> dict[str, np.ndarray]:
        pixels = load_batch(items, self.size, crop=self.crop, mean=self.mean, std=self.std)
        return self._run(pixels, list(dict.fromkeys(layers)))
