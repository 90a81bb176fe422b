"""The probe plan: which pairs, which sockets, which responders — decided before any packet.

:func:`plan_probes` turns endpoints and checks into a :class:`ProbePlan`, a plain value the
engine (:mod:`hybridnb.services.probe.engine`) then runs.  Nothing here touches a socket or the
host, so every rule below is unit-tested without root.

**Checks.**  ``icmp``; ``dns`` (resolve ``TARGET.<domain>`` at the DNS server, expect the
target's address); the *built-in* connectivity checks ``tcp``, ``udp`` and ``http`` without a
port, which probe each target's declared service for that protocol, else the responder's
default port (:data:`~hybridnb.services.probe.endpoint.DEFAULT_PORTS`); and *asserted* checks
with a port — ``tcp/5432``, ``http/8080``, ``udp/53`` — which say something about the target.

**Responders stand in only for what the lab says is there.**  The engine opens its own
listener (:class:`ResponderSpec`) only for a built-in check, on a target that declares no
service for it and whose namespace this process can enter (hosts, containers, the lab host).
Never for an asserted check: ``tcp/5432`` is probed against what really listens on 5432, the
same way for every kind — and no responder is opened on a (target, port) that an asserted
check probes in the same run, so a built-in check cannot answer for it either.  With
``responders=False`` (``Lab.validate``: every ``expect:`` line is an assertion) none is opened.

**Sockets come in units** (:class:`Unit`), each holding one socket for as long as it is in
flight: one raw ICMP socket per source for all its echoes, one DNS socket per source for all
its queries (they all go to one server), one connected UDP socket per UDP pair, one TCP socket
per TCP pair and attempt, one TCP socket per HTTP pair (its ``count`` requests go on one
keep-alive connection, see :class:`~hybridnb.services.probe.clients.StreamClient`).  The
ICMP and DNS units come first; then the UDP and stream units **target by target**: every
first attempt towards a target, then its retries, then the next target.  The engine admits units in that order while their file descriptors fit
(:class:`~hybridnb.services.probe.schedule.Window`), and a responder is open only while units
towards it are queued or in flight — opened with the first, closed after the last — so
neither the probes nor the responders cap the size of a lab under a small ``ulimit -n``.
Sources the engine cannot enter but can run commands in (VMs) probe with a script instead
(:attr:`ProbePlan.scripts`); the responders those scripts probe (:attr:`ProbePlan.held`) are
open from the start of the run until the scripts are done.

**Compact.**  A full matrix of 200 endpoints and five checks is 200,000 pairs and as many
units; building an object for each costs seconds.  The plan therefore keeps per check only
what depends on the source (:attr:`CheckPlan.src_fail`, ``src_skip``) and what depends on the
target (port, address, responder, ``tgt_skip``); :attr:`ProbePlan.pairs` computes a
:class:`PairSpec` when one is asked for, and the units are columns of integers
(:class:`UnitTable`) that the engines read directly.
"""

from __future__ import annotations

import bisect
import dataclasses
from array import array
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence, overload

from hybridnb.errors import EngineError, Problem, ValidationError
from hybridnb.services.probe.endpoint import DEFAULT_PORTS, ProbeEndpoint

PROTOCOLS = ("icmp", "tcp", "udp", "http", "dns")
DEFAULT_CHECKS = PROTOCOLS
#: Protocols a responder of ours can stand in for (built-in checks only).
STANDIN = ("tcp", "udp", "http")
#: The fewest file descriptors a run may hold at once (a unit and its target's responders
#: must fit); fewer, and probing stops with a clear error.
MIN_WINDOW = 8
#: Endpoint kinds whose network stack is slow to answer a burst (an emulated guest answers a
#: burst only after processing all of it, so every RTT but the last would measure the queue):
#: the engines send probes towards them one at a time (schedule.Pacer).
SLOW_KINDS = ("vm",)
#: Unit kinds, in the order of the integer codes of :attr:`UnitTable.kind`.
UNIT_KINDS = ("icmp", "dns", "udp", "stream")
ICMP, DNS, UDP, STREAM = range(4)
_CHECK_HINT = "checks are icmp, tcp[/PORT], udp[/PORT], http[/PORT], dns"


