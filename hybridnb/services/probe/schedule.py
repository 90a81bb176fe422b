"""When each socket unit of a probe plan goes out: a sliding window over file descriptors.

A full matrix needs a socket per TCP attempt — 40 hosts and 10 containers with the default
checks are ~20k — while a common ``ulimit -n`` is 1024.  :class:`Window` admits the plan's
units (:class:`~hybridnb.services.probe.plan.Unit`) in plan order while the descriptors they
hold fit ``limit``, and takes one back when its unit is done (answered, failed, or past its
deadline).  When everything fits, the first :meth:`Window.take` admits everything: the run is
one batch with one deadline, exactly as without a window.

Deadlines are per pair and anchored at the pair's *first* attempt: a pair has ``timeout``
seconds from when its first probe went out, and a retry admitted later only gets what is left
(a retry whose pair is already past its deadline is not sent at all).  Since the plan puts
every pair's first attempt before any retry, a dead endpoint costs about one timeout in total
as long as the first probes to and from it fit in the window at once — not one per batch.

Admission is chunked (at least an eighth of the window at a time, or whatever is left) so
each batch of sockets costs one trip to each namespace's worker thread, not one per socket.

Responders count too: a unit whose responder (:attr:`Unit.responder`) is not open yet needs one
more descriptor, and :meth:`Window.take` lists the responders to open with it
(:attr:`Window.opening`); once every unit towards a responder is released or dropped, it is
listed in :attr:`Window.closing` and its descriptor is free again.  The plan puts a target's
units together, so its responders are open for a short stretch of the run, not all of it.

Pure bookkeeping: no sockets, no clock (the caller passes ``now`` and the deadlines).
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import Callable, Iterable, Sequence

from hybridnb.services.probe.plan import Unit


class Window:
    """The plan's units, admitted in order while their descriptors fit ``limit``."""

    def __init__(self, units: Sequence[Unit], limit: int, responders: int = 0,
                 held: Sequence[int] = ()) -> None:
        self.units = units
        self.limit = max(limit, 1)
        self.queue: deque[int] = deque(range(len(units)))
        self.in_flight = 0           # descriptors held by admitted units and open responders
        self.active = 0              # units admitted and not yet released
        self.dropped: list[int] = []  # retries never sent: their pair's deadline had passed
        self.batches = 0
        self.users = [0] * responders   # per responder: units towards it not yet done
        self.state = [0] * responders   # 0: not opened yet, 1: open, 2: done with
        for u in units:
            if u.responder >= 0:
                self.users[u.responder] += 1
        self.opening: list[int] = []    # responders to open with the last take()
        self.closing: list[int] = []    # responders nobody needs any more (the caller empties)
        self.held = list(held)          # opened with the first take, kept until release_held()
        self.started = False
        self.waiting: list[int] = []    # set aside by take(slow=...): towards slow targets
        for r in self.held:
            self.users[r] += 1

    @property
    def chunk(self) -> int:
        return max(1, self.limit // 8)

    @property
    def done(self) -> bool:
        return not self.queue and not self.waiting and self.active == 0

    def take(self, stale: Callable[[Unit], bool] = lambda _u: False,
             fits: Callable[[int], bool] | None = None,
             slow: Callable[[int], bool] | None = None) -> list[int]:
        """The next units to open and send (indices into ``units``); ``stale(unit)`` says a
        retry is past its pair's deadline (it is dropped, not sent).  The responders to open
        with them are in :attr:`opening`.

        Pacing (:class:`Pacer`): ``fits(index)`` says whether the unit's packets may go now
        (and counts them when it says yes; it is asked only about a unit that will be
        admitted): no, and admission stops there.  ``slow(index)``: the unit goes towards a
        slow target; such units are set aside in :attr:`waiting` and admitted, in order, as
        soon as ``fits`` lets them (it takes the target's turn) — the others do not wait
        for them."""
        self.opening = []
        if not self.started:
            self.started = True
            for r in self.held:
                self.state[r] = 1
                self.in_flight += 1
            self.opening = list(self.held)
        out: list[int] = []
        if self.waiting:
            self._take_waiting(stale, fits or (lambda _i: True), out)
        set_aside = len(self.waiting)
        free = self.limit - self.in_flight
        if self.active and free < min(self.chunk, self._queued_fds()):
            return self._taken(out)
        while self.queue:
            index = self.queue[0]
            unit = self.units[index]
            if not unit.first and stale(unit):
                self.dropped.append(self.queue.popleft())
                self._unused(unit.responder)
                continue
            if slow is not None and slow(index):
                self.waiting.append(self.queue.popleft())
                continue
            if not self._fit(index, out) or (fits is not None and not fits(index)):
                break
            self.queue.popleft()
            self._admit(index, out)
        if len(self.waiting) > set_aside:        # set aside just now: their turn may be free
            self._take_waiting(stale, fits or (lambda _i: True), out)
        return self._taken(out)

    def _need(self, unit: Unit) -> int:
        r = unit.responder
        return unit.fds + (r >= 0 and self.state[r] == 0)

    def _fit(self, index: int, out: list[int]) -> bool:
        return self.in_flight + self._need(self.units[index]) <= self.limit or not (
            self.active or out)

    def _admit(self, index: int, out: list[int]) -> None:
        unit = self.units[index]
        r = unit.responder
        self.in_flight += self._need(unit)
        self.active += 1
        out.append(index)
        if r >= 0 and self.state[r] == 0:
            self.state[r] = 1
            self.opening.append(r)

    def _take_waiting(self, stale: Callable[[Unit], bool], fits: Callable[[int], bool],
                      out: list[int]) -> None:
        kept: list[int] = []
        for index in self.waiting:
            unit = self.units[index]
            if not unit.first and stale(unit):
                self.dropped.append(index)
                self._unused(unit.responder)
            elif self._fit(index, out) and fits(index):
                self._admit(index, out)
            else:
                kept.append(index)
        self.waiting = kept

    def _taken(self, out: list[int]) -> list[int]:
        if out:
            self.batches += 1
        return out

    def release_held(self) -> None:
        """The script sources are done: the responders held for them may close."""
        held, self.held = self.held, []
        for r in held:
            self._unused(r)

    def release(self, index: int) -> None:
        unit = self.units[index]
        self.in_flight -= unit.fds
        self.active -= 1
        self._unused(unit.responder)

    def _unused(self, r: int) -> None:
        if r < 0:
            return
        self.users[r] -= 1
        if self.users[r] == 0 and self.state[r] == 1:
            self.state[r] = 2
            self.in_flight -= 1
            self.closing.append(r)

    def _queued_fds(self) -> int:
        return sum(self.units[i].fds for i in islice(self.queue, self.chunk))


# -- pacing ---------------------------------------------------------------------------------

#: The fewest packets a lane may keep unanswered, whatever the backlog says.
MIN_PACKETS = 32
#: A packet counts in the packet window for at most this long after it was sent: by then it
#: has left every backlog (answered, dropped, or waiting at a dead end), so a dead endpoint's
#: packets hold the window for milliseconds, not for a timeout (STALE_MS in _fast.c).
STALE = 0.010
#: Whether UDP and stream units towards a slow target wait for its turn too (not only ICMP
#: echoes).  Off: spread one at a time, the connections to a TCG guest's busybox httpd (a fork
#: each) kept the guest busy for the whole run, and its own probe helper's RTTs read 4.8-7.6
#: ms instead of ~0.1 ms in 2 of 3 runs of test_vmprobe_real (the burst at the start is over
#: before the helper's batch).  The mechanism stays (Window.take's ``slow``), switched here.
PACE_SLOW_UNITS = False
#: Towards a slow target (a VM) the next probe goes once the previous is answered, or this
#: long after it was sent (a dead VM must not hold the others back for a timeout).
SLOW_GAP = 0.001


def packet_cap(backlog: int, lanes: int) -> int:
    """Packets each of ``lanes`` lanes may keep unanswered at once so that all of them fit,
    twice over, in one CPU's receive backlog (``net.core.netdev_max_backlog``, per CPU): a
    veth hands every packet to the backlog of the CPU that sent it, and when the softirqs
    are deferred (a loaded machine) a burst larger than the backlog is dropped there — a
    lost probe then costs a whole timeout.  Every packet in flight sits in at most one
    backlog slot at a time (request, forwarded copy, reply are one after the other)."""
    return max(MIN_PACKETS, backlog // (2 * max(lanes, 1)))


def read_backlog(path: str = "/proc/sys/net/core/netdev_max_backlog") -> int:
    """The kernel's per-CPU receive backlog (1000 where it cannot be read)."""
    try:
        with open(path) as f:
            return max(1, int(f.read().strip()))
    except (OSError, ValueError):
        return 1000


class Pacer:
    """One lane's packets in flight, and the slow targets' turns.

    * **The packet window**: at most ``cap`` packets sent in the last :data:`STALE` seconds
      and not yet answered (nor given up); :meth:`room` says how many more may go now.  A
      packet older than that no longer counts (it has left every queue: a dead endpoint's
      packets hold the window for milliseconds, not for a timeout).  Counted per millisecond
      of sending: :meth:`sent` and :meth:`answered` take the packet's send time.
    * **Slow targets** (``slow``: endpoint keys, :data:`~hybridnb.services.probe.plan.SLOW_KINDS`):
      one probe at a time towards each, from every source together — the next once the
      previous is answered (:meth:`slow_done`) or :data:`SLOW_GAP` after it went — so a
      guest's queue never inflates another pair's RTT.  :meth:`slow_take` returns a stamp
      for :meth:`slow_done`.

    Pure bookkeeping: the caller passes the times (seconds; one clock for the window, one for
    the turns).  The C engine keeps the same rules per lane (the slow turns shared by its
    lanes)."""

    def __init__(self, cap: int, slow: Iterable[object] = (), gap: float = SLOW_GAP,
                 stale: float = STALE) -> None:
        self.cap = max(1, cap)
        self.gap = gap
        self.span = max(1, round(stale * 1000))      # milliseconds a packet counts
        self.inflight = 0
        self.counts: dict[int, int] = {}             # millisecond of sending -> packets
        self.slow = frozenset(slow)
        self.busy: dict[object, float] = {}          # slow target -> its turn ends (its stamp)

    @staticmethod
    def _ms(at: float) -> int:
        return int(at * 1000 + 1e-6)

    def _age(self, now: float) -> None:
        first = self._ms(now) - self.span + 1
        for ms in [ms for ms in self.counts if ms < first]:
            self.inflight -= self.counts.pop(ms)

    def room(self, now: float) -> int:
        """Packets that may go now."""
        self._age(now)
        return self.cap - self.inflight

    def sent(self, at: float, n: int = 1) -> None:
        """``n`` packets sent at ``at``."""
        self._age(at)
        if n > 0:
            ms = self._ms(at)
            self.counts[ms] = self.counts.get(ms, 0) + n
            self.inflight += n

    def answered(self, at: float, n: int = 1) -> None:
        """``n`` packets sent at ``at`` are answered, failed or given up: out of the window,
        as far as they still count there."""
        ms = self._ms(at)
        k = min(self.counts.get(ms, 0), n)
        if k > 0:
            self.counts[ms] -= k
            self.inflight -= k

    def is_slow(self, target: object) -> bool:
        return target in self.slow

    def slow_free(self, target: object, now: float) -> bool:
        return self.busy.get(target, 0.0) <= now

    def slow_take(self, target: object, now: float) -> float:
        """Take ``target``'s turn (it must be free); the stamp to give it back with."""
        stamp = now + self.gap
        self.busy[target] = stamp
        return stamp

    def slow_done(self, target: object, stamp: float) -> None:
        """The probe that took ``stamp`` is answered: the next may go at once (unless the
        turn already passed to another probe)."""
        if self.busy.get(target) == stamp:
            self.busy[target] = 0.0

    def slow_wait(self, now: float) -> float | None:
        """Seconds until the next slow turn frees up (None: none is busy)."""
        ends = [t for t in self.busy.values() if t > now]
        return min(ends) - now if ends else None
