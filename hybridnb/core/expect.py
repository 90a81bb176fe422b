"""Declarative connectivity expectations: ``web -> db tcp/5432 ok``.

A lab file's ``expect:`` section lists what must and must not reach what.  Each line reads::

    SOURCE -> TARGET CHECK OUTCOME

* ``SOURCE`` and ``TARGET`` are endpoint names (``gateway`` names the lab's gateway as a target);
* ``CHECK`` is ``icmp``, ``tcp/PORT``, ``udp/PORT``, ``http`` or ``http/PORT``, or ``dns``
  (the source resolves ``TARGET.<domain>`` and must get the target's address);
* ``OUTCOME`` is ``ok`` (the probe must succeed) or ``blocked`` (it must fail).

:func:`parse_expectations` reads every line and reports every bad line at once (one
:class:`~hybridnb.errors.ValidationError` with a path like ``expect[2]`` and a hint).
:func:`evaluate` checks parsed expectations against probe results — anything with a
``lookup(protocol, source, target, port)`` method returning an object with ``ok`` and
``reason`` (the connectivity matrix is one) — and returns an :class:`ExpectationReport` whose
``exit_code`` is 0 when every expectation holds and 1 otherwise.

In a lab with a policy (:mod:`hybridnb.core.policy`), ``blocked`` means *blocked by the
policy*: the line holds when the probe failed and the policy denies that flow (observed
``blocked``, with the deciding rule).  A probe that fails although the policy allows it is
observed ``fail`` — something else is wrong — and does not satisfy ``blocked``; one that the
policy denies but gets through is observed ``leak`` and satisfies neither outcome.

This module is pure: no host access, no heavy imports.
"""

from __future__ import annotations

import difflib
import html
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Protocol, Sequence

from hybridnb.errors import Problem, ValidationError

if TYPE_CHECKING:  # pragma: no cover
    from hybridnb.core.policy import Decision, Policy

PROTOCOLS = ("icmp", "tcp", "udp", "http", "dns")
OUTCOMES = ("ok", "blocked")
#: Protocols whose check needs a port, and those that may carry one.
_PORT_REQUIRED = ("tcp", "udp")
_PORT_ALLOWED = ("tcp", "udp", "http")
GATEWAY = "gateway"

_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
_LINE = re.compile(
    rf"^\s*(?P<src>{_NAME})\s*->\s*(?P<dst>{_NAME})\s+(?P<check>\S+)\s+(?P<outcome>\S+)\s*$")
_CHECK = re.compile(r"^(?P<proto>[a-z]+)(?:/(?P<port>[0-9]+))?$")
_EXAMPLE = "write SOURCE -> TARGET CHECK OUTCOME, e.g. 'web -> db tcp/5432 ok'"


@dataclass(frozen=True, order=True)
class Expectation:
    """One parsed expectation line."""

    source: str
    target: str
    protocol: str
    port: int | None
    outcome: str

    @property
    def check(self) -> str:
        """The check as written: ``icmp``, ``tcp/5432``, ``http``…"""
        return self.protocol if self.port is None else f"{self.protocol}/{self.port}"

    @property
    def want_ok(self) -> bool:
        return self.outcome == "ok"

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} {self.check} {self.outcome}"


def _close(word: str, choices: Sequence[str]) -> str | None:
    match = difflib.get_close_matches(word, list(choices), n=1)
    return match[0] if match else None


def _outcome_problems(outcome: str, path: str) -> list[Problem]:
    if outcome.lower() in OUTCOMES:
        return []
    guess = _close(outcome.lower(), OUTCOMES)
    return [Problem(path, f"unknown outcome {outcome!r}",
                    f"did you mean {guess!r}?" if guess else "the outcome is 'ok' or 'blocked'")]