@dataclass(frozen=True)
class Check:
    """One requested check: ``icmp``, ``tcp``, ``tcp/5432``, ``http``, ``dns``…"""

    name: str
    protocol: str
    port: int | None = None       # asserted port; None: icmp, dns or a built-in check

    @property
    def builtin(self) -> bool:
        """A connectivity check a responder may stand in for (no port of the user's)."""
        return self.port is None and self.protocol in STANDIN

    @property
    def unit_kind(self) -> int:
        """The :data:`UNIT_KINDS` code of the sockets its probes go through."""
        return {"icmp": ICMP, "dns": DNS, "udp": UDP}.get(self.protocol, STREAM)


def parse_check(text: str, path: str = "checks") -> tuple[Check | None, list[Problem]]:
    proto, slash, port = text.strip().partition("/")
    if proto not in PROTOCOLS:
        return None, [Problem(path, f"unknown probe check {text!r}", _CHECK_HINT)]
    if not slash:
        return Check(proto, proto), []
    if proto in ("icmp", "dns"):
        return None, [Problem(path, f"{proto} takes no port", f"write just {proto!r}")]
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return None, [Problem(path, f"bad port in probe check {text!r}", "ports are 1-65535")]
    return Check(f"{proto}/{int(port)}", proto, int(port)), []


def parse_checks(items: Iterable[str]) -> list[Check]:
    """Typed checks, in order, without duplicates; every bad item reported at once."""
    out: list[Check] = []
    problems: list[Problem] = []
    for i, text in enumerate(items):
        check, bad = parse_check(text, f"checks[{i}]")
        problems += bad
        if check is not None:
            out.append(check)
    if problems:
        raise ValidationError(problems)
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class PairSpec:
    """One check from one source to one target, as planned."""

    index: int
    check: Check
    src: ProbeEndpoint
    dst: ProbeEndpoint
    port: int | None              # the port probed (DNS: 53)
    address: str                  # the address probed (DNS: the server's)
    skip: str | None = None       # not attempted (result ok=None): why
    fail: str | None = None       # not attempted, failed (the source is down): why
    responder: bool = False       # a responder of ours answers on the target's port

    @property
    def protocol(self) -> str:
        return self.check.protocol

    @property
    def runnable(self) -> bool:
        return self.skip is None and self.fail is None

    @property
    def kind(self) -> str:
        """The socket unit this pair's probes go through."""
        return UNIT_KINDS[self.check.unit_kind]


@dataclass(frozen=True)
class ResponderSpec:
    """A listener of ours, standing in for a built-in check's service on one target."""

    target: str
    netns: str | None             # None: this process's own namespace (the lab host)
    address: str
    kind: str                     # "stream" (TCP/HTTP) or "dgram" (UDP echo)
    port: int
    http: bool = False            # answers HTTP requests (else accepts and closes)


@dataclass(frozen=True)
class Unit:
    """One socket's worth of probes from one source namespace."""

    kind: str                     # "icmp" | "dns" | "udp" | "stream"
    netns: str
    pairs: tuple[int, ...]        # indices into ProbePlan.pairs
    attempt: int = 0              # stream units: which attempt (0 is the first)
    fds: int = 1                  # descriptors it holds in flight (2: HTTP to our responder)
    responder: int = -1           # index into ProbePlan.responders of the one it probes

    @property
    def first(self) -> bool:
        return self.attempt == 0


@dataclass(frozen=True)
class ScriptSource:
    """A source this process cannot enter (a VM): its pairs go into one script run in it."""

    src: ProbeEndpoint
    pairs: tuple[int, ...]        # indices into ProbePlan.pairs


@dataclass(frozen=True)
class CheckPlan:
    """One check's pairs: every source (by index) against this check's targets.

    The pair of source ``i`` and target position ``j`` (``targets[j]`` indexes
    :attr:`ProbePlan.endpoints`) is number ``rows[i] + j``, less one past the source's own
    position ``self_pos[i]`` (a source does not probe itself)."""

    check: Check
    targets: tuple[int, ...]            # indices into ProbePlan.endpoints
    rows: tuple[int, ...]               # per source: its first pair; then the end
    self_pos: tuple[int, ...]           # per source: its position in targets (len: none)
    src_fail: tuple[str | None, ...]    # per source: why its pairs fail without a probe
    src_skip: tuple[str | None, ...]    # per source: why its pairs are skipped
    ports: tuple[int | None, ...]       # per target position
    addresses: tuple[str, ...]          # per target position: the address probed
    tgt_skip: tuple[str | None, ...]    # per target position: why it cannot be probed
    responders: tuple[int, ...]         # per target position: responder index, or -1

    def pair_index(self, i: int, j: int) -> int:
        """The pair of source ``i`` and target position ``j`` (``j`` not the source)."""
        return self.rows[i] + (j if j < self.self_pos[i] else j - 1)

    def locate(self, index: int) -> tuple[int, int]:
        """(source, target position) of pair ``index`` (which must be this check's)."""
        i = bisect.bisect_right(self.rows, index) - 1
        r = index - self.rows[i]
        return i, (r if r < self.self_pos[i] else r + 1)

    def src_ok(self, i: int) -> bool:
        return self.src_fail[i] is None and self.src_skip[i] is None


