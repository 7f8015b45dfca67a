"""``probe --report``: layer-by-layer heatmaps of every alignment measure, best pairs and fit's choice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modalign.evaluation.probe import SELECTION_METRIC, ProbeResult
from modalign.evaluation.report import plots
from modalign.evaluation.report.html import esc, figure, fmt, page, section, table

TITLES = {"mutual_knn": "mutual k-NN", "cka": "linear CKA", "cka_unbiased": "linear CKA (unbiased)",
          "rsa": "RSA (Spearman)", "svcca": "SVCCA"}


def write_probe_report(path: str | Path, result: ProbeResult, payload: dict[str, Any] | None = None,
                       source: str = "") -> Path:
    payload = payload if payload is not None else result.to_json()
    sections: list[tuple[str, str, str]] = []
    rec = result.recommendation
    rec_text = ", ".join(f"{esc(m)}=<b>{esc(layer)}</b>" for m, layer in rec.items())
    summary_rows, classes = [], []
    for key, pair in result.pairs.items():
        a, b = pair.a, pair.b
        for metric in pair.tables:
            la, lb, score = pair.best(metric)
            default = pair.at(metric, result.default_layers[a], result.default_layers[b])
            chosen = pair.at(metric, rec[a], rec[b]) if a in rec and b in rec else float("nan")
            summary_rows.append([esc(key.replace("|", " ↔ ")), esc(TITLES.get(metric, metric)),
                                 f"{esc(la)} · {esc(lb)}", fmt(score), fmt(chosen), fmt(default)])
            classes.append("best" if metric == SELECTION_METRIC else "")
    body = (f'<p><span class="pill">fit --layers auto</span> would align {rec_text} '
            f"(the best mutual-kNN pair; k = {fmt(result.k)}).</p>")
    for key, pair in result.pairs.items():
        chance = pair.chance(result.k)
        verdict = pair.verdict(result.k, result.groups)
        body += (f'<p class="verdict"><b>{esc(key.replace("|", " ↔ "))}</b>: {esc(verdict)}. '
                 f"Chance mutual-kNN (unrelated spaces) is k/(n−1) = {fmt(chance)}.</p>")
    body += table(("modalities", "measure", "best layer pair", "best score", "score at fit's choice",
                   "score at last layers"), summary_rows, classes, table_id="probe-summary", text_columns=3)
    body += ('<p class="note">Higher is better for every measure. The highlighted row is the measure '
             "<code>fit --layers auto</code> maximises; the others are a second opinion. Last layers = each "
             f"encoder's default ({esc(', '.join(f'{m}={v}' for m, v in result.default_layers.items()))}).</p>")
    sections.append(("summary", "Summary", section("summary", "Which layers align best?", body)))
    for key, pair in result.pairs.items():
        figs = []
        for metric, t in pair.tables.items():
            if np.all(np.isnan(t)):
                continue
            best = np.unravel_index(int(np.nanargmax(t)), t.shape)
            marked = None
            if pair.a in rec and pair.b in rec:
                marked = (pair.layers_a.index(rec[pair.a]), pair.layers_b.index(rec[pair.b]))
            uri = plots.layer_heatmap(t, pair.layers_a, pair.layers_b, f"{pair.a} ({result.encoders.get(pair.a, '')})",
                                      f"{pair.b} ({result.encoders.get(pair.b, '')})", TITLES.get(metric, metric),
                                      (int(best[0]), int(best[1])), marked)
            caption = (f"{esc(TITLES.get(metric, metric))}: best {esc(pair.layers_a[best[0]])} · "
                       f"{esc(pair.layers_b[best[1]])} = {fmt(float(t[best]))}")
            figs.append(figure(uri, f"{metric} heatmap", caption=caption))
        note = (f"{pair.n} pairs. Cyan box: best cell of each measure; dashed white box: the pair fit --layers auto "
                "takes, when it differs.")
        sections.append((f"pair-{key}", key.replace("|", " ↔ "),
                         section(f"pair-{key}", f"{pair.a} ↔ {pair.b}: every layer pair",
                                 f'<div class="figs">{"".join(figs)}</div>', note)))
    subtitle = (f"{esc(source)} · " if source else "") + " · ".join(
        f"{esc(m)}: {esc(result.encoders.get(m, ''))}" for m in result.modalities)
    html = page("modalign layer probe", subtitle, sections, payload)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out