def _check_problems(check: str, path: str) -> tuple[str | None, int | None, list[Problem]]:
    """(protocol, port, problems) of a ``CHECK`` word."""
    cm = _CHECK.match(check.lower())
    if cm is None or cm.group("proto") not in PROTOCOLS:
        word = cm.group("proto") if cm else check.split("/")[0].lower()
        guess = _close(word, PROTOCOLS)
        return None, None, [Problem(path, f"unknown check {check!r}",
                                    (f"did you mean {guess!r}? " if guess else "") +
                                    "checks are icmp, tcp/PORT, udp/PORT, http[/PORT], dns")]
    proto = cm.group("proto")
    if cm.group("port") is None:
        if proto in _PORT_REQUIRED:
            return proto, None, [Problem(path, f"{proto} needs a port",
                                         f"write e.g. '{proto}/{5432 if proto == 'tcp' else 53}'")]
        return proto, None, []
    port = int(cm.group("port"))
    if proto not in _PORT_ALLOWED:
        return proto, port, [Problem(path, f"{proto} takes no port", f"write just {proto!r}")]
    if not 1 <= port <= 65535:
        return proto, port, [Problem(path, f"port {port} is out of range", "ports are 1-65535")]
    return proto, port, []


def _endpoint_problems(src: str, dst: str, path: str,
                       names: Sequence[str] | None) -> list[Problem]:
    problems: list[Problem] = []
    if src == dst:
        problems.append(Problem(path, f"{src!r} -> {dst!r} probes an endpoint against itself",
                                "name two different endpoints"))
    if src == GATEWAY:
        problems.append(Problem(path, "the gateway is only a target, not a source",
                                "put 'gateway' on the right of '->'"))
    if names is None:
        return problems
    known = set(names)
    for role, name in (("source", src), ("target", dst)):
        if (name == GATEWAY and role == "target") or name in known:
            continue
        guess = _close(name, sorted(known))
        problems.append(Problem(path, f"unknown {role} endpoint {name!r}",
                                f"did you mean {guess!r}?" if guess else
                                "name an endpoint of the lab"))
    return problems


def _line_problems(line: Any, path: str,
                   names: Sequence[str] | None) -> tuple[Expectation | None, list[Problem]]:
    if not isinstance(line, str):
        return None, [Problem(path, f"expected a string, got {type(line).__name__}", _EXAMPLE)]
    m = _LINE.match(line)
    if m is None:
        hint = _EXAMPLE
        if "->" not in line:
            hint = "the source and target are joined by '->'; " + _EXAMPLE
        return None, [Problem(path, f"{line.strip()!r} is not an expectation", hint)]
    src, dst, check, outcome = m.group("src", "dst", "check", "outcome")
    proto, port, problems = _check_problems(check, path)
    problems = _outcome_problems(outcome, path) + problems + \
        _endpoint_problems(src, dst, path, names)
    if problems or proto is None:
        return None, problems
    return Expectation(src, dst, proto, port, outcome.lower()), []


def parse_expectation(line: str, *, path: str = "expect",
                      names: Sequence[str] | None = None) -> Expectation:
    """Parse one line; raise :class:`ValidationError` listing what is wrong with it."""
    exp, problems = _line_problems(line, path, names)
    if problems or exp is None:
        raise ValidationError(problems)
    return exp


def parse_expectations(lines: Iterable[Any], *, names: Sequence[str] | None = None,
                       path: str = "expect", source: str | None = None) -> list[Expectation]:
    """Parse every line; report every bad one at once.

    ``names`` (the lab's endpoint names), when given, is used to reject unknown endpoints.
    """
    out: list[Expectation] = []
    problems: list[Problem] = []
    for i, line in enumerate(lines):
        exp, probs = _line_problems(line, f"{path}[{i}]", names)
        problems.extend(probs)
        if exp is not None:
            out.append(exp)
    if problems:
        raise ValidationError(problems, source=source)
    return out


# -------------------------------------------------------------------------------- evaluation

class _Result(Protocol):
    ok: bool | None
    reason: str


class ResultSource(Protocol):
    """What :func:`evaluate` needs from probe results (the connectivity matrix has it)."""

    def lookup(self, protocol: str, source: str, target: str,
               port: int | None = None) -> _Result | None: ...


