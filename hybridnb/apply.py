"""Executing a plan through a backend, with the intent journal and progress reports.

Actions run stage by stage in the plan's order: first the deletes, then each resource kind in
turn (:func:`hybridnb.core.stages.kind_order`: bridge, firewall, network, hosts, containers,
VMs, DNS).  Inside one stage, a driver that says ``concurrent = True`` gets its actions on a
thread pool — twenty containers come up together, not one after another.  Before a stage's
drivers are called, the state records their intents (``creating``/``deleting``…, with the
spec being made; one atomic write per stage); after the stage, the outcomes.  A crash at any
point therefore leaves a state from which the next apply or destroy converges: whatever may
be half made is recorded, and drivers clean up half-made leftovers.

A call whose process died may still be carried out after the death: dockerd finishes the
network or container a killed client asked for, libvirtd the domain.  Drivers of such engines
say how long that can take (the :class:`~hybridnb.drivers.base.Settling` capability);
:func:`observe_settled` gives the interrupted actions that much time, counted from when their
intent was written, to land before the next apply or destroy plans — instead of racing them.

Before any action runs, every create/replace/update is offered to its driver's ``check`` (the
:class:`~hybridnb.drivers.base.Checkable` capability: e.g. "this subnet overlaps a host
route"), so a doomed lab is refused before anything is made.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from hybridnb.core.plan import Action, Plan
from hybridnb.core.resource import Observation
from hybridnb.core.stages import kind_order
from hybridnb.drivers.base import Backend, Checkable, Settling, Updatable
from hybridnb.errors import EngineError, HybridError
from hybridnb.state import Entry, LabState

#: What the engines hold for a lab: ``{kind: {name: Observation}}``.
Observed = dict[str, dict[str, Observation]]


@dataclass(frozen=True)
class ProgressEvent:
    """One step of an apply: ``phase`` is ``start``, ``done`` or ``error``."""

    phase: str
    action: Action
    done: int
    total: int
    seconds: float = 0.0
    error: str = ""

    def __str__(self) -> str:
        head = f"[{self.done}/{self.total}]"
        text = f"{head} {self.action.op} {self.action.kind} {self.action.name}"
        if self.phase == "done":
            return f"{text} ({self.seconds:.2f}s)"
        if self.phase == "error":
            return f"{text} FAILED: {self.error}"
        return text + " ..."


Progress = Callable[[ProgressEvent], None]


@dataclass
class ActionOutcome:
    action: Action
    seconds: float
    error: HybridError | None = None
    started: float = 0.0               # seconds since the apply began

    @property
    def ended(self) -> float:
        return self.started + self.seconds


@dataclass
class ApplyResult:
    """What an apply or destroy did: each action with its time, and the total."""

    plan: Plan
    outcomes: list[ActionOutcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(o.error is None for o in self.outcomes)

    def records(self) -> list[dict[str, Any]]:
        """One plain record per action that ran: what, when (seconds after the start), how
        long, and how it ended — the timeline the text, HTML and report show."""
        return [{"op": o.action.op, "kind": o.action.kind, "name": o.action.name,
                 "summary": o.action.resource.summary if o.action.resource else "",
                 "started_s": round(o.started, 4), "seconds": round(o.seconds, 4),
                 "ok": o.error is None, "error": "" if o.error is None else o.error.message}
                for o in self.outcomes]

    def to_record(self) -> dict[str, Any]:
        """The whole run as plain data (persisted as the lab's ``last_apply``)."""
        return {"headline": self.plan.headline(), "ok": self.ok,
                "seconds": round(self.seconds, 4), "actions": self.records()}

    def to_text(self) -> str:
        if self.plan.empty:
            return f"{self.plan.headline()}; nothing to do ({self.seconds:.2f}s)"
        lines = [f"{self.plan.headline()}; done in {self.seconds:.2f}s"]
        for o in self.outcomes:
            status = "ok" if o.error is None else f"FAILED: {o.error.message}"
            lines.append(f"  {o.action.describe()}  [{o.seconds:.2f}s {status}]")
        return "\n".join(lines)

    __repr__ = to_text
    __str__ = to_text

    def _repr_html_(self) -> str:
        from hybridnb.core.tables import table

        rows = [[o.action.op, o.action.kind, o.action.name,
                 o.action.resource.summary if o.action.resource else "", f"{o.seconds:.2f}s",
                 "ok" if o.error is None else o.error.message] for o in self.outcomes]
        classes = [o.action.op if o.error is None else "delete" for o in self.outcomes]
        caption = f"{self.plan.headline()} — {self.seconds:.2f}s"
        return table(["action", "kind", "name", "what", "time", "result"], rows,
                     caption=caption, row_classes=classes)


def _stages(actions: Iterable[Action]) -> list[list[Action]]:
    """Deletes grouped by kind (reverse order), then the rest grouped by kind."""
    actions = list(actions)
    stages: list[list[Action]] = []
    order = kind_order()
    for kind in reversed(order):
        group = [a for a in actions if a.op == "delete" and a.kind == kind]
        if group:
            stages.append(group)
    for kind in order:
        group = [a for a in actions if a.op != "delete" and a.kind == kind]
        if group:
            stages.append(group)
    return stages


_INTENT = {"create": "creating", "replace": "replacing", "update": "updating",
           "delete": "deleting"}
#: Journal status of an action whose driver call returned an error (nothing in flight).
FAILED = "failed"


def observe_settled(lab: str, backend: Backend, journal: Mapping[str, Mapping[str, Any]],
                    *, clock: Callable[[], float] = time.time,
                    sleep: Callable[[float], None] = time.sleep) -> Observed:
    """What the engines hold for ``lab`` (``{kind: {name: Observation}}``), once calls that a
    dead process left in flight had their driver's ``settle`` time to land: a resource
    journalled as being created (or deleted) that is not there (or still there) is waited
    for, at most until ``settle`` seconds after its intent was written."""
    observed = observe_all(lab, backend)
    settling = backend.having(Settling)
    now = clock()
    waits: dict[tuple[str, str], tuple[bool, float]] = {}
    for key, rec in journal.items():
        kind, _, name = key.partition("/")
        settle = float(settling[kind].settle) if kind in settling else 0.0
        status, at = rec.get("status"), rec.get("at")
        if not settle or not isinstance(at, (int, float)) or status not in _INTENT.values():
            continue
        until = float(at) + settle
        if until > now:
            waits[(kind, name)] = (status != "deleting", until)

    def pending() -> list[float]:
        return [until for (kind, name), (present, until) in waits.items()
                if (name in observed[kind]) != present]

    left = pending()
    while left:
        remaining = max(left) - clock()
        if remaining <= 0:
            break
        sleep(min(0.1, remaining))
        observed.update(observe_all(lab, backend, {kind for kind, _ in waits}))
        left = pending()
    return observed


def observe_all(lab: str, backend: Backend, kinds: Iterable[str] | None = None) -> Observed:
    """What each driver (of ``kinds``, default all) observes of ``lab``."""
    return {k: dict(backend.drivers[k].observe(lab))
            for k in sorted(backend.drivers if kinds is None else kinds)}


def _entry(action: Action, status: str | None) -> Entry:
    res = action.resource
    return (action.kind, action.name, status, res.fingerprint if res is not None else None,
            res.spec if res is not None and status is not None else None)


def preflight(plan: Plan, backend: Backend) -> None:
    """Run the ``check`` of every driver that has one on what the plan will create or
    change in place (an impairment this host cannot give is refused in an update too)."""
    for action in plan.actions:
        if action.op in ("create", "replace", "update") and action.resource is not None:
            driver = backend.driver(action.kind)
            if isinstance(driver, Checkable):
                driver.check(plan.lab, action.resource)


def execute(plan: Plan, backend: Backend, state: LabState, *, progress: Progress | None = None,
            workers: int = 8) -> ApplyResult:
    """Carry out ``plan``; raise the first error after its stage finished (the result so far
    is attached to the exception as ``.result``)."""
    result = ApplyResult(plan)
    t0 = time.perf_counter()
    wall0 = time.time()
    total = len(plan.actions)
    counter = {"done": 0}
    lock = threading.Lock()

    def report(phase: str, action: Action, seconds: float = 0.0, error: str = "") -> None:
        if progress is None:
            return
        with lock:
            if phase != "start":
                counter["done"] += 1
            event = ProgressEvent(phase, action, counter["done"], total, seconds, error)
        progress(event)

    def run(action: Action) -> ActionOutcome:
        driver = backend.driver(action.kind)
        report("start", action)
        started = time.perf_counter()
        try:
            if action.op == "delete":
                driver.delete(plan.lab, action.name)
            elif action.op == "update":
                updater = backend.require(action.kind, Updatable)
                updater.update(plan.lab, action.resource)  # type: ignore[arg-type]
            else:
                if action.op == "replace":
                    driver.delete(plan.lab, action.name)
                driver.create(plan.lab, action.resource)  # type: ignore[arg-type]
        except HybridError as exc:
            seconds = time.perf_counter() - started
            report("error", action, seconds, exc.message)
            return ActionOutcome(action, seconds, exc, started - t0)
        except Exception as exc:  # a driver bug or an untranslated engine error
            seconds = time.perf_counter() - started
            err = EngineError(f"{action.op} {action.kind} {action.name} failed: {exc!r}",
                              engine=backend.name)
            report("error", action, seconds, err.message)
            return ActionOutcome(action, seconds, err, started - t0)
        seconds = time.perf_counter() - started
        report("done", action, seconds)
        return ActionOutcome(action, seconds, None, started - t0)

    for stage in _stages(plan.actions):
        driver = backend.driver(stage[0].kind)
        # intent first, one state write per stage: what may be half made if we die now
        state.mark_many(_entry(a, _INTENT[a.op]) for a in stage)
        if len(stage) > 1 and workers > 1 and driver.concurrent:
            with ThreadPoolExecutor(max_workers=min(workers, len(stage))) as pool:
                outcomes = list(pool.map(run, stage))
        else:
            outcomes = [run(a) for a in stage]
        state.journal({"at": round(wall0 + o.started, 3), "seconds": round(o.seconds, 3),
                       "op": o.action.op, "kind": o.action.kind, "name": o.action.name,
                       "ok": o.error is None, "error": o.error.message if o.error else ""}
                      for o in outcomes)
        # outcomes: done deletes are forgotten, done creations recorded; failures stay
        # recorded (as failed, not in flight), so a later apply or destroy cleans up after them
        state.mark_many(_entry(o.action, (None if o.action.op == "delete" else "created")
                               if o.error is None else FAILED) for o in outcomes)
        result.outcomes.extend(outcomes)
        failed = [o for o in outcomes if o.error is not None]
        if failed:
            result.seconds = time.perf_counter() - t0
            first = failed[0].error
            assert first is not None
            if len(failed) > 1:
                names = ", ".join(f"{o.action.kind} {o.action.name}" for o in failed)
                first = EngineError(f"{len(failed)} actions failed ({names}); first: "
                                    f"{first.message}", hint=first.hint)
            first.result = result  # type: ignore[attr-defined]
            _remember(state, result)
            raise first
    result.seconds = time.perf_counter() - t0
    _remember(state, result)
    return result


def _remember(state: LabState, result: ApplyResult) -> None:
    """Keep the run's timeline in the lab state (``last_apply``) for reports; a destroy's
    state is forgotten with the lab, so what remains is the last apply."""
    state.data["last_apply"] = {**result.to_record(), "at": round(time.time(), 3)}
    state.save()
