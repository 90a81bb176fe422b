"""The connectivity matrix: what every endpoint reached, per check, with round-trip times.

A probe run produces one :class:`ProbeResult` per *check* (``icmp``, ``tcp``, ``tcp/5432``,
``udp``, ``http``, ``dns``…), per ordered pair (source → target): ``ok`` is True (it worked),
False (it failed — ``reason`` says why: ``timeout``, ``refused``, ``network unreachable``,
``HTTP 503``, ``NXDOMAIN``…) or None (it was not attempted — e.g. no responder could be placed
in a VM).  ``rtts`` are the samples in seconds (kernel receive timestamps for ICMP).

:class:`ConnectivityMatrix` holds a run's results in a deterministic order and renders itself
as text (``to_text()``/``repr``) and as coloured HTML grids (``_repr_html_``).  Readable at any
size: a small lab (up to :data:`GRID_MAX` targets) shows one grid per check; a bigger one a
table per check (ok/failed/skipped, RTTs) and every failure, grouped — ``h25 -> every target
(40): fail (timeout)`` is one line, not forty (``verbose=True``: the grids and every line,
whatever the size).  It exports
plain ``records()`` and ``to_json()``, answers ``lookup()`` for expectation checking
(:func:`hybridnb.core.expect.evaluate`), and draws latency plots through
:mod:`hybridnb.render.latency` (matplotlib, imported only then).

A lab with a policy has its matrix *judged* (:func:`hybridnb.services.policyview.judge_matrix`
fills :attr:`ConnectivityMatrix.judged`): a probe the policy denies and that failed is
``blocked`` — expected, shown with the deciding rule, not counted among the failures — and a
denied probe that got through is a ``leak``, which makes the matrix not ok.

This module is plain data: no host access.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from html import escape
from typing import Any, Iterable, NamedTuple, Sequence


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


_new = object.__new__


def fast_result(check: str, source: str, target: str, ok: bool | None, reason: str,
                rtts: tuple[float, ...], sent: int, received: int, port: int | None,
                address: str, detail: str) -> ProbeResult:
    """A :class:`ProbeResult` made without the frozen dataclass's ``__init__`` (which sets
    each field through ``object.__setattr__``): the same object, ~3x faster — for engines
    that make hundreds of thousands of them.  Every field, positional."""
    r = _new(ProbeResult)
    d = r.__dict__
    d["check"] = check
    d["source"] = source
    d["target"] = target
    d["ok"] = ok
    d["reason"] = reason
    d["rtts"] = rtts
    d["sent"] = sent
    d["received"] = received
    d["port"] = port
    d["address"] = address
    d["detail"] = detail
    return r


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 4)


def _fmt_ms(seconds: float | None) -> str:
    from hybridnb.core.tables import format_ms

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
    #: how it renders by default: every grid and line (True), or by size (False)
    verbose: bool = field(default=False, compare=False)
    #: the lab policy's judgement, ``(check, source, target) -> (status, rule)`` with status
    #: ``blocked`` (denied, failed) or ``leak`` (denied, passed); empty without a policy
    judged: dict[tuple[str, str, str], tuple[str, str]] = field(default_factory=dict,
                                                                compare=False)
    #: endpoint (and ``gateway``) → the host it runs on, for a lab with ``hosts:``
    #: (:func:`hybridnb.core.hostview.host_of`); empty for a one-machine lab
    hosts: dict[str, str] = field(default_factory=dict, compare=False)
    #: host → where its share of the matrix ran, when the run was split into shares
    #: (:mod:`hybridnb.services.probe.coordinate`): ``where`` (the runner's words or ``this
    #: process``), ``engine`` (``fast``/``portable``), ``process`` (pid, Python, namespace
    #: inodes of a share in a process of its own); empty for a one-process run
    shares: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)
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

    def mark(self, r: ProbeResult) -> tuple[str, str] | None:
        """The policy's judgement of a result: ``("blocked"|"leak", rule)`` or None."""
        return self.judged.get((r.check, r.source, r.target)) if self.judged else None

    def status_of(self, r: ProbeResult) -> str:
        """``ok``, ``fail``, ``skip`` — or ``blocked`` when the policy denies it and it
        failed (a ``leak`` stays ``ok``: it did get through)."""
        mark = self.mark(r)
        return "blocked" if mark is not None and mark[0] == "blocked" else r.status

    def failures(self, check: str | None = None) -> list[ProbeResult]:
        """Results that failed and should not have (a ``blocked`` one is expected)."""
        return [r for r in self.results if r.ok is False and (check is None or r.check == check)
                and self.status_of(r) != "blocked"]

    def blocked(self, check: str | None = None) -> list[ProbeResult]:
        """Results the lab's policy denies that failed, as it says."""
        return [r for r in self.results if (check is None or r.check == check)
                and self.status_of(r) == "blocked"]

    def leaks(self, check: str | None = None) -> list[ProbeResult]:
        """Results the lab's policy denies that got through anyway."""
        return [r for r in self.results if (check is None or r.check == check)
                and (self.mark(r) or ("",))[0] == "leak"]

    @property
    def ok(self) -> bool:
        """True when nothing failed unexpectedly (skipped checks and probes blocked by the
        policy do not count as failures; a probe that leaked through a deny does)."""
        return not self.failures() and not self.leaks()

    def counts(self, check: str | None = None) -> dict[str, int]:
        """ok, fail, skip — and ``blocked`` (not in ``fail``) when the matrix is judged."""
        out = {"ok": 0, "fail": 0, "skip": 0}
        if self.judged:
            out["blocked"] = 0
        for r in self.results:
            if check is None or r.check == check:
                out[self.status_of(r)] += 1
        return out

    def _counted(self, c: dict[str, int]) -> str:
        blocked = f"{c['blocked']} blocked by the policy, " if "blocked" in c else ""
        leaks = len(self.leaks()) if self.judged else 0
        leaked = f" ({leaks} leaked through a deny)" if leaks else ""
        return f"{c['ok']} ok{leaked}, {blocked}{c['fail']} failed, {c['skip']} skipped"

    def summary(self) -> str:
        return (f"{len(self.results)} probes over {len(self.checks)} check"
                f"{'s' if len(self.checks) != 1 else ''} in {self.duration * 1000:.0f} ms: "
                + self._counted(self.counts()))

    # -- hosts (a lab spread over machines) ------------------------------------------------

    @property
    def spread(self) -> bool:
        """Whether the probed endpoints live on more than one host."""
        return len(set(self.hosts.values())) > 1

    def across_hosts(self) -> dict[str, dict[str, int]]:
        """Counts per where a probe crossed: ``same host``, ``cross host`` and each ordered
        host pair (``a -> b``); {} for a one-machine lab."""
        from hybridnb.core.hostview import cross_host_counts

        if not self.spread:
            return {}
        return cross_host_counts(self.results, self.hosts, self.status_of)

    def host_lines(self) -> list[str]:
        """Which endpoints live where, and the probes across hosts and within one ([] for a
        one-machine lab)."""
        if not self.spread:
            return []
        by_host: dict[str, list[str]] = {}
        for name in dict.fromkeys(self.sources + self.targets):
            if name in self.hosts:
                by_host.setdefault(self.hosts[name], []).append(name)
        lines = ["hosts: " + "; ".join(f"{h}: {compact_names(n)}"
                                       for h, n in sorted(by_host.items()))]
        for where, c in self.across_hosts().items():
            lines.append(f"{'  ' if '->' in where else ''}{where}: {self._counted(c)}")
        return lines + self.share_lines()

    def share_lines(self) -> list[str]:
        """Where each host's share ran and with which engine ([] for a one-process run)."""
        return [f"share of {h}: {info.get('where', '?')}, {info.get('engine', '?')} engine"
                for h, info in sorted(self.shares.items())]

    def label(self, name: str) -> str:
        """An end's name as the grids and lines show it: ``web@a`` when the lab spans hosts
        (a group's text, ``every target (4)``, is left as it is)."""
        return f"{name}@{self.hosts[name]}" if self.spread and name in self.hosts else name

    # -- export ----------------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        return [r.to_record() for r in self.results]

    def to_json(self, **kw: Any) -> str:
        doc: dict[str, Any] = {
            "duration_s": round(self.duration, 6), "timeout_s": self.timeout,
            "count": self.count, "sources": self.sources, "targets": self.targets,
            "checks": self.checks, "results": self.records()}
        if self.hosts:
            doc["hosts"] = dict(sorted(self.hosts.items()))
            doc["across_hosts"] = self.across_hosts()
        if self.shares:
            doc["shares"] = {h: {k: v for k, v in sorted(info.items()) if k != "process"}
                             for h, info in sorted(self.shares.items())}
        if self.judged:
            doc["policy"] = [{"check": c, "source": s, "target": t, "status": st, "rule": rule}
                             for (c, s, t), (st, rule) in sorted(self.judged.items())]
        return json.dumps(doc, **({"indent": 2} | kw))

    # -- text ------------------------------------------------------------------------------

    def _cell_text(self, r: ProbeResult | None) -> str:
        if r is None:
            return "."
        if self.status_of(r) == "blocked":
            return "blocked"
        if self.mark(r) is not None:
            return "LEAK"
        if r.ok:
            return _fmt_ms(r.rtt_median) if r.rtts else "ok"
        return "FAIL" if r.ok is False else "skip"

    def grid_text(self, check: str) -> str:
        """One check's grid: rows are sources, columns targets; ok cells show the median
        RTT in ms, failures FAIL, skipped checks skip, pairs not probed a dot."""
        from hybridnb.core.tables import text_table

        grid = self.grid(check)
        rows = [[self.label(row["source"])] + [cell["text"] for cell in row["cells"]]
                for row in grid["rows"]]
        head = f"{check}: {self._counted(grid['counts'])} (cells: median RTT in ms)"
        return head + "\n" + text_table(["from \\ to"] + [self.label(t) for t in self.targets],
                                        rows)

    def grid(self, check: str) -> dict[str, Any]:
        """One check's grid as plain data (what the text and HTML grids and the lab report
        show): the counts, the targets, and per source one cell per target with its status
        (``ok``/``fail``/``skip``, ``blocked`` when the lab's policy denies it, ``none`` when
        the pair was not probed), the text of the text grid (median RTT in ms, ``FAIL``,
        ``blocked``, ``skip``, ``.``) and the detail line."""
        rows = []
        for src in self.sources:
            cells = []
            for dst in self.targets:
                r = self.get(check, src, dst)
                cells.append({"target": dst, "status": "none" if r is None else self.status_of(r),
                              "text": self._cell_text(r),
                              "title": "" if r is None else self._tip(r)})
            rows.append({"source": src, "cells": cells})
        return {"check": check, "counts": self.counts(check), "targets": list(self.targets),
                "rows": rows}

    def check_rows(self, checks: Sequence[str] | None = None) -> list[list[str]]:
        """One row per check: ok, failed, skipped, median and p99 of the pairs' median RTTs."""
        rows = []
        for check in checks or self.checks:
            c = self.counts(check)
            rtts = [r.rtt_median for r in self.of(check) if r.ok and r.rtt_median is not None]
            rows.append([check, str(c["ok"]), str(c["fail"]), str(c["skip"]),
                         _fmt_ms(median(rtts)), _fmt_ms(percentile(rtts, 99))])
        return rows

    def problem_lines(self, checks: Sequence[str] | None = None) -> list[str]:
        """Every result that is not ok, grouped: one line per source or target that fails
        the same way towards many (``h25 -> every target (40): fail (timeout)``)."""
        lines = []
        for check in checks or self.checks:
            probed = [r for r in self.of(check)]
            for status in ("fail", "skip", "leak"):
                by_reason: dict[str, list[ProbeResult]] = {}
                for r in probed:
                    mark = self.mark(r)
                    if status == "leak" and mark is not None and mark[0] == "leak":
                        by_reason.setdefault(f"the policy denies it: {mark[1]}", []).append(r)
                    elif r.status == status and self.status_of(r) == status:
                        by_reason.setdefault(r.reason, []).append(r)
                for reason, bad in sorted(by_reason.items()):
                    for srcs, dsts in _group_pairs(bad, probed):
                        lines.append(f"  {check:<9} {self.label(srcs)} -> {self.label(dsts)}: "
                                     f"{status} ({reason})")
        return lines

    def blocked_lines(self, checks: Sequence[str] | None = None) -> list[str]:
        """The probes the policy blocked as it says, grouped by the deciding rule."""
        lines = []
        for check in checks or self.checks:
            probed = self.of(check)
            by_rule: dict[str, list[ProbeResult]] = {}
            for r in self.blocked(check):
                by_rule.setdefault((self.mark(r) or ("", ""))[1], []).append(r)
            for rule, bad in sorted(by_rule.items()):
                for srcs, dsts in _group_pairs(bad, probed):
                    lines.append(f"  {check:<9} {self.label(srcs)} -> {self.label(dsts)}: "
                                 f"blocked by {rule}")
        return lines

    def to_text(self, checks: Sequence[str] | None = None, *, verbose: bool | None = None,
                max_lines: int = 60) -> str:
        """The summary line; the grids (verbose, or up to :data:`GRID_MAX` targets) or a
        table per check; then every result that is not ok, grouped (at most ``max_lines``
        lines unless verbose)."""
        from hybridnb.core.tables import text_table

        verbose = self.verbose if verbose is None else verbose
        parts = ["\n".join([self.summary()] + self.host_lines())]
        if verbose or len(self.targets) <= GRID_MAX:
            parts += [self.grid_text(check) for check in checks or self.checks]
        else:
            parts.append(text_table(CHECK_HEADERS, self.check_rows(checks)))
        lines = self.problem_lines(checks)
        if lines:
            shown = lines if verbose else lines[:max_lines]
            if len(shown) < len(lines):
                shown = shown + [f"  … and {len(lines) - len(shown)} more lines "
                                 "(--verbose or --json: all)"]
            parts.append("\n".join(["not ok:"] + shown))
        blocked = self.blocked_lines(checks)
        if blocked:
            shown = blocked if verbose else blocked[:max_lines]
            more = [f"  … and {len(blocked) - len(shown)} more lines"] if len(shown) < len(
                blocked) else []
            parts.append("\n".join(["blocked by the policy, as it says:"] + shown + more))
        if not lines and not blocked and not verbose and len(self.targets) > GRID_MAX:
            parts.append(f"every probe answered ({len(self.sources)} sources, "
                         f"{len(self.targets)} targets; --verbose: the grids, --json: every "
                         "result)")
        return "\n\n".join(parts)

    def __repr__(self) -> str:
        return self.to_text()

    # -- html ------------------------------------------------------------------------------

    def _tip(self, r: ProbeResult) -> str:
        mark = self.mark(r)
        if mark is None:
            return _cell_tip(r)
        if mark[0] == "blocked":
            return (f"{r.check} {r.source} → {r.target}: blocked by {mark[1]} (the policy "
                    f"denies it; {r.reason})")
        return f"{r.check} {r.source} → {r.target}: LEAK — the policy denies it ({mark[1]})"

    def _cell_html(self, r: ProbeResult | None) -> str:
        if r is None:
            return '<td style="background:#f3f3f3"></td>'
        tip = self._tip(r)
        if self.status_of(r) == "blocked":
            rule = escape((self.mark(r) or ("", ""))[1])
            return (f'<td style="background:#e2e3e5;color:#555" title="{escape(tip)}">'
                    f"⊘ {rule}</td>")
        if self.mark(r) is not None:
            return f'<td class="fail" title="{escape(tip)}">LEAK</td>'
        tip = _cell_tip(r)
        if r.ok:
            text = _fmt_ms(r.rtt_median) if r.rtts else "ok"
            return f'<td class="ok" title="{escape(tip)}">{text}</td>'
        if r.ok is False:
            return f'<td class="fail" title="{escape(tip)}">✗ {escape(_short(r.reason))}</td>'
        return f'<td style="background:#eeeeee;color:#777" title="{escape(tip)}">skip</td>'

    def grid_html(self, check: str) -> str:
        from hybridnb.core.tables import STYLE

        caption = f"{check}: {self._counted(self.counts(check))} (median ms)"
        head = "".join(f"<th>{escape(self.label(t))}</th>" for t in self.targets)
        rows = []
        for src in self.sources:
            cells = "".join(self._cell_html(self.get(check, src, dst)) for dst in self.targets)
            rows.append(f"<tr><th>{escape(self.label(src))}</th>{cells}</tr>")
        return (STYLE + f'<table class="hnb"><caption>{escape(caption)}</caption>'
                f"<tr><th>from \\ to</th>{head}</tr>{''.join(rows)}</table>")

    def _repr_html_(self) -> str:
        from hybridnb.core.tables import table

        parts = [f"<div><b>{escape(self.summary())}</b>"]
        if self.spread:
            parts.append("<br>" + "<br>".join(escape(x) for x in self.host_lines()))
        if self.verbose or len(self.targets) <= GRID_MAX:
            parts += [self.grid_html(check) for check in self.checks]
        else:
            parts.append(table(CHECK_HEADERS, self.check_rows(), caption="per check"))
        lines = self.problem_lines()
        if lines:
            shown = lines if self.verbose else lines[:60]
            more = len(lines) - len(shown)
            parts.append("<pre>not ok:\n" + escape("\n".join(shown)) +
                         (f"\n  … and {more} more lines" if more else "") + "</pre>")
        blocked = self.blocked_lines()
        if blocked:
            shown = blocked if self.verbose else blocked[:60]
            more = len(blocked) - len(shown)
            parts.append("<pre>blocked by the policy, as it says:\n" +
                         escape("\n".join(shown)) +
                         (f"\n  … and {more} more lines" if more else "") + "</pre>")
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


