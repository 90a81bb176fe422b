"""The probe engine: every endpoint against every other, all checks at once, one timeout.

:func:`probe_matrix` runs ICMP echo, TCP connect, UDP echo, HTTP GET and DNS lookups from each
source endpoint to each target (every other endpoint, then the gateway) and returns a
:class:`~hybridnb.services.probe.matrix.ConnectivityMatrix`.  It is two steps:

1. **plan** (:func:`~hybridnb.services.probe.plan.plan_probes`, pure): which pairs, which
   socket units, which responders, which script sources;
2. **run** (:func:`run_plan`, here): open the responders, then the units' sockets, send, and
   collect the replies in one event loop.

How the run stays fast and tool-free:

* **Sockets are opened inside the endpoints' namespaces from this process**, one batch per
  namespace on that namespace's worker thread (:mod:`~hybridnb.services.probe.wire`); a socket
  keeps its namespace for life, so everything after creation happens on this thread.
* **Send everything, then collect with one deadline.**  Every request is sent first (the
  sends split over a few threads: ``sendto`` on a veth runs the whole kernel round trip in
  the caller), then replies are read with one ``selectors`` loop until everything answered or
  ``timeout`` seconds after the pair's first request.  A dead endpoint costs one timeout in
  total, not one per pair.
* **Paced** (:class:`~hybridnb.services.probe.schedule.Pacer`): at most
  :func:`~hybridnb.services.probe.schedule.packet_cap` packets unanswered at once (ICMP and
  DNS clients send the rest from the loop as answers come back; UDP and stream units are
  admitted while their packets fit), so a burst never overflows the receive backlog; and
  one ICMP echo at a time towards a slow target (a VM; ``schedule.PACE_SLOW_UNITS``).
* **Within the file-descriptor limit.**  When the plan needs more sockets than the process
  may open (``ulimit -n``), they are opened and closed in batches through a sliding window
  (:mod:`~hybridnb.services.probe.schedule`) — first attempts of every pair before any retry,
  deadlines per pair, so a dead endpoint still costs about one timeout.  When everything fits
  (the soft limit is raised towards the hard one first), the run is one batch.
* **Kernel timestamps** for ICMP and UDP RTTs (:mod:`~hybridnb.services.probe.clients`).
* **No ARP storm past the kernel's cap.**  A mesh too big for the machine-wide neighbour
  table gets permanent entries for the run (:mod:`~hybridnb.services.probe.neighbours`).

Sources that have no namespace but an ``executor`` (VMs, through qemu-guest-agent) probe with a
shell script run inside them (:mod:`~hybridnb.services.probe.script`) — their ICMP through the
test VM's resident helper where it answers (:mod:`~hybridnb.services.probe.vmhelper`) —
concurrently with the socket probes; the responders stay up until those scripts are done.

A host's share of a matrix over several hosts (:mod:`~hybridnb.services.probe.share`) is two
runs of the same engines: :func:`hold_responders` keeps its targets' responders open from
"ready" until released (held as for script sources), and :func:`run_plan` sends from its
sources only (``pin``: the neighbour entries of its own endpoints).

Safety: the engine only sends to the addresses of the endpoints (and DNS server) it is given.
"""

from __future__ import annotations

import heapq
import os
import secrets
import socket
import threading
import time
from typing import Callable, Sequence

from hybridnb.errors import EngineError, Problem, ValidationError
from hybridnb.services.probe import fast
from hybridnb.services.probe.clients import CLIENTS, Client, PairState, RunContext, _Paced
from hybridnb.services.probe.endpoint import ProbeEndpoint
from hybridnb.services.probe.matrix import ConnectivityMatrix, ProbeResult
from hybridnb.services.probe.neighbours import Removal, pinned_neighbours
from hybridnb.services.probe.plan import (
    DEFAULT_CHECKS,
    PROTOCOLS,
    PairSpec,
    ProbePlan,
    Unit,
    plan_probes,
)
from hybridnb.services.probe.responders import StreamResponder, UdpResponder, start_responder
from hybridnb.services.probe.schedule import (
    PACE_SLOW_UNITS,
    STALE,
    Pacer,
    Window,
    packet_cap,
    read_backlog,
)
from hybridnb.services.probe.vmhelper import run_vm_source
from hybridnb.services.probe.wire import Loop, fd_budget, open_sockets

