"""Executing a plan through a backend, with the intent journal and progress reports.

Actions run as driver calls (:class:`~hybridnb.core.plan.Step`) stage by stage, in the
plan's order (:meth:`~hybridnb.core.plan.Plan.stages`): first every delete — including the
old half of each replace — in reverse kind order, so dependents go before what they hang on
(containers before their Docker network, everything before a renumbered bridge); then every
create, the new half of each replace and every update, in kind order
(:func:`hybridnb.core.stages.kind_order`: bridge, firewall, network, hosts, containers, VMs,
DNS).  Inside one stage, a driver that says ``concurrent = True`` gets its calls on a thread
pool — twenty containers come up together, not one after another.  Before a stage's drivers
are called, the state records their intents (``creating``/``replacing``/``deleting``…, with
the spec being made; one atomic write per stage); after the stage, the outcomes.  A crash at
any point therefore leaves a state from which the next apply or destroy converges: whatever
may be half made is recorded, and drivers clean up half-made leftovers.

A call whose process died may still be carried out after the death: dockerd finishes the
network or container a killed client asked for, libvirtd the domain.  Drivers of such engines
say how long that can take (the :class:`~hybridnb.drivers.base.Settling` capability);
:func:`observe_settled` gives the interrupted actions that much time, counted from when their
intent was written, to land before the next command plans — instead of racing them — and
:func:`settle_journal` then finishes their records: what landed is ``created``, what did not
is ``interrupted`` (still recorded, so the plan cleans it up).  An apply interrupted by
Ctrl-C (``KeyboardInterrupt``) lets the calls already running finish, records them, and puts
back the records of the calls that never started.

Before any action runs, every create, replace and update is offered to its driver's
``check`` (:func:`preflight`, the :class:`~hybridnb.drivers.base.Checkable` capability: "this
subnet overlaps a host route", "this image is not in the engine and cannot be pulled", "this
kernel does not exist"), so a doomed change is refused before anything is deleted.  When a
run that replaces or deletes existing resources fails all the same, :func:`converge` puts
back everything it acted on (:func:`~hybridnb.core.plan.rollback_plan`): the lab is left no
worse than before.  (A run that only adds resources or changes them in place keeps what it
made; the next apply goes on from there.)

Progress is reported as :class:`ProgressEvent`: ``start``/``done``/``error`` per call,
``running`` every ``heartbeat`` seconds for calls still running (a VM boot), and ``note``
for what is neither (waiting for another process's lock, rolling back).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from hybridnb.core.plan import PARTS, Action, Plan, Step, rollback_plan
from hybridnb.core.resource import Observation
from hybridnb.drivers.base import Backend, Checkable, Settling, Updatable
from hybridnb.drivers.links import observe_pass
from hybridnb.errors import EngineError, HybridError
from hybridnb.state import IN_FLIGHT_STATUSES, Entry, LabState

Key = tuple[str, str]
#: What the engines hold for a lab: ``{kind: {name: Observation}}``.
Observed = dict[str, dict[str, Observation]]


@dataclass(frozen=True)
class ProgressEvent:
    """One step of an apply: ``phase`` is ``start``, ``done``, ``error``, ``running`` (a call
    still going after ``seconds``) or ``note`` (``text`` says what is happening, e.g. waiting
    for a lock); ``done``/``total`` count driver calls (a replace is two)."""

    phase: str
    action: Action | None
    done: int
    total: int
    seconds: float = 0.0
    error: str = ""
    part: str = ""
    text: str = ""

    @classmethod
    def note(cls, text: str, done: int = 0, total: int = 0) -> ProgressEvent:
        return cls("note", None, done, total, text=text)

    @property
    def what(self) -> str:
        if self.action is None:
            return self.text
        return Step(self.action, self.part or PARTS[self.action.op][-1]).describe()

    def __str__(self) -> str:
        if self.phase == "note":
            return self.text
        head = f"[{self.done}/{self.total}]"
        if self.phase == "done":
            return f"{head} {self.what} ({self.seconds:.2f}s)"
        if self.phase == "error":
            return f"{head} {self.what} FAILED: {self.error}"
        if self.phase == "running":
            return f"{self.what}: still running after {self.seconds:.0f}s ..."
        return f"{self.what} ..."


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
    #: what putting the lab back took, when this run failed after changing existing resources
    rollback: ApplyResult | None = None
    #: the rollback's own error, when putting back failed too
    rollback_error: HybridError | None = None

    @property
    def ok(self) -> bool:
        return all(o.error is None for o in self.outcomes)

    @property
    def rolled_back(self) -> bool:
        """The run failed and the lab was put back as it was before it."""
        return self.rollback is not None and self.rollback_error is None

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
        if self.rollback is not None:
            lines.append("rolled back: " + ("the lab is as it was before" if self.rolled_back
                                            else f"FAILED: {self.rollback_error}"))
            lines += ["  " + line for line in self.rollback.to_text().splitlines()]
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


_INTENT = {"create": "creating", "replace": "replacing", "update": "updating",
           "delete": "deleting"}
assert set(_INTENT.values()) == IN_FLIGHT_STATUSES
#: Journal status of an action whose driver call returned an error (nothing in flight).
FAILED = "failed"
#: Journal status of an action whose process died (or was interrupted) during the call, and
#: whose result the engines do not show: recorded, so the next plan cleans up after it.
INTERRUPTED = "interrupted"


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
    """What each driver (of ``kinds``, default all) observes of ``lab``; one pass: drivers
    reading the links of the same namespace share one dump."""
    with observe_pass():
        return {k: dict(backend.drivers[k].observe(lab))
                for k in sorted(backend.drivers if kinds is None else kinds)}


def _entry(action: Action, status: str | None) -> Entry:
    res = action.resource
    return (action.kind, action.name, status, res.fingerprint if res is not None else None,
            res.spec if res is not None and status is not None else None)


def _intent(step: Step) -> Entry:
    """The journal entry written before ``step``'s driver call."""
    return _entry(step.action, _INTENT[step.action.op])


