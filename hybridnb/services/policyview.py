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

This module reads results and a :class:`~hybridnb.core.policy.Policy`; it touches nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from typing import Any, Iterable

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