__all__ = ["DEFAULT_CHECKS", "PROTOCOLS", "hold_responders", "probe_matrix", "run_plan"]

Progress = Callable[[str], None]
#: The longest a busy loop keeps a client past its deadline (see _Run._expire).
GRACE = 5.0
Opened = socket.socket | BaseException


def probe_matrix(endpoints: Sequence[ProbeEndpoint],
                 protocols: Sequence[str] = DEFAULT_CHECKS, *,
                 gateway: ProbeEndpoint | str | None = None,
                 dns_server: str | None = None, domain: str = "hybrid.local",
                 timeout: float = 1.0, count: int = 3, responders: bool = True,
                 pin_neighbours: bool | None = None,
                 progress: Progress | None = None, engine: str = "auto") -> ConnectivityMatrix:
    """Probe every ``protocols`` check from every endpoint to every other (and the gateway).

    ``protocols`` items are ``icmp``, ``tcp``, ``udp``, ``http`` (built-in checks: each
    target's declared service port, else a responder of ours on the default port) or
    ``tcp/PORT``, ``udp/PORT``, ``http/PORT`` (asserted: whatever really listens there), and
    ``dns`` (resolve ``TARGET.<domain>`` at ``dns_server``, default the gateway, and expect
    the target's address).  ``count`` attempts per pair; replies are awaited until
    ``timeout`` seconds after a pair's first request.  ``responders=False`` opens no
    responders (only real services answer).  ``pin_neighbours``: pin permanent neighbour
    entries for the run (None: only when the mesh would overflow the kernel's table, see
    :mod:`~hybridnb.services.probe.neighbours`).  ``engine``: see :func:`run_plan`.
    """
    if not timeout > 0:
        raise ValidationError([Problem("timeout", f"timeout must be positive, not {timeout}",
                                       "give the seconds to wait for replies, e.g. 1")])
    plan = plan_probes(endpoints, protocols, gateway=gateway, dns_server=dns_server,
                       domain=domain, count=count, responders=responders)
    return run_plan(plan, timeout=timeout, pin_neighbours=pin_neighbours, progress=progress,
                    engine=engine)


def run_plan(plan: ProbePlan, *, timeout: float = 1.0, pin_neighbours: bool | None = None,
             progress: Progress | None = None, fd_limit: int | None = None,
             engine: str = "auto", pin: Sequence[ProbeEndpoint] | None = None
             ) -> ConnectivityMatrix:
    """Run a :class:`~hybridnb.services.probe.plan.ProbePlan`.  ``fd_limit``: descriptors
    the run may hold at once (default: what the process's limit leaves free).  ``engine``:
    ``fast`` (the C extension, :mod:`~hybridnb.services.probe.fast`), ``portable`` (this
    module's selectors loop) or ``auto`` (fast where it is built; ``HYBRIDNB_PROBE_ENGINE``
    overrides).  ``pin``: the endpoints whose neighbour entries may be pinned (default: every
    endpoint of the plan; a host's share gives its own)."""
    t_start = time.perf_counter()
    note = progress or (lambda _m: None)
    use_fast = _use_fast(plan, engine)
    pin_budget = {None: None, True: -1, False: 1 << 62}[pin_neighbours]
    scripts = _Scripts(plan, timeout)
    removal = Removal()          # the pins go while the results are built
    try:
        with pinned_neighbours(list(plan.endpoints if pin is None else pin),
                               budget=pin_budget, note=note, removal=removal):
            results = _execute(plan, timeout, fd_limit, note, use_fast, scripts)
    finally:
        removal.wait()
    return ConnectivityMatrix(results=results(), sources=list(plan.sources),
                              targets=list(plan.targets), checks=[c.name for c in plan.checks],
                              duration=time.perf_counter() - t_start, timeout=timeout,
                              count=plan.count)


