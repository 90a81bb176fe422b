"""The doctor's vocabulary: a context, checks, findings and the report.

A :class:`Check` is a small object — ``id``, ``title``, ``group`` — whose ``run(context)``
looks (never changes anything) and returns a :class:`Finding`: ``ok``, ``warn`` or ``fail``,
what it found, why that matters, the exact command that fixes it and whether ``--fix`` may
apply that fix itself (``fixable``).  A check whose fix is targeted (one rule, one sysctl in
the lab host, one of the lab's own resources) also implements ``fix(context)``; a check that
would have to touch something hybridnb does not own, or the machine itself, prints the
command and leaves the decision to the person.

The :class:`DoctorContext` is plain data built by the caller — the lab's name, its compiled
resources, the backend's target and drivers, its state, and every lab the state store knows
(for leftovers) — plus a per-run cache so checks share one link dump or one ARP sweep.
:func:`diagnose` runs the checks (a check that crashes becomes a ``fail`` naming the error),
applies the printed fixes when asked and runs everything again, and returns a
:class:`DoctorReport`: exit code 0 all ok, 1 warnings, 2 failures; text, HTML and data.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from hybridnb.core.resource import Resource
from hybridnb.errors import HybridError

OK, WARN, FAIL = "ok", "warn", "fail"
_RANK = {OK: 0, WARN: 1, FAIL: 2}


@dataclass(frozen=True)
class Finding:
    check: str
    title: str
    status: str                        # ok | warn | fail
    found: str
    why: str = ""
    fix_command: str = ""
    fixable: bool = False
    group: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "title": self.title, "status": self.status,
                "found": self.found, "why": self.why, "fix_command": self.fix_command,
                "fixable": self.fixable, "group": self.group, "data": dict(self.data)}


@dataclass
class DoctorContext:
    """Everything the checks may look at; built by the caller (``Lab`` or the CLI)."""

    lab: str | None
    target: Any                                        # hybridnb.target.Target
    drivers: Mapping[str, Any] = field(default_factory=dict)
    resources: tuple[Resource, ...] = ()
    state: Mapping[str, Any] = field(default_factory=dict)
    #: every lab the state store knows: ``{lab: its state data}`` (leftovers are the rest)
    owned: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    state_dir: Path | None = None
    backend_name: str = ""
    cache: dict[str, Any] = field(default_factory=dict)
    #: what reads the lab host (:mod:`.host`); None: this machine, in ``target.netns``
    reader: Any = None

    @classmethod
    def of(cls, view: Any, owned: Mapping[str, Mapping[str, Any]]) -> "DoctorContext":
        """From a :class:`~hybridnb.services.labview.LabView` and the store's labs (refused
        on a backend without lab hosts: see :meth:`LabView.lab_host`)."""
        view.lab_host("diagnose the lab")
        return cls(view.name, view.backend.target, dict(view.backend.drivers),
                   tuple(view.resources), dict(view.state), owned, view.state_dir,
                   view.backend.name)

    @classmethod
    def of_backend(cls, backend: Any, owned: Mapping[str, Mapping[str, Any]],
                   state_dir: Path | None = None) -> "DoctorContext":
        """No lab: the checks that look at the target itself (engines, kernel, leftovers)."""
        from hybridnb.services.labview import LabView

        LabView("", (), backend).lab_host("diagnose the host")
        return cls(None, backend.target, dict(backend.drivers), (), {}, owned, state_dir,
                   backend.name)

    @property
    def netns(self) -> str | None:
        return self.target.netns

    def view(self) -> Any:
        """The lab as the other services see it (None without a lab)."""
        from hybridnb.services.labview import LabView

        if self.lab is None or not self.resources:
            return None
        backend = _DriversOnly(self.backend_name, self.target, dict(self.drivers))
        return LabView(self.lab, self.resources, backend, self.state, self.state_dir)

    def resource(self, kind: str) -> Resource | None:
        return next((r for r in self.resources if r.kind == kind), None)

    def endpoints(self) -> list[Resource]:
        return sorted((r for r in self.resources if "endpoint" in r.spec and
                       "address" in r.spec), key=lambda r: r.name)

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def in_lab_host(self, argv: Sequence[str]) -> str:
        """``argv`` as a shell command run in the lab host's network namespace."""
        words = list(argv)
        if self.netns:
            words = ["nsenter", f"--net=/run/netns/{self.netns}", *words]
        return shlex.join(words)

    def invalidate(self) -> None:
        self.cache.clear()


@dataclass
class _DriversOnly:
    """The piece of a backend a LabView needs (name, target, drivers)."""

    name: str
    target: Any
    drivers: dict[str, Any]


