"""A merged lab log as text (``HH:MM:SS.mmm  tag  text``) and as an HTML table whose rows are
coloured by source."""

from __future__ import annotations

import time
from html import escape
from typing import Any

from hybridnb.core.tables import STYLE

COLOURS = {"hybridnb": "#eef3fb", "dns": "#fdf7e3", "container": "#eaf5ea", "vm": "#f3ecf8"}


def stamp(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def line_text(line: Any, width: int = 16) -> str:
    """One merged log line as the CLI prints it (also for ``--follow``)."""
    return f"{stamp(line.time)}  {line.tag:<{width}}  {line.text}"


def headline(view: Any) -> str:
    span = ""
    if view.lines:
        span = f" from {stamp(view.lines[0].time)} to {stamp(view.lines[-1].time)}"
    return (f"logs of lab {view.lab}: {len(view.lines)} lines from {len(view.sources)} "
            f"sources ({', '.join(view.sources) or 'none'}){span}")


def logs_text(view: Any) -> str:
    width = max([len(ln.tag) for ln in view.lines] + [8])
    lines = [headline(view)] + [line_text(ln, width) for ln in view.lines]
    lines += [f"  ({src}: {why})" for src, why in view.errors]
    return "\n".join(lines)


def logs_html(view: Any) -> str:
    rows = "".join(
        f'<tr style="background:{COLOURS.get(ln.source, "#fff")}"><td>{stamp(ln.time)}</td>'
        f"<td>{escape(ln.tag)}</td><td>{escape(ln.text)}</td></tr>" for ln in view.lines)
    errors = "".join(f"<li>{escape(s)}: {escape(w)}</li>" for s, w in view.errors)
    return (STYLE + f'<table class="hnb"><caption>{escape(headline(view))}</caption>'
            f"<tr><th>time</th><th>source</th><th>line</th></tr>{rows}</table>"
            + (f"<ul>{errors}</ul>" if errors else ""))


__all__ = ["line_text", "logs_html", "logs_text", "stamp"]