def hold_responders(plan: ProbePlan, *, ready: threading.Event, release: threading.Event,
                    engine: str = "auto", progress: Progress | None = None) -> None:
    """Open ``plan``'s responders (a plan of responders only: the ``holding`` half of
    :func:`~hybridnb.services.probe.plan.share_plans`), set ``ready`` once every one
    listens, serve until ``release`` is set, then close them.  Blocks: run it on a thread.
    The same engines as :func:`run_plan`, the responders held as they are for script
    sources (the release stands in for the scripts being done).  An engine that fails
    raises at once, ``ready`` not set."""
    note = progress or (lambda _m: None)
    _execute(plan, 1.0, None, note, _use_fast(plan, engine), _Hold(ready, release))


def _execute(plan: ProbePlan, timeout: float, fd_limit: int | None, note: Progress,
             use_fast: bool, scripts: "_Scripts | _Hold") -> Callable[[], list[ProbeResult]]:
    """Run ``plan`` with ``scripts`` beside it; returns how to build its results (after
    the neighbour pins are on their way out)."""
    try:
        if use_fast:
            out = _fast(plan, timeout, fd_limit, note, scripts)
        else:
            states = [PairState(p) for p in plan.pairs]
            _portable(plan, states, timeout, fd_limit, note, scripts)
    except BaseException:
        scripts.abort()
        raise
    finally:
        scripts.join()

    def results() -> list[ProbeResult]:
        if use_fast:
            return fast.results(plan, out, scripts.results)
        for index, result in scripts.results.items():
            states[index].final = result
        return [s.result() for s in states]
    return results


def engine_name(plan: ProbePlan, engine: str = "auto") -> str:
    """The engine ``engine`` (``auto``, ``fast``, ``portable``) runs ``plan`` with here:
    ``fast`` (the C extension is built and can run it) or ``portable``."""
    return "fast" if _use_fast(plan, engine) else "portable"


def _use_fast(plan: ProbePlan, engine: str) -> bool:
    choice = os.environ.get("HYBRIDNB_PROBE_ENGINE", "auto") if engine == "auto" else engine
    if choice not in ("auto", "fast", "portable"):
        raise ValidationError([Problem("engine", f"unknown probe engine {choice!r}",
                                       "auto, fast or portable")])
    if choice == "fast" and not fast.usable(plan):
        raise EngineError("the fast probe engine is not built (hybridnb.services.probe._fast)",
                          hint="reinstall hybridnb with a C compiler and Python's headers, "
                               "or use the portable engine", engine="kernel")
    return choice != "portable" and fast.usable(plan)


def _fast(plan: ProbePlan, timeout: float, fd_limit: int | None, note: Progress,
          scripts: "_Scripts | _Hold") -> "fast.Outcome":
    """The fast engine.  The script sources start once the responders they probe listen
    (the C threads write ``ready``: started before, a script's probe could be refused), and
    those responders serve until the scripts are done (``hold`` tells the C threads)."""
    if not plan.held:
        scripts.start()
        return fast.execute(plan, timeout=timeout, fd_limit=fd_limit, note=note)
    hold = os.eventfd(0, os.EFD_CLOEXEC)
    ready = os.eventfd(0, os.EFD_CLOEXEC)

    def run_scripts() -> None:
        os.eventfd_read(ready)
        scripts.start()
        scripts.join()
        os.eventfd_write(hold, 1)

    runner = threading.Thread(target=run_scripts, name="probe-exec:start", daemon=True)
    runner.start()
    try:
        return fast.execute(plan, timeout=timeout, fd_limit=fd_limit, note=note, hold=hold,
                            ready=ready)
    except BaseException:
        scripts.abort()
        raise
    finally:
        os.eventfd_write(ready, 1)      # an engine that failed early never said so
        runner.join()
        os.close(hold)
        os.close(ready)


