"""``audit --out``'s report.html: the most suspicious pairs beside the items they matched better, the score
distribution with the threshold and the injected swaps, and the duplicate clusters."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from modalign._io import atomic_write_bytes, finite_json
from modalign.data.dataset import PairedDataset
from modalign.evaluation.audit import AuditResult, PairAudit
from modalign.evaluation.report.gallery import ItemRenderer, item_cell
from modalign.evaluation.report.html import esc, facts, figure, page, section, table
from modalign.evaluation.report.plots import _pyplot, to_data_uri

GALLERY = 24
CLUSTERS = 30


def write_audit_report(path: str | Path, result: AuditResult, dataset: PairedDataset) -> Path:
    render = ItemRenderer(dataset)
    payload = finite_json(result.to_json())
    sections = [
        ("summary", "Summary", _summary(result, dataset)),
        ("scores", "Scores", section("scores", "Mismatch scores", figure(_histogram(result), "score histogram"),
                                     "Every pair's out-of-fold mismatch score, beside the scores of pairs swapped "
                                     "on purpose: the threshold is where the flagged pairs are, by the estimate, "
                                     "mostly mismatches.")),
        ("suspicious", "Suspicious pairs", section("suspicious", "Most suspicious pairs", _gallery(result, render),
                                                   "Each row: the pair as the manifest has it, then the item each "
                                                   "side matched better (from another group). Red: flagged.")),
        ("duplicates", "Duplicates", _duplicates(result, dataset)),
    ]
    a, b = result.modalities
    subtitle = (f"{esc(dataset.source.name if dataset.source else 'dataset')} · {len(result.pairs)} pairs "
                f"({esc(a)} ↔ {esc(b)}) · {result.folds} group folds · {esc(result.method)} heads")
    html = page("modalign audit report", subtitle, sections, payload,
                footer=f"modalign · {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} · numbers identical to the JSON "
                       "embedded in this file (#modalign-payload)")
    out = Path(path)
    atomic_write_bytes(out, html.encode("utf-8"))
    return out


def _summary(result: AuditResult, dataset: PairedDataset) -> str:
    caught = result.to_json()["calibration"]["injected_caught"]
    pairs = sum(c.kind == "pair" for c in result.duplicates)
    body = facts({
        "pairs scored": f"{len(result.pairs):,}" + (f" ({result.unscored} rows lack a side)"
                                                    if result.unscored else ""),
        "estimated mismatched": f"{result.estimated_mismatched:.1%}",
        "flagged": f"{len(result.flagged):,}",
        "threshold": "none" if result.threshold is None else f"{result.threshold:.3f}",
        "injected swaps caught": f"{caught:.0%} of {len(result.injected)}",
        "repeated pairs": str(pairs),
        "items shared across groups": str(len(result.leaks)),
        "time": f"{result.seconds:.1f} s",
    })
    return section("summary", "Summary", body, "Each pair is scored by heads fitted on the other group folds, so "
                   "no score comes from a model that saw the pair.")


def _histogram(result: AuditResult) -> str:
    plt = _pyplot()
    scores = np.array([p.mismatch for p in result.pairs])
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    edges = np.histogram_bin_edges(np.concatenate([scores, result.injected]), bins=40)
    ax.hist(scores, bins=edges, color="#2563eb", alpha=0.75, label=f"pairs ({len(scores)})")
    if len(result.injected):
        ax.hist(result.injected, bins=edges, color="#ea580c", alpha=0.55,
                label=f"injected swaps ({len(result.injected)})")
    if result.threshold is not None:
        ax.axvline(result.threshold, color="#dc2626", linestyle="--", label="threshold")
    ax.set_xlabel("mismatch score (higher: the pair disagrees more)")
    ax.set_ylabel("pairs")
    ax.legend(frameon=False)
    return to_data_uri(fig)


def _gallery(result: AuditResult, render: ItemRenderer) -> str:
    a, b = result.modalities
    rows = [_pair_row(p, a, b, render) for p in result.ranked()[:GALLERY]]
    return '<div class="gallery">' + "".join(rows) + "</div>" if rows else "<p>No pairs.</p>"


def _pair_row(p: PairAudit, a: str, b: str, render: ItemRenderer) -> str:
    ids = render.dataset.ids
    mark = "miss" if p.flagged else "query"
    cells = [item_cell(render(a, p.row), f"{p.id} · {a}", mark),
             item_cell(render(b, p.row), f"score {p.mismatch:.2f} · {b} rank {p.rank_ab}", mark)]
    if p.best_b >= 0:
        better_b = f"{a} matched better · {p.best_b_cosine:.2f} · {ids[p.best_b]}"
        cells += ['<div class="arrow">→</div>', item_cell(render(b, p.best_b), better_b, "hit")]
    if p.best_a >= 0:
        better_a = f"{b} matched better · {p.best_a_cosine:.2f} · {ids[p.best_a]}"
        cells.append(item_cell(render(a, p.best_a), better_a, "hit"))
    return f'<div class="grow" data-id="{esc(p.id)}">{"".join(cells)}</div>'


def _duplicates(result: AuditResult, dataset: PairedDataset) -> str:
    if not result.duplicates:
        return section("duplicates", "Duplicates", "<p>No repeated pair and no item shared across groups.</p>")
    ordered = sorted(result.duplicates, key=lambda c: (-len(c.groups), -len(c.rows)))[:CLUSTERS]
    rows = [(esc(c.kind), esc(c.modality), esc(", ".join(dataset.ids[r] for r in c.rows[:8])
                                               + (" …" if len(c.rows) > 8 else "")),
             esc(", ".join(c.groups[:6]) + (" …" if len(c.groups) > 6 else "")),
             "-" if c.cosine is None else f"{c.cosine:.3f}") for c in ordered]
    return section("duplicates", f"Duplicates ({len(result.duplicates)})",
                   table(("kind", "modality", "ids", "groups", "lowest cosine"), rows, text_columns=4),
                   "pair: the same pair under several ids. identical: one file or vector under several ids. "
                   "identical / near across groups: one item (or near copies of it) under several groups, which a "
                   "split by group would put on both sides.")
