"""Small, dependency-free HTML building blocks shared by every result's ``_repr_html_``.

One stylesheet, escaped cells, optional per-row CSS classes (``create``/``delete``/``up``/
``down``...) so plans, status tables and matrices look alike in Jupyter and in reports.
"""

from __future__ import annotations

from html import escape
from typing import Any, Sequence

STYLE = (
    "<style>"
    ".hnb{border-collapse:collapse;font-family:monospace;font-size:12px;margin:4px 0}"
    ".hnb caption{text-align:left;font-weight:bold;padding:2px 0}"
    ".hnb th,.hnb td{border:1px solid #ccc;padding:2px 8px;text-align:left}"
    ".hnb th{background:#f3f3f3}"
    ".hnb tr.create td,.hnb tr.up td,.hnb td.ok{background:#e8f7e8}"
    ".hnb tr.delete td,.hnb tr.down td,.hnb tr.missing td,.hnb td.fail{background:#fbe9e9}"
    ".hnb tr.replace td,.hnb tr.update td,.hnb tr.differs td{background:#fff6dd}"
    "</style>"
)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, caption: str | None = None,
          row_classes: Sequence[str] | None = None) -> str:
    parts = [STYLE, '<table class="hnb">']
    if caption:
        parts.append(f"<caption>{escape(caption)}</caption>")
    parts.append("<tr>" + "".join(f"<th>{escape(str(h))}</th>" for h in headers) + "</tr>")
    for i, row in enumerate(rows):
        cls = f' class="{escape(row_classes[i])}"' if row_classes else ""
        cells = "".join(f"<td>{escape('' if c is None else str(c))}</td>" for c in row)
        parts.append(f"<tr{cls}>{cells}</tr>")
    parts.append("</table>")
    return "".join(parts)


def format_ms(ms: float | None) -> str:
    """A time in milliseconds as every table writes it: 3 decimals below 1 ms, 1 below 100,
    none above; ``-`` for no value."""
    if ms is None:
        return "-"
    if ms < 1:
        return f"{ms:.3f}"
    if ms < 100:
        return f"{ms:.1f}"
    return f"{ms:.0f}"


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Aligned plain-text table (the ``__repr__`` twin of :func:`table`)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
