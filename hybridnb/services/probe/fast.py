"""The fast engine: a plan's socket work done by the C extension :mod:`._fast`, in threads.

:func:`execute` hands the plan's columns (:class:`~hybridnb.services.probe.plan.UnitTable`) to
``_fast.run``, which opens every socket inside its namespace, sends, runs the responders and
reads the replies in C threads with the GIL released (``_fast.c`` says how); :func:`results`
turns the per-pair outcome columns it filled in into :class:`~hybridnb.services.probe.matrix.ProbeResult`
objects, reasons worded exactly as the portable engine words them.

Same semantics as the portable engine (:mod:`.engine` with :mod:`.clients`): the units go out
in plan order within the file-descriptor window, a responder is open from the first unit
towards it to the last, a pair's deadline is its first attempt + ``timeout``, a unit is given
up only once its lane has read everything that arrived; each lane keeps at most
:func:`~hybridnb.services.probe.schedule.packet_cap` packets unanswered, and probes towards
slow targets (VMs) go one at a time per target (:class:`~hybridnb.services.probe.schedule.Pacer`
says the rules).  The real-engine tests run both.

:func:`available` says whether the extension was built (``pip install`` builds it where a C
compiler and Python's headers are; without them the portable engine runs).
"""

from __future__ import annotations

import errno
import gc
import os
import secrets
import socket
from array import array
from typing import Callable, Sequence

from hybridnb.services.probe.clients import UNREACH_CODES, http_request
from hybridnb.services.probe.matrix import ProbeResult, fast_result
from hybridnb.services.probe.plan import CheckPlan, ProbePlan, UnitTable
from hybridnb.services.probe.schedule import (
    PACE_SLOW_UNITS,
    SLOW_GAP,
    packet_cap,
    read_backlog,
)
from hybridnb.services.probe.wire import fd_budget, reason

try:  # built by setup.py where a compiler is available
    from hybridnb.services.probe import _fast
except ImportError:  # pragma: no cover - depends on the build
    _fast = None  # type: ignore[assignment]

#: The longest a busy lane keeps a unit past its deadline (as engine.GRACE).
GRACE = 5.0
#: DNS queries each lane keeps in flight towards the lab's one name server (its socket buffer
#: holds a few thousand: a 200-endpoint matrix sent at once would overflow it).
DNS_WINDOW = 512


def available() -> bool:
    """Whether the C extension is built (else the portable engine runs)."""
    return _fast is not None


def usable(plan: ProbePlan) -> bool:
    """Whether this engine can run ``plan`` (its units are a :class:`UnitTable`)."""
    return _fast is not None and isinstance(plan.units, UnitTable) and bool(plan.check_plans)