def _portable(plan: ProbePlan, states: list[PairState], timeout: float, fd_limit: int | None,
              note: Progress, scripts: "_Scripts | _Hold") -> None:
    units = list(plan.units)
    limit = plan.window(fd_budget(plan.fds_needed) if fd_limit is None else fd_limit)
    window = Window(units, limit, len(plan.responders), plan.held)
    needed = plan.fds_needed
    note(f"{needed} sockets" + (f", at most {limit} open at once" if needed > limit else ""))
    _Run(plan, units, states, window, timeout, note, scripts).run()
    if window.batches > 1:
        note(f"sent in {window.batches} batches")


class _Scripts:
    """Script sources (VMs): one thread each, running while the socket probes do."""

    def __init__(self, plan: ProbePlan, timeout: float) -> None:
        self.plan = plan
        self.timeout = timeout
        self.threads: list[threading.Thread] = []
        self.results: dict[int, ProbeResult] = {}
        self.started = False

    def start(self) -> None:
        """Start the script sources (once; later calls do nothing)."""
        if self.started:
            return
        self.started = True
        for source in self.plan.scripts:
            pairs = [self.plan.pairs[i] for i in source.pairs]
            t = threading.Thread(target=self._script, args=(source.src, pairs),
                                 name=f"probe-exec:{source.src.name}", daemon=True)
            t.start()
            self.threads.append(t)

    @property
    def done(self) -> bool:
        return all(not t.is_alive() for t in self.threads)

    def abort(self) -> None:
        """The run failed: the scripts end on their own (their probes have deadlines)."""

    def join(self) -> None:
        for t in self.threads:
            t.join()

    def _script(self, src: ProbeEndpoint, pairs: list[PairSpec]) -> None:
        try:
            results = run_vm_source(src, pairs, timeout=self.timeout, count=self.plan.count,
                                    domain=self.plan.domain)
        except Exception as exc:    # a bug or an executor gone wrong: a reason, not a hang
            results = {p.index: ProbeResult(p.check.name, src.name, p.dst.name, False,
                                            f"probe script failed: {exc}", port=p.port,
                                            address=p.address) for p in pairs}
        self.results.update(results)


class _Hold:
    """Stands in for the script sources of a run that only holds responders
    (:func:`hold_responders`): "started" once they listen, "done" once released."""

    def __init__(self, ready: threading.Event, release: threading.Event) -> None:
        self.ready = ready
        self.release = release
        self.failed = False
        self.results: dict[int, ProbeResult] = {}

    def start(self) -> None:
        if not self.failed:
            self.ready.set()

    @property
    def done(self) -> bool:
        return self.release.is_set() or self.failed

    def abort(self) -> None:
        """The run failed: not ready, nothing to wait for."""
        self.failed = True

    def join(self) -> None:
        while not self.failed and not self.release.wait(0.1):
            pass


