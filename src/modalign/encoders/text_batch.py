"""One forward pass of a Hugging Face text model over a batch, shared by ``minilm`` and ``hf:`` text models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modalign.errors import ItemError


def hidden_states(tokenizer: Any, model: Any, items: Sequence[Any], max_length: int) -> tuple[Any, Any, Any]:
    """(every layer's hidden states, the attention mask as a float (B, T, 1) tensor, token counts (B, 1))."""
    import torch  # imported on first use, as the encoders do: the CLI starts without it

    texts = []
    for item in items:
        if not isinstance(item, str):
            raise ItemError(item, f"text encoder got {type(item).__name__}, expected str")
        texts.append(item)
    tok = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        out = model(**tok, output_hidden_states=True)
    mask = tok["attention_mask"].unsqueeze(-1).to(torch.float32)
    return out.hidden_states, mask, mask.sum(1).clamp(min=1.0)
