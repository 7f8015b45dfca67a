"""Same seed → same heads, whatever drew from torch's global generator before the fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalign.align.fit import fit_arrays
from modalign.align.trainer import TrainerSettings


def _paired(n: int = 240, seed: int = 3) -> tuple[dict, dict, list[str]]:
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(n, 8))
    a = shared @ rng.normal(size=(8, 24)) + 0.1 * rng.normal(size=(n, 24))
    b = shared @ rng.normal(size=(8, 16)) + 0.1 * rng.normal(size=(n, 16))
    feats = {"image": {"last": a.astype(np.float32)}, "text": {"last": b.astype(np.float32)}}
    present = {m: np.ones(n, bool) for m in feats}
    return feats, present, [f"g{i}" for i in range(n)]


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_fit_is_reproducible_after_unrelated_random_draws(head: str) -> None:
    feats, present, groups = _paired()
    settings = TrainerSettings(epochs=3, seed=5)

    def run(draws: int) -> dict[str, torch.Tensor]:
        torch.rand(draws)  # someone else used the global generator first
        fitted = fit_arrays(feats, present, groups, ["image", "text"], default_layers={"image": "last", "text": "last"},
                            head=head, dim=8, settings=settings)
        return {f"{m}.{k}": v.clone() for m, h in fitted.heads.items() for k, v in h.state_dict().items()}

    first, second = run(1), run(1000)
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0, msg=key)
