"""Probe results judged against the lab's policy: ``ok``, ``blocked``, ``failed`` or ``leak``.

A connectivity matrix says what reached what; a policy says what *should*.  :func:`classify`
puts them together, one :class:`Verdict` per probe result:

* ``ok``      — allowed by the policy and it worked;
* ``blocked`` — denied by the policy and it failed: expected, and the deciding rule is named
  (``rule 2``, or ``default``);
* ``failed``  — allowed by the policy, yet it failed (something other than the policy is
  wrong: a service down, a route, MTU…);
* ``leak``    — denied by the policy, yet it worked: the policy is not enforced;
* ``skip``    — the probe was not attempted.

Only ``failed`` and ``leak`` are unexpected.  A probe's flow is what its check sends: ``icmp``
an echo to the target, ``tcp``/``udp``/``http`` a connection to the port it probed, ``dns`` a
query to the lab's DNS server on the gateway (``udp/53``).  Probes *from* the gateway are
never filtered.

:func:`judge_matrix` writes the judgement into the matrix itself (``Lab.test`` does it for
a lab with a policy), so the matrix shows ``blocked`` cells with their rule and counts them
apart from the failures.  :class:`PolicyTable` is the policy with its rules' hit counters
(``Lab.policy()``); :class:`LinksView` the impairments and where they are applied
(``Lab.links()``).

This module reads results and a :class:`~hybridnb.core.policy.Policy`; it touches nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from typing import Any, Iterable, Mapping

from hybridnb.core.policy import GATEWAY, Decision, Flow, Policy
from hybridnb.services.probe.matrix import ConnectivityMatrix, ProbeResult

STATUSES = ("ok", "blocked", "failed", "leak", "skip")
UNEXPECTED = ("failed", "leak")
_CELL = {"ok": "ok", "blocked": "blk", "failed": "FAIL", "leak": "LEAK", "skip": "skip"}
_COLOUR = {"ok": "#d4edda", "blocked": "#e2e3e5", "failed": "#f8d7da", "leak": "#f5c6cb",
           "skip": "#eeeeee"}


def flow_of(result: ProbeResult) -> Flow:
    """The flow a probe result's check sends (see the module docstring)."""
    proto = result.protocol
    if proto == "dns":
        return Flow(result.source, GATEWAY, "udp", 53)
    if proto == "http":
        return Flow(result.source, result.target, "tcp", result.port or 80)
    if proto in ("tcp", "udp"):
        return Flow(result.source, result.target, proto, result.port)
    return Flow(result.source, result.target, proto)


@dataclass(frozen=True)
class Verdict:
    """One probe result with the policy's decision on its flow and the resulting status."""

    result: ProbeResult
    decision: Decision | None          # None: the policy does not know an endpoint
    status: str

    @property
    def expected(self) -> bool:
        return self.status not in UNEXPECTED

    @property
    def rule(self) -> str:
        """What decided it: ``rule 2``, ``default``, ``built-in: ...`` or ``""``."""
        return self.decision.decided_by if self.decision is not None else ""

    def to_record(self) -> dict[str, Any]:
        r = self.result
        return {"check": r.check, "source": r.source, "target": r.target,
                "observed": r.status, "reason": r.reason, "status": self.status,
                "expected": self.expected,
                "policy": self.decision.verdict if self.decision is not None else None,
                "rule": self.rule}

    def __str__(self) -> str:
        r = self.result
        why = f" by {self.rule}" if self.decision is not None else ""
        tail = f" ({r.reason})" if r.reason else ""
        return (f"{r.check} {r.source} -> {r.target}: {self.status}"
                f"{'' if self.status in ('ok', 'skip') else why}{tail}")


def judge(result: ProbeResult, decision: Decision | None) -> str:
    """The status of one result given the policy's decision on its flow."""
    if result.ok is None:
        return "skip"
    allowed = decision is None or decision.allowed
    if result.ok:
        return "ok" if allowed else "leak"
    return "failed" if allowed else "blocked"