def _outcome(step: Step, ok: bool) -> Entry | None:
    """The journal entry after ``step``'s call (``None``: leave the intent as it is)."""
    if not ok:
        return _entry(step.action, FAILED)
    if step.action.op == "delete":
        return _entry(step.action, None)               # gone: forgotten
    if step.part == "delete":
        return None                                    # the old half of a replace: in flight
    return _entry(step.action, "created")


def settle_journal(state: LabState, observed: Observed) -> list[str]:
    """Finish the records of calls a dead (or interrupted) process left in flight, from what
    the engines show now (call it under the lab's lock, after :func:`observe_settled`): a
    resource being made that is there as wanted is ``created``; one being deleted that is
    gone is forgotten; anything else is ``interrupted`` — still recorded, so the next plan
    replaces or removes it.  Returns the keys it settled."""
    entries: list[Entry] = []
    for key, rec in sorted(state.resources.items()):
        status = rec.get("status")
        if status not in IN_FLIGHT_STATUSES:
            continue
        kind, _, name = key.partition("/")
        seen = observed.get(kind, {}).get(name)
        spec = rec.get("spec")
        if status == "deleting" and seen is None:
            entries.append((kind, name, None, None, None))
        elif status != "deleting" and seen is not None and seen.running \
                and seen.fingerprint == rec.get("fingerprint"):
            entries.append((kind, name, "created", rec.get("fingerprint"), spec))
        else:
            entries.append((kind, name, INTERRUPTED, rec.get("fingerprint"), spec))
    state.mark_many(entries)
    return [f"{kind}/{name}" for kind, name, *_ in entries]


def preflight(plan: Plan, backend: Backend) -> None:
    """Run the ``check`` of every driver that has one on what the plan will create, replace
    or change in place — before anything is deleted."""
    for action in plan.actions:
        if action.op != "delete" and action.resource is not None:
            driver = backend.driver(action.kind)
            if isinstance(driver, Checkable):
                driver.check(plan.lab, action.resource)


