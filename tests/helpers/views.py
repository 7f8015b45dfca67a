"""Small planted multi-view data for the closed-form tests: several noisy linear views of one latent."""

from __future__ import annotations

import numpy as np
import torch


def three_views(n: int = 1500, seed: int = 15) -> dict[str, np.ndarray]:
    """Three noisy linear views (a: 9-d, b: 8-d, c: 7-d) of one 5-d latent per row."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 5))
    return {m: (np.hstack([z, 0.05 * rng.normal(size=(n, d - 5))]) @ rng.normal(size=(d, d))).astype(np.float32)
            for m, d in (("a", 9), ("b", 8), ("c", 7))}


def recall_at_1(heads: dict, x: dict[str, np.ndarray], query: str, target: str, rows: slice) -> float:
    """R@1 of ``query`` → ``target`` through the fitted heads, on ``rows`` (row i pairs with row i)."""
    with torch.no_grad():
        zq = torch.nn.functional.normalize(heads[query](torch.as_tensor(x[query][rows])), dim=1)
        zt = torch.nn.functional.normalize(heads[target](torch.as_tensor(x[target][rows])), dim=1)
    sim = (zq @ zt.T).numpy()
    return float(np.mean(sim.argmax(1) == np.arange(len(sim))))