#: Up to this many targets, the text and HTML show one grid per check by default.
GRID_MAX = 10
CHECK_HEADERS = ["check", "ok", "failed", "skipped", "median RTT ms", "p99 RTT ms"]


def _natural(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def compact_names(names: Iterable[str]) -> str:
    """Names in natural order, runs of three or more numbered alike shortened:
    ``h01..h05, h07, web``."""
    out: list[str] = []
    run: list[tuple[str, int, str]] = []        # (prefix, number, name) of the current run

    def flush() -> None:
        out.extend([f"{run[0][2]}..{run[-1][2]}"] if len(run) >= 3 else [n for *_, n in run])
        run.clear()

    for name in sorted(set(names), key=_natural):
        m = re.fullmatch(r"(.*?)(\d+)", name)
        if m is None:
            flush()
            out.append(name)
            continue
        prefix, digits = m.group(1), m.group(2)
        if run and not _follows(run[-1], prefix, digits):
            flush()
        run.append((prefix, int(digits), name))
    flush()
    return ", ".join(out)


def _follows(last: tuple[str, int, str], prefix: str, digits: str) -> bool:
    """``prefix+digits`` comes right after ``last`` (``h09`` → ``h10``, ``h9`` → ``h10``,
    not ``h9`` → ``h010``)."""
    lprefix, lnum, lname = last
    ldigits = lname[len(lprefix):]
    padded = len(digits) > 1 and digits[0] == "0"
    lpadded = len(ldigits) > 1 and ldigits[0] == "0"
    same_style = len(digits) == len(ldigits) or not (padded or lpadded)
    return lprefix == prefix and lnum + 1 == int(digits) and same_style


class _Group(NamedTuple):
    """A row (one source, many targets) or a column (many sources, one target)."""

    size: int
    is_col: bool
    name: str
    members: set[str]


def _group_pairs(bad: Sequence[ProbeResult], probed: Sequence[ProbeResult]
                 ) -> list[tuple[str, str]]:
    """(sources text, targets text) lines covering every (source, target) of ``bad``: the
    biggest row or column first, then what is left, pair by pair."""
    pairs = {(r.source, r.target) for r in bad}
    if len(pairs) == len(probed) and len(pairs) > 1:
        return [(f"every source ({len({s for s, _ in pairs})})",
                 f"every target ({len({t for _, t in pairs})})")]
    targets_of: dict[str, set[str]] = {}
    sources_of: dict[str, set[str]] = {}
    for r in probed:
        targets_of.setdefault(r.source, set()).add(r.target)
        sources_of.setdefault(r.target, set()).add(r.source)
    rows: dict[str, set[str]] = {}
    cols: dict[str, set[str]] = {}
    for s, t in pairs:
        rows.setdefault(s, set()).add(t)
        cols.setdefault(t, set()).add(s)
    groups = [_Group(len(ts), False, s, ts) for s, ts in rows.items()] + \
        [_Group(len(ss), True, t, ss) for t, ss in cols.items()]
    groups.sort(key=lambda g: (-g.size, g.is_col, _natural(g.name)))
    out: list[tuple[str, str]] = []
    left = set(pairs)
    for size, is_col, name, members in groups:
        cover = {(m, name) if is_col else (name, m) for m in members} & left
        if len(cover) < 2 or size < 2:
            continue
        left -= cover
        others = {s for s, _ in cover} if is_col else {t for _, t in cover}
        every = sources_of[name] if is_col else targets_of[name]
        text = (f"every {'source' if is_col else 'target'} ({len(others)})"
                if others == every else compact_names(others))
        out.append((text, name) if is_col else (name, text))
    for s, t in sorted(left, key=lambda p: (_natural(p[0]), _natural(p[1]))):
        out.append((s, t))
    return out


def _cell_tip(r: ProbeResult) -> str:
    """The detail line of one cell (the HTML grid's tooltip, the report's cell title)."""
    if r.ok:
        return (f"{r.check} {r.source} → {r.target}: min {_fmt_ms(r.rtt_min)} / "
                f"median {_fmt_ms(r.rtt_median)} / p99 {_fmt_ms(r.rtt_p99)} ms, "
                f"{r.received}/{r.sent}" + (f", {r.detail}" if r.detail else ""))
    return f"{r.check} {r.source} → {r.target}: {r.reason}"


def _short(reason: str, n: int = 14) -> str:
    return reason if len(reason) <= n else reason[: n - 1] + "…"
