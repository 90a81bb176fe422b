"""The connectivity matrix: what every endpoint reached, per check, with round-trip times.

A probe run produces one :class:`ProbeResult` per *check* (``icmp``, ``tcp``, ``tcp/5432``,
``udp``, ``http``, ``dns``…), per ordered pair (source → target): ``ok`` is True (it worked),
False (it failed — ``reason`` says why: ``timeout``, ``refused``, ``network unreachable``,
``HTTP 503``, ``NXDOMAIN``…) or None (it was not attempted — e.g. no responder could be placed
in a VM).  ``rtts`` are the samples in seconds (kernel receive timestamps for ICMP).

:class:`ConnectivityMatrix` holds a run's results in a deterministic order and renders itself
as text (``to_text()``/``repr``) and as a coloured HTML grid (``_repr_html_``); it exports
plain ``records()`` and ``to_json()``, answers ``lookup()`` for expectation checking
(:func:`hybridnb.core.expect.evaluate`), and draws latency plots through
:mod:`hybridnb.render.latency` (matplotlib, imported only then).

This module is plain data: no host access.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from html import escape
from typing import Any, Iterable, Sequence


def percentile(samples: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of ``samples``; None when empty."""
    if not samples:
        return None
    s = sorted(samples)
    rank = max(1, math.ceil(q / 100.0 * len(s)))
    return s[min(rank, len(s)) - 1]


def median(samples: Sequence[float]) -> float | None:
    if not samples:
        return None
    s = sorted(samples)
    n = len(s)
    mid = n // 2
    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2


@dataclass(frozen=True)
class ProbeResult:
    """One check from one source to one target."""

    check: str                      # as requested: "icmp", "tcp", "tcp/5432", "http", "dns"…
    source: str
    target: str
    ok: bool | None                 # None: not attempted (see reason)
    reason: str = ""                # why it failed or was skipped; "" when ok
    rtts: tuple[float, ...] = ()    # seconds, one per answered attempt
    sent: int = 0
    received: int = 0
    port: int | None = None
    address: str = ""               # the address probed (the target's, or the DNS server's)
    detail: str = ""                # e.g. "HTTP 200", "10.0.1.5", "real service"

    @property
    def protocol(self) -> str:
        return self.check.split("/", 1)[0]

    @property
    def status(self) -> str:
        return "skip" if self.ok is None else ("ok" if self.ok else "fail")

    @property
    def rtt_min(self) -> float | None:
        return min(self.rtts) if self.rtts else None

    @property
    def rtt_median(self) -> float | None:
        return median(self.rtts)

    @property
    def rtt_p99(self) -> float | None:
        return percentile(self.rtts, 99)

    @property
    def loss(self) -> float | None:
        return None if not self.sent else 1.0 - self.received / self.sent

    def to_record(self) -> dict[str, Any]:
        return {
            "check": self.check, "protocol": self.protocol, "port": self.port,
            "source": self.source, "target": self.target, "address": self.address,
            "status": self.status, "ok": self.ok, "reason": self.reason,
            "sent": self.sent, "received": self.received,
            "rtt_min_ms": _ms(self.rtt_min), "rtt_median_ms": _ms(self.rtt_median),
            "rtt_p99_ms": _ms(self.rtt_p99), "rtts_ms": [_ms(r) for r in self.rtts],
            "detail": self.detail,
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 4)


def _fmt_ms(seconds: float | None) -> str:
    from hybridnb.render.html import format_ms

    return format_ms(None if seconds is None else seconds * 1000.0)