class PairTable(Sequence[PairSpec]):
    """Every planned pair, computed on demand from the checks' plans (see :class:`CheckPlan`);
    behaves as a tuple of :class:`PairSpec`."""

    def __init__(self, checks: Sequence[CheckPlan], sources: Sequence[ProbeEndpoint],
                 endpoints: Sequence[ProbeEndpoint]) -> None:
        self.checks = tuple(checks)
        self.sources = tuple(sources)
        self.endpoints = tuple(endpoints)
        self._starts = [c.rows[0] for c in self.checks]
        self._len = self.checks[-1].rows[-1] if self.checks else 0

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, index: int) -> PairSpec: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[PairSpec]: ...

    def __getitem__(self, index: int | slice) -> PairSpec | Sequence[PairSpec]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(self._len)))
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError("pair index out of range")
        cp = self.checks[bisect.bisect_right(self._starts, index) - 1]
        i, j = cp.locate(index)
        return self._spec(cp, index, i, j)

    def __iter__(self) -> Iterator[PairSpec]:
        for cp in self.checks:
            for i in range(len(self.sources)):
                for j in range(len(cp.targets)):
                    if j != cp.self_pos[i]:
                        yield self._spec(cp, cp.pair_index(i, j), i, j)

    def __repr__(self) -> str:
        return f"<{len(self)} pairs>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (PairTable, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def _spec(self, cp: CheckPlan, index: int, i: int, j: int) -> PairSpec:
        fail, skip = cp.src_fail[i], cp.src_skip[i]
        ok = fail is None and skip is None
        return PairSpec(index, cp.check, self.sources[i], self.endpoints[cp.targets[j]],
                        cp.ports[j], cp.addresses[j], skip if not ok else cp.tgt_skip[j], fail,
                        ok and cp.responders[j] >= 0)


class UnitTable(Sequence[Unit]):
    """The plan's socket units as columns of integers, in the order they go out.

    Unit ``u`` has kind ``kind[u]`` (a :data:`UNIT_KINDS` code), opens its socket in
    ``namespaces[ns[u]]``, and probes the pairs ``group[first[u]:first[u] + size[u]]`` (ICMP
    and DNS units, one per source) or the single pair ``first[u]`` (``size[u] == 0``: UDP and
    stream units); ``attempt``, ``fds`` and ``responder`` (-1: none) as in :class:`Unit`.
    ``http`` marks stream units that send ``GET /`` (else they only connect);
    ``target`` and ``port`` (single-pair units) and ``group_target`` (beside ``group``) say
    which endpoint (an index into :attr:`ProbePlan.endpoints`) and port each pair probes, so
    an engine needs no :class:`PairSpec`.  Indexing gives :class:`Unit` objects (for the
    portable engine and tests)."""

    def __init__(self, namespaces: Sequence[str]) -> None:
        self.namespaces = tuple(namespaces)
        self.kind = array("b")
        self.ns = array("i")
        self.first = array("i")
        self.size = array("i")
        self.attempt = array("i")
        self.fds = array("b")
        self.responder = array("i")
        self.http = array("b")
        self.target = array("i")
        self.port = array("i")
        self.group = array("i")
        self.group_target = array("i")

    def add_group(self, kind: int, ns: int, pairs: Sequence[int], targets: Sequence[int]
                  ) -> None:
        self._add(kind, ns, len(self.group), len(pairs), 0, 1, -1)
        self.http.append(0)
        self.target.append(-1)
        self.port.append(0)
        self.group.extend(pairs)
        self.group_target.extend(targets)

    def add_singles(self, kind: int, ns: Sequence[int], pairs: Sequence[int], attempt: int,
                    fds: int, responder: int, target: int, port: int, http: bool) -> None:
        """Units of one kind, attempt, target and port, one per pair."""
        n = len(pairs)
        self.http.extend([int(http)] * n)
        self.target.extend([target] * n)
        self.port.extend([port] * n)
        self.kind.extend([kind] * n)
        self.ns.extend(ns)
        self.first.extend(pairs)
        self.size.extend([0] * n)
        self.attempt.extend([attempt] * n)
        self.fds.extend([fds] * n)
        self.responder.extend([responder] * n)

    def _add(self, kind: int, ns: int, first: int, size: int, attempt: int, fds: int,
             responder: int) -> None:
        self.kind.append(kind)
        self.ns.append(ns)
        self.first.append(first)
        self.size.append(size)
        self.attempt.append(attempt)
        self.fds.append(fds)
        self.responder.append(responder)

    def __len__(self) -> int:
        return len(self.kind)

    @overload
    def __getitem__(self, index: int) -> Unit: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Unit]: ...

    def __getitem__(self, index: int | slice) -> Unit | Sequence[Unit]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        return Unit(UNIT_KINDS[self.kind[index]], self.namespaces[self.ns[index]],
                    self.pairs_of(index), self.attempt[index], self.fds[index],
                    self.responder[index])

    def pairs_of(self, u: int) -> tuple[int, ...]:
        size = self.size[u]
        if size == 0:
            return (self.first[u],)
        first = self.first[u]
        return tuple(self.group[first:first + size])

    def __repr__(self) -> str:
        return f"<{len(self)} units>"

    @property
    def total_fds(self) -> int:
        return sum(self.fds)