class _Run:
    """One run of a plan by the portable engine: windowed socket units and the responders
    they need, in one selectors loop."""

    def __init__(self, plan: ProbePlan, units: Sequence[Unit], states: list[PairState],
                 window: Window, timeout: float, note: Progress,
                 scripts: "_Scripts | _Hold") -> None:
        self.plan = plan
        self.scripts = scripts
        self.units = units
        self.states = states
        self.window = window
        self.note = note
        self.loop = Loop()
        slow = [plan.endpoints[k].name for k in plan.slow]
        self.pacer = Pacer(packet_cap(read_backlog(), 1), slow)
        self.ctx = RunContext(self.loop, states, secrets.token_bytes(8), plan.count,
                              plan.domain, timeout, self._release,
                              pacer=self.pacer)
        self.live: dict[int, Client] = {}                  # unit index -> unfinished client
        self.paced: dict[int, _Paced] = {}                 # clients with packets still to send
        self.counted: dict[int, tuple[int, float]] = {}    # unit index -> (packets, when)
        self.turns: dict[int, tuple[str, float]] = {}      # unit index -> slow target's turn
        self.expiry: list[tuple[float, int]] = []          # (deadline, unit index), a heap
        self.responders: dict[int, StreamResponder | UdpResponder] = {}
        self.up = 0

    def run(self) -> None:
        try:
            caught_up = False
            while True:
                now = time.monotonic()
                self._expire(now, caught_up)
                self._pump(now)
                batch = self.window.take(lambda u, t=now: self._stale(u, t),
                                         lambda u, t=now: self._fits(u, t), self._slow)
                self._close_unused()
                opened = bool(batch or self.window.opening)
                if opened:
                    self._start(batch, self._open(batch))
                # the scripts start once the responders held for them listen (the first
                # take opens those): started before, a script's probe could be refused
                self.scripts.start()
                if opened:
                    continue
                if self.window.held and self.scripts.done:
                    self.window.release_held()
                    self._close_unused()
                if self.window.done and self.scripts.done:
                    break
                caught_up = self.loop.run_once(self._wait(now)) == 0
            if self.up:
                self.note(f"{self.up} responders listening")
        finally:
            for client in list(self.live.values()):
                client.sock.close()
            self.loop.close()

    # -- sockets -----------------------------------------------------------------------------

    def _open(self, batch: Sequence[int]) -> list[Opened]:
        """Sockets for the units of ``batch`` and the responders to open with them (those
        are started here), in one trip to each namespace."""
        kinds: dict[str | None, list[str]] = {}
        where: list[tuple[str | None, int]] = []

        def want(ns: str | None, kind: str) -> None:
            kinds.setdefault(ns, []).append(kind)
            where.append((ns, len(kinds[ns]) - 1))

        specs = [self.plan.responders[r] for r in self.window.opening]
        for spec in specs:
            want(spec.netns, spec.kind)
        for i in batch:
            want(self.units[i].netns, self.units[i].kind)
        opened = open_sockets(kinds)
        got: list[Opened] = []
        for ns, pos in where:
            made = opened[ns]
            got.append(made if isinstance(made, BaseException) else made[pos])
        for r, spec, sock in zip(self.window.opening, specs, got):
            handle = start_responder(self.loop, spec,
                                     sock if isinstance(sock, socket.socket) else None)
            if handle is not None:
                self.responders[r] = handle
                self.up += 1
        return got[len(specs):]

    def _start(self, batch: Sequence[int], sockets: Sequence[Opened]) -> None:
        """Build the batch's clients, send everything, then set their deadlines."""
        clients: list[Client] = []
        for index, sock in zip(batch, sockets, strict=True):
            unit = self.units[index]
            if isinstance(sock, BaseException):
                for i in unit.pairs:
                    self.states[i].failed(f"cannot open sockets in {unit.netns}: {sock}")
                self.window.release(index)
                continue
            client = CLIENTS[unit.kind](self.ctx, index, unit, sock)
            self.live[index] = client
            clients.append(client)
        self._allot(clients)
        _send_all([c.send for c in clients])
        now = time.monotonic()
        for c in clients:
            c.started(now)
            if not c.finished:
                heapq.heappush(self.expiry, (c.deadline, c.index))
        self._close_unused()

    def _release(self, client: Client) -> None:
        self.live.pop(client.index, None)
        self.paced.pop(client.index, None)
        packets, at = self.counted.pop(client.index, (0, 0.0))
        self.pacer.answered(at, packets)
        turn = self.turns.pop(client.index, None)
        if turn is not None:
            self.pacer.slow_done(*turn)
        self.window.release(client.index)

    # -- pacing ------------------------------------------------------------------------------

    def _allot(self, clients: Sequence[Client]) -> None:
        """What the packet window lets each paced client send on its send lane."""
        at = time.time()
        room = self.pacer.room(at)
        for c in clients:
            if isinstance(c, _Paced):
                self.paced[c.index] = c
                c.allow = max(0, min(room, len(c.packets)))
                c.allot_at = at
                room -= c.allow
                self.pacer.sent(at, c.allow)

    def _pump(self, now: float) -> None:
        for client in list(self.paced.values()):
            if client.finished:
                continue
            if not client.pending:
                self.paced.pop(client.index, None)
                continue
            client.pump(now)
            if not client.pending:
                self.paced.pop(client.index, None)
                if client.outstanding == 0:
                    client.finish()

    def _target(self, unit: Unit) -> str:
        return self.states[unit.pairs[0]].spec.dst.name

    def _slow(self, index: int) -> bool:
        unit = self.units[index]
        return PACE_SLOW_UNITS and unit.kind in ("udp", "stream") and \
            self.pacer.is_slow(self._target(unit))

    def _fits(self, index: int, now: float) -> bool:
        """Whether a UDP/stream unit's packets fit the window now (counted when they do,
        until the unit is done); towards a slow target, only when its turn is free (taken
        when it is, given back when the unit is done)."""
        unit = self.units[index]
        if unit.kind not in ("udp", "stream"):
            return True
        packets = self.plan.count if unit.kind == "udp" else 1
        at = time.time()
        if self.pacer.room(at) < min(packets, self.pacer.cap):
            return False
        target = self._target(unit)
        if PACE_SLOW_UNITS and self.pacer.is_slow(target):
            if not self.pacer.slow_free(target, now):
                return False
            self.turns[index] = (target, self.pacer.slow_take(target, now))
        self.pacer.sent(at, packets)
        self.counted[index] = (packets, at)
        return True

    def _close_unused(self) -> None:
        for r in self.window.closing:
            handle = self.responders.pop(r, None)
            if handle is not None:
                handle.close()
        self.window.closing.clear()

    # -- time --------------------------------------------------------------------------------

    def _expire(self, now: float, caught_up: bool) -> None:
        """Give up on clients past their deadline — once the loop has read everything that
        arrived (a reply waiting in a socket buffer counts, however busy this process was),
        or, should replies never stop coming, :data:`GRACE` seconds later."""
        grace = 0.0 if caught_up else max(self.ctx.timeout, GRACE)
        while self.expiry and self.expiry[0][0] + grace <= now:
            due, index = heapq.heappop(self.expiry)
            client = self.live.get(index)
            if client is None:
                continue
            if client.pending or client.deadline > due:
                # a paced client still sending, or it sent since: its deadline is its last
                # packet's
                if client.deadline <= due and isinstance(client, _Paced):
                    client.give_up_sent()
                if client.pending:
                    client.deadline = max(client.deadline, now + self.ctx.timeout)
                heapq.heappush(self.expiry, (client.deadline, index))
                continue
            client.finish()
        self._close_unused()

    def _stale(self, unit: Unit, now: float) -> bool:
        deadline = self.states[unit.pairs[0]].deadline
        return deadline is not None and deadline <= now + 0.001

    def _wait(self, now: float) -> float:
        bound = 0.25
        if self.window.waiting or self.paced:
            bound = STALE / 4                              # the packet window may be forgiven
            turn = self.pacer.slow_wait(now)
            if turn is not None:
                bound = min(bound, turn)                   # a slow target's turn ends
        if not self.live:
            return min(0.05, bound)                        # only script sources left
        nearest = self.expiry[0][0] - now if self.expiry else bound
        return min(max(nearest, 0.0), bound)


def _send_all(jobs: list[Callable[[], None]]) -> None:
    """Run every send job.  ``sendto`` on veth does the whole kernel round trip in the
    caller's context (~10 µs) with the GIL released, so with more than one CPU the jobs are
    split over that many threads; the sends then overlap in the kernel."""
    lanes = min(os.cpu_count() or 1, 4)
    if lanes < 2 or len(jobs) < 8:
        for job in jobs:
            job()
        return
    helpers = [threading.Thread(target=_run_jobs, args=(jobs[i::lanes],), daemon=True)
               for i in range(1, lanes)]
    for t in helpers:
        t.start()
    _run_jobs(jobs[0::lanes])
    for t in helpers:
        t.join()


def _run_jobs(jobs: list[Callable[[], None]]) -> None:
    for job in jobs:
        job()
