"""A doctor report as text (the CLI) and HTML (Jupyter): problems first, each with what was
found, why it matters and the command that fixes it; the ``ok`` checks as one line each."""

from __future__ import annotations

import textwrap
from html import escape
from typing import Any

from hybridnb.core.tables import STYLE

_ORDER = {"fail": 0, "warn": 1, "ok": 2}
_MARK = {"fail": "FAIL", "warn": "WARN", "ok": "ok"}


def _sorted(findings: Any) -> list[Any]:
    """Failures first, then warnings, then ok; in check order within each."""
    order = list(findings)
    return sorted(order, key=lambda f: (_ORDER[f.status], order.index(f)))


def _wrap(label: str, text: str, width: int = 100) -> list[str]:
    pad = " " * 6
    return textwrap.wrap(text, width, initial_indent=f"{pad}{label:<6} ",
                         subsequent_indent=pad + " " * 7, break_on_hyphens=False,
                         break_long_words=False) or [f"{pad}{label}"]


def report_text(report: Any) -> str:
    lines = [report.headline()]
    for f in _sorted(report.findings):
        lines.append(f"{_MARK[f.status]:<5} {f.check:<18} {f.title}")
        if f.status == "ok":
            lines.extend(_wrap("", f.found))
            continue
        lines.extend(_wrap("found:", f.found))
        if f.why:
            lines.extend(_wrap("why:", f.why))
        if f.fix_command:
            note = "   (doctor --fix applies it)" if f.fixable else ""
            lines.append(f"      fix:   {f.fix_command}{note}")
    for o in report.fixes:
        lines.append(f"fixed {o.check}" if o.ok else f"fix of {o.check} failed: {o.message}")
    return "\n".join(lines)


def report_html(report: Any) -> str:
    rows = []
    for f in _sorted(report.findings):
        cls = {"fail": "fail", "warn": "warn", "ok": "ok"}[f.status]
        fix = ""
        if f.fix_command:
            fix = f"<code>{escape(f.fix_command)}</code>" + (
                " <i>(--fix applies it)</i>" if f.fixable else "")
        rows.append(f'<tr class="{cls}"><td>{_MARK[f.status]}</td><td>{escape(f.check)}</td>'
                    f"<td>{escape(f.found)}</td>"
                    f"<td>{escape(f.why) if f.status != 'ok' else ''}</td><td>{fix}</td></tr>")
    fixes = "".join(f"<li>{'fixed' if o.ok else 'fix failed:'} {escape(o.check)} "
                    f"{'' if o.ok else escape(o.message)}</li>" for o in report.fixes)
    style = ("<style>.hnb tr.fail td{background:#fbe9e9}.hnb tr.warn td{background:#fff6dd}"
             ".hnb tr.ok td{background:#f4fbf4}</style>")
    return (STYLE + style + f'<table class="hnb"><caption>{escape(report.headline())}</caption>'
            "<tr><th></th><th>check</th><th>found</th><th>why it matters</th><th>fix</th></tr>"
            + "".join(rows) + "</table>" + (f"<ul>{fixes}</ul>" if fixes else ""))


__all__ = ["report_html", "report_text"]