@dataclass(frozen=True)
class ProbePlan:
    """Everything a probe run will do, in the order it will do it."""

    checks: tuple[Check, ...]
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    pairs: Sequence[PairSpec]                                     # a PairTable
    responders: tuple[ResponderSpec, ...]
    units: Sequence[Unit]                                         # a UnitTable
    scripts: tuple[ScriptSource, ...]
    endpoints: tuple[ProbeEndpoint, ...]                          # every source and target
    count: int = 3
    domain: str = "hybrid.local"
    dns_server: str | None = None
    check_plans: tuple[CheckPlan, ...] = field(default=(), repr=False)
    #: responders that script sources probe: open from the start until the scripts are done
    held: tuple[int, ...] = ()

    @property
    def slow(self) -> tuple[int, ...]:
        """Endpoints (indices into :attr:`endpoints`) probed one probe at a time
        (:data:`SLOW_KINDS`)."""
        return tuple(k for k, e in enumerate(self.endpoints) if e.kind in SLOW_KINDS)

    @property
    def fds_needed(self) -> int:
        """File descriptors for doing everything at once."""
        units = self.units
        total = units.total_fds if isinstance(units, UnitTable) else sum(u.fds for u in units)
        return len(self.responders) + total

    def window(self, budget: int) -> int:
        """How many descriptors the run may hold at once — units and the responders open
        for them — out of ``budget`` free ones."""
        if budget < MIN_WINDOW and len(self.units):
            raise EngineError(
                f"probing needs at least {MIN_WINDOW} file descriptors at once (a probe and "
                f"its target's responders), but only {budget} are free",
                hint="raise `ulimit -n`", engine="kernel")
        return budget


# -- planning -------------------------------------------------------------------------------

def _port_for(check: Check, dst: ProbeEndpoint) -> int | None:
    if check.protocol == "dns":
        return 53
    if check.protocol == "icmp":
        return None
    if check.port is not None:
        return check.port
    declared = dst.declared_port(check.protocol)
    return declared if declared is not None else DEFAULT_PORTS[check.protocol]


def _responder_kind(protocol: str) -> str:
    return "dgram" if protocol == "udp" else "stream"


def _asserted(checks: Sequence[Check], targets: Sequence[ProbeEndpoint]
              ) -> set[tuple[str, str, int]]:
    """(target, responder kind, port) that asserted checks probe: no responder there."""
    return {(dst.name, _responder_kind(c.protocol), c.port)
            for c in checks if c.port is not None for dst in targets}


