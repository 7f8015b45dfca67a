"""One forward pass of a Hugging Face text model over a batch, shared by ``minilm`` and ``hf:`` text models:
in torch, or through the model's exported ONNX graph (``runtime`` onnx / onnx-int8)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modalign.encoders.onnx_runtime import GraphKey, exported_graph, quantize_text_matmuls, session, torch_export
from modalign.errors import ItemError

#: bump when ``_States``, the export arguments or the quantization change, so cached text graphs are rebuilt
TEXT_GRAPH_VERSION = "2"
#: part of an int8 text encoder's feature-cache id: 2 = feed-forward down-projections kept fp32
TEXT_INT8_SCHEME = 2


def text_feature_config(config: dict[str, Any]) -> dict[str, Any]:
    """A text encoder's feature-cache config: torch features keep the id they had before runtimes existed
    (no ``runtime`` key), and int8 ones name their quantization scheme, so a new scheme never reuses old
    int8 features."""
    runtime = config.get("runtime", "torch")
    out = {k: v for k, v in config.items() if k != "runtime" or runtime != "torch"}
    if runtime == "onnx-int8":
        out["int8_scheme"] = TEXT_INT8_SCHEME
    return out


def texts_of(items: Sequence[Any]) -> list[str]:
    texts = []
    for item in items:
        if not isinstance(item, str):
            raise ItemError(item, f"text encoder got {type(item).__name__}, expected str")
        texts.append(item)
    return texts


def hidden_states(tokenizer: Any, model: Any, items: Sequence[Any], max_length: int) -> tuple[Any, Any, Any]:
    """(every layer's hidden states, the attention mask as a float (B, T, 1) tensor, token counts (B, 1))."""
    import torch  # imported on first use, as the encoders do: the CLI starts without it

    tok = tokenizer(texts_of(items), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        out = model(**tok, output_hidden_states=True)
    mask = tok["attention_mask"].unsqueeze(-1).to(torch.float32)
    return out.hidden_states, mask, mask.sum(1).clamp(min=1.0)


class TextGraph:
    """A text model's hidden states (outputs ``h0`` .. ``hN``) in onnxruntime, exported once per weights."""

    def __init__(self, name: str, weight_files: Sequence[Path], tokenizer: Any, n_layers: int,
                 load_model: Callable[[], Any], runtime: str) -> None:
        """``load_model``: the torch model, called only when its graph is not exported yet."""
        self._tokenizer = tokenizer
        self._n_states = n_layers + 1
        key = GraphKey(name, TEXT_GRAPH_VERSION, tuple(weight_files))
        path = exported_graph(key, runtime, lambda dst: self._export(load_model(), dst), quantize_text_matmuls)
        self._session = session(path)
        self._inputs = [i.name for i in self._session.get_inputs()]

    def _export(self, model: Any, dst: Path) -> None:
        from torch import nn

        # two texts of different lengths, so padding is in the traced example
        sample = self._tokenizer(["a photo", "an example sentence, longer"], padding=True, return_tensors="pt")
        names = list(sample.keys())

        class States(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *args: Any) -> tuple[Any, ...]:
                return tuple(self.model(**dict(zip(names, args, strict=True)), output_hidden_states=True).hidden_states)

        outputs = [f"h{i}" for i in range(self._n_states)]
        dynamic = {n: {0: "batch", 1: "tokens"} for n in (*names, *outputs)}
        torch_export(States(), tuple(sample[n] for n in names), dst, names, outputs, dynamic)

    def hidden_states(self, items: Sequence[Any], max_length: int,
                      states: Sequence[int]) -> tuple[dict[int, np.ndarray], np.ndarray, np.ndarray]:
        """({state index: (B, T, D)}, the float (B, T, 1) attention mask, token counts (B, 1))."""
        tok = self._tokenizer(texts_of(items), padding=True, truncation=True, max_length=max_length,
                              return_tensors="np")
        wanted = sorted(set(states))
        outs = self._session.run([f"h{i}" for i in wanted], {n: np.asarray(tok[n], np.int64) for n in self._inputs})
        mask = np.asarray(tok["attention_mask"], np.float32)[..., None]
        return dict(zip(wanted, outs, strict=True)), mask, np.maximum(mask.sum(1), 1.0)