@dataclass(frozen=True)
class ExpectationResult:
    """One expectation and what the probe saw."""

    expectation: Expectation
    holds: bool
    observed: str          # "ok", "fail", "skip", "missing"; with a policy "blocked", "leak"
    reason: str            # why the probe failed / why it was not observed ("" when ok)

    def to_record(self) -> dict[str, Any]:
        e = self.expectation
        return {"expectation": str(e), "source": e.source, "target": e.target,
                "check": e.check, "expected": e.outcome, "observed": self.observed,
                "holds": self.holds, "reason": self.reason}


@dataclass(frozen=True)
class ExpectationReport:
    """Every expectation with its verdict; ``exit_code`` is 0 if all hold, else 1."""

    results: tuple[ExpectationResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.holds for r in self.results)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    @property
    def failures(self) -> list[ExpectationResult]:
        return [r for r in self.results if not r.holds]

    def records(self) -> list[dict[str, Any]]:
        return [r.to_record() for r in self.results]

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.records(), **({"indent": 2} | kw))

    def summary(self) -> str:
        n = len(self.results)
        bad = len(self.failures)
        if not bad:
            return "1 expectation holds" if n == 1 else f"all {n} expectations hold"
        return f"{bad} of {n} expectation{'s' if n != 1 else ''} fail"

    def to_text(self) -> str:
        lines = [self.summary()]
        width = max((len(str(r.expectation)) for r in self.results), default=0)
        for r in self.results:
            mark = "PASS" if r.holds else "FAIL"
            line = f"  {mark}  {str(r.expectation):<{width}}  observed {r.observed}"
            if r.reason:
                line += f" ({r.reason})"
            lines.append(line)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        rows = []
        for r in self.results:
            colour = "#d4edda" if r.holds else "#f8d7da"
            rows.append(
                f"<tr style='background:{colour}'><td>{'PASS' if r.holds else 'FAIL'}</td>"
                f"<td><code>{html.escape(str(r.expectation))}</code></td>"
                f"<td>{html.escape(r.observed)}</td><td>{html.escape(r.reason)}</td></tr>")
        return ("<div><b>" + html.escape(self.summary()) + "</b>"
                "<table><thead><tr><th></th><th>expectation</th><th>observed</th>"
                "<th>reason</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


def evaluate(expectations: Iterable[Expectation], results: ResultSource, *,
             policy: Policy | None = None) -> ExpectationReport:
    """Check each expectation against probe results.

    ``ok`` holds when the probe succeeded; ``blocked`` holds when it ran and failed — with a
    ``policy``, only when the policy denies it (see the module docstring).  A probe that was
    skipped or not run at all never satisfies an expectation (either way).
    """
    out = []
    for e in expectations:
        r = results.lookup(e.protocol, e.source, e.target, e.port)
        if r is None:
            out.append(ExpectationResult(e, False, "missing", f"{e.check} was not probed"))
            continue
        if r.ok is None:
            out.append(ExpectationResult(e, False, "skip", r.reason or "skipped"))
            continue
        if policy is not None:
            out.append(_judged(e, r, policy.explain(e.source, e.target, e.check)))
            continue
        observed = "ok" if r.ok else "fail"
        out.append(ExpectationResult(e, r.ok == e.want_ok, observed,
                                     "" if r.ok else r.reason))
    return ExpectationReport(tuple(out))


def _judged(e: Expectation, r: _Result, decision: Decision) -> ExpectationResult:
    """One probed expectation in a lab with a policy."""
    rule = decision.decided_by
    if r.ok:
        if decision.allowed:
            return ExpectationResult(e, e.want_ok, "ok", "" if e.want_ok else
                                     f"the policy allows it ({rule})")
        return ExpectationResult(e, False, "leak",
                                 f"the policy denies it ({rule}) yet it got through")
    if decision.allowed:
        return ExpectationResult(e, False, "fail",
                                 f"{r.reason}; the policy allows it ({rule}): not blocked by "
                                 "the policy")
    return ExpectationResult(e, not e.want_ok, "blocked", f"by {rule} ({r.reason})")