def _source_verdict(check: Check, src: ProbeEndpoint, dns_server: str | None
                    ) -> tuple[str | None, str | None]:
    """(fail, skip) of every pair from ``src`` for ``check``."""
    if src.down is not None:
        return src.down, None
    if not src.can_source:
        return None, f"cannot probe from {src.name}: no network namespace and no executor"
    if check.protocol == "dns" and not dns_server:
        return None, "no DNS server given"
    return None, None


def _target_verdict(check: Check, dst: ProbeEndpoint, port: int | None, stand_in: bool
                    ) -> tuple[bool, str | None]:
    """(a responder stands in, why it cannot be probed) for every pair to ``dst``."""
    if not check.builtin or dst.declares(check.protocol, port or 0) or dst.down is not None:
        return False, None
    if not dst.reachable:
        return False, (f"no {check.protocol} service declared on {dst.name} and no "
                       f"responder can be placed in a {dst.kind}")
    return stand_in, None


@dataclass
class _Draft:
    """A check's plan before responders are numbered (they are shared between checks)."""

    check: Check
    targets: tuple[int, ...]
    rows: list[int]
    self_pos: list[int]
    verdicts: list[tuple[str | None, str | None]]
    ports: list[int | None]
    addresses: list[str]
    skips: list[str | None]
    keys: list[tuple[str, str, int] | None]          # per target position: its responder

    def final(self, numbers: dict[tuple[str, str, int], int]) -> CheckPlan:
        return CheckPlan(self.check, self.targets, tuple(self.rows), tuple(self.self_pos),
                         tuple(v[0] for v in self.verdicts), tuple(v[1] for v in self.verdicts),
                         tuple(self.ports), tuple(self.addresses), tuple(self.skips),
                         tuple(-1 if k is None else numbers[k] for k in self.keys))


def _draft(check: Check, start: int, sources: Sequence[int], endpoints: Sequence[ProbeEndpoint],
           dns_server: str | None, blocked: set[tuple[str, str, int]] | None) -> _Draft:
    """``sources`` index ``endpoints``; ``blocked`` None: no responders at all."""
    targets = tuple(k for k, e in enumerate(endpoints)
                    if not (check.protocol == "dns" and e.kind == "gateway"))
    position = {t: j for j, t in enumerate(targets)}
    rows, self_pos = [start], []
    for s in sources:
        pos = position.get(s, len(targets))
        self_pos.append(pos)
        rows.append(rows[-1] + len(targets) - (pos < len(targets)))
    verdicts = [_source_verdict(check, endpoints[s], dns_server) for s in sources]
    ok_sources = {s for s, v in zip(sources, verdicts) if v == (None, None)}
    kind = _responder_kind(check.protocol)
    d = _Draft(check, targets, rows, self_pos, verdicts, [], [], [], [])
    for t in targets:
        dst = endpoints[t]
        port = _port_for(check, dst)
        key = (dst.name, kind, port or 0)
        stand_in = blocked is not None and key not in blocked
        responder, skip = _target_verdict(check, dst, port, stand_in)
        d.ports.append(port)
        d.addresses.append((dns_server or "") if check.protocol == "dns" else dst.address)
        d.skips.append(skip)
        d.keys.append(key if responder and len(ok_sources) > (t in ok_sources) else None)
    return d


def _number_responders(drafts: Sequence[_Draft], endpoints: Sequence[ProbeEndpoint]
                       ) -> tuple[list[ResponderSpec], dict[tuple[str, str, int], int]]:
    by_name = {e.name: e for e in endpoints}
    http: dict[tuple[str, str, int], bool] = {}
    for d in drafts:
        for key in d.keys:
            if key is not None:
                http[key] = http.get(key, False) or d.check.protocol == "http"
    keys = sorted(http)
    specs = [ResponderSpec(k[0], by_name[k[0]].netns, by_name[k[0]].address, k[1], k[2],
                           http[k]) for k in keys]
    return specs, {k: i for i, k in enumerate(keys)}


