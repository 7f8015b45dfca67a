"""HTML building blocks of the reports: the page template, tables, number formatting. No JavaScript.

The page is a Jinja2 template with autoescape (text values are escaped by Jinja, pre-built HTML is
passed as ``Markup``). The small fragment builders below stay f-strings: each is one line of markup,
and a template per table cell would be longer than the code it replaces.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from modalign import __version__


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers as shown in every report table (the JSON keeps full precision)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:g}" if value.is_integer() and abs(value) > 1 else f"{value:.{digits}f}"
    return esc(value)


#: metrics shown as plain numbers (ranks, counts), not as 3-decimal shares
WHOLE = ("median_rank", "mean_rank", "queries", "n")


def fmt_metric(key: str, value: Any, digits: int = 3) -> str:
    if key in WHOLE and isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return f"{value:g}"
    return fmt(value, digits)


def with_ci(value: Any, ci: Sequence[float] | None, digits: int = 3, key: str = "") -> str:
    cell = fmt_metric(key, value, digits)
    if ci and len(ci) == 2:
        lo, hi = (fmt_metric(key, float(v), digits) for v in ci)
        cell += f'<span class="ci">[{lo}, {hi}]</span>'
    return cell


def table(header: Sequence[str], rows: Iterable[Sequence[str]], classes: Sequence[str] | None = None,
          table_id: str | None = None, text_columns: int = 1) -> str:
    """Cells are HTML already (callers escape text with ``esc``). The first ``text_columns`` align left."""
    attr = f' id="{esc(table_id)}"' if table_id else ""

    def align(j: int) -> str:
        return ' class="l"' if j < text_columns else ""

    out = [f"<table{attr}><thead><tr>" + "".join(f"<th{align(j)}>{h}</th>" for j, h in enumerate(header))
           + "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        out.append(f"<tr{cls}>" + "".join(f"<td{align(j)}>{c}</td>" for j, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def figure(uri: str, alt: str, caption: str = "", width: int | None = None) -> str:
    style = f' style="width:{width}px"' if width else ""
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{esc(alt)}"{style}>{cap}</figure>'


def section(anchor: str, title: str, body: str, note: str = "") -> str:
    note_html = f'<p class="note">{note}</p>' if note else ""
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{note_html}{body}</section>'


def facts(items: Mapping[str, Any]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in items.items()) + "</dl>"


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]], payload: Mapping[str, Any],
         footer: str = "") -> str:
    """sections: (anchor, nav label, html). The payload is embedded verbatim as JSON (machine-readable twin)."""
    nav = "<nav>" + "".join(f'<a href="#{esc(a)}">{esc(label)}</a>' for a, label, _ in sections) + "</nav>"
    data = json.dumps(payload, ensure_ascii=False, allow_nan=True, default=_jsonable).replace("</", "<\\/")
    return _ENV.get_template("template.html").render(
        title=title, subtitle=Markup(subtitle), nav=Markup(nav), body=Markup("\n".join(h for _, _, h in sections)),
        footer=Markup(footer) if footer else f"made by modalign {__version__}", payload=Markup(data),
        version=__version__,
    )


_ENV = Environment(loader=PackageLoader("modalign.evaluation.report", "."),
                   autoescape=select_autoescape(["html"]), keep_trailing_newline=True)


def _jsonable(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
