"""ONNX Runtime for the built-in torch encoders: ``runtime`` is ``torch``, ``onnx`` (fp32) or ``onnx-int8``.

The torch model is exported once (``torch.onnx.export``, the TorchScript exporter: the dynamo one needs
``onnxscript``, which is not a dependency) and the graph is cached on disk under
``$MODALIGN_ONNX_CACHE`` (default ``~/.cache/modalign/onnx``), named by the encoder, its graph version,
the sha256 of its weight files, the opset and the runtime: changed weights get a new export, never a
stale one. Writes are atomic and each graph is built under a file lock, so concurrent processes wait for
one export instead of corrupting it.

int8 is quantized from the fp32 graph:

* transformers (MatMul-heavy): dynamic quantization of the MatMuls, per channel (per-tensor lost too
  much: MiniLM sentence cosine 0.94 vs 0.99 per channel, measured); text models keep their feed-forward
  down-projections in fp32 (``quantize_text_matmuls``);
* conv nets: ``quantize_dynamic`` turns convolutions into ConvInteger, which onnxruntime runs ~10x
  slower than fp32 with features at cosine ~0.7 (EfficientNet-Lite0, measured). They are quantized
  statically instead (QDQ, per channel), calibrated on fixed synthetic images (``synthetic_images``), so
  the graph depends on nothing but the weights.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modalign._io import atomic_write_with, file_lock
from modalign.encoders.errors import EncoderOptionError
from modalign.encoders.weights import files_sha256

logger = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnx", "onnx-int8")
OPSET = 17


def check_runtime(encoder: str, runtime: Any, allowed: Sequence[str] = RUNTIMES) -> str:
    """``runtime`` if ``encoder`` supports it, else one ``EncoderOptionError`` naming the choices."""
    if not isinstance(runtime, str) or runtime not in allowed:
        raise EncoderOptionError(f"encoder {encoder!r}: runtime {runtime!r} is not one of {', '.join(allowed)}")
    return runtime


def export_root() -> Path:
    return Path(os.environ.get("MODALIGN_ONNX_CACHE", Path.home() / ".cache" / "modalign" / "onnx"))


def default_threads() -> int:
    """onnxruntime intra-op threads: torch's pool size (what the caller or OMP_NUM_THREADS set), else the cores."""
    import torch

    return max(1, int(torch.get_num_threads() or os.cpu_count() or 1))


@dataclass(frozen=True)
class GraphKey:
    """What an exported graph depends on: the encoder, its export code (``graph_version``) and its weights."""

    name: str
    graph_version: str
    weight_files: tuple[Path, ...]

    def path(self, runtime: str, opset: int = OPSET) -> Path:
        root = Path(os.path.commonpath([f.parent for f in self.weight_files]))
        digest = files_sha256(self.weight_files, root)[:16]
        return export_root() / f"{self.name}-g{self.graph_version}-{digest}-opset{opset}-{runtime}.onnx"


def exported_graph(key: GraphKey, runtime: str, export: Callable[[Path], None],
                   quantize: Callable[[Path, Path], None]) -> Path:
    """The cached graph for ``runtime`` (``onnx`` or ``onnx-int8``), built on first use.

    ``export(dst)`` writes the fp32 graph; ``quantize(fp32, dst)`` writes the int8 one from it.
    """
    path = key.path(runtime)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    source = exported_graph(key, "onnx", export, quantize) if runtime == "onnx-int8" else None
    with file_lock(path.with_name(path.name + ".lock")):
        if path.is_file():  # another process built it while this one waited
            return path
        logger.info("building %s", path.name)
        if source is None:
            atomic_write_with(path, export)
        else:
            atomic_write_with(path, lambda dst: quantize(source, dst))
    return path


