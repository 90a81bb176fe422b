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
* **Within the file-descriptor limit.**  When the plan needs more sockets than the process
  may open (``ulimit -n``), they are opened and closed in batches through a sliding window
  (:mod:`~hybridnb.services.probe.schedule`) — first attempts of every pair before any retry,
  deadlines per pair, so a dead endpoint still costs about one timeout.  When everything fits
  (the soft limit is raised towards the hard one first), the run is one batch.
* **Kernel timestamps** for ICMP and UDP RTTs (:mod:`~hybridnb.services.probe.clients`).
* **No ARP storm past the kernel's cap.**  A mesh too big for the machine-wide neighbour
  table gets permanent entries for the run (:mod:`~hybridnb.services.probe.neighbours`).

Sources that have no namespace but an ``executor`` (VMs, through qemu-guest-agent) probe with a
shell script run inside them (:mod:`~hybridnb.services.probe.script`), concurrently with the
socket probes; the responders stay up until those scripts are done.

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

from hybridnb.errors import Problem, ValidationError
from hybridnb.services.probe.clients import CLIENTS, Client, PairState, RunContext
from hybridnb.services.probe.endpoint import ProbeEndpoint
from hybridnb.services.probe.matrix import ConnectivityMatrix, ProbeResult
from hybridnb.services.probe.neighbours import pinned_neighbours
from hybridnb.services.probe.plan import (
    DEFAULT_CHECKS,
    PROTOCOLS,
    PairSpec,
    ProbePlan,
    Unit,
    plan_probes,
)
from hybridnb.services.probe.responders import start_responders
from hybridnb.services.probe.schedule import Window
from hybridnb.services.probe.script import run_script
from hybridnb.services.probe.wire import Loop, fd_budget, open_sockets

__all__ = ["DEFAULT_CHECKS", "PROTOCOLS", "probe_matrix", "run_plan"]

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
                 progress: Progress | None = None) -> ConnectivityMatrix:
    """Probe every ``protocols`` check from every endpoint to every other (and the gateway).

    ``protocols`` items are ``icmp``, ``tcp``, ``udp``, ``http`` (built-in checks: each
    target's declared service port, else a responder of ours on the default port) or
    ``tcp/PORT``, ``udp/PORT``, ``http/PORT`` (asserted: whatever really listens there), and
    ``dns`` (resolve ``TARGET.<domain>`` at ``dns_server``, default the gateway, and expect
    the target's address).  ``count`` attempts per pair; replies are awaited until
    ``timeout`` seconds after a pair's first request.  ``responders=False`` opens no
    responders (only real services answer).  ``pin_neighbours``: pin permanent neighbour
    entries for the run (None: only when the mesh would overflow the kernel's table, see
    :mod:`~hybridnb.services.probe.neighbours`).
    """
    if not timeout > 0:
        raise ValidationError([Problem("timeout", f"timeout must be positive, not {timeout}",
                                       "give the seconds to wait for replies, e.g. 1")])
    plan = plan_probes(endpoints, protocols, gateway=gateway, dns_server=dns_server,
                       domain=domain, count=count, responders=responders)
    return run_plan(plan, timeout=timeout, pin_neighbours=pin_neighbours, progress=progress)


def run_plan(plan: ProbePlan, *, timeout: float = 1.0, pin_neighbours: bool | None = None,
             progress: Progress | None = None, fd_limit: int | None = None
             ) -> ConnectivityMatrix:
    """Run a :class:`~hybridnb.services.probe.plan.ProbePlan`.  ``fd_limit``: descriptors
    the run may hold at once (default: what the process's limit leaves free)."""
    t_start = time.perf_counter()
    note = progress or (lambda _m: None)
    states = [PairState(p) for p in plan.pairs]
    limit = plan.window(fd_budget(plan.fds_needed) if fd_limit is None else fd_limit)
    window = Window(plan.units, limit)
    needed = plan.fds_needed
    note(f"{needed} sockets" + (f", at most {limit + len(plan.responders)} open at once"
                                if needed > limit + len(plan.responders) else ""))
    pin_budget = {None: None, True: -1, False: 1 << 62}[pin_neighbours]
    with pinned_neighbours(list(plan.endpoints), budget=pin_budget, note=note):
        _Run(plan, states, window, timeout, note).run()
    if window.batches > 1:
        note(f"sent in {window.batches} batches")
    return ConnectivityMatrix(results=[s.result() for s in states], sources=list(plan.sources),
                              targets=list(plan.targets), checks=[c.name for c in plan.checks],
                              duration=time.perf_counter() - t_start, timeout=timeout,
                              count=plan.count)