class _Run:
    """The bookkeeping of one :func:`execute`: counters, progress events, running calls."""

    def __init__(self, plan: Plan, backend: Backend, progress: Progress | None,
                 heartbeat: float) -> None:
        self.plan, self.backend, self.progress = plan, backend, progress
        self.stages = plan.stages()
        self.total = sum(len(stage) for stage in self.stages)
        self.done = 0
        self.t0 = time.perf_counter()
        self.wall0 = time.time()
        self.lock = threading.Lock()
        self.running: dict[tuple[Key, str], tuple[Step, float]] = {}
        self.outcomes: dict[Key, ActionOutcome] = {}
        self.order: list[Key] = []
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        if progress is not None and heartbeat > 0:
            self._beat = threading.Thread(target=self._heartbeat, args=(heartbeat,),
                                          name="hybridnb-apply-heartbeat", daemon=True)
            self._beat.start()

    def report(self, phase: str, step: Step, seconds: float = 0.0, error: str = "") -> None:
        with self.lock:
            if phase in ("done", "error"):
                self.done += 1
            event = ProgressEvent(phase, step.action, self.done, self.total, seconds, error,
                                  step.part)
        if self.progress is not None:
            self.progress(event)

    def _heartbeat(self, every: float) -> None:
        while not self._stop.wait(every):
            now = time.perf_counter()
            with self.lock:
                running = sorted(self.running.values(), key=lambda sv: sv[1])
            for step, started in running:
                if now - started >= every:
                    self.report("running", step, now - started)

    def stop(self) -> None:
        self._stop.set()

    def call(self, step: Step) -> tuple[Step, float, HybridError | None]:
        """Run one driver call; errors are returned, never raised (but KeyboardInterrupt)."""
        action = step.action
        driver = self.backend.driver(action.kind)
        started = time.perf_counter()
        with self.lock:
            self.running[(action.key, step.part)] = (step, started)
        self.report("start", step)
        error: HybridError | None = None
        try:
            if step.part == "delete":
                driver.delete(self.plan.lab, action.name)
            elif step.part == "update":
                updater = self.backend.require(action.kind, Updatable)
                updater.update(self.plan.lab, action.resource)  # type: ignore[arg-type]
            else:
                driver.create(self.plan.lab, action.resource)  # type: ignore[arg-type]
        except HybridError as exc:
            error = exc
        except Exception as exc:  # a driver bug or an untranslated engine error
            error = EngineError(f"{action.op} {action.kind} {action.name} failed: {exc!r}",
                                engine=self.backend.name)
        finally:
            with self.lock:
                self.running.pop((action.key, step.part), None)
        seconds = time.perf_counter() - started
        if error is None:
            self.report("done", step, seconds)
        else:
            self.report("error", step, seconds, error.message)
        self.record(step, started, seconds, error)
        return step, seconds, error

    def record(self, step: Step, started: float, seconds: float,
               error: HybridError | None) -> None:
        with self.lock:
            out = self.outcomes.get(step.action.key)
            if out is None:
                out = ActionOutcome(step.action, 0.0, None, started - self.t0)
                self.outcomes[step.action.key] = out
                self.order.append(step.action.key)
            out.seconds = (started - self.t0) + seconds - out.started
            if error is not None:
                out.error = error


def _run_stage(run: _Run, stage: tuple[Step, ...], workers: int
               ) -> tuple[list[tuple[Step, float, HybridError | None]], list[Step]]:
    """The stage's calls (concurrently when the driver allows): their results, and — when
    interrupted — the calls that never started; KeyboardInterrupt is re-raised by the caller
    after the bookkeeping."""
    driver = run.backend.driver(stage[0].kind)
    if len(stage) > 1 and workers > 1 and driver.concurrent:
        pool = ThreadPoolExecutor(max_workers=min(workers, len(stage)))
        futures = [pool.submit(run.call, step) for step in stage]
        try:
            return [f.result() for f in futures], []
        except KeyboardInterrupt:
            for f in futures:
                f.cancel()
            pool.shutdown(wait=True)      # calls already running finish (threads cannot stop)
            done = [f.result() for f in futures if f.done() and not f.cancelled()
                    and f.exception() is None]
            never = [s for s, f in zip(stage, futures) if f.cancelled()]
            raise _Interrupted(done, never) from None
        finally:
            pool.shutdown(wait=False)
    results = []
    for i, step in enumerate(stage):
        try:
            results.append(run.call(step))
        except KeyboardInterrupt:
            raise _Interrupted(results, list(stage[i + 1:])) from None
    return results, []


class _Interrupted(Exception):
    def __init__(self, done: list[tuple[Step, float, HybridError | None]],
                 never: list[Step]) -> None:
        super().__init__("interrupted")
        self.done, self.never = done, never


def execute(plan: Plan, backend: Backend, state: LabState, *, progress: Progress | None = None,
            workers: int = 8, heartbeat: float = 10.0) -> ApplyResult:
    """Carry out ``plan``; raise the first error after its stage finished (the result so far
    is attached to the exception as ``.result``).  ``heartbeat``: seconds between
    ``running`` events for calls still going (0: none)."""
    result = ApplyResult(plan)
    run = _Run(plan, backend, progress, heartbeat)
    try:
        for stage in run.stages:
            # intent first, one state write per stage: what may be half made if we die now
            before = {s.action.key: state.resources.get(f"{s.kind}/{s.action.name}")
                      for s in stage}
            state.mark_many(_intent(s) for s in stage)
            try:
                results, _ = _run_stage(run, stage, workers)
            except _Interrupted as stop:
                _finish_stage(run, state, stop.done)
                _restore(state, stop.never, before)
                state.journal([{"at": round(time.time(), 3), "seconds": 0.0, "op": "interrupted",
                                "kind": "", "name": "", "ok": False,
                                "error": "interrupted (Ctrl-C)"}])
                state.save()
                raise KeyboardInterrupt from None
            failed = _finish_stage(run, state, results)
            if failed:
                result.outcomes = [run.outcomes[a] for a in run.order]
                result.seconds = time.perf_counter() - run.t0
                first = failed[0]
                if len(failed) > 1:
                    names = ", ".join(sorted({f"{s.kind} {s.action.name}"
                                              for s, _, err in results if err is not None}))
                    first = EngineError(f"{len(failed)} actions failed ({names}); first: "
                                        f"{first.message}", hint=first.hint)
                first.result = result  # type: ignore[attr-defined]
                _remember(state, result)
                raise first
    finally:
        run.stop()
    result.outcomes = [run.outcomes[a] for a in run.order]
    result.seconds = time.perf_counter() - run.t0
    _remember(state, result)
    return result


