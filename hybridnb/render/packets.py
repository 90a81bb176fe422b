"""Decoded packets as a table (text, HTML) and as a small sequence picture.

The sequence picture puts each talker (an address) on a vertical life line, in the order they
first appear, and draws one arrow per packet from sender to receiver going down in time
order, coloured by protocol and labelled with the packet's summary — the "who said what to
whom" a person reads a capture for.  It shows the first ``limit`` packets (40 by default) of
at most eight talkers; a bare Agg figure, no pyplot.
"""

from __future__ import annotations

import base64
import io
from html import escape
from typing import Any

from hybridnb.core.tables import table, text_table

HEADERS = ["#", "time", "src", "dst", "protocol", "info"]
COLOURS = {"ICMP": "#2ca02c", "TCP": "#1f77b4", "HTTP": "#17becf", "UDP": "#9467bd",
           "DNS": "#d4a017", "ARP": "#7f7f7f"}


def _rows(t: Any, limit: int | None) -> list[list[str]]:
    pkts = t.packets if limit is None else t.packets[:limit]
    t0 = t.packets[0].time if t.packets else 0.0
    return [[str(p.index), f"{p.time - t0:.6f}", p.src, p.dst, p.protocol, p.info]
            for p in pkts]


def headline(t: Any) -> str:
    counts: dict[str, int] = {}
    for p in t.packets:
        counts[p.protocol] = counts.get(p.protocol, 0) + 1
    mix = ", ".join(f"{n} {proto}" for proto, n in sorted(counts.items(),
                                                         key=lambda kv: (-kv[1], kv[0])))
    more = f" (+{t.truncated} not decoded)" if t.truncated else ""
    return f"{t.title}: {len(t.packets)} packets{more}" + (f" — {mix}" if mix else "")


def packets_text(t: Any, limit: int | None = 200) -> str:
    text = headline(t)
    if t.packets:
        text += "\n" + text_table(HEADERS, _rows(t, limit))
        if limit is not None and len(t.packets) > limit:
            text += f"\n... {len(t.packets) - limit} more"
    return text


def packets_html(t: Any, limit: int = 200) -> str:
    out = table(HEADERS, _rows(t, limit), caption=headline(t))
    if t.packets:
        buf = io.BytesIO()
        sequence_figure(t).savefig(buf, format="png")
        out += (f'<img alt="sequence of {escape(t.title)}" src="data:image/png;base64,'
                f'{base64.b64encode(buf.getvalue()).decode()}"/>')
    return out


def sequence_figure(t: Any, *, limit: int = 40, talkers: int = 8) -> Any:
    """Arrows between life lines, one per packet (the first ``limit``)."""
    from matplotlib.figure import Figure

    order: list[str] = []
    for p in t.packets:
        for a in (p.src, p.dst):
            if a not in order:
                order.append(a)
    order = order[:talkers]
    shown = [p for p in t.packets if p.src in order and p.dst in order][:limit]
    height = max(2.5, 0.22 * len(shown) + 1.2)
    fig = Figure(figsize=(max(5.0, 1.6 * len(order) + 1.0), height), dpi=80)
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.88))
    x = {a: i for i, a in enumerate(order)}
    n = max(len(shown), 1)
    for a, i in x.items():
        ax.plot([i, i], [0, n + 0.5], color="#bbbbbb", linewidth=1, zorder=1)
        ax.text(i, n + 0.8, a, ha="center", va="bottom", fontsize=7, family="monospace")
    for row, p in enumerate(shown):
        y = n - row
        colour = COLOURS.get(p.protocol, "#444444")
        x0, x1 = x[p.src], x[p.dst]
        if x0 == x1:
            ax.plot([x0], [y], marker="o", color=colour, markersize=3)
        else:
            ax.annotate("", xy=(x1, y), xytext=(x0, y),
                        arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.0})
        label = f"{p.protocol} {p.info}"
        ax.text((x0 + x1) / 2, y + 0.12, label[:48], ha="center", va="bottom", fontsize=5.5,
                color=colour, family="monospace")
    ax.set_xlim(-0.7, max(len(order) - 0.3, 0.7))
    ax.set_ylim(0, n + 1.6)
    ax.axis("off")
    fig.suptitle(headline(t)[:90], fontsize=7)
    return fig


__all__ = ["packets_html", "packets_text", "sequence_figure"]
