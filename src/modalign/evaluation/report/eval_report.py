"""``eval --report``: one self-contained HTML file (figures and thumbnails inline, no scripts to fetch).

Every number in a table is read from the ``payload`` dict that ``eval --json`` writes (one source);
the figures are drawn from the ``EvalResult`` the payload was computed from.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np

from modalign.align.model import AlignedModel
from modalign.data.dataset import PairedDataset
from modalign.evaluation.evaluate import EvalResult
from modalign.evaluation.report import plots
from modalign.evaluation.report.gallery import gallery_html
from modalign.evaluation.report.html import esc, facts, figure, fmt, fmt_metric, page, section, table, with_ci
from modalign.evaluation.report.payload import enrich_payload

SUMMARY_KEYS = ("R@1", "R@5", "R@10", "MRR", "median_rank")
CHANCE_KEYS = ("R@1", "R@5", "R@10")
HEATMAP_PAIRS = 24
PROJECTION_POINTS = 1500
MAX_PLOTTED_CLASSES = 40


def write_report(path: str | Path, model: AlignedModel, dataset: PairedDataset, result: EvalResult,
                 payload: dict[str, Any]) -> Path:
    """Render the report of ``result`` to ``path``. Adds CIs to ``payload`` first if they are missing."""
    if any("CI95" not in d for d in payload["directions"].values()) or "space" not in payload:
        enrich_payload(payload, result)
    sections = [
        ("summary", "Summary", _summary(model, dataset, result, payload)),
        ("curves", "Recall", _curves(result, payload)),
        ("similarity", "Similarity", _similarity(result, dataset)),
        ("projection", "Projection", _projection(result, payload)),
        ("gallery", "Gallery", section("gallery", "Best and worst queries", gallery_html(result, dataset),
                                       "Each row: the query, then its top 5 results (green = correct, with "
                                       "cosine score). Worst queries also show where the correct item ranked.")),
    ]
    if "zero_shot" in payload:
        sections.append(("zero-shot", "Zero-shot", zero_shot_section(payload["zero_shot"])))
    if "compare" in payload:
        sections.append(("compare", "Compare", compare_section(payload["compare"])))
    if result.errors:
        rows = [(esc(i), esc(m), esc(r)) for i, m, r in result.errors[:50]]
        sections.append(("skipped", "Skipped", section("skipped", f"Skipped items ({len(result.errors)})",
                                                        table(("id", "modality", "reason"), rows, text_columns=3))))
    mods = " · ".join(f"{m}: {b.encoder}/{b.layer}" for m, b in model.branches.items())
    subtitle = (f"{esc(dataset.source.name if dataset.source else 'dataset')} · split {esc(payload.get('split', '-'))}"
                f" · n = {payload['n']} pairs · {esc(method_label(model))} · {esc(mods)}")
    html = page("modalign evaluation report", subtitle, sections, payload,
                footer=f"modalign · {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} · numbers identical to "
                       "the JSON embedded in this file (#modalign-payload)")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out


def summary_rows(payload: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, m in payload["directions"].items():
        ci = m.get("CI95", {})
        chance = m.get("chance") or {}
        rows.append([esc(name), fmt(m.get("queries"))] + [with_ci(m.get(k), ci.get(k), key=k) for k in SUMMARY_KEYS]
                    + [" / ".join(fmt(chance.get(k)) for k in CHANCE_KEYS)])
    return rows


def method_label(model: AlignedModel) -> str:
    """The method as fitted: ``auto → cca(reg=0.3,power=2.0)+l2`` when auto chose it."""
    auto = (model.metrics.get("fit") or {}).get("auto")
    return f"{model.method} → {auto['picked']}" if isinstance(auto, dict) and auto.get("picked") else model.method


def _summary(model: AlignedModel, dataset: PairedDataset, result: EvalResult, payload: dict[str, Any]) -> str:
    info = {
        "data": esc(dataset.source or "-"), "split": esc(payload.get("split", "-")),
        "pairs evaluated": fmt(payload["n"]), "method": esc(method_label(model)), "dimension": fmt(model.dim),
        **{f"{m} encoder": f"{esc(b.encoder)} · layer <b>{esc(b.layer)}</b> · head "
                           f"{esc(_head(b.head.config()))}" for m, b in model.branches.items()},
    }
    if payload.get("skipped"):
        info["skipped items"] = fmt(payload["skipped"])
    info.update(provenance_facts(payload.get("provenance")))
    boot = payload.get("bootstrap", {})
    body = facts(info)
    body += "<h3>Retrieval</h3>" + table(("direction", "queries", *SUMMARY_KEYS,
                                          "chance " + " / ".join(CHANCE_KEYS)), summary_rows(payload),
                                         table_id="summary-table")
    body += (f'<p class="note">Brackets: 95% bootstrap CI over queries ({fmt(boot.get("n_boot"))} resamples). '
             "R@K = share of queries with a correct item in the top K; any of several correct items counts. "
             "Chance = the same metric for a random ranking of this gallery, with its multi-positive groups.</p>")
    gaps = payload.get("modality_gaps") or {"|".join(result.gaps) if len(result.gaps) == 1 else "-":
                                            payload.get("modality_gap")}
    rows = []
    for key, space in payload.get("space", {}).items():
        u = space["uniformity"]
        a, b = key.split("|")
        rows.append([esc(key.replace("|", " ↔ ")), fmt(gaps.get(key, payload.get("modality_gap"))),
                     fmt(space["alignment"]), fmt(u.get(a)), fmt(u.get(b)), fmt(space["pairs"])])
    if rows:
        body += "<h3>Geometry of the space</h3>" + table(
            ("modalities", "modality gap", "alignment", "uniformity (1st)", "uniformity (2nd)", "pairs"), rows,
            table_id="space-table")
        body += ('<p class="note">gap = ‖mean(z_a) − mean(z_b)‖ (0 = modalities share the sphere); alignment = '
                 "E‖z_a − z_b‖² over true pairs (lower is better); uniformity = log E exp(−2‖z_i − z_j‖²) "
                 "(more negative = more spread out).</p>")
    return section("summary", "Summary", body)


def provenance_facts(prov: dict[str, Any] | None) -> dict[str, str]:
    """The rows of the summary that say where the numbers come from (``payload["provenance"]``)."""
    if not prov:
        return {}
    data = prov.get("dataset", {})
    return {"model folder": f"<code>{esc(prov.get('model', {}).get('path', '-'))}</code>",
            "manifest sha256": f"<code>{esc(data.get('sha256', '-'))}</code>",
            "modalign version": esc(prov.get("modalign_version", "-")),
            "evaluated (UTC)": esc(prov.get("date_utc", "-")),
            "command": f"<code>{esc(prov.get('command', '-'))}</code>"}


def _head(cfg: dict[str, Any]) -> str:
    dims = f" {cfg['in_dim']}→{cfg['out_dim']}" if "in_dim" in cfg and "out_dim" in cfg else ""
    return f"{cfg.get('name', '?')}{dims}"


def _curves(result: EvalResult, payload: dict[str, Any]) -> str:
    ranks = {name: d.ranks for name, d in result.directions.items()}
    sizes = {name: d.similarity.shape[1] for name, d in result.directions.items()}
    points = {}
    for name in ranks:
        m = payload["directions"][name]
        ci = m.get("CI95", {})
        points[name] = {k: (m[f"R@{k}"], *ci.get(f"R@{k}", (m[f"R@{k}"], m[f"R@{k}"]))) for k in result.ks}
    figs = (figure(plots.recall_curves(ranks, sizes, points), "recall at K curves", width=560)
            + figure(plots.rank_histogram(ranks), "rank histogram", width=560))
    return section("curves", "Recall at K and rank distribution", f'<div class="figs">{figs}</div>')


def _sample_pairs(result: EvalResult, a: str, b: str, dataset: PairedDataset, n: int) -> list[tuple[int, int, int]]:
    """Up to n true pairs (row, item_a, item_b) with distinct items and groups, evenly spread over the data."""
    ea, eb = result.embeddings[a], result.embeddings[b]
    rows = np.flatnonzero((ea.row_to_item >= 0) & (eb.row_to_item >= 0))
    chosen: list[tuple[int, int, int]] = []
    seen_a: set[int] = set()
    seen_b: set[int] = set()
    seen_g: set[str] = set()
    step = max(1, len(rows) // (n * 3))
    for row in np.concatenate([rows[::step], rows]):
        ia, ib, g = int(ea.row_to_item[row]), int(eb.row_to_item[row]), dataset.groups[row]
        if ia in seen_a or ib in seen_b or g in seen_g:
            continue
        seen_a.add(ia)
        seen_b.add(ib)
        seen_g.add(g)
        chosen.append((int(row), ia, ib))
        if len(chosen) >= n:
            break
    return chosen


def _label(dataset: PairedDataset, modality: str, row: int) -> str:
    return str(dataset.columns[modality][row]) if dataset.kind(modality) == "text" else dataset.ids[row]


def _similarity(result: EvalResult, dataset: PairedDataset) -> str:
    d = next(iter(result.directions.values()))
    a, b = d.query, d.target
    pairs = _sample_pairs(result, a, b, dataset, HEATMAP_PAIRS)
    if len(pairs) < 2:
        return section("similarity", "Similarity matrix", "<p>Too few pairs to draw.</p>")
    za = result.embeddings[a].embeddings[[p[1] for p in pairs]]
    zb = result.embeddings[b].embeddings[[p[2] for p in pairs]]
    uri = plots.similarity_heatmap(za @ zb.T, [_label(dataset, a, p[0]) for p in pairs],
                                   [_label(dataset, b, p[0]) for p in pairs], a, b)
    return section("similarity", "Similarity matrix on a sample", figure(uri, "similarity heatmap", width=640),
                   f"{len(pairs)} true pairs from distinct groups; row i and column i belong together, so a good "
                   "space shows a bright diagonal.")


def _projection(result: EvalResult, payload: dict[str, Any]) -> str:
    embs = {}
    for m, e in result.embeddings.items():
        ok = np.unique(e.row_to_item[e.row_to_item >= 0])
        if len(ok) > PROJECTION_POINTS:
            ok = ok[np.linspace(0, len(ok) - 1, PROJECTION_POINTS).round().astype(int)]
        embs[m] = e.embeddings[ok]
    gap = payload.get("modality_gap") if len(embs) == 2 else None
    uri = plots.projection(embs, gap)
    return section("projection", "2-D projection of both modalities", figure(uri, "PCA projection", width=560),
                   "PCA of the union of both modalities' unit-norm embeddings. Two separate clouds = a modality "
                   "gap: retrieval still works when the clouds are shifted copies, but scores across "
                   "modalities are not comparable with scores within one.")


def zero_shot_section(z: dict[str, Any]) -> str:
    ci = z.get("CI95", {})
    top_keys = [k for k in z if k.startswith("top")]
    rows = [[esc(z["modality"]), fmt(z["n"]), fmt(len(z["classes"])), *[with_ci(z[k], ci.get(k)) for k in top_keys],
             with_ci(z["mean_per_class_recall"], ci.get("mean_per_class_recall")), fmt(z["chance_top1"])]]
    body = table(("items", "n", "classes", *top_keys, "mean per-class recall", "chance (top1)"), rows,
                 table_id="zero-shot-table")
    body += (f'<p class="note">Label field <b>{esc(z["label_field"])}</b>; class text = mean of '
             f'{len(z["templates"])} prompt(s): {", ".join(esc(repr(t)) for t in z["templates"])} '
             f'({esc(z["text_modality"])} branch). Brackets: 95% bootstrap CI over items.</p>')
    per_class = [[esc(name), fmt(v["n"]), fmt(v["recall"])] for name, v in z["per_class"].items()]
    fig = ""
    if "confusion" in z and len(z["classes"]) <= MAX_PLOTTED_CLASSES:
        fig = figure(plots.confusion_matrix(np.array(z["confusion"]), z["classes"]), "zero-shot confusion matrix",
                     width=620)
    if len(per_class) > MAX_PLOTTED_CLASSES:  # many classes: the 15 hardest and the 15 easiest
        order = sorted(per_class, key=lambda r: float("inf") if r[2] == "–" else float(r[2]))
        per_class = [*order[:15], ["…", "", ""], *order[-15:]]
    body += (f'<div class="figs">{fig}<div>'
             f'{table(("class", "items", "recall"), per_class, table_id="per-class-table")}</div></div>')
    return section("zero-shot", "Zero-shot classification", body)


def compare_section(c: dict[str, Any]) -> str:
    names = c["models"]
    body = ""
    for direction, block in c["directions"].items():
        rows, classes = [], []
        for metric, s in block["metrics"].items():
            b_better = s["delta"] < 0 if metric == "median_rank" else s["delta"] > 0
            sig = s["p_value"] < 0.05 and s["delta"] != 0
            verdict = ("B" if b_better else "A") + " better" if sig else "no significant difference"
            lo, hi = (fmt_metric(metric, v) for v in s["CI95_delta"])
            rows.append([esc(metric), fmt_metric(metric, s["a"]), fmt_metric(metric, s["b"]),
                         fmt_metric(metric, s["delta"]), f"[{lo}, {hi}]", fmt(s["p_value"], 4), esc(verdict)])
            classes.append(("b-better" if b_better else "a-better") if sig else "")
        body += f"<h3>{esc(direction)} ({block['queries']} paired queries)</h3>"
        body += table(("metric", f"A: {esc(names['a'])}", f"B: {esc(names['b'])}", "B − A", "95% CI of B − A",
                       "p (paired)", "verdict"), rows, classes, table_id=f"compare-{direction}")
    body += (f'<p class="note">{esc(c.get("test", ""))}, {fmt(c.get("n_boot"))} resamples; green rows: B '
             "significantly better, red rows: A significantly better (p &lt; 0.05).</p>")
    return section("compare", "Model comparison", body)