@dataclass
class ConnectivityMatrix:
    """All results of one probe run.

    ``sources`` and ``targets`` fix the row and column order (targets usually end with the
    gateway); ``checks`` the order of the grids; ``duration`` is the wall time of the run.
    """

    results: list[ProbeResult]
    sources: list[str]
    targets: list[str]
    checks: list[str]
    duration: float = 0.0
    timeout: float = 0.0
    count: int = 0
    _index: dict[tuple[str, str, str], ProbeResult] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {(r.check, r.source, r.target): r for r in self.results}

    @classmethod
    def from_results(cls, results: Iterable[ProbeResult], **kw: Any) -> "ConnectivityMatrix":
        """Build a matrix from results alone, deriving order from first appearance."""
        rs = list(results)
        def order(values: Iterable[str]) -> list[str]:
            return list(dict.fromkeys(values))
        return cls(results=rs, sources=kw.pop("sources", order(r.source for r in rs)),
                   targets=kw.pop("targets", order(r.target for r in rs)),
                   checks=kw.pop("checks", order(r.check for r in rs)), **kw)

    # -- queries ---------------------------------------------------------------------------

    def get(self, check: str, source: str, target: str) -> ProbeResult | None:
        return self._index.get((check, source, target))

    def lookup(self, protocol: str, source: str, target: str,
               port: int | None = None) -> ProbeResult | None:
        """The result for ``protocol`` (and ``port``, when given) between two endpoints —
        the exact check ``tcp/5432`` first, else any ``tcp`` result that probed that port."""
        if port is not None:
            exact = self.get(f"{protocol}/{port}", source, target)
            if exact is not None:
                return exact
        for check in self.checks:
            if check.split("/", 1)[0] != protocol:
                continue
            r = self.get(check, source, target)
            if r is not None and (port is None or r.port == port):
                return r
        return None

    def of(self, check: str) -> list[ProbeResult]:
        return [r for r in self.results if r.check == check]

    def failures(self, check: str | None = None) -> list[ProbeResult]:
        return [r for r in self.results if r.ok is False and (check is None or r.check == check)]

    @property
    def ok(self) -> bool:
        """True when nothing failed (skipped checks do not count as failures)."""
        return not self.failures()

    def counts(self, check: str | None = None) -> dict[str, int]:
        out = {"ok": 0, "fail": 0, "skip": 0}
        for r in self.results:
            if check is None or r.check == check:
                out[r.status] += 1
        return out

    def summary(self) -> str:
        c = self.counts()
        return (f"{len(self.results)} probes over {len(self.checks)} check"
                f"{'s' if len(self.checks) != 1 else ''} in {self.duration * 1000:.0f} ms: "
                f"{c['ok']} ok, {c['fail']} failed, {c['skip']} skipped")

    # -- export ----------------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        return [r.to_record() for r in self.results]

    def to_json(self, **kw: Any) -> str:
        doc = {"duration_s": round(self.duration, 6), "timeout_s": self.timeout,
               "count": self.count, "sources": self.sources, "targets": self.targets,
               "checks": self.checks, "results": self.records()}
        return json.dumps(doc, **({"indent": 2} | kw))

    # -- text ------------------------------------------------------------------------------

    def _cell_text(self, r: ProbeResult | None) -> str:
        if r is None:
            return "."
        if r.ok:
            return _fmt_ms(r.rtt_median) if r.rtts else "ok"
        return "FAIL" if r.ok is False else "skip"

    def grid_text(self, check: str) -> str:
        """One check's grid: rows are sources, columns targets; ok cells show the median
        RTT in ms, failures FAIL, skipped checks skip, pairs not probed a dot."""
        from hybridnb.render.html import text_table

        grid = self.grid(check)
        rows = [[row["source"]] + [cell["text"] for cell in row["cells"]]
                for row in grid["rows"]]
        c = grid["counts"]
        head = (f"{check}: {c['ok']} ok, {c['fail']} failed, {c['skip']} skipped "
                f"(cells: median RTT in ms)")
        return head + "\n" + text_table(["from \\ to"] + self.targets, rows)

    def grid(self, check: str) -> dict[str, Any]:
        """One check's grid as plain data (what the text and HTML grids and the lab report
        show): the counts, the targets, and per source one cell per target with its status
        (``ok``/``fail``/``skip``, ``none`` when the pair was not probed), the text of the
        text grid (median RTT in ms, ``FAIL``, ``skip``, ``.``) and the detail line."""
        rows = []
        for src in self.sources:
            cells = []
            for dst in self.targets:
                r = self.get(check, src, dst)
                cells.append({"target": dst, "status": "none" if r is None else r.status,
                              "text": self._cell_text(r),
                              "title": "" if r is None else _cell_tip(r)})
            rows.append({"source": src, "cells": cells})
        return {"check": check, "counts": self.counts(check), "targets": list(self.targets),
                "rows": rows}

    def to_text(self, checks: Sequence[str] | None = None, *, max_reasons: int = 20) -> str:
        parts = [self.summary()]
        for check in checks or self.checks:
            parts.append(self.grid_text(check))
        bad = [r for r in self.results if r.ok is not True
               and (checks is None or r.check in checks)]
        if bad:
            lines = ["not ok:"]
            for r in bad[:max_reasons]:
                lines.append(f"  {r.check:<9} {r.source} -> {r.target}: {r.status} ({r.reason})")
            if len(bad) > max_reasons:
                lines.append(f"  … and {len(bad) - max_reasons} more")
            parts.append("\n".join(lines))
        return "\n\n".join(parts)

    def __repr__(self) -> str:
        return self.to_text()

    # -- html ------------------------------------------------------------------------------

    def _cell_html(self, r: ProbeResult | None) -> str:
        if r is None:
            return '<td style="background:#f3f3f3"></td>'
        tip = _cell_tip(r)
        if r.ok:
            text = _fmt_ms(r.rtt_median) if r.rtts else "ok"
            return f'<td class="ok" title="{escape(tip)}">{text}</td>'
        if r.ok is False:
            return f'<td class="fail" title="{escape(tip)}">✗ {escape(_short(r.reason))}</td>'
        return f'<td style="background:#eeeeee;color:#777" title="{escape(tip)}">skip</td>'

    def grid_html(self, check: str) -> str:
        from hybridnb.render.html import STYLE

        c = self.counts(check)
        caption = f"{check}: {c['ok']} ok, {c['fail']} failed, {c['skip']} skipped (median ms)"
        head = "".join(f"<th>{escape(t)}</th>" for t in self.targets)
        rows = []
        for src in self.sources:
            cells = "".join(self._cell_html(self.get(check, src, dst)) for dst in self.targets)
            rows.append(f"<tr><th>{escape(src)}</th>{cells}</tr>")
        return (STYLE + f'<table class="hnb"><caption>{escape(caption)}</caption>'
                f"<tr><th>from \\ to</th>{head}</tr>{''.join(rows)}</table>")

    def _repr_html_(self) -> str:
        parts = [f"<div><b>{escape(self.summary())}</b>"]
        parts += [self.grid_html(check) for check in self.checks]
        parts.append("</div>")
        return "".join(parts)

    # -- plots -----------------------------------------------------------------------------

    def heatmap(self, check: str = "icmp", **kw: Any) -> Any:
        """A matplotlib Figure: median RTT per pair (see :mod:`hybridnb.render.latency`)."""
        from hybridnb.render.latency import heatmap

        return heatmap(self, check, **kw)

    def distribution(self, check: str = "icmp", **kw: Any) -> Any:
        """A matplotlib Figure: the RTT samples of each pair (box plot)."""
        from hybridnb.render.latency import distribution

        return distribution(self, check, **kw)


def _cell_tip(r: ProbeResult) -> str:
    """The detail line of one cell (the HTML grid's tooltip, the report's cell title)."""
    if r.ok:
        return (f"{r.check} {r.source} → {r.target}: min {_fmt_ms(r.rtt_min)} / "
                f"median {_fmt_ms(r.rtt_median)} / p99 {_fmt_ms(r.rtt_p99)} ms, "
                f"{r.received}/{r.sent}" + (f", {r.detail}" if r.detail else ""))
    return f"{r.check} {r.source} → {r.target}: {r.reason}"


def _short(reason: str, n: int = 14) -> str:
    return reason if len(reason) <= n else reason[: n - 1] + "…"
