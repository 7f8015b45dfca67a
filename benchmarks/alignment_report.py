"""Aggregation and rendering for benchmarks/alignment.py: mean ± std tables, ratio summary, plot."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

BASELINES = ("procrustes", "infonce-linear")
TARGETS = {"procrustes": 1.5, "infonce-linear": 1.2}  # the targets for the best method
SELECTOR = "val-select"
AUTO = "auto"
#: the targets of the default: ≥ 0.95 × the best single method picked by test score (the oracle) at every
#: size, and ≥ 1.3 × Procrustes up to 1k pairs
AUTO_TARGETS = {"oracle": 0.95, "procrustes": 1.3}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """{dataset: {method: {size: {"n_pairs", "seeds", direction: {mean, std}, "mean": {mean, std}}}}}.

    "mean" averages the two directions' R@1 within a seed first, then over seeds.
    """
    grouped: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        grouped[(r["dataset"], r["method"], str(r["size"]))].append(r)
    out: dict[str, Any] = {}
    for (ds, method, size), rs in grouped.items():
        dirs = list(rs[0]["directions"])
        cell: dict[str, Any] = {"n_pairs": int(np.mean([r["n_pairs"] for r in rs])), "seeds": len(rs)}
        for d in dirs:
            v = np.array([r["directions"][d]["R@1"] for r in rs])
            cell[d] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
        both = np.array([np.mean([r["directions"][d]["R@1"] for d in dirs]) for r in rs])
        cell["mean"] = {"mean": float(both.mean()), "std": float(both.std(ddof=1)) if len(both) > 1 else 0.0}
        if method in (SELECTOR, AUTO):
            cell["picked"] = sorted({r["picked"] for r in rs if r.get("picked")})
        out.setdefault(ds, {}).setdefault(method, {})[size] = cell
    return out


def _ratio_sizes(sizes: list[str]) -> list[str]:
    """1k and all (the issue's points); without a 1k run (quick mode), the largest numeric size and all."""
    numeric = sorted(int(s) for s in sizes if s != "all")
    mid = "1000" if "1000" in sizes else (str(numeric[-1]) if numeric else None)
    return [s for s in (mid, "all") if s is not None and s in sizes]


def ratio_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """Per dataset and size: the best fitted method (by mean held-out R@1) and the validation-selected one,
    each as a ratio to Procrustes and to InfoNCE-linear, per direction and on the mean of both."""
    out: dict[str, Any] = {}
    for ds, methods in summary.items():
        sizes = list(dict.fromkeys(s for m in methods.values() for s in m))
        for size in _ratio_sizes(sizes):
            cells = {m: c[size] for m, c in methods.items() if size in c}
            fitted = {m: c for m, c in cells.items() if m not in (SELECTOR, AUTO)}
            if not fitted:
                continue
            best = max(fitted, key=lambda m: fitted[m]["mean"]["mean"])
            entry: dict[str, Any] = {"n_pairs": fitted[best]["n_pairs"]}
            for label, m in (("best", best), (SELECTOR, SELECTOR)):
                if m not in cells:
                    continue
                keys = [k for k in cells[m] if "->" in k] + ["mean"]
                ratios: dict[str, Any] = {}
                for base in BASELINES:
                    if base not in cells:
                        continue
                    ratios[base] = {k: _ratio(cells[m][k]["mean"], cells[base][k]["mean"]) for k in keys}
                    ratios[base]["meets_target"] = bool(ratios[base]["mean"] >= TARGETS[base])
                entry[label] = {"method": m, "R@1": {k: cells[m][k]["mean"] for k in keys}, "ratio_to": ratios}
                if m == SELECTOR:
                    entry[label]["picked"] = cells[m].get("picked")
            out.setdefault(ds, {})[size] = entry
    return out


def auto_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """Per dataset and size: auto's mean held-out R@1 against the oracle (the single method with the best
    test score, which no real run can know) and against Procrustes, with the targets."""
    out: dict[str, Any] = {}
    for ds, methods in summary.items():
        for size, cell in methods.get(AUTO, {}).items():
            singles = {m: c[size] for m, c in methods.items() if m not in (SELECTOR, AUTO) and size in c}
            if not singles:
                continue
            oracle = max(singles, key=lambda m: singles[m]["mean"]["mean"])
            auto_r1 = cell["mean"]["mean"]
            entry: dict[str, Any] = {"n_pairs": cell["n_pairs"], "seeds": cell["seeds"], "R@1": auto_r1,
                                     "picked": cell.get("picked"),
                                     "oracle": oracle, "oracle_R@1": singles[oracle]["mean"]["mean"],
                                     "x_oracle": _ratio(auto_r1, singles[oracle]["mean"]["mean"])}
            entry["meets_oracle_target"] = entry["x_oracle"] >= AUTO_TARGETS["oracle"]
            if "procrustes" in singles:
                entry["x_procrustes"] = _ratio(auto_r1, singles["procrustes"]["mean"]["mean"])
                small = size != "all" and int(size) <= 1000
                entry["meets_procrustes_target"] = entry["x_procrustes"] >= AUTO_TARGETS["procrustes"] if small \
                    else None
            out.setdefault(ds, {})[size] = entry
    return out


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else float("inf")


def _fmt(c: dict[str, float]) -> str:
    return f"{c['mean']:.3f}±{c['std']:.3f}"


def markdown_report(result: dict[str, Any]) -> str:
    lines: list[str] = []
    summary, ratios = result["summary"], result["ratios"]
    for ds, methods in summary.items():
        info = result["datasets"][ds]
        sizes = list(dict.fromkeys(s for m in methods.values() for s in m))
        first = next(iter(methods.values()))
        dirs = [k for k in next(iter(first.values())) if "->" in k]
        lines.append(f"### {ds}: held-out R@1 ({' / '.join(dirs)}), mean ± std over seeds")
        lines.append("")
        lines.append(f"{info['rows']} rows, {info['groups']} concepts; held out {info['test_groups']} concepts "
                     f"({info['test_rows']} rows, items {info['test_items']}); encoders {info['encoders']}.")
        lines.append("")
        header = ["method"] + [f"{s} ({first[s]['n_pairs'] if s in first else s})" for s in sizes]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for m, cells in methods.items():
            row = [m]
            for s in sizes:
                c = cells.get(s)
                row.append(" / ".join(_fmt(c[d]) for d in dirs) if c else "–")
            lines.append("| " + " | ".join(row) + " |")
        picked = {s: c.get("picked") for s, c in methods.get(SELECTOR, {}).items()}
        if picked:
            lines.append("")
            lines.append(f"{SELECTOR} picked (by validation R@1): "
                         + "; ".join(f"{s}: {', '.join(p or [])}" for s, p in picked.items()))
        lines.append("")
    lines.append("### Ratio summary (mean of both directions' held-out R@1; per direction in brackets)")
    lines.append("")
    lines.append("| dataset | pairs | method | R@1 | × Procrustes | × InfoNCE-linear |")
    lines.append("|---|---|---|---|---|---|")
    for ds, by_size in ratios.items():
        for size, entry in by_size.items():
            for label in ("best", SELECTOR):
                if label not in entry:
                    continue
                e = entry[label]
                name = e["method"] if label == "best" else f"{SELECTOR} ({', '.join(e.get('picked') or [])})"
                cols = []
                for base in BASELINES:
                    r = e["ratio_to"].get(base)
                    if r is None:
                        cols.append("–")
                        continue
                    per = ", ".join(f"{v:.2f}" for k, v in r.items() if "->" in k)
                    mark = "✓" if r["meets_target"] else "✗"
                    cols.append(f"{r['mean']:.2f} [{per}] {mark} (target {TARGETS[base]})")
                lines.append(f"| {ds} | {size} ({entry['n_pairs']}) | {name} | {e['R@1']['mean']:.3f} | "
                             + " | ".join(cols) + " |")
    lines.append("")
    if result.get("auto"):
        lines.append("### auto (the default) against the oracle and Procrustes (mean of both directions)")
        lines.append("")
        lines.append("| dataset | pairs | seeds | auto R@1 | oracle (best single by test score) | × oracle "
                     "| × Procrustes | auto picked |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for ds, by_size in result["auto"].items():
            for size, e in by_size.items():
                mark = "✓" if e["meets_oracle_target"] else "✗"
                xp = e.get("x_procrustes")
                pmark = {True: " ✓", False: " ✗", None: ""}[e.get("meets_procrustes_target")]
                lines.append(f"| {ds} | {size} ({e['n_pairs']}) | {e.get('seeds', '–')} | {e['R@1']:.3f} | "
                             f"{e['oracle']} {e['oracle_R@1']:.3f} | {e['x_oracle']:.2f} {mark} | "
                             + (f"{xp:.2f}{pmark}" if xp is not None else "–")
                             + f" | {', '.join(e.get('picked') or [])} |")
        lines.append("")
    return "\n".join(lines)


def plot_curves(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    names = list(summary)
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 3.6 * len(names)), squeeze=False)
    for i, ds in enumerate(names):
        methods = summary[ds]
        dirs = [k for k in next(iter(next(iter(methods.values())).values())) if "->" in k]
        for j, d in enumerate(dirs[:2]):
            ax = axes[i][j]
            for m, cells in methods.items():
                if m == SELECTOR:
                    continue
                xs = [c["n_pairs"] for c in cells.values()]
                ys = [c[d]["mean"] for c in cells.values()]
                es = [c[d]["std"] for c in cells.values()]
                style = "--" if m in ("procrustes", "cca", "ridge") else "-"
                bold = {"color": "black", "linewidth": 2.2, "zorder": 3} if m == AUTO else {}  # the default
                ax.errorbar(xs, ys, yerr=es, label=m, linestyle=style, marker="o", markersize=3, capsize=2, **bold)
            ax.set_xscale("log")
            ticks = sorted({c["n_pairs"] for cells in methods.values() for c in cells.values()})
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
            ax.set_xlabel("training pairs")
            ax.set_ylabel("held-out R@1")
            ax.set_title(f"{ds}: {d}")
            ax.grid(alpha=0.3)
    axes[0][1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return path