@dataclass(frozen=True)
class PolicyMatrix:
    """A connectivity matrix judged against a policy (see :func:`classify`)."""

    matrix: ConnectivityMatrix
    policy: Policy
    verdicts: tuple[Verdict, ...]

    def get(self, check: str, source: str, target: str) -> Verdict | None:
        for v in self.verdicts:
            r = v.result
            if (r.check, r.source, r.target) == (check, source, target):
                return v
        return None

    def counts(self, check: str | None = None) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for v in self.verdicts:
            if check is None or v.result.check == check:
                out[v.status] += 1
        return out

    def unexpected(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.expected]

    @property
    def ok(self) -> bool:
        """True when every probe behaved as the policy says."""
        return not self.unexpected()

    def summary(self) -> str:
        c = self.counts()
        return (f"{len(self.verdicts)} probes against the policy: {c['ok']} ok, "
                f"{c['blocked']} blocked as the policy says, {c['failed']} failed, "
                f"{c['leak']} leaked through a deny, {c['skip']} skipped")

    def records(self) -> list[dict[str, Any]]:
        return [v.to_record() for v in self.verdicts]

    def to_json(self, **kw: Any) -> str:
        return json.dumps({"summary": self.summary(), "results": self.records()},
                          **({"indent": 2} | kw))

    def grid_text(self, check: str) -> str:
        from hybridnb.core.tables import text_table

        m = self.matrix
        rows = []
        for src in m.sources:
            row = [src]
            for dst in m.targets:
                v = self.get(check, src, dst)
                row.append("." if v is None else _CELL[v.status])
            rows.append(row)
        return f"{check}:\n" + text_table(["from \\ to"] + list(m.targets), rows)

    def to_text(self) -> str:
        parts = [self.summary()] + [self.grid_text(c) for c in self.matrix.checks]
        bad = self.unexpected()
        if bad:
            parts.append("\n".join(["unexpected:"] + [f"  {v}" for v in bad]))
        return "\n\n".join(parts)

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        m = self.matrix
        parts = [f"<div><b>{escape(self.summary())}</b>"]
        for check in m.checks:
            head = "".join(f"<th>{escape(t)}</th>" for t in m.targets)
            rows = []
            for src in m.sources:
                cells = []
                for dst in m.targets:
                    v = self.get(check, src, dst)
                    if v is None:
                        cells.append("<td></td>")
                        continue
                    cells.append(f"<td style='background:{_COLOUR[v.status]}' "
                                 f"title='{escape(str(v))}'>{_CELL[v.status]}"
                                 f"{' ' + escape(v.rule) if v.status == 'blocked' else ''}</td>")
                rows.append(f"<tr><th>{escape(src)}</th>{''.join(cells)}</tr>")
            parts.append(f"<table><caption>{escape(check)}</caption><tr><th>from \\ to</th>"
                         f"{head}</tr>{''.join(rows)}</table>")
        parts.append("</div>")
        return "".join(parts)


def classify(matrix: ConnectivityMatrix, policy: Policy,
             results: Iterable[ProbeResult] | None = None) -> PolicyMatrix:
    """Judge every result of ``matrix`` against ``policy``."""
    known = set(policy.members) | {GATEWAY}
    out = []
    for r in results if results is not None else matrix.results:
        flow = flow_of(r)
        decision = (policy.decide(flow) if flow.source in known and flow.target in known
                    else None)
        out.append(Verdict(r, decision, judge(r, decision)))
    return PolicyMatrix(matrix, policy, tuple(out))


def judge_matrix(matrix: ConnectivityMatrix, policy: Policy) -> PolicyMatrix:
    """Classify ``matrix`` against ``policy`` and mark it: each probe the policy denies
    becomes ``blocked`` (it failed, as the policy says) or ``leak`` (it got through) in
    ``matrix.judged``, with the deciding rule."""
    judged = classify(matrix, policy)
    matrix.judged = {(v.result.check, v.result.source, v.result.target): (v.status, v.rule)
                     for v in judged.verdicts if v.status in ("blocked", "leak")}
    return judged


# ------------------------------------------------------------------------------ views

