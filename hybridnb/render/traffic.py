"""Traffic as text, HTML and plots: one sample (a ``top``-like table), a recorded series.

Rates are shown in bits per second (``12.3 Mbit/s``) and packets per second; the data
(``to_dict`` of the results) keeps bytes per second.  :func:`top_screen` is what the CLI's
refreshing view prints each interval: on a terminal it starts with the ANSI "home + clear"
sequence so the table redraws in place, otherwise it is plain lines with a time stamp, one
block per interval (logs and pipes stay readable).  :func:`plot_traffic` draws the busiest
endpoints' rates over time on a bare Agg figure (no pyplot).
"""

from __future__ import annotations

import base64
import io
import time
from html import escape
from typing import Any

from hybridnb.core.tables import STYLE, table, text_table

CLEAR = "\x1b[H\x1b[2J"
HEADERS = ["endpoint", "kind", "port", "tx", "rx", "tx pkt/s", "rx pkt/s", "err/s", "drop/s"]


def rate(bytes_s: float) -> str:
    """``bytes/s`` as a human bit rate."""
    bits = bytes_s * 8
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bits >= scale:
            return f"{bits / scale:.1f} {unit}"
    return f"{bits:.0f} bit/s"


def size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def _pps(x: float) -> str:
    return f"{x:.0f}" if x >= 10 or x == 0 else f"{x:.1f}"


def _headers(base: list[str], hosts: Any) -> list[str]:
    """``base`` with a ``host`` column after ``kind`` for a lab spread over hosts."""
    return base[:2] + ["host"] + base[2:] if hosts else base


def _row(p: Any, hosts: Any = None) -> list[str]:
    where = [hosts.get(p.endpoint, "")] if hosts else []
    return [p.endpoint, p.kind] + where + [p.port, rate(p.tx_bytes_s), rate(p.rx_bytes_s),
                                           _pps(p.tx_packets_s), _pps(p.rx_packets_s),
                                           _pps(p.errors_s), _pps(p.drops_s)]


def _rows(sample: Any) -> list[Any]:
    rows = sorted(sample.ports, key=lambda p: (-p.bytes_s, p.endpoint))
    return ([sample.gateway] if sample.gateway is not None else []) + rows


def headline(sample: Any) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(sample.time))
    top = ", ".join(f"{p.endpoint} {rate(p.bytes_s)}" for p in sample.top(3)) or "none"
    return (f"lab {sample.lab} on {sample.bridge} at {stamp} ({sample.interval:.2f}s): "
            f"{rate(sample.total_bytes_s)} {_pps(sample.total_packets_s)} pkt/s across the "
            f"bridge; top: {top}")


def sample_text(sample: Any) -> str:
    hosts = getattr(sample, "hosts", None)
    text = headline(sample) + "\n" + text_table(_headers(HEADERS, hosts),
                                                [_row(p, hosts) for p in _rows(sample)])
    for name, why in sample.missing:
        text += f"\n  {name}: not watched ({why})"
    return text


def sample_html(sample: Any) -> str:
    rows = _rows(sample)
    classes = ["up" if p.bytes_s > 0 else "" for p in rows]
    hosts = getattr(sample, "hosts", None)
    out = table(_headers(HEADERS, hosts), [_row(p, hosts) for p in rows],
                caption=headline(sample), row_classes=classes)
    if sample.missing:
        out += "<ul>" + "".join(f"<li>{escape(n)}: not watched ({escape(w)})</li>"
                                for n, w in sample.missing) + "</ul>"
    return out


def top_screen(sample: Any, *, tty: bool, limit: int | None = None) -> str:
    """One refresh of the CLI's monitor: redraw in place on a terminal, else a plain block."""
    rows = _rows(sample)
    if limit is not None:
        rows = rows[:limit]
    hosts = getattr(sample, "hosts", None)
    body = headline(sample) + "\n" + text_table(_headers(HEADERS, hosts),
                                                [_row(p, hosts) for p in rows]) + "\n"
    return (CLEAR + body) if tty else body + "\n"


SUMMARY_HEADERS = ["endpoint", "kind", "port", "sent", "received", "mean", "peak", "errors",
                   "drops"]


def _summary_rows(report: Any) -> list[list[str]]:
    hosts = getattr(report, "hosts", None)
    return [[r.endpoint, r.kind] + ([hosts.get(r.endpoint, "")] if hosts else []) + [
             r.port, size(r.tx_bytes), size(r.rx_bytes), rate(r.mean_bytes_s),
             rate(r.peak_bytes_s), f"{r.errors:.0f}", f"{r.drops:.0f}"]
            for r in report.summary()]


def report_headline(report: Any) -> str:
    top = ", ".join(report.top(3)) or "none"
    return (f"traffic of lab {report.lab} on {report.bridge}: {len(report.samples)} samples "
            f"over {report.duration:.1f}s; top talkers: {top}")


def report_text(report: Any) -> str:
    return report_headline(report) + "\n" + text_table(
        _headers(SUMMARY_HEADERS, getattr(report, "hosts", None)), _summary_rows(report))


def report_html(report: Any) -> str:
    out = table(_headers(SUMMARY_HEADERS, getattr(report, "hosts", None)), _summary_rows(report),
                caption=report_headline(report))
    if report.samples:
        fig = plot_traffic(report)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        out += (f'<img alt="traffic of {escape(report.lab)}" src="data:image/png;base64,'
                f'{base64.b64encode(buf.getvalue()).decode()}"/>')
    return STYLE + out if not out.startswith(STYLE) else out


def plot_traffic(report: Any, *, top: int = 6, figsize: tuple[float, float] = (7.5, 3.2)) -> Any:
    """The busiest endpoints' rates (bit/s, both ways) over time, and the gateway's."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=80)
    ax = fig.add_subplot(1, 1, 1)
    names = report.top(top)
    if any(s.gateway is not None and s.gateway.bytes_s > 0 for s in report.samples):
        names = names + ["gateway"]
    t0 = report.samples[0].time - report.samples[0].interval if report.samples else 0.0
    for name in names:
        pts = report.series(name)
        if pts:
            ax.plot([t - t0 for t, _ in pts], [b * 8 for _, b in pts], label=name,
                    linewidth=1.4, linestyle="--" if name == "gateway" else "-")
    from matplotlib.ticker import EngFormatter

    ax.yaxis.set_major_formatter(EngFormatter(unit="bit/s"))
    ax.set_xlabel("seconds")
    ax.set_ylabel("both ways")
    ax.set_title(f"lab {report.lab}: traffic per endpoint", fontsize=10)
    ax.grid(True, alpha=0.3)
    if names:
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


__all__ = ["plot_traffic", "rate", "report_html", "report_text", "sample_html", "sample_text",
           "size", "top_screen"]
