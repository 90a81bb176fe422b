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
per TCP/HTTP pair and attempt.  Units are ordered so that every pair's first attempt comes
before any retry; the engine admits them in that order while their file descriptors fit
(:class:`~hybridnb.services.probe.schedule.Window`), so a lab of any size runs under a small
``ulimit -n``.  Sources the engine cannot enter but can run commands in (VMs) probe with a
script instead (:attr:`ProbePlan.scripts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from hybridnb.errors import EngineError, Problem, ValidationError
from hybridnb.services.probe.endpoint import DEFAULT_PORTS, ProbeEndpoint

PROTOCOLS = ("icmp", "tcp", "udp", "http", "dns")
DEFAULT_CHECKS = PROTOCOLS
#: Protocols a responder of ours can stand in for (built-in checks only).
STANDIN = ("tcp", "udp", "http")
#: The fewest file descriptors units may share; fewer, and probing stops with a clear error.
MIN_WINDOW = 8
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
        return {"icmp": "icmp", "dns": "dns", "udp": "udp"}.get(self.protocol, "stream")


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

    @property
    def first(self) -> bool:
        return self.attempt == 0


@dataclass(frozen=True)
class ScriptSource:
    """A source this process cannot enter (a VM): its pairs go into one script run in it."""

    src: ProbeEndpoint
    pairs: tuple[int, ...]        # indices into ProbePlan.pairs


@dataclass(frozen=True)
class ProbePlan:
    """Everything a probe run will do, in the order it will do it."""

    checks: tuple[Check, ...]
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    pairs: tuple[PairSpec, ...]
    responders: tuple[ResponderSpec, ...]
    units: tuple[Unit, ...]
    scripts: tuple[ScriptSource, ...]
    endpoints: tuple[ProbeEndpoint, ...]                          # every source and target
    count: int = 3
    domain: str = "hybrid.local"
    dns_server: str | None = None

    @property
    def fds_needed(self) -> int:
        """File descriptors for doing everything at once."""
        return len(self.responders) + sum(u.fds for u in self.units)

    def window(self, budget: int) -> int:
        """How many descriptors units may hold at once, out of ``budget`` free ones (the
        responders stay open for the whole run)."""
        room = budget - len(self.responders)
        if room < MIN_WINDOW and self.units:
            raise EngineError(
                f"probing needs {len(self.responders)} responder sockets plus at least "
                f"{MIN_WINDOW} for probes, but only {budget} file descriptors are free",
                hint="raise `ulimit -n`, or probe fewer endpoints or checks per run",
                engine="kernel")
        return room


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


def _plan_pair(index: int, check: Check, src: ProbeEndpoint, dst: ProbeEndpoint,
               dns_server: str | None, stand_in: bool) -> PairSpec:
    port = _port_for(check, dst)
    address = (dns_server or "") if check.protocol == "dns" else dst.address
    skip = fail = None
    responder = False
    if src.down is not None:
        fail = src.down
    elif not src.can_source:
        skip = f"cannot probe from {src.name}: no network namespace and no executor"
    elif check.protocol == "dns" and not dns_server:
        skip = "no DNS server given"
    elif check.builtin and not dst.declares(check.protocol, port or 0):
        if stand_in and dst.reachable and dst.down is None:
            responder = True
        elif not dst.reachable and dst.down is None:
            skip = (f"no {check.protocol} service declared on {dst.name} and no responder "
                    f"can be placed in a {dst.kind}")
    return PairSpec(index, check, src, dst, port, address, skip, fail, responder)


def _plan_pairs(checks: Sequence[Check], sources: Sequence[ProbeEndpoint],
                targets: Sequence[ProbeEndpoint], dns_server: str | None,
                responders: bool) -> list[PairSpec]:
    blocked = _asserted(checks, targets) if responders else set()
    pairs: list[PairSpec] = []
    for check in checks:
        for src in sources:
            for dst in targets:
                if dst is src or (check.protocol == "dns" and dst.kind == "gateway"):
                    continue
                stand_in = responders and (dst.name, _responder_kind(check.protocol),
                                           _port_for(check, dst)) not in blocked
                pairs.append(_plan_pair(len(pairs), check, src, dst, dns_server, stand_in))
    return pairs


def _plan_responders(pairs: Sequence[PairSpec]) -> list[ResponderSpec]:
    wanted: dict[tuple[str, str, int], ResponderSpec] = {}
    for p in pairs:
        if not (p.responder and p.runnable):
            continue
        kind = _responder_kind(p.protocol)
        key = (p.dst.name, kind, p.port or 0)
        http = p.protocol == "http" or (key in wanted and wanted[key].http)
        wanted[key] = ResponderSpec(p.dst.name, p.dst.netns, p.dst.address, kind,
                                    p.port or 0, http)
    return [wanted[k] for k in sorted(wanted)]


def _plan_units(pairs: Sequence[PairSpec], count: int) -> list[Unit]:
    """Socket units, every pair's first attempt before any retry."""
    grouped: dict[tuple[str, str], list[int]] = {}      # (source ns, icmp|dns) -> pairs
    singles: list[Unit] = []
    retries: list[Unit] = []
    for p in pairs:
        if not p.runnable or p.src.netns is None:
            continue
        ns = p.src.netns
        if p.kind in ("icmp", "dns"):
            grouped.setdefault((p.kind, ns), []).append(p.index)
        elif p.kind == "udp":
            singles.append(Unit("udp", ns, (p.index,)))
        else:
            fds = 2 if p.responder and p.protocol == "http" else 1
            singles.append(Unit("stream", ns, (p.index,), 0, fds))
            retries += [Unit("stream", ns, (p.index,), a, fds) for a in range(1, count)]
    groups = [Unit(kind, ns, tuple(idx)) for (kind, ns), idx in grouped.items()]
    groups.sort(key=lambda u: (u.kind != "icmp", u.pairs[0]))
    retries.sort(key=lambda u: (u.attempt, u.pairs[0]))
    return groups + singles + retries


def _plan_scripts(pairs: Sequence[PairSpec]) -> list[ScriptSource]:
    by_src: dict[str, list[PairSpec]] = {}
    for p in pairs:
        if p.runnable and p.src.netns is None and p.src.executor is not None:
            by_src.setdefault(p.src.name, []).append(p)
    return [ScriptSource(ps[0].src, tuple(p.index for p in ps)) for ps in by_src.values()]


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
    pairs = _plan_pairs(typed, eps, targets, dns_server, responders)
    return ProbePlan(checks=tuple(typed), sources=tuple(names),
                     targets=tuple(t.name for t in targets), pairs=tuple(pairs),
                     responders=tuple(_plan_responders(pairs)),
                     units=tuple(_plan_units(pairs, count)),
                     scripts=tuple(_plan_scripts(pairs)), endpoints=tuple(targets),
                     count=count, domain=domain.strip("."), dns_server=dns_server)