def lanes() -> int:
    """Threads to split the socket work over: the CPUs this process may use, at most 4."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4))


def _ip(address: str) -> bytes:
    try:
        return socket.inet_aton(address)
    except OSError:
        return b"\0\0\0\0"


def _qname(name: str, domain: str) -> bytes:
    """``name.domain.`` in DNS wire format (labels of at most 63 bytes)."""
    out = bytearray()
    for label in f"{name}.{domain}".split("."):
        if label:
            raw = label.encode()[:63]
            out += bytes([len(raw)]) + raw
    return bytes(out[:254]) + b"\0"


def _request(host: str) -> bytes:
    return http_request(host)


class _Inputs:
    """The plan as ``_fast.run`` reads it."""

    def __init__(self, plan: ProbePlan) -> None:
        units = plan.units
        assert isinstance(units, UnitTable)
        self.units = (units.kind, units.ns, units.first, units.size, units.attempt, units.fds,
                      units.responder, units.http, units.target, units.port, len(plan.pairs))
        self.group, self.group_target = units.group, units.group_target
        domain = plan.domain
        eps = plan.endpoints
        self.endpoints = (b"".join(_ip(e.address) for e in eps),
                          [_qname(e.name, domain) for e in eps],
                          [_request(e.address if e.kind == "gateway" else f"{e.name}.{domain}")
                           for e in eps])
        namespaces = list(units.namespaces)
        index = {ns: i for i, ns in enumerate(namespaces)}
        self.responders = []
        held = set(plan.held)
        target = {e.name: k for k, e in enumerate(eps)}
        for n, r in enumerate(plan.responders):
            ns = -1
            if r.netns is not None:
                ns = index.setdefault(r.netns, len(namespaces))
                if ns == len(namespaces):
                    namespaces.append(r.netns)
            self.responders.append((2 if r.kind == "dgram" else 3, ns, _ip(r.address), r.port,
                                    r.http, target[r.target], n in held))
        self.namespaces = namespaces
        self.dns_ip = _ip(plan.dns_server) if plan.dns_server else b""
        slow = set(plan.slow)
        flag = 1 | (2 if PACE_SLOW_UNITS else 0)      # _fast.c: SLOW_ECHOES | SLOW_UNITS
        self.slow = bytes(flag if k in slow else 0 for k in range(len(eps)))


class Outcome:
    """What ``_fast.run`` filled in, per pair."""

    def __init__(self, pairs: int, count: int) -> None:
        self.count = count
        self.sent = array("i", bytes(4 * pairs))
        self.received = array("i", bytes(4 * pairs))
        self.error = array("i", bytes(4 * pairs))
        self.status = array("i", bytes(4 * pairs))
        self.rtt = array("q", bytes(8 * pairs * count))
        self.notes: dict[int, tuple[bytes, int]] = {}
        self.batches = 0

    @property
    def buffers(self) -> tuple[array, ...]:
        return self.sent, self.received, self.error, self.status, self.rtt


def execute(plan: ProbePlan, *, timeout: float, fd_limit: int | None = None,
            note: Callable[[str], None] = lambda _m: None, hold: int = -1,
            ready: int = -1) -> Outcome:
    """Run ``plan``'s socket units (not its script sources); ``fd_limit``: descriptors the
    run may hold at once (default: what the process's limit leaves free).  ``hold``: a
    descriptor that becomes readable once the script sources are done (the responders they
    probe, :attr:`ProbePlan.held`, serve until then); -1: none to wait for.  ``ready``: an
    eventfd written once those held responders listen (the script sources start then)."""
    assert _fast is not None
    inputs = _Inputs(plan)
    n_lanes = lanes()
    nns = len(inputs.namespaces)
    needed = plan.fds_needed
    budget = fd_budget(needed + nns + 2 * n_lanes) if fd_limit is None else fd_limit + nns
    cache = nns <= budget // 2
    limit = plan.window(budget - (nns if cache else 0) - 2 * n_lanes)
    note(f"{needed} sockets" + (f", at most {limit} open at once" if needed > limit else ""))
    out = Outcome(len(plan.pairs), plan.count)
    notes, up, batches, _dropped, _peak = _fast.run(
        inputs.units, inputs.group, inputs.group_target, inputs.endpoints, inputs.namespaces,
        inputs.responders, out.buffers, plan.count, int(timeout * 1e9),
        int(max(timeout, GRACE) * 1e9), limit, n_lanes, secrets.token_bytes(8), inputs.dns_ip,
        53, secrets.randbelow(0x10000), cache, hold if plan.held else -1, DNS_WINDOW, ready,
        packet_cap(read_backlog(), n_lanes), inputs.slow, int(SLOW_GAP * 1e9))
    if up:
        note(f"{up} responders listening")
    if batches > 1:
        note(f"sent in {batches} batches")
    out.notes = {pair: (data, rtt) for pair, data, rtt in notes}
    out.batches = batches
    return out


# -- results --------------------------------------------------------------------------------

def results(plan: ProbePlan, out: Outcome, scripts: dict[int, ProbeResult]) -> list[ProbeResult]:
    """Every pair's :class:`ProbeResult`, in plan order.  The cyclic garbage collector is
    paused meanwhile: hundreds of thousands of new objects (none of them in a cycle) would
    otherwise trigger it again and again, for a third of the time."""
    secs = [x / 1e9 for x in out.rtt]
    words = _Words(plan, out)
    rows: list[ProbeResult] = []
    paused = gc.isenabled()
    gc.disable()
    try:
        for cp in plan.check_plans:
            _check_results(plan, cp, out, secs, words, scripts, rows)
    finally:
        if paused:
            gc.enable()
    return rows


class _Words:
    """Reasons and details, worded as the portable engine words them (cached per code)."""

    def __init__(self, plan: ProbePlan, out: Outcome) -> None:
        self.plan = plan
        self.out = out
        self.cache: dict[tuple[int, str], str] = {}

    def reason(self, code: int, protocol: str, pair: int, src_netns: str | None) -> str:
        if code == 0:
            return "timeout"
        if code == _fast.E_DNSNOTE:
            return ""                                   # decided by the caller
        if code & ~0xFFFF in (_fast.E_NOSOCK, _fast.E_NONS):
            return f"cannot open sockets in {src_netns}: {_socket_error(code, src_netns)}"
        if code & ~0xFFFF == _fast.E_HTTP:
            return f"HTTP {self.out.status[pair]}"
        key = (code, protocol)
        word = self.cache.get(key)
        if word is None:
            word = self.cache[key] = _word(code, protocol)
        return word


def _socket_error(code: int, netns: str | None) -> str:
    """As :func:`~hybridnb.services.probe.wire.open_sockets` words it (through nsutil)."""
    e = code & 0xFFFF
    if code & ~0xFFFF == _fast.E_NOSOCK:
        return f"[Errno {e}] {os.strerror(e)}"
    if e == errno.ENOENT:
        return f"network namespace {netns} does not exist"
    return f"cannot enter network namespace {netns}: {os.strerror(e)}"


def _word(code: int, protocol: str) -> str:
    if code & ~0xFFFF == _fast.E_ICMP:
        typ, c = (code >> 8) & 0xFF, code & 0xFF
        return "TTL exceeded" if typ == 11 else UNREACH_CODES.get(c, f"unreachable (code {c})")
    if code == _fast.E_CLOSED:
        return "connection closed without a response"
    if code == _fast.E_NOTHTTP:
        return "not an HTTP response"
    if code == _fast.E_TOOMANY:
        return f"too many {'ICMP' if protocol == 'icmp' else 'DNS'} probes from one source"
    if code == errno.ECONNREFUSED and protocol in ("udp", "dns"):
        return "refused (port unreachable)"
    return reason(code)


def _check_results(plan: ProbePlan, cp: CheckPlan, out: Outcome, secs: Sequence[float],
                   words: _Words, scripts: dict[int, ProbeResult],
                   rows: list[ProbeResult]) -> None:
    name, protocol = cp.check.name, cp.check.protocol
    sources = plan.endpoints
    targets = [(plan.endpoints[t].name, cp.ports[j], cp.addresses[j], cp.tgt_skip[j],
                plan.endpoints[t].address) for j, t in enumerate(cp.targets)]
    for i, src_name in enumerate(plan.sources):
        fail, skip = cp.src_fail[i], cp.src_skip[i]
        pos = cp.self_pos[i]
        if fail is not None or skip is not None:
            ok = None if skip is not None else False
            why = skip if skip is not None else fail
            rows.extend(fast_result(name, src_name, dst, ok, why, (), 0, 0, port, addr, "")
                        for j, (dst, port, addr, _s, _a) in enumerate(targets) if j != pos)
            continue
        netns = sources[i].netns
        k = cp.rows[i]
        for j, (dst, port, addr, tgt_skip, dst_addr) in enumerate(targets):
            if j == pos:
                continue
            if tgt_skip is not None:
                rows.append(fast_result(name, src_name, dst, None, tgt_skip, (), 0, 0, port,
                                        addr, ""))
            elif k in scripts:
                rows.append(scripts[k])
            else:
                rows.append(_socket_result(name, protocol, src_name, dst, port, addr, dst_addr,
                                           k, out, secs, words, netns))
            k += 1


def _socket_result(name: str, protocol: str, src: str, dst: str, port: int | None, addr: str,
                   dst_addr: str, k: int, out: Outcome, secs: Sequence[float], words: _Words,
                   netns: str | None) -> ProbeResult:
    c = out.count
    got = min(out.received[k], c)
    rtts = tuple(secs[k * c:k * c + got])
    code = out.error[k]
    detail = ""
    if protocol == "http" and out.status[k]:
        detail = f"HTTP {out.status[k]}"
    if code == _fast.E_DNSNOTE and not rtts:
        return _dns_note(name, src, dst, port, addr, dst_addr, k, out)
    if rtts:
        if protocol == "dns":
            detail = dst_addr
        return fast_result(name, src, dst, True, "", rtts, out.sent[k], got, port, addr, detail)
    return fast_result(name, src, dst, False, words.reason(code, protocol, k, netns), (),
                       out.sent[k], 0, port, addr, detail)


def _dns_note(name: str, src: str, dst: str, port: int | None, addr: str, dst_addr: str,
              k: int, out: Outcome) -> ProbeResult:
    """A DNS answer the C side did not recognise as holding the address: dnslib decides."""
    from hybridnb.services.probe.clients import dns_verdict

    data, rtt = out.notes.get(k, (b"", 0))
    verdict = dns_verdict(data, dst_addr)
    if verdict is None:
        return fast_result(name, src, dst, True, "", (max(rtt, 0) / 1e9,), out.sent[k], 1,
                           port, addr, dst_addr)
    return fast_result(name, src, dst, False, verdict, (), out.sent[k], 0, port, addr, "")


__all__ = ["Outcome", "available", "execute", "lanes", "results", "usable"]
