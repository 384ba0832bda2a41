"""The report as one self-contained HTML page: inline CSS, figures as base64 PNG data URIs, no
script, no external file, no network.

Plain string templating with :func:`html.escape` on every piece of text: the page is small and
fixed, so a template engine would be a dependency for nothing.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from stablemd.diagnose.report.model import STATUSES, Figure, Section, Table, Verdict, worst_status

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
  background: #f6f8fa; margin: 0; }
main { max-width: 980px; margin: 0 auto; padding: 24px 28px 40px; background: #fff; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.25em; margin: 28px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #d0d7de; }
p.sub { color: #57606a; margin: 0 0 12px; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 0.93em; }
th, td { border: 1px solid #d0d7de; padding: 4px 9px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
caption { caption-side: top; text-align: left; color: #57606a; padding: 2px 0 4px; }
.status { display: inline-block; min-width: 3.4em; text-align: center; font-weight: 600;
  border-radius: 4px; padding: 0 6px; color: #fff; }
.status-pass { background: #1a7f37; } .status-warn { background: #bf8700; }
.status-fail { background: #cf222e; } .status-none { background: #8c959f; }
.overall { font-size: 1.15em; margin: 10px 0 4px; }
figure { margin: 10px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: 0.92em; margin-top: 4px; }
footer { margin-top: 32px; color: #57606a; font-size: 0.9em; }
a { color: #0969da; text-decoration: none; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _cell(value: Any) -> str:
    """A table cell: numbers right-aligned with 4 significant digits."""
    if value is None:
        return "<td>–</td>"
    if isinstance(value, bool):
        return f"<td>{_e(value)}</td>"
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    if isinstance(value, float):
        return f'<td class="num">{value:.4g}</td>'
    return f"<td>{_e(value)}</td>"


def _badge(status: str | None) -> str:
    name = status if status in STATUSES else "none"
    text = status.upper() if status else "—"
    return f'<span class="status status-{name}">{_e(text)}</span>'


def section_id(index: int, title: str) -> str:
    """The anchor of the ``index``-th section: a slug of its title."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return f"s{index + 1}-{slug}" if slug else f"s{index + 1}"


def _verdict_row(verdict: Verdict, first: str = "") -> str:
    return (
        f'<tr class="verdict" data-check="{_e(verdict.check)}" data-status="{verdict.status}">'
        f"{first}<td>{_e(verdict.check)}</td>"
        f'<td class="num">{_e(verdict.value_text)}</td><td>{_e(verdict.threshold)}</td>'
        f"<td>{_badge(verdict.status)}</td><td>{_e(verdict.note)}</td></tr>"
    )


def _summary_table(sections: Sequence[Section]) -> str:
    rows = []
    for k, section in enumerate(sections):
        link = f'<td><a href="#{section_id(k, section.title)}">{_e(section.title)}</a></td>'
        rows += [_verdict_row(v, link) for v in section.verdicts]
    if not rows:
        return "<p>No checks were run.</p>"
    head = "<tr><th>section</th><th>check</th><th>value</th><th>threshold</th><th>status</th>"
    return f'<table class="summary">{head}<th>note</th></tr>{"".join(rows)}</table>'


def _table(table: Table) -> str:
    caption = f"<caption>{_e(table.caption)}</caption>" if table.caption else ""
    head = "".join(f"<th>{_e(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in table.rows)
    return f'<table class="data">{caption}<tr>{head}</tr>{body}</table>'


def _figure(figure: Figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    # width and height reserve the space before the image decodes; CSS scales it to the page
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(figure.alt)}" '
        f'width="{figure.width}" height="{figure.height}">'
        f"<figcaption>{_e(figure.caption)}</figcaption></figure>"
    )


def _section(index: int, section: Section) -> str:
    parts = [
        f'<section id="{section_id(index, section.title)}">'
        f"<h2>{_e(section.title)} {_badge(section.status) if section.verdicts else ''}</h2>"
    ]
    parts += [f"<p>{_e(p)}</p>" for p in section.summary.split("\n\n") if p.strip()]
    if section.verdicts:
        head = "<tr><th>check</th><th>value</th><th>threshold</th><th>status</th><th>note</th>"
        rows = "".join(_verdict_row(v) for v in section.verdicts)
        parts.append(f'<table class="verdicts">{head}</tr>{rows}</table>')
    parts += [_table(t) for t in section.tables]
    parts += [_figure(f) for f in section.figures]
    parts.append("</section>")
    return "\n".join(parts)


def _meta_value(value: Any) -> str:
    if isinstance(value, Mapping):
        rows = "".join(f"<tr><th>{_e(k)}</th>{_meta_cell(v)}</tr>" for k, v in value.items())
        return f"<table>{rows}</table>"
    if isinstance(value, list | tuple):
        return _e(json.dumps(value))
    return "–" if value is None else _e(value)


def _meta_cell(value: Any) -> str:
    return f"<td>{_meta_value(value)}</td>"


def _overall(sections: Sequence[Section]) -> str:
    verdicts = [v for s in sections for v in s.verdicts]
    status = worst_status(verdicts)
    counts = ", ".join(
        f"{n} {s}" for s in reversed(STATUSES) if (n := sum(v.status == s for v in verdicts))
    )
    return f'<p class="overall">Overall: {_badge(status)} {_e(counts)}</p>'


def render_html(sections: Sequence[Section], title: str, meta: Mapping[str, Any]) -> str:
    """The whole page: title, overall status and a summary table of every verdict at the top,
    one part per section (its summary, verdicts, tables, figures), the run's ``meta`` (model,
    system, date, version, settings) at the bottom."""
    subtitle = " · ".join(
        _e(f"{meta[key]}") for key in ("model", "system", "date") if meta.get(key) is not None
    )
    body = [
        f'<header><h1>{_e(title)}</h1><p class="sub">{subtitle}</p>',
        _overall(sections),
        "</header>",
        '<section id="verdicts"><h2>Verdicts</h2>',
        _summary_table(sections),
        "</section>",
        *(_section(k, s) for k, s in enumerate(sections)),
        '<footer><h2>Run</h2><table class="meta">',
        "".join(f"<tr><th>{_e(k)}</th>{_meta_cell(v)}</tr>" for k, v in meta.items()),
        "</table></footer>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(body)
        + "\n</main>\n</body>\n</html>\n"
    )
