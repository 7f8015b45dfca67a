"""Hashed character trigrams of the text, plus one count per word of a small vocabulary file.

The vocabulary file stands in for real weights: it is listed in ``weight_files``, so its sha256 is
saved with a fitted model and a changed file is detected when the model is loaded again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modalign import Encoder

VOCAB = Path(__file__).with_name("vocab.txt")


class TrigramEncoder(Encoder):
    name = "trigram"
    kind = "text"
    version = "1"

    def __init__(self, buckets: int = 256, lowercase: bool = True) -> None:
        if buckets < 8:
            raise ValueError(f"trigram: buckets must be at least 8, got {buckets}")
        self.buckets = int(buckets)
        self.lowercase = bool(lowercase)
        self._vocab = [w for w in VOCAB.read_text().split() if w]

    @property
    def dim(self) -> int:
        return self.buckets + len(self._vocab)

    @property
    def layers(self) -> tuple[str, ...]:
        return ("trigrams", "full")

    @property
    def layer_dims(self) -> dict[str, int]:
        return {"trigrams": self.buckets, "full": self.dim}

    def config(self) -> dict[str, Any]:
        return {"buckets": self.buckets, "lowercase": self.lowercase}

    def weight_files(self) -> Sequence[Path]:
        return [VOCAB]

    def _row(self, text: str) -> np.ndarray:
        text = text.lower() if self.lowercase else text
        padded = f"  {text}  "
        out = np.zeros(self.dim, np.float32)
        for i in range(len(padded) - 2):
            h = hashlib.blake2b(padded[i : i + 3].encode(), digest_size=4).digest()
            out[int.from_bytes(h, "little") % self.buckets] += 1.0
        words = text.split()
        for j, word in enumerate(self._vocab):
            out[self.buckets + j] = float(words.count(word))
        return out

    def _encode_batch(self, items: Sequence[Any], layers: Sequence[str]) -> dict[str, np.ndarray]:
        full = np.stack([self._row(str(t)) for t in items]) if items else np.zeros((0, self.dim), np.float32)
        return {"trigrams": full[:, : self.buckets], "full": full}
