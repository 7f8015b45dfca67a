"""Small real image + text + speech data shared by the n-modality and progressive-addition tests.

Noto emoji images and CLDR names (the ``emoji`` recipe) and espeak-ng speech of the same names (the
``speech`` recipe): both recipes take the first N concepts of the same catalogue, so groups match.
Prepared once per test session (both modules ask for the same folder).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers.recipes import ready_recipe

CONCEPTS = 48
VOICES = ("en-us", "en-gb+f3")
SPEEDS = (175,)


@dataclass
class EmojiSpeech:
    root: Path
    images: list[dict[str, Any]]  # emoji rows: id, image (relative to root), text, group
    speech: list[dict[str, Any]]  # speech rows: id, audio (relative to root), text, group

    def write(self, name: str, rows: list[dict[str, Any]]) -> Path:
        path = self.root / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def emoji_speech(tmp_path_factory: pytest.TempPathFactory) -> EmojiSpeech:
    root = tmp_path_factory.getbasetemp() / "emoji-speech"
    if not (root / "speech" / "manifest.jsonl").exists():
        emoji = ready_recipe("emoji", styles=["noto"], include_variants=False)
        speech = ready_recipe("speech", voices=VOICES, speeds=SPEEDS)
        emoji.prepare(root / "emoji", limit=CONCEPTS)
        speech.prepare(root / "speech", limit=CONCEPTS)
    images = [{"id": r["id"], "image": f"emoji/{r['image']}", "text": r["text"], "group": r["group"]}
              for r in _read(root / "emoji" / "manifest.jsonl")]
    speech_rows = [{"id": r["id"], "audio": f"speech/{r['audio']}", "text": r["text"], "group": r["group"]}
                   for r in _read(root / "speech" / "manifest.jsonl")]
    assert {r["group"] for r in images} == {r["group"] for r in speech_rows}, "the recipes disagree on concepts"
    return EmojiSpeech(root, images, speech_rows)


def chance_recall(relevant: np.ndarray, k: int) -> float:
    """Expected R@k of a random ranking: per query, 1 − C(G−P, k) / C(G, k) (P positives of G)."""
    g = relevant.shape[1]
    out = []
    for p in relevant.sum(axis=1):
        p = int(p)
        out.append(1.0 - (math.comb(g - p, k) / math.comb(g, k) if g - p >= k else 0.0))
    return float(np.mean(out))
