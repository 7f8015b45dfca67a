"""Matplotlib figures of the reports, returned as ``data:image/png;base64`` URIs (the HTML stays one file)."""

from __future__ import annotations

import base64
import io
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777")
DPI = 110


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # never opens a window; works headless
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                         "axes.titleweight": "bold", "axes.titlesize": 10, "figure.dpi": DPI})
    return plt


def to_data_uri(fig: Any) -> str:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=DPI)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def recall_curves(ranks: Mapping[str, np.ndarray], gallery_sizes: Mapping[str, int],
                  points: Mapping[str, Mapping[int, tuple[float, float, float]]]) -> str:
    """R@K against K (log axis) per direction; ``points[d][K] = (value, lo, hi)`` marks the reported R@K with CIs."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    for c, (name, r) in enumerate(ranks.items()):
        r = r[r > 0]
        kmax = max(2, gallery_sizes[name])
        ks = np.unique(np.geomspace(1, kmax, 200).round().astype(int))
        ax.plot(ks, [(r <= k).mean() for k in ks], color=PALETTE[c % len(PALETTE)], label=name, lw=1.8)
        pts = points.get(name, {})
        if pts:
            k = np.array(list(pts))
            v, lo, hi = (np.array([p[i] for p in pts.values()]) for i in range(3))
            ax.errorbar(k, v, yerr=[v - lo, hi - v], fmt="o", ms=4, capsize=3, color=PALETTE[c % len(PALETTE)])
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("K (log scale)")
    ax.set_ylabel("R@K")
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, loc="lower right")
    ax.set_title("Recall at K (dots: reported R@K with 95% CI)")
    return to_data_uri(fig)


def rank_histogram(ranks: Mapping[str, np.ndarray]) -> str:
    """Share of queries per rank bucket (1, 2, 3–5, 6–10, …) for each direction."""
    plt = _pyplot()
    top = max(int(r.max()) for r in ranks.values() if len(r)) if ranks else 1
    edges = [1, 2, 3, 6, 11, 21, 51, 101, 201, 501, 1001, 2001, 5001, 10001]
    edges = [e for e in edges if e <= top] + [top + 1]
    edges = sorted(set(edges))
    labels = [f"{lo}" if hi - lo == 1 else f"{lo}–{hi - 1}" for lo, hi in itertools.pairwise(edges)]
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    width = 0.8 / max(1, len(ranks))
    x = np.arange(len(labels))
    for c, (name, r) in enumerate(ranks.items()):
        r = r[r > 0]
        counts, _ = np.histogram(r, bins=edges)
        ax.bar(x + (c - (len(ranks) - 1) / 2) * width, counts / max(1, len(r)), width=width,
               color=PALETTE[c % len(PALETTE)], label=name)
    ax.set_xticks(x, labels, rotation=35, ha="right")
    ax.set_xlabel("rank of the first correct item")
    ax.set_ylabel("share of queries")
    ax.legend(frameon=False)
    ax.set_title("Where the correct item lands")
    ax.grid(alpha=0.3, axis="y")
    return to_data_uri(fig)


def similarity_heatmap(sim: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str],
                       row_title: str, col_title: str) -> str:
    """Cosine similarities of a sample of true pairs: a bright diagonal = matched pairs stand out."""
    plt = _pyplot()
    n = len(sim)
    size = min(7.5, 2.4 + 0.2 * n)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(sim, cmap="viridis", aspect="auto")
    ax.set_xticks(range(n), [_short(t) for t in col_labels], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), [_short(t) for t in row_labels], fontsize=7)
    ax.set_xlabel(col_title)
    ax.set_ylabel(row_title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="cosine similarity")
    ax.set_title(f"Similarity of {n} sampled pairs (diagonal = true pairs)")
    return to_data_uri(fig)


def projection(embeddings: Mapping[str, np.ndarray], gap: float | None) -> str:
    """Both modalities projected on the first two principal components of their union."""
    plt = _pyplot()
    names = list(embeddings)
    stacked = np.concatenate([embeddings[m] for m in names]).astype(np.float64)
    mean = stacked.mean(axis=0)
    _, _, vt = np.linalg.svd(stacked - mean, full_matrices=False)
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    centres = []
    size = float(np.clip(2400 / max(1, len(stacked)), 5, 28))  # few points: bigger dots
    for c, m in enumerate(names):
        p = (embeddings[m] - mean) @ vt[:2].T
        color = PALETTE[c % len(PALETTE)]
        ax.scatter(p[:, 0], p[:, 1], s=size, alpha=0.55, color=color, label=f"{m} ({len(p)})", linewidths=0)
        centre = p.mean(axis=0)
        centres.append(centre)
        ax.scatter(*centre, marker="X", s=160, color=color, edgecolors="black", linewidths=1.2, zorder=5)
    if len(centres) == 2:
        ax.annotate("", xy=centres[1], xytext=centres[0],
                    arrowprops={"arrowstyle": "<->", "color": "black", "lw": 1.4})
    title = "PCA of the shared space, coloured by modality"
    if gap is not None:
        title += f"\n(X = centroids; modality gap ‖μ_a − μ_b‖ = {gap:.3f})"
    ax.set_title(title)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(frameon=False, markerscale=2.5)
    ax.grid(alpha=0.3)
    return to_data_uri(fig)


def confusion_matrix(confusion: np.ndarray, names: Sequence[str]) -> str:
    """Row-normalised confusion matrix (rows = true class); counts printed when it is small."""
    plt = _pyplot()
    conf = np.asarray(confusion, dtype=np.float64)
    rates = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    n = len(names)
    size = min(9.0, 3.0 + 0.38 * n)
    fig, ax = plt.subplots(figsize=(size + 1.4, size))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), [_short(t, 22) for t in names], rotation=45, ha="right", fontsize=7.5)
    ax.set_yticks(range(n), [_short(t, 22) for t in names], fontsize=7.5)
    if n <= 16:
        for i in range(n):
            for j in range(n):
                if conf[i, j]:
                    ax.text(j, i, int(conf[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.55 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="share of the true class")
    ax.set_title("Zero-shot confusion matrix")
    return to_data_uri(fig)


def layer_heatmap(table: np.ndarray, rows: Sequence[str], cols: Sequence[str], row_title: str, col_title: str,
                  title: str, best: tuple[int, int], marked: tuple[int, int] | None = None) -> str:
    """One metric over every layer pair; best cell boxed in red, ``marked`` (fit's choice) boxed in white."""
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    h, w = table.shape
    fig, ax = plt.subplots(figsize=(1.6 + 0.42 * w, 1.2 + 0.34 * h))
    im = ax.imshow(table, cmap="magma", aspect="auto")
    ax.set_xticks(range(w), cols, rotation=45, ha="right", fontsize=7.5)
    ax.set_yticks(range(h), rows, fontsize=7.5)
    ax.set_xlabel(col_title)
    ax.set_ylabel(row_title)
    if marked is not None and marked != best:
        ax.add_patch(Rectangle((marked[1] - 0.5, marked[0] - 0.5), 1, 1, fill=False, ec="white", lw=2, ls="--"))
    ax.add_patch(Rectangle((best[1] - 0.5, best[0] - 0.5), 1, 1, fill=False, ec="#22d3ee", lw=2.5))
    ax.text(best[1], best[0], f"{table[best]:.2f}", ha="center", va="center", fontsize=6.5, color="#22d3ee",
            fontweight="bold")
    fig.colorbar(im, ax=ax, fraction=0.05, pad=0.03)
    ax.set_title(title)
    return to_data_uri(fig)


def _short(text: str, n: int = 28) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"
