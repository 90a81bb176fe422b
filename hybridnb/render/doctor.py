"""A doctor report as text (the CLI) and HTML (Jupyter): problems first, each with what was
found, why it matters and the command that fixes it; the ``ok`` checks as one line each."""

from __future__ import annotations

import textwrap
from html import escape
from typing import Any

from hybridnb.core.tables import STYLE

_ORDER = {"fail": 0, "warn": 1, "ok": 2}
_MARK = {"fail": "FAIL", "warn": "WARN", "ok": "ok"}


def ordered(findings: Any) -> list[Any]:
    """Failures first, then warnings, then ok; in check order within each."""
    order = list(findings)
    return sorted(order, key=lambda f: (_ORDER[f.status], order.index(f)))


def _wrap(label: str, text: str, width: int = 100) -> list[str]:
    pad = " " * 6
    return textwrap.wrap(text, width, initial_indent=f"{pad}{label:<6} ",
                         subsequent_indent=pad + " " * 7, break_on_hyphens=False,
                         break_long_words=False) or [f"{pad}{label}"]


def _before_text(report: Any) -> list[str]:
    """With ``--fix``: what the first run found and what was done about it."""
    problems = [f for f in ordered(report.before) if f.status != "ok"]
    if not problems and not report.fixes:
        return []
    lines = ["first run:"]
    for f in problems:
        lines.extend(_wrap(_MARK[f.status], f"{f.check}: {f.found}"))
    for o in report.fixes:
        lines.append(f"      fixed  {o.check}: {o.message}" if o.ok
                     else f"      FAILED {o.check}: {o.message}")
    return lines + ["second run:"]


def report_text(report: Any) -> str:
    lines = [report.headline(), *_before_text(report)]
    for f in ordered(report.findings):
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
    return "\n".join(lines)


def report_html(report: Any) -> str:
    rows = []
    for f in ordered(report.findings):
        cls = {"fail": "fail", "warn": "warn", "ok": "ok"}[f.status]
        fix = ""
        if f.fix_command:
            fix = f"<code>{escape(f.fix_command)}</code>" + (
                " <i>(--fix applies it)</i>" if f.fixable else "")
        rows.append(f'<tr class="{cls}"><td>{_MARK[f.status]}</td><td>{escape(f.check)}</td>'
                    f"<td>{escape(f.found)}</td>"
                    f"<td>{escape(f.why) if f.status != 'ok' else ''}</td><td>{fix}</td></tr>")
    fixes = "".join(f"<li>{_MARK[f.status]} <b>{escape(f.check)}</b>: {escape(f.found)}</li>"
                    for f in ordered(report.before) if f.status != "ok")
    fixes += "".join(f"<li>{'fixed' if o.ok else 'fix FAILED:'} <b>{escape(o.check)}</b>: "
                     f"<code>{escape(o.message)}</code></li>" for o in report.fixes)
    if fixes:
        fixes = "<div>first run, and what --fix did:</div><ul>" + fixes + "</ul>"
    style = ("<style>.hnb tr.fail td{background:#fbe9e9}.hnb tr.warn td{background:#fff6dd}"
             ".hnb tr.ok td{background:#f4fbf4}</style>")
    return (STYLE + style + f'<table class="hnb"><caption>{escape(report.headline())}</caption>'
            "<tr><th></th><th>check</th><th>found</th><th>why it matters</th><th>fix</th></tr>"
            + "".join(rows) + "</table>" + fixes)


__all__ = ["ordered", "report_html", "report_text"]
