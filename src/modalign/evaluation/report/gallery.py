"""Per-query gallery: the best and worst retrievals of a direction, with inline thumbnails and texts."""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modalign.data.dataset import PairedDataset
from modalign.evaluation.evaluate import DirectionResult, EvalResult
from modalign.evaluation.report.html import esc

log = logging.getLogger(__name__)

THUMB = 72
MAX_AUDIO_BYTES = 400_000  # bigger clips are named, not embedded, to keep the report small
AUDIO_MIME = {".wav": "audio/wav", ".ogg": "audio/ogg", ".oga": "audio/ogg", ".flac": "audio/flac",
              ".mp3": "audio/mpeg", ".opus": "audio/ogg"}
TOP = 5


class ItemRenderer:
    """Turns a dataset row's item of one modality into a small HTML snippet (memoised)."""

    def __init__(self, dataset: PairedDataset) -> None:
        self.dataset = dataset
        self._memo: dict[tuple[str, int], str] = {}

    def __call__(self, modality: str, row: int) -> str:
        key = (modality, row)
        if key not in self._memo:
            self._memo[key] = self._render(modality, row)
        return self._memo[key]

    def _render(self, modality: str, row: int) -> str:
        item = self.dataset.columns[modality][row]
        kind = self.dataset.kind(modality)
        if kind == "text":
            text = str(item)
            return f'<div class="txt" title="{esc(text)}">{esc(text if len(text) <= 90 else text[:89] + "…")}</div>'
        if kind == "image":
            uri = thumbnail(item)
            if uri is None:
                return '<div class="txt">(unreadable)</div>'
            return f'<img src="{uri}" alt="{esc(Path(str(item)).name)}">'
        if kind == "audio":
            return audio_player(Path(item))
        return f'<div class="txt">{esc(self.dataset.ids[row])}</div>'


def thumbnail(item: Any, size: int = THUMB) -> str | None:
    """A small PNG data URI; transparent images are flattened on white so icons stay visible."""
    from PIL import Image

    try:
        img = item if isinstance(item, Image.Image) else Image.open(item)
        img.load()
        img = img.convert("RGBA")
        img.thumbnail((size * 2, size * 2))  # 2x for sharp thumbnails on high-density screens
        canvas = Image.new("RGB", img.size, "white")
        canvas.paste(img, mask=img.getchannel("A"))
        buf = io.BytesIO()
        canvas.save(buf, format="PNG", optimize=True)
    except (OSError, ValueError) as exc:
        log.warning("report: cannot thumbnail %s: %s", item, exc)
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def audio_player(path: Path) -> str:
    mime = AUDIO_MIME.get(path.suffix.lower())
    try:
        size = path.stat().st_size
    except OSError:
        return f'<div class="txt">{esc(path.name)} (missing)</div>'
    if mime is None or size > MAX_AUDIO_BYTES:
        return f'<div class="txt">♪ {esc(path.name)}</div>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<audio controls preload="none" src="data:{mime};base64,{data}"></audio>'


def pick_queries(d: DirectionResult, groups: Sequence[str], n: int = 4) -> tuple[list[int], list[int]]:
    """Positions of the best queries (rank 1, widest margin over the best wrong item) and the worst ones,
    at most one per group (``groups[q]``) so four views of one concept do not fill the gallery."""
    valid = np.flatnonzero(d.ranks > 0)
    if len(valid) == 0:
        return [], []
    sim, rel = d.similarity[valid], d.relevant[valid]
    pos = np.where(rel, sim, -np.inf).max(axis=1)
    neg = np.where(~rel, sim, -np.inf).max(axis=1)
    margin = pos - neg
    ranks = d.ranks[valid]
    best = _distinct(valid[np.lexsort((-margin, ranks))], groups, n, set())
    worst = _distinct(valid[np.lexsort((margin, -ranks))], groups, n, set(best))
    return best, worst


def _distinct(order: np.ndarray, groups: Sequence[str], n: int, taken: set[int]) -> list[int]:
    out: list[int] = []
    seen: set[str] = set()
    for q in order.tolist():
        if q in taken or groups[q] in seen:
            continue
        seen.add(groups[q])
        out.append(q)
        if len(out) == n:
            break
    return out


def item_cell(body: str, caption: str, cls: str) -> str:
    return f'<div class="cell {cls}">{body}<div class="meta" title="{esc(caption)}">{esc(caption)}</div></div>'


def query_row(result: EvalResult, d: DirectionResult, q: int, render: ItemRenderer) -> str:
    q_rows = result.embeddings[d.query].first_row
    g_rows = result.embeddings[d.target].first_row
    ids = render.dataset.ids
    q_row = int(q_rows[d.query_items[q]])
    sims, rel = d.similarity[q], d.relevant[q]
    order = np.argsort(-sims, kind="stable")
    cells = [item_cell(render(d.query, q_row), f"query · {ids[q_row]}", "query"), '<div class="arrow">→</div>']
    for rank, g in enumerate(order[:TOP], 1):
        g_row = int(g_rows[d.gallery_items[g]])
        cells.append(item_cell(render(d.target, g_row), f"#{rank} · {sims[g]:.2f} · {ids[g_row]}",
                           "hit" if rel[g] else "miss"))
    if d.ranks[q] > TOP:  # show where the correct item went
        g = int(np.flatnonzero(rel)[np.argmax(sims[rel])])
        g_row = int(g_rows[d.gallery_items[g]])
        cells.append('<div class="arrow">…</div>')
        cells.append(item_cell(render(d.target, g_row), f"correct at #{int(d.ranks[q])} · {sims[g]:.2f}", "truth"))
    return f'<div class="grow">{"".join(cells)}</div>'


def gallery_html(result: EvalResult, dataset: PairedDataset, per_side: int = 4) -> str:
    render = ItemRenderer(dataset)
    parts = []
    for name, d in result.directions.items():
        rows = result.embeddings[d.query].first_row[d.query_items]
        best, worst = pick_queries(d, [dataset.groups[int(r)] for r in rows], per_side)
        parts.append(f"<h3>{esc(name)}: best queries</h3>")
        parts.append('<div class="gallery">' + "".join(query_row(result, d, q, render) for q in best) + "</div>")
        if len(worst):
            parts.append(f"<h3>{esc(name)}: worst queries</h3>")
            parts.append('<div class="gallery">' + "".join(query_row(result, d, q, render) for q in worst)
                         + "</div>")
    return "".join(parts)