@dataclass(frozen=True)
class PolicyTable:
    """A lab's policy as a table of rules with their hit counters (``counters`` None: the
    backend counts nothing, or the policy is not applied), and where it stands."""

    lab: str
    policy: Policy
    counters: Mapping[str, tuple[int, int]] | None = None
    state: str = ""                      # up | missing | differs | not applied
    table: str = ""                      # the nftables table that enforces it
    note: str = ""

    def headline(self) -> str:
        n = len(self.policy.rules)
        where = f" in {self.table}" if self.table else ""
        text = (f"Policy of lab {self.lab}: {n} rule{'s' if n != 1 else ''}, default "
                f"{self.policy.default}{where} — {self.state or 'not applied'}")
        if self.counters is not None:
            text += " (packets counted since the last change)"
        return text + (f"; {self.note}" if self.note else "")

    def records(self) -> list[dict[str, Any]]:
        rows = self.policy.rows(self.counters)
        return [{k: v for k, v in r.items() if k != "key"} for r in rows]

    def warnings(self) -> list[str]:
        return [str(w) for w in self.policy.warnings]

    def to_dict(self) -> dict[str, Any]:
        return {"lab": self.lab, "state": self.state, "table": self.table,
                "default": self.policy.default, "rules": self.records(),
                "warnings": self.warnings(), "note": self.note}

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **({"indent": 2} | kw))

    def to_text(self) -> str:
        lines = self.policy.to_text(self.counters).splitlines()
        return "\n".join([self.headline()] + lines[1:])

    __repr__ = to_text
    __str__ = to_text

    def _repr_html_(self) -> str:
        from hybridnb.core.tables import table

        cols = ["rule", "from", "to", "verdict", "services", "comment"]
        if self.counters is not None:
            cols[4:4] = ["packets", "bytes"]
        records = self.records()
        rows = [[str(r[c]) for c in cols] for r in records]
        out = table(cols, rows, caption=self.headline(),
                    row_classes=["up" if r["verdict"] == "allow" else "delete"
                                 for r in records])
        if self.policy.warnings:
            out += "<ul>" + "".join(f"<li>warning: {escape(w)}</li>"
                                    for w in self.warnings()) + "</ul>"
        return out


@dataclass(frozen=True)
class LinkRow:
    endpoint: str
    kind: str
    impairments: str                     # "delay 50ms loss 1%"
    state: str                           # up | missing | differs | not applied
    where: str = ""                      # "port vethX, IFB", "in the guest"…
    dropped: int | None = None           # frames the loss rule dropped

    def to_record(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "kind": self.kind,
                "impairments": self.impairments, "state": self.state, "where": self.where,
                "dropped": self.dropped}


@dataclass(frozen=True)
class LinksView:
    """A lab's link impairments: what each endpoint's link should do, and where it is done."""

    lab: str
    rows: tuple[LinkRow, ...] = ()

    def headline(self) -> str:
        n = len(self.rows)
        up = sum(1 for r in self.rows if r.state == "up")
        return f"Links of lab {self.lab}: {n} impaired endpoint{'s' if n != 1 else ''}, {up} up"

    def records(self) -> list[dict[str, Any]]:
        return [r.to_record() for r in self.rows]

    def to_text(self) -> str:
        from hybridnb.core.tables import text_table

        cols = ["endpoint", "kind", "impairments", "state", "where", "dropped"]
        rows = [[str(r.to_record()[c]) if r.to_record()[c] is not None else "-" for c in cols]
                for r in self.rows]
        return self.headline() + ("\n" + text_table(cols, rows) if rows else "")

    __repr__ = to_text
    __str__ = to_text

    def _repr_html_(self) -> str:
        from hybridnb.core.tables import table

        cols = ["endpoint", "kind", "impairments", "state", "where", "dropped"]
        rows = [["" if r.to_record()[c] is None else str(r.to_record()[c]) for c in cols]
                for r in self.rows]
        return table(cols, rows, caption=self.headline(),
                     row_classes=["up" if r.state == "up" else "missing" for r in self.rows])


def where_applied(report: Mapping[str, Any] | None) -> str:
    """``port vethX (rate: IFB too), delay in the guest`` from a link driver's report."""
    if not report:
        return ""
    parts = [f"port {report.get('port', '?')}"]
    if report.get("ifb"):
        parts.append("rate both ways (IFB)")
    if report.get("guest"):
        parts.append("delay inside the guest")
    return ", ".join(parts)