class _Units:
    """Builds the :class:`UnitTable`: ICMP and DNS per source, then target by target."""

    def __init__(self, cps: Sequence[CheckPlan], endpoints: Sequence[ProbeEndpoint],
                 sources: Sequence[int], count: int) -> None:
        self.cps = cps
        self.endpoints = endpoints
        self.sources = sources
        self.count = count
        namespaces: dict[str, int] = {}
        for s in sources:
            ns = endpoints[s].netns
            if ns is not None:
                namespaces.setdefault(ns, len(namespaces))
        self.table = UnitTable(list(namespaces))
        # per source (by position): its namespace's index, or -1 (no namespace: a script)
        self.ns = [namespaces.get(endpoints[s].netns or "", -1) if endpoints[s].netns
                   else -1 for s in sources]

    def build(self) -> UnitTable:
        for kind in (ICMP, DNS):
            for cp in self.cps:
                if cp.check.unit_kind == kind:
                    self._groups(cp)
        singles = [cp for cp in self.cps if cp.check.unit_kind in (UDP, STREAM)]
        rows = {id(cp): self._rows(cp) for cp in singles}
        where = {id(cp): {t: j for j, t in enumerate(cp.targets)} for cp in singles}
        for t in range(len(self.endpoints)):
            columns = {}
            for cp in singles:
                j = where[id(cp)].get(t)
                if j is not None and cp.tgt_skip[j] is None:
                    columns[id(cp)] = self._column(rows[id(cp)], j)
            for attempt in range(self.count):
                for cp in singles:
                    column = columns.get(id(cp))
                    if column is None or (attempt > 0 and cp.check.protocol in ("udp", "http")):
                        continue
                    j = where[id(cp)][t]
                    responder = cp.responders[j]
                    fds = 2 if responder >= 0 and cp.check.protocol == "http" else 1
                    self.table.add_singles(cp.check.unit_kind, column[0], column[1], attempt,
                                           fds, responder, t, cp.ports[j] or 0,
                                           cp.check.protocol == "http")
        return self.table

    def _groups(self, cp: CheckPlan) -> None:
        for i in range(len(self.sources)):
            if self.ns[i] < 0 or not cp.src_ok(i):
                continue
            js = [j for j in range(len(cp.targets))
                  if j != cp.self_pos[i] and cp.tgt_skip[j] is None]
            if js:
                self.table.add_group(cp.check.unit_kind, self.ns[i],
                                     [cp.pair_index(i, j) for j in js],
                                     [cp.targets[j] for j in js])

    def _rows(self, cp: CheckPlan) -> list[tuple[int, int, int]]:
        """(namespace, first pair, own position) of the sources that probe with sockets."""
        return [(self.ns[i], cp.rows[i], cp.self_pos[i]) for i in range(len(self.sources))
                if self.ns[i] >= 0 and cp.src_ok(i)]

    @staticmethod
    def _column(rows: list[tuple[int, int, int]], j: int) -> tuple[list[int], list[int]]:
        """(namespaces, pairs) of every socket source's pair towards target position j."""
        return ([ns for ns, _, pos in rows if pos != j],
                [first + j - (pos < j) for _, first, pos in rows if pos != j])


def _plan_scripts(cps: Sequence[CheckPlan], sources: Sequence[ProbeEndpoint]
                  ) -> list[ScriptSource]:
    by_src: dict[int, list[int]] = {}
    for i, src in enumerate(sources):
        if src.netns is not None or src.executor is None:
            continue
        for cp in cps:
            if cp.src_ok(i):
                by_src.setdefault(i, []).extend(
                    cp.pair_index(i, j) for j in range(len(cp.targets))
                    if j != cp.self_pos[i] and cp.tgt_skip[j] is None)
    return [ScriptSource(sources[i], tuple(p)) for i, p in by_src.items() if p]


def _held_responders(cps: Sequence[CheckPlan], sources: Sequence[ProbeEndpoint]
                     ) -> tuple[int, ...]:
    """Responders that script sources probe (they run beside the socket units, from start
    to end, so those responders stay open for the whole run)."""
    held = set()
    for i, src in enumerate(sources):
        if src.netns is not None or src.executor is None:
            continue
        for cp in cps:
            if cp.src_ok(i):
                held.update(r for j, r in enumerate(cp.responders)
                            if r >= 0 and j != cp.self_pos[i] and cp.tgt_skip[j] is None)
    return tuple(sorted(held))