class _Run:
    """One run of a plan: responders, windowed socket units, script sources, one loop."""

    def __init__(self, plan: ProbePlan, states: list[PairState], window: Window,
                 timeout: float, note: Progress) -> None:
        self.plan = plan
        self.states = states
        self.window = window
        self.note = note
        self.loop = Loop()
        self.ctx = RunContext(self.loop, states, secrets.token_bytes(8), plan.count,
                              plan.domain, timeout, self._release,
                              icmp_ident=secrets.randbelow(0x10000))
        self.live: dict[int, Client] = {}                  # unit index -> unfinished client
        self.expiry: list[tuple[float, int]] = []          # (deadline, unit index), a heap

    def run(self) -> None:
        threads: list[threading.Thread] = []
        try:
            first = self.window.take()
            responders, sockets = self._open(first, with_responders=True)
            up = start_responders(self.loop, self.plan.responders, responders)
            if up:
                self.note(f"{up} responders listening")
            threads = self._start_scripts()
            self._start(first, sockets)
            caught_up = False
            while True:
                now = time.monotonic()
                self._expire(now, caught_up)
                batch = self.window.take(lambda u, t=now: self._stale(u, t))
                if batch:
                    self._start(batch, self._open(batch)[1])
                    continue
                if self.window.done and all(not t.is_alive() for t in threads):
                    break
                caught_up = self.loop.run_once(self._wait(now)) == 0
            for t in threads:
                t.join()
        finally:
            for client in list(self.live.values()):
                client.sock.close()
            self.loop.close()

    # -- sockets -----------------------------------------------------------------------------

    def _open(self, batch: Sequence[int], with_responders: bool = False
              ) -> tuple[list[socket.socket | None], list[Opened]]:
        """Sockets for the responders (None where they could not be made) and the units."""
        kinds: dict[str | None, list[str]] = {}
        where: list[tuple[str | None, int]] = []

        def want(ns: str | None, kind: str) -> None:
            kinds.setdefault(ns, []).append(kind)
            where.append((ns, len(kinds[ns]) - 1))

        specs = self.plan.responders if with_responders else ()
        for r in specs:
            want(r.netns, r.kind)
        for i in batch:
            want(self.plan.units[i].netns, self.plan.units[i].kind)
        opened = open_sockets(kinds)
        got: list[Opened] = []
        for ns, pos in where:
            made = opened[ns]
            got.append(made if isinstance(made, BaseException) else made[pos])
        responders = [s if isinstance(s, socket.socket) else None for s in got[:len(specs)]]
        return responders, got[len(specs):]

    def _start(self, batch: Sequence[int], sockets: Sequence[Opened]) -> None:
        """Build the batch's clients, send everything, then set their deadlines."""
        clients: list[Client] = []
        for index, sock in zip(batch, sockets, strict=True):
            unit = self.plan.units[index]
            if isinstance(sock, BaseException):
                for i in unit.pairs:
                    self.states[i].failed(f"cannot open sockets in {unit.netns}: {sock}")
                self.window.release(index)
                continue
            client = CLIENTS[unit.kind](self.ctx, index, unit, sock)
            self.live[index] = client
            clients.append(client)
        _send_all([c.send for c in clients])
        now = time.monotonic()
        for c in clients:
            c.started(now)
            if not c.finished:
                heapq.heappush(self.expiry, (c.deadline, c.index))

    def _release(self, client: Client) -> None:
        self.live.pop(client.index, None)
        self.window.release(client.index)

    # -- time --------------------------------------------------------------------------------

    def _expire(self, now: float, caught_up: bool) -> None:
        """Give up on clients past their deadline — once the loop has read everything that
        arrived (a reply waiting in a socket buffer counts, however busy this process was),
        or, should replies never stop coming, :data:`GRACE` seconds later."""
        grace = 0.0 if caught_up else max(self.ctx.timeout, GRACE)
        while self.expiry and self.expiry[0][0] + grace <= now:
            _, index = heapq.heappop(self.expiry)
            client = self.live.get(index)
            if client is not None:
                client.finish()

    def _stale(self, unit: Unit, now: float) -> bool:
        deadline = self.states[unit.pairs[0]].deadline
        return deadline is not None and deadline <= now + 0.001

    def _wait(self, now: float) -> float:
        if not self.live:
            return 0.05                                    # only script sources left
        nearest = self.expiry[0][0] - now if self.expiry else 0.25
        return min(max(nearest, 0.0), 0.25)

    # -- script sources ------------------------------------------------------------------------

    def _start_scripts(self) -> list[threading.Thread]:
        threads = []
        for source in self.plan.scripts:
            pairs = [self.plan.pairs[i] for i in source.pairs]
            t = threading.Thread(target=self._script, args=(source.src, pairs),
                                 name=f"probe-exec:{source.src.name}", daemon=True)
            t.start()
            threads.append(t)
        return threads

    def _script(self, src: ProbeEndpoint, pairs: list[PairSpec]) -> None:
        try:
            results = run_script(src, pairs, timeout=self.ctx.timeout, count=self.plan.count,
                                 domain=self.plan.domain)
        except Exception as exc:    # a bug or an executor gone wrong: a reason, not a hang
            results = {p.index: ProbeResult(p.check.name, src.name, p.dst.name, False,
                                            f"probe script failed: {exc}", port=p.port,
                                            address=p.address) for p in pairs}
        for index, result in results.items():
            self.states[index].final = result


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