def torch_export(module: Any, args: tuple[Any, ...], dst: Path, inputs: Sequence[str], outputs: Sequence[str],
                 dynamic: dict[str, dict[int, str]]) -> None:
    """TorchScript export of ``module`` (eval mode) to ``dst``; its tracer warnings are expected, not shown."""
    import torch

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(dst), dynamo=False, opset_version=OPSET,
                          input_names=list(inputs), output_names=list(outputs), dynamic_axes=dynamic)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization logs through ``logging.warning``, which installs a stderr handler on the root
    logger when it has none: the library never prints, so the root logger is put back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def quantize_matmuls(src: Path, dst: Path, keep_fp32: Sequence[str] = ()) -> None:
    """Dynamic int8 of the MatMul weights, per channel (activations quantized on the fly), except the
    MatMul nodes named in ``keep_fp32``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_root_logger():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=list(keep_fp32))


def narrowing_matmuls(path: Path, factor: int = 2) -> list[str]:
    """MatMul nodes whose constant (K, N) weight narrows their input at least ``factor`` times (K >= factor*N).

    In a transformer these are the feed-forward down-projections. Their input, the GELU output, has a few
    outlier channels, and dynamic int8 quantizes an activation with one scale per tensor, which flattens
    every other channel.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    narrowing = []
    for node in graph.node:
        weight = shapes.get(node.input[1], ()) if node.op_type == "MatMul" and len(node.input) > 1 else ()
        if len(weight) == 2 and weight[0] >= factor * weight[1]:
            narrowing.append(node.name)
    return narrowing


def quantize_text_matmuls(src: Path, dst: Path) -> None:
    """int8 for text transformers: every weight MatMul but the feed-forward down-projections.

    Keeping those six of MiniLM's 36 in fp32 took the mean feature cosine to fp32 from 0.9923 to 0.9955 on
    the emoji names, and the held-out text→image R@1 change against torch from -0.009 ± 0.026 to
    -0.001 ± 0.014 (mean ± std over 8 seeded splits of the demo data, Procrustes).
    """
    quantize_matmuls(src, dst, narrowing_matmuls(src))


def quantize_static_qdq(src: Path, dst: Path, calibration: Sequence[dict[str, np.ndarray]],
                        keep_fp32_convs: int = 3) -> None:
    """Static int8 (QDQ, per-channel weights, uint8 activations) calibrated by min/max on ``calibration``.

    The first and the last ``keep_fp32_convs`` convolutions stay fp32. On EfficientNet-Lite0 and 300 demo
    emoji, keeping three at each end instead of one raised the mean head cosine to fp32 from 0.9945 to
    0.9973 (5th percentile 0.987 to 0.995) at the same speed. Calibrating on real emoji instead of the
    synthetic images, or by percentile or entropy instead of min/max, moved it by less than 0.001.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    with tempfile.TemporaryDirectory(prefix="modalign-quant-") as tmp, _quiet_root_logger():
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        convs = [node.name for node in onnx.load(str(pre)).graph.node if node.op_type == "Conv"]
        k = max(0, keep_fp32_convs)
        kept = {*convs[:k], *convs[len(convs) - k:]}  # a set: the two ends overlap in a graph of < 2k convs
        quantize_static(str(pre), str(dst), Feeds(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        nodes_to_exclude=sorted(kept))


def synthetic_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` fixed (size, size, 3) uint8 calibration images: flat shapes on light backgrounds (like icons and
    emoji) and smooth colour fields with texture (like photos), so activation ranges cover both."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        if i % 2 == 0:
            img = np.full((size, size, 3), rng.uniform(200, 255), np.float32)
            for _ in range(int(rng.integers(2, 7))):
                cy, cx = rng.uniform(0.1, 0.9, 2)
                ry, rx = rng.uniform(0.05, 0.4, 2)
                mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
                shade = 1.0 - 0.3 * (yy - cy)  # a little shading, as rendered emoji have
                img[mask] = (rng.uniform(0, 255, 3)[None, :] * shade[mask][:, None]).clip(0, 255)
        else:
            coarse = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
            idx = np.minimum((np.stack([yy, xx], -1) * 4).astype(int), 3)
            img = coarse[idx[..., 0], idx[..., 1]] * 0.7 + 0.3 * 255 * xx[..., None]
            img += rng.normal(0, 20, img.shape).astype(np.float32)
        out[i] = img.clip(0, 255).astype(np.uint8)
    return out


def session(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session over ``path``: ``threads`` intra-op threads (default ``default_threads``),
    sequential execution."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # its warnings go to stderr, not through logging
    # idle pool threads sleep instead of spinning: a server's event loop needs that core between batches
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