def _finish_stage(run: _Run, state: LabState,
                  results: list[tuple[Step, float, HybridError | None]]) -> list[HybridError]:
    """Journal the stage's calls and record their outcomes: done deletes are forgotten, done
    creations recorded; failures stay recorded (as failed, not in flight), so a later apply
    or destroy cleans up after them.  Returns the errors."""
    state.journal({"at": round(run.wall0 + run.outcomes[s.action.key].started, 3),
                   "seconds": round(seconds, 3), "op": s.action.op
                   + ("" if s.part == PARTS[s.action.op][-1] else f" ({s.part})"),
                   "kind": s.kind, "name": s.action.name, "ok": err is None,
                   "error": err.message if err else ""} for s, seconds, err in results)
    entries = [_outcome(s, err is None) for s, _, err in results]
    state.mark_many(e for e in entries if e is not None)
    return [err for _, _, err in results if err is not None]


def _restore(state: LabState, never: Iterable[Step],
             before: Mapping[tuple[str, str], Mapping[str, Any] | None]) -> None:
    """Put back the journal entries of calls whose intent was written but that never
    started."""
    for step in never:
        key = f"{step.kind}/{step.action.name}"
        old = before.get(step.action.key)
        if old is None:
            state.resources.pop(key, None)
        else:
            state.resources[key] = dict(old)


def converge(plan: Plan, backend: Backend, state: LabState, *,
             before: Observed, recorded_before: Mapping[tuple[str, str], Any],
             progress: Progress | None = None, workers: int = 8,
             restore: Callable[[], None] | None = None) -> ApplyResult:
    """:func:`execute` the plan; when it fails and it replaces or deletes resources that
    existed before it (something that worked may be lost), put back everything it acted on
    (:func:`rollback_plan` from
    ``before``, what the engines showed when the plan was made, and ``recorded_before``,
    the specs they had been made from) and call ``restore`` to put back the lab's own
    record.  The error raised says whether the lab is as it was before; its ``.result``
    carries both runs."""
    try:
        return execute(plan, backend, state, progress=progress, workers=workers)
    except HybridError as exc:
        result: ApplyResult = getattr(exc, "result", None) or ApplyResult(plan)
        existed = {(kind, name) for kind, names in before.items() for name in names}
        if not any(a.op in ("replace", "delete") and a.key in existed for a in plan.actions):
            raise                      # additions and in-place updates: nothing was lost
        back = rollback_plan(plan, before, recorded_before, observe_all(plan.lab, backend),
                             state.recorded(), updatable=backend.updatable())
        if progress is not None:
            progress(ProgressEvent.note(f"rolling back: {back.headline()}"))
        try:
            result.rollback = execute(back, backend, state, progress=progress,
                                      workers=workers) if not back.empty else ApplyResult(back)
        except HybridError as again:
            result.rollback = getattr(again, "result", None) or ApplyResult(back)
            result.rollback_error = again
            exc.message += (f" — putting the lab back failed too ({again.message}); apply "
                            "again once the cause is fixed, or destroy the lab")
        else:
            if restore is not None:
                restore()
            exc.message += " — the lab was put back as it was before this apply"
        exc.result = result  # type: ignore[attr-defined]
        _remember(state, result)
        raise


def _remember(state: LabState, result: ApplyResult) -> None:
    """Keep the run's timeline in the lab state (``last_apply``) for reports; a destroy's
    state is forgotten with the lab, so what remains is the last apply."""
    record = {**result.to_record(), "at": round(time.time(), 3)}
    if result.rollback is not None:
        record["rollback"] = {**result.rollback.to_record(),
                              "ok": result.rolled_back}
    state.data["last_apply"] = record
    state.save()