def plan_probes(endpoints: Sequence[ProbeEndpoint], checks: Iterable[str] = DEFAULT_CHECKS, *,
                gateway: ProbeEndpoint | str | None = None, dns_server: str | None = None,
                domain: str = "hybrid.local", count: int = 3,
                responders: bool = True) -> ProbePlan:
    """Plan a run of ``checks`` from every endpoint to every other endpoint and the gateway
    (a target only).  ``dns_server`` defaults to the gateway's address."""
    if count < 1:
        raise ValidationError([Problem("count", f"count must be at least 1, not {count}",
                                       "give the number of attempts per pair")])
    typed = parse_checks(checks)
    eps = list(endpoints)
    names = [e.name for e in eps]
    if len(set(names)) != len(names):
        raise EngineError("endpoint names must be unique")
    gw = ProbeEndpoint("gateway", gateway, kind="gateway") if isinstance(gateway, str) \
        else gateway
    targets = eps + ([gw] if gw is not None else [])
    if dns_server is None and gw is not None:
        dns_server = gw.address
    blocked = _asserted(typed, targets) if responders else None
    sources = list(range(len(eps)))
    drafts, start = [], 0
    for check in typed:
        drafts.append(_draft(check, start, sources, targets, dns_server, blocked))
        start = drafts[-1].rows[-1]
    specs, numbers = _number_responders(drafts, targets)
    cps = tuple(d.final(numbers) for d in drafts)
    return ProbePlan(checks=tuple(typed), sources=tuple(names),
                     targets=tuple(t.name for t in targets),
                     pairs=PairTable(cps, eps, targets), responders=tuple(specs),
                     units=_Units(cps, targets, sources, count).build(),
                     scripts=tuple(_plan_scripts(cps, eps)), endpoints=tuple(targets),
                     count=count, domain=domain.strip("."), dns_server=dns_server,
                     check_plans=cps, held=_held_responders(cps, eps))


# -- a host's share -------------------------------------------------------------------------

@dataclass(frozen=True)
class SharePlans:
    """One host's share of a :class:`ProbePlan` (see :func:`share_plans`), as two plans the
    engines run as they run any plan: ``holding`` opens the responders of this host's targets
    (every one held, no unit, no script) and ``probing`` sends from this host's sources
    (their socket units and scripts; no responder of its own: every target's responders are
    held by its own host's share).  Both keep the whole plan's endpoints, pairs and checks,
    so pair numbers, results and their order are the whole plan's."""

    holding: ProbePlan
    probing: ProbePlan
    local: frozenset[str]

    def mine(self, source: str) -> bool:
        return source in self.local


def share_plans(plan: ProbePlan, local: Iterable[str]) -> SharePlans:
    """The share of ``plan`` for the host holding the endpoints named in ``local`` (the
    gateway included when it is there).  Pure: the split of the whole plan, nothing else —
    so every host's share, planned from the same inputs, agrees on every pair, port and
    responder."""
    mine = frozenset(local)
    responders = tuple(r for r in plan.responders if r.target in mine)
    holding = ProbePlan(checks=plan.checks, sources=plan.sources, targets=plan.targets,
                        pairs=plan.pairs, responders=responders,
                        units=UnitTable(()), scripts=(), endpoints=plan.endpoints,
                        count=plan.count, domain=plan.domain, dns_server=plan.dns_server,
                        check_plans=plan.check_plans, held=tuple(range(len(responders))))
    probing = dataclasses.replace(
        plan, responders=(), held=(), units=_local_units(plan, mine),
        scripts=tuple(s for s in plan.scripts if s.src.name in mine))
    return SharePlans(holding, probing, mine)


def _local_units(plan: ProbePlan, mine: frozenset[str]) -> UnitTable:
    """The units whose source is one of ``mine``, probing without responders of this run
    (a stream unit towards our own HTTP responder holds one descriptor, not two)."""
    units = plan.units
    if not isinstance(units, UnitTable):
        raise EngineError("a plan's share needs its units as a UnitTable")
    spaces = {e.netns for e in plan.endpoints[:len(plan.sources)]
              if e.name in mine and e.netns is not None}
    keep = [i for i, ns in enumerate(units.namespaces) if ns in spaces]
    renumber = {old: new for new, old in enumerate(keep)}
    out = UnitTable([units.namespaces[i] for i in keep])
    out.group, out.group_target = units.group, units.group_target
    for u in range(len(units)):
        ns = renumber.get(units.ns[u])
        if ns is None:
            continue
        out.kind.append(units.kind[u])
        out.ns.append(ns)
        out.first.append(units.first[u])
        out.size.append(units.size[u])
        out.attempt.append(units.attempt[u])
        out.fds.append(1 if units.responder[u] >= 0 else units.fds[u])
        out.responder.append(-1)
        out.http.append(units.http[u])
        out.target.append(units.target[u])
        out.port.append(units.port[u])
    return out