class Check:
    """Base of the doctor's checks; subclasses set ``id``, ``title``, ``group``, ``why``."""

    id = ""
    title = ""
    group = ""
    why = ""
    needs_lab = True

    def applies(self, ctx: DoctorContext) -> bool:
        return bool(ctx.resources) or not self.needs_lab

    def run(self, ctx: DoctorContext) -> Finding:
        raise NotImplementedError

    def fix(self, ctx: DoctorContext) -> None:
        raise HybridError(f"check {self.id} has no automatic fix")

    def finding(self, status: str, found: str, *, fix_command: str = "",
                fixable: bool = False, why: str | None = None,
                data: Mapping[str, Any] | None = None) -> Finding:
        return Finding(self.id, self.title, status, found,
                       self.why if why is None else why, fix_command,
                       fixable and status != OK, self.group, dict(data or {}))


@dataclass(frozen=True)
class FixOutcome:
    check: str
    ok: bool
    message: str = ""
    at: float = 0.0                          # wall clock when the fix started
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "ok": self.ok, "message": self.message,
                "at": round(self.at, 3), "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class DoctorReport:
    lab: str | None
    where: str
    findings: tuple[Finding, ...] = ()
    fixes: tuple[FixOutcome, ...] = ()
    before: tuple[Finding, ...] = ()         # with --fix: what the first run found
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return max((_RANK[f.status] for f in self.findings), default=0)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def counts(self) -> dict[str, int]:
        out = {OK: 0, WARN: 0, FAIL: 0}
        for f in self.findings:
            out[f.status] += 1
        return out

    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.status != OK]

    def get(self, check: str) -> Finding | None:
        return next((f for f in self.findings if f.check == check), None)

    def fixable(self) -> list[Finding]:
        return [f for f in self.findings if f.fixable]

    def headline(self) -> str:
        c = self.counts()
        what = f"lab {self.lab}" if self.lab else "this host"
        fixed = f"; {sum(o.ok for o in self.fixes)} fix(es) applied" if self.fixes else ""
        return (f"doctor for {what} on {self.where}: {c[FAIL]} failure(s), {c[WARN]} "
                f"warning(s), {c[OK]} ok{fixed} ({self.seconds:.2f}s)")

    def records(self) -> list[dict[str, Any]]:
        """One row per finding, problems first (the report's table; stable keys: ``check``,
        ``group``, ``status``, ``found``, ``fix_command``, ``fixable``)."""
        from hybridnb.render.doctor import ordered

        return [{"check": f.check, "group": f.group, "status": f.status, "found": f.found,
                 "fix_command": f.fix_command, "fixable": f.fixable}
                for f in ordered(self.findings)]

    def to_dict(self) -> dict[str, Any]:
        return {"lab": self.lab, "where": self.where, "exit_code": self.exit_code,
                "counts": self.counts(), "seconds": round(self.seconds, 3),
                "findings": [f.to_dict() for f in self.findings],
                "fixes": [o.to_dict() for o in self.fixes],
                "before": [f.to_dict() for f in self.before]}

    def to_text(self) -> str:
        from hybridnb.render.doctor import report_text

        return report_text(self)

    __repr__ = to_text
    __str__ = to_text

    def _repr_html_(self) -> str:
        from hybridnb.render.doctor import report_html

        return report_html(self)


def _run_one(check: Check, ctx: DoctorContext) -> Finding:
    try:
        return check.run(ctx)
    except HybridError as exc:
        return check.finding(FAIL, f"could not check: {exc.message}",
                             why=exc.hint or check.why)
    except Exception as exc:  # a check's bug must not hide the other findings
        return check.finding(FAIL, f"the check crashed: {exc!r}",
                             why="a bug in hybridnb's doctor; the other checks still ran")


def run_checks(ctx: DoctorContext, checks: Iterable[Check]) -> list[Finding]:
    ctx.invalidate()
    return [_run_one(c, ctx) for c in checks if c.applies(ctx)]


def diagnose(ctx: DoctorContext, checks: Sequence[Check] | None = None, *,
             fix: bool = False) -> DoctorReport:
    """Run the checks; with ``fix`` apply the fixable findings' fixes and check again."""
    from hybridnb.services.doctor import all_checks

    started = time.perf_counter()
    checks = list(checks) if checks is not None else all_checks()
    where = ctx.target.name if ctx.target is not None else "?"
    findings = run_checks(ctx, checks)
    if not fix or not any(f.fixable for f in findings):
        return DoctorReport(ctx.lab, where, tuple(findings),
                            seconds=time.perf_counter() - started)
    by_id = {c.id: c for c in checks}
    outcomes = []
    for f in findings:
        if not f.fixable:
            continue
        ctx.invalidate()
        at, t0 = time.time(), time.perf_counter()
        try:
            by_id[f.check].fix(ctx)
            outcomes.append(FixOutcome(f.check, True, f.fix_command, at,
                                       time.perf_counter() - t0))
        except HybridError as exc:
            outcomes.append(FixOutcome(f.check, False, exc.message, at,
                                       time.perf_counter() - t0))
    after = run_checks(ctx, checks)
    return DoctorReport(ctx.lab, where, tuple(after), tuple(outcomes), tuple(findings),
                        time.perf_counter() - started)


__all__ = ["Check", "DoctorContext", "DoctorReport", "FAIL", "Finding", "FixOutcome", "OK",
           "WARN", "diagnose", "run_checks"]
