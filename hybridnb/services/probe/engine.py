"""The probe engine: every endpoint against every other, all checks at once, one timeout.

:func:`probe_matrix` runs ICMP echo, TCP connect, UDP echo, HTTP GET and DNS lookups from each
source endpoint to each target (every other endpoint, then the gateway) and returns a
:class:`~hybridnb.services.probe.matrix.ConnectivityMatrix`.

How it stays fast and tool-free:

1. **Sockets are opened inside the endpoints' namespaces from this process.**  For each source
   namespace one batch of sockets is created on that namespace's worker thread
   (:mod:`hybridnb.drivers.nsutil`: setns once, microseconds per socket, no fork, no
   ``docker exec``): one raw ICMP socket, one TCP socket per pair and attempt (TCP, HTTP), one
   connected UDP socket per pair (UDP, DNS).  A socket keeps its namespace for life, so
   everything after creation happens on the calling thread.
2. **Responders are opened inside the targets' namespaces** for the run — a stream listener
   that accepts TCP probes and answers HTTP requests, and a UDP echo — unless the endpoint
   declares the port as a real service, or something already listens there.
3. **One event loop, one deadline.**  Every request is sent first, then replies are collected
   with one ``selectors`` loop until everything answered or ``timeout`` seconds after the last
   send.  A dead endpoint costs one timeout in total, not one per pair.
4. **Kernel timestamps.**  ICMP and UDP replies carry their kernel receive time
   (``SO_TIMESTAMPNS``); the RTT is that minus the time taken just before ``sendto``, so a busy
   loop does not inflate it.  TCP/HTTP times are measured in user space.
5. **No ARP storm past the kernel's cap.**  A mesh too big for the machine-wide neighbour
   table gets permanent entries for the run (:mod:`hybridnb.services.probe.neighbours`).

Sources that have no namespace but an ``executor`` (VMs, through qemu-guest-agent) probe with a
shell script run inside them (:mod:`hybridnb.services.probe.script`), concurrently with the
socket probes; the responders stay up until those scripts are done.

Safety: the engine only sends to the addresses of the endpoints (and DNS server) it is given.
"""

from __future__ import annotations

import array
import errno
import os
import resource
import secrets
import selectors
import socket
import struct
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from hybridnb.errors import EngineError
from hybridnb.services.probe.endpoint import DEFAULT_PORTS, ProbeEndpoint
from hybridnb.services.probe.matrix import ConnectivityMatrix, ProbeResult
from hybridnb.services.probe.neighbours import pinned_neighbours

DEFAULT_CHECKS = ("icmp", "tcp", "udp", "http", "dns")
PROTOCOLS = ("icmp", "tcp", "udp", "http", "dns")

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SOL_RAW = 255
ICMP_FILTER = 1
_ICMP_ECHO_REPLY, _ICMP_UNREACH, _ICMP_ECHO, _ICMP_TIMXCEED = 0, 3, 8, 11
_UNREACH_CODES = {0: "network unreachable", 1: "host unreachable", 2: "protocol unreachable",
                  3: "port unreachable", 9: "administratively prohibited",
                  10: "administratively prohibited", 13: "administratively prohibited"}
_ERRNO_REASONS = {errno.ECONNREFUSED: "refused", errno.EHOSTUNREACH: "host unreachable",
                  errno.ENETUNREACH: "network unreachable", errno.ETIMEDOUT: "timeout",
                  errno.ECONNRESET: "reset", errno.EPERM: "blocked (EPERM)",
                  errno.EACCES: "blocked (EACCES)", errno.EADDRNOTAVAIL: "address not available"}
_UDP_MAGIC = b"hnbP"
_UDP_PROBE_LEN = 4 + 8 + 2          # magic, run token, attempt
_HTTP_RESPONSE = (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n"
                  b"Connection: close\r\n\r\nhybridnb\n")
Progress = Callable[[str], None]


def _reason(err: int) -> str:
    return _ERRNO_REASONS.get(err, os.strerror(err).lower())


def _checksum(data: bytes) -> int:
    """Internet checksum, computed in native byte order (the sum is order-independent)."""
    if len(data) % 2:
        data += b"\0"
    s = sum(array.array("H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def _anc_ts(anc: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
            sec, nsec = struct.unpack("qq", payload[:16])
            return sec * 1_000_000_000 + nsec
    return None


def _recv_ts(sock: socket.socket, size: int = 2048) -> tuple[bytes, int]:
    """One datagram and its kernel receive time (ns, CLOCK_REALTIME); raises BlockingIOError."""
    data, anc, _flags, _addr = sock.recvmsg(size, 64)
    ts = _anc_ts(anc)
    return data, ts if ts is not None else time.time_ns()


# ------------------------------------------------------------------------------ bookkeeping

@dataclass(eq=False)
class _Pair:
    """One check between a source and a target, collecting its attempts."""

    check: str
    protocol: str
    src: ProbeEndpoint
    dst: ProbeEndpoint
    port: int | None
    address: str
    rtts: list[float] = field(default_factory=list)
    sent: int = 0
    pending: int = 0
    errors: list[str] = field(default_factory=list)
    detail: str = ""
    skip: str | None = None
    final: ProbeResult | None = None

    def answered(self, rtt: float) -> None:
        self.rtts.append(max(rtt, 0.0))
        self.pending -= 1

    def failed(self, reason: str) -> None:
        self.errors.append(reason)
        self.pending -= 1

    def result(self) -> ProbeResult:
        if self.final is not None:
            return self.final
        if self.skip is not None:
            return ProbeResult(self.check, self.src.name, self.dst.name, None, self.skip,
                               port=self.port, address=self.address)
        ok = bool(self.rtts)
        reason = ""
        if not ok:
            reason = self.errors[0] if self.errors else "timeout"
            if self.pending > 0 and not self.errors:
                reason = "timeout"
        return ProbeResult(self.check, self.src.name, self.dst.name, ok, reason,
                           rtts=tuple(self.rtts), sent=self.sent, received=len(self.rtts),
                           port=self.port, address=self.address, detail=self.detail)


class _Loop:
    """A selectors loop whose registrations carry their own handler."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.sockets: list[socket.socket] = []
        self._lock = threading.Lock()      # send jobs may register from several threads

    def add(self, sock: socket.socket, events: int, handler: Callable[[socket.socket], None]
            ) -> None:
        with self._lock:
            self.sel.register(sock, events, handler)

    def modify(self, sock: socket.socket, events: int,
               handler: Callable[[socket.socket], None]) -> None:
        self.sel.modify(sock, events, handler)

    def drop(self, sock: socket.socket) -> None:
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def run_once(self, timeout: float) -> None:
        for key, _ev in self.sel.select(max(timeout, 0.0)):
            key.data(key.fileobj)

    def close(self) -> None:
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.sel.close()
        for s in self.sockets:
            s.close()


def _make_sockets(specs: Sequence[tuple[int, int, int]]) -> list[socket.socket]:
    """Runs on a namespace's worker thread: create every socket of one batch."""
    out: list[socket.socket] = []
    try:
        for family, type_, proto in specs:
            out.append(socket.socket(family, type_, proto))
    except BaseException:
        for s in out:
            s.close()
        raise
    return out


def _open_batches(batches: dict[str | None, list[tuple[int, int, int]]]
                  ) -> dict[str | None, list[socket.socket] | BaseException]:
    """Create each namespace's batch of sockets, all namespaces in parallel."""
    from hybridnb.drivers import nsutil

    pool = nsutil.workers()
    futures: dict[str | None, Future | list[socket.socket] | BaseException] = {}
    for ns, specs in batches.items():
        if not specs:
            continue
        if ns is None:
            try:
                futures[ns] = _make_sockets(specs)
            except BaseException as exc:
                futures[ns] = exc
        else:
            try:
                futures[ns] = pool.submit(ns, _make_sockets, specs)
            except BaseException as exc:
                futures[ns] = exc
    out: dict[str | None, list[socket.socket] | BaseException] = {}
    for ns, f in futures.items():
        if isinstance(f, Future):
            try:
                out[ns] = f.result()
            except BaseException as exc:
                out[ns] = exc
        else:
            out[ns] = f
    return out


def _ensure_fd_budget(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed + 256
    if want <= soft:
        return
    if hard != resource.RLIM_INFINITY and want > hard:
        raise EngineError(f"probing needs ~{needed} sockets but the open-file limit is {hard}",
                          hint="raise `ulimit -n`, or probe fewer checks/attempts per run",
                          engine="kernel")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _errno_of(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno:
        return _reason(exc.errno)
    return str(exc)


# ------------------------------------------------------------------------------- the engine

def _check_port(check: str, protocol: str, dst: ProbeEndpoint) -> tuple[int | None, bool]:
    """(port, explicit) for a check against a target."""
    if protocol in ("icmp", "dns"):
        return None, False
    _, _, p = check.partition("/")
    if p:
        return int(p), True
    declared = dst.declared_port(protocol)
    return (declared if declared is not None else DEFAULT_PORTS[protocol]), False


def _parse_checks(protocols: Iterable[str]) -> list[tuple[str, str]]:
    out = []
    for c in protocols:
        proto, _, port = c.partition("/")
        if proto not in PROTOCOLS:
            raise EngineError(f"unknown probe check {c!r}",
                              hint="checks are icmp, tcp[/PORT], udp[/PORT], http[/PORT], dns")
        if port and (not port.isdigit() or not 1 <= int(port) <= 65535
                     or proto in ("icmp", "dns")):
            raise EngineError(f"bad port in probe check {c!r}")
        out.append((c, proto))
    return list(dict.fromkeys(out))


def _netns_of(ep: ProbeEndpoint) -> tuple[bool, str | None]:
    """(reachable, namespace) — the gateway's ``None`` namespace is the caller's own."""
    if ep.kind == "gateway":
        return True, ep.netns
    return ep.netns is not None, ep.netns


def probe_matrix(endpoints: Sequence[ProbeEndpoint],
                 protocols: Sequence[str] = DEFAULT_CHECKS, *,
                 gateway: ProbeEndpoint | str | None = None,
                 dns_server: str | None = None, domain: str = "hybrid.local",
                 timeout: float = 1.0, count: int = 3, responders: bool = True,
                 pin_neighbours: bool | None = None,
                 progress: Progress | None = None) -> ConnectivityMatrix:
    """Probe every ``protocols`` check from every endpoint to every other (and the gateway).

    ``protocols`` items are ``icmp``, ``tcp``, ``udp``, ``http`` (each target's declared
    service port, else the responder's default port) or ``tcp/PORT``… for a given port, and
    ``dns`` (resolve ``TARGET.<domain>`` at ``dns_server``, default the gateway, and expect
    the target's address).  ``count`` attempts per pair; replies are awaited until ``timeout``
    seconds after the last request went out.  ``responders=False`` opens no responders (only
    real services answer).  ``pin_neighbours``: pin permanent neighbour entries for the run
    (None: only when the mesh would overflow the kernel's table, see
    :mod:`~hybridnb.services.probe.neighbours`).
    """
    t_start = time.perf_counter()
    note = progress or (lambda _m: None)
    if count < 1:
        raise EngineError("count must be at least 1")
    checks = _parse_checks(protocols)
    eps = list(endpoints)
    names = [e.name for e in eps]
    if len(set(names)) != len(names):
        raise EngineError("endpoint names must be unique")
    gw: ProbeEndpoint | None
    if isinstance(gateway, str):
        gw = ProbeEndpoint("gateway", gateway, kind="gateway")
    else:
        gw = gateway
    targets = eps + ([gw] if gw is not None else [])
    if dns_server is None and gw is not None:
        dns_server = gw.address

    # -- plan every pair ------------------------------------------------------------------
    pairs: list[_Pair] = []
    for check, proto in checks:
        for src in eps:
            for dst in targets:
                if dst is src or (proto == "dns" and dst.kind == "gateway"):
                    continue
                port, explicit = _check_port(check, proto, dst)
                address = (dns_server or "") if proto == "dns" else dst.address
                p = _Pair(check, proto, src, dst, 53 if proto == "dns" else port, address)
                if not src.can_source:
                    p.skip = (f"cannot probe from {src.name}: "
                              "no network namespace and no executor")
                elif proto == "dns" and not dns_server:
                    p.skip = "no DNS server given"
                elif proto in ("tcp", "udp", "http") and not explicit:
                    reach, _ = _netns_of(dst)
                    if not reach and dst.declared_port(proto) is None and not (
                            proto == "http" and dst.declared_port("tcp") == port):
                        p.skip = (f"no {proto} service declared on {dst.name} and no responder "
                                  f"can be placed in a {dst.kind}")
                pairs.append(p)

    socket_pairs = [p for p in pairs if p.skip is None and p.src.netns is not None]
    exec_pairs = [p for p in pairs if p.skip is None and p.src.netns is None]

    # -- responders in the targets' namespaces --------------------------------------------
    wanted: dict[tuple[str, str, int], ProbeEndpoint] = {}   # (target, kind, port)
    if responders:
        for p in pairs:
            if p.skip is not None or p.protocol in ("icmp", "dns"):
                continue
            reach, _ = _netns_of(p.dst)
            if not reach or p.dst.declares(p.protocol, p.port or 0):
                continue
            kind = "udp" if p.protocol == "udp" else "stream"
            wanted[(p.dst.name, kind, p.port or 0)] = p.dst

    # -- sockets: one batch per namespace ---------------------------------------------------
    by_src: dict[str, list[_Pair]] = {}
    for p in socket_pairs:
        by_src.setdefault(p.src.name, []).append(p)
    batches: dict[str | None, list[tuple[int, int, int]]] = {}
    layout: dict[str | None, list[tuple[str, Any]]] = {}

    def want(ns: str | None, spec: tuple[int, int, int], role: str, obj: Any) -> None:
        batches.setdefault(ns, []).append(spec)
        layout.setdefault(ns, []).append((role, obj))

    raw = (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    stream = (socket.AF_INET, socket.SOCK_STREAM, 0)
    dgram = (socket.AF_INET, socket.SOCK_DGRAM, 0)
    for src_name, plist in by_src.items():
        ns = plist[0].src.netns
        icmp = [p for p in plist if p.protocol == "icmp"]
        if icmp:
            want(ns, raw, "icmp", (plist[0].src, icmp))
        for p in plist:
            if p.protocol in ("tcp", "http"):
                for attempt in range(count):
                    want(ns, stream, "stream", (p, attempt))
            elif p.protocol in ("udp", "dns"):
                want(ns, dgram, "dgram", p)
    for (tname, kind, port), dst in sorted(wanted.items(), key=lambda kv: kv[0]):
        _, ns = _netns_of(dst)
        want(ns, stream if kind == "stream" else dgram, "responder-" + kind, (dst, port))
    _ensure_fd_budget(sum(len(b) for b in batches.values()))
    note(f"opening {sum(len(b) for b in batches.values())} sockets in {len(batches)} namespaces")
    pin_budget = {None: None, True: -1, False: 1 << 62}[pin_neighbours]
    with pinned_neighbours(eps + ([gw] if gw is not None else []), budget=pin_budget,
                           note=note):
        opened = _open_batches(batches)

        loop = _Loop()
        token = secrets.token_bytes(8)
        try:
            # sources whose namespace could not be entered fail at once
            for ns, socks in opened.items():
                if isinstance(socks, BaseException):
                    for role, obj in layout[ns]:
                        for p in _pairs_of(role, obj):
                            if p.final is None and p.skip is None:
                                p.sent = 0
                                p.errors.append(f"cannot open sockets in {ns}: {socks}")
            responders_up = _start_responders(loop, opened, layout)
            if responders_up:
                note(f"{responders_up} responders listening")
            senders = _Senders(loop, token, count, domain)
            for ns, socks in opened.items():
                if isinstance(socks, BaseException):
                    continue
                for (role, obj), sock in zip(layout[ns], socks):
                    if role == "icmp":
                        senders.add_icmp(sock, *obj)
                    elif role == "stream":
                        senders.add_stream(sock, *obj)
                    elif role == "dgram":
                        senders.add_dgram(sock, obj)

            # -- executor sources run in threads meanwhile -------------------------------------
            exec_threads = _start_executors(exec_pairs, timeout, count, domain, dns_server)

            # -- send everything, then collect with one deadline --------------------------------
            senders.send_all()
            deadline = time.monotonic() + timeout
            note(f"sent {senders.sent} requests; waiting up to {timeout:g} s")
            while True:
                now = time.monotonic()
                sockets_done = senders.all_done() or now >= deadline
                execs_done = all(not t.is_alive() for t in exec_threads)
                if sockets_done and execs_done:
                    break
                wait = deadline - now if not sockets_done else 0.05
                loop.run_once(min(max(wait, 0.0), 0.25))
            for t in exec_threads:
                t.join()
        finally:
            loop.close()
            for socks in opened.values():
                if isinstance(socks, list):
                    for s in socks:
                        s.close()

    results = [p.result() for p in pairs]
    sources = [e.name for e in eps]
    tnames = [t.name for t in targets]
    return ConnectivityMatrix(results=results, sources=sources, targets=tnames,
                              checks=[c for c, _ in checks],
                              duration=time.perf_counter() - t_start, timeout=timeout,
                              count=count)


def _pairs_of(role: str, obj: Any) -> list[_Pair]:
    if role == "icmp":
        return list(obj[1])
    if role == "stream":
        return [obj[0]]
    if role == "dgram":
        return [obj]
    return []


# ------------------------------------------------------------------------------ responders

def _start_responders(loop: _Loop, opened: dict[str | None, Any],
                      layout: dict[str | None, list[tuple[str, Any]]]) -> int:
    up = 0
    for ns, socks in opened.items():
        if isinstance(socks, BaseException):
            continue
        for (role, obj), sock in zip(layout[ns], socks):
            if not role.startswith("responder-"):
                continue
            dst, port = obj
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((dst.address, port))
                if role == "responder-stream":
                    sock.listen(4096)
            except OSError:
                # EADDRINUSE: a real service already listens there and will answer;
                # anything else: the probe will report what the client sees.
                continue
            up += 1
            if role == "responder-stream":
                loop.add(sock, selectors.EVENT_READ, _Responder(loop).accept)
            else:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                loop.add(sock, selectors.EVENT_READ, _udp_echo)
    return up


class _Responder:
    """Accepts TCP probes (which just close) and answers HTTP requests."""

    def __init__(self, loop: _Loop) -> None:
        self.loop = loop
        self.buffers: dict[socket.socket, bytes] = {}

    def accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            conn.setblocking(False)
            self.buffers[conn] = b""
            self.loop.add(conn, selectors.EVENT_READ, self.read)

    def read(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.buffers.pop(conn, None)
            self.loop.drop(conn)
            return
        buf = self.buffers.get(conn, b"") + data
        if b"\r\n\r\n" in buf or b"\n\n" in buf or len(buf) > 8192:
            try:
                conn.send(_HTTP_RESPONSE)
            except OSError:
                pass
            self.buffers.pop(conn, None)
            self.loop.drop(conn)
        else:
            self.buffers[conn] = buf


def _udp_echo(sock: socket.socket) -> None:
    """Echo each datagram; our own probes (marked) get the responder's kernel receive time
    and its send time appended, so the client can subtract the time spent in this loop."""
    while True:
        try:
            data, anc, _flags, addr = sock.recvmsg(2048, 64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        if len(data) == _UDP_PROBE_LEN and data.startswith(_UDP_MAGIC):
            rx = _anc_ts(anc)
            if rx is not None:
                data += struct.pack("!QQ", rx, time.time_ns())
        try:
            sock.sendto(data, addr)
        except OSError:
            pass


# -------------------------------------------------------------------------------- senders

class _Senders:
    """Holds every client socket of the run; sends everything, then handles replies."""

    def __init__(self, loop: _Loop, token: bytes, count: int, domain: str) -> None:
        self.loop = loop
        self.token = token
        self.count = count
        self.domain = domain.strip(".")
        self.sent = 0
        self.pairs: list[_Pair] = []
        self._send_jobs: list[Callable[[], None]] = []
        self._icmp_ident = (os.getpid() * 131) & 0xFFFF

    def all_done(self) -> bool:
        return all(p.pending <= 0 for p in self.pairs)

    def send_all(self) -> None:
        """Run every send job.  ``sendto`` on veth does the whole kernel round trip in the
        caller's context (~10 µs) with the GIL released, so with more than one CPU the jobs
        are split over that many threads; the sends then overlap in the kernel."""
        jobs, self._send_jobs = self._send_jobs, []
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

    # -- ICMP: one raw socket per source namespace ------------------------------------------

    def add_icmp(self, sock: socket.socket, src: ProbeEndpoint, plist: list[_Pair]) -> None:
        count = self.count
        if len(plist) * count > 0xFFFF:
            for p in plist:
                p.errors.append("too many ICMP probes from one source")
            return
        ident = self._icmp_ident
        self._icmp_ident = (self._icmp_ident + 1) & 0xFFFF
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        allowed = (1 << _ICMP_ECHO_REPLY) | (1 << _ICMP_UNREACH) | (1 << _ICMP_TIMXCEED)
        try:
            sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", ~allowed & 0xFFFFFFFF))
        except OSError:
            pass
        sent_at: dict[int, int] = {}
        seq_pair: dict[int, _Pair] = {}
        packets: list[tuple[int, _Pair, bytes]] = []
        for i, p in enumerate(plist):
            p.pending = count
            self.pairs.append(p)
            for attempt in range(count):
                seq = i * count + attempt
                seq_pair[seq] = p
                body = struct.pack("!BBHHH", _ICMP_ECHO, 0, 0, ident, seq) + self.token + \
                    struct.pack("!Q", seq)
                ck = _checksum(body)
                pkt = body[:2] + struct.pack("=H", ck) + body[4:]
                packets.append((seq, p, pkt))
        # send round by round: attempt 0 to every target, then attempt 1…
        packets.sort(key=lambda t: (t[0] % count, t[0]))
        token = self.token

        def send() -> None:
            sendto = sock.sendto
            for seq, p, pkt in packets:
                p.sent += 1
                sent_at[seq] = time.time_ns()
                try:
                    sendto(pkt, (p.address, 0))
                    self.sent += 1
                except OSError as exc:
                    sent_at.pop(seq, None)
                    p.failed(_errno_of(exc))

        def receive(s: socket.socket) -> None:
            while True:
                try:
                    data, ts = _recv_ts(s)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    return
                ihl = (data[0] & 0x0F) * 4
                if len(data) < ihl + 8:
                    continue
                typ, code = data[ihl], data[ihl + 1]
                if typ == _ICMP_ECHO_REPLY:
                    rid, seq = struct.unpack_from("!HH", data, ihl + 4)
                    if rid != ident or data[ihl + 8:ihl + 16] != token:
                        continue
                    t0 = sent_at.pop(seq, None)
                    if t0 is not None:
                        seq_pair[seq].answered((ts - t0) / 1e9)
                elif typ in (_ICMP_UNREACH, _ICMP_TIMXCEED):
                    inner = ihl + 8
                    if len(data) < inner + 20:
                        continue
                    iihl = (data[inner] & 0x0F) * 4
                    if len(data) < inner + iihl + 8 or data[inner + iihl] != _ICMP_ECHO:
                        continue
                    rid, seq = struct.unpack_from("!HH", data, inner + iihl + 4)
                    if rid != ident or sent_at.pop(seq, None) is None:
                        continue
                    reason = ("TTL exceeded" if typ == _ICMP_TIMXCEED else
                              _UNREACH_CODES.get(code, f"unreachable (code {code})"))
                    seq_pair[seq].failed(reason)

        self.loop.add(sock, selectors.EVENT_READ, receive)
        self._send_jobs.append(send)

    # -- TCP and HTTP: one non-blocking socket per pair and attempt -------------------------

    def add_stream(self, sock: socket.socket, p: _Pair, attempt: int) -> None:
        if attempt == 0:
            p.pending = self.count
            self.pairs.append(p)
        sock.setblocking(False)
        loop = self.loop
        started = [0.0]
        buf = bytearray()
        host = f"{p.dst.name}.{self.domain}" if p.dst.kind != "gateway" else p.address
        request = (f"GET / HTTP/1.0\r\nHost: {host}\r\nUser-Agent: hybridnb-probe\r\n"
                   f"Connection: close\r\n\r\n").encode()

        def finish_error(s: socket.socket, reason: str) -> None:
            loop.drop(s)
            p.failed(reason)

        def readable(s: socket.socket) -> None:
            try:
                data = s.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                finish_error(s, _errno_of(exc))
                return
            buf.extend(data)
            line_end = buf.find(b"\n")
            if data and line_end < 0 and len(buf) < 4096:
                return
            rtt = time.perf_counter() - started[0]
            line = bytes(buf[:line_end if line_end >= 0 else len(buf)]).strip()
            loop.drop(s)
            parts = line.split()
            if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
                status = int(parts[1])
                p.detail = f"HTTP {status}"
                if status < 400:
                    p.answered(rtt)
                else:
                    p.failed(f"HTTP {status}")
            elif not line:
                p.failed("connection closed without a response")
            else:
                p.failed("not an HTTP response")

        def writable(s: socket.socket) -> None:
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                finish_error(s, _reason(err))
                return
            if p.protocol == "tcp":
                rtt = _tcp_rtt(s)
                if rtt is None:
                    rtt = time.perf_counter() - started[0]
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                loop.drop(s)
                p.answered(rtt)
                return
            try:
                s.send(request)
            except OSError as exc:
                finish_error(s, _errno_of(exc))
                return
            loop.modify(s, selectors.EVENT_READ, readable)

        def send() -> None:
            p.sent += 1
            started[0] = time.perf_counter()
            err = sock.connect_ex((p.address, p.port or 0))
            if err in (0, errno.EINPROGRESS):
                loop.add(sock, selectors.EVENT_WRITE, writable)
                self.sent += 1
            else:
                sock.close()
                p.failed(_reason(err))

        self._send_jobs.append(send)

    # -- UDP echo and DNS: one connected datagram socket per pair ---------------------------

    def add_dgram(self, sock: socket.socket, p: _Pair) -> None:
        p.pending = self.count
        self.pairs.append(p)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        loop = self.loop
        count = self.count
        sent_at: dict[int, int] = {}
        payloads: list[bytes] = []
        if p.protocol == "dns":
            from dnslib import DNSRecord  # lazy: only when DNS is probed

            qname = f"{p.dst.name}.{self.domain}."
            ids = [(int.from_bytes(secrets.token_bytes(2), "big") + i) & 0xFFFF
                   for i in range(count)]
            for i, qid in enumerate(ids):
                q = DNSRecord.question(qname, "A")
                q.header.id = qid
                payloads.append(q.pack())
        else:
            ids = list(range(count))
            payloads = [_UDP_MAGIC + self.token + struct.pack("!H", i) for i in ids]

        def receive(s: socket.socket) -> None:
            while True:
                try:
                    data, ts = _recv_ts(s)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    # an ICMP error reported on the connected socket (port unreachable…)
                    reason = _errno_of(exc)
                    if exc.errno == errno.ECONNREFUSED:
                        reason = "refused (port unreachable)"
                    for key in list(sent_at):
                        sent_at.pop(key)
                        p.failed(reason)
                    if not sent_at:
                        loop.drop(s)
                    return
                if p.protocol == "dns":
                    if len(data) < 2:
                        continue
                    key = int.from_bytes(data[:2], "big")
                    t0 = sent_at.pop(key, None)
                    if t0 is None:
                        continue
                    verdict = _dns_verdict(data, p.dst.address)
                    if verdict is None:
                        p.detail = p.dst.address
                        p.answered((ts - t0) / 1e9)
                    else:
                        p.failed(verdict)
                else:
                    if len(data) < _UDP_PROBE_LEN or data[4:12] != self.token:
                        continue
                    key = struct.unpack_from("!H", data, 12)[0]
                    t0 = sent_at.pop(key, None)
                    if t0 is None:
                        continue
                    held = 0
                    if len(data) == _UDP_PROBE_LEN + 16:   # our responder: minus its delay
                        r_rx, r_tx = struct.unpack_from("!QQ", data, _UDP_PROBE_LEN)
                        held = max(r_tx - r_rx, 0)
                    p.answered((ts - t0 - held) / 1e9)
                if p.pending <= 0:
                    loop.drop(s)
                    return

        def send() -> None:
            try:
                sock.connect((p.address, p.port or 0))
            except OSError as exc:
                p.pending = 0
                p.errors.append(_errno_of(exc))
                sock.close()
                return
            loop.add(sock, selectors.EVENT_READ, receive)
            for key, payload in zip(ids, payloads):
                p.sent += 1
                sent_at[key] = time.time_ns()
                try:
                    sock.send(payload)
                    self.sent += 1
                except OSError as exc:
                    sent_at.pop(key, None)
                    p.failed(_errno_of(exc))

        self._send_jobs.append(send)


def _tcp_rtt(sock: socket.socket) -> float | None:
    """The kernel's RTT estimate of a just-connected socket (its SYN → SYN-ACK sample)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except OSError:
        return None
    if len(info) < 72:
        return None
    (rtt_us,) = struct.unpack_from("I", info, 68)   # struct tcp_info.tcpi_rtt
    return rtt_us / 1e6 if rtt_us else None


def _run_jobs(jobs: list[Callable[[], None]]) -> None:
    for job in jobs:
        job()


def _dns_verdict(data: bytes, expected: str) -> str | None:
    """None when the answer holds ``expected`` as an A record, else why not."""
    from dnslib import QTYPE, RCODE, DNSRecord

    try:
        reply = DNSRecord.parse(data)
    except Exception as exc:  # dnslib raises its own parse errors
        return f"malformed DNS reply ({exc.__class__.__name__})"
    rcode = reply.header.rcode
    if rcode != 0:
        return RCODE.get(rcode, f"rcode {rcode}")
    got = [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]
    if expected in got:
        return None
    if not got:
        return "no A record"
    return f"answer {', '.join(got)}, expected {expected}"


# ------------------------------------------------------------------------------ executors

def _start_executors(pairs: list[_Pair], timeout: float, count: int, domain: str,
                     dns_server: str | None) -> list[threading.Thread]:
    """One thread per executor source, running the probe script inside the endpoint."""
    if not pairs:
        return []
    from hybridnb.services.probe import script

    by_src: dict[str, list[_Pair]] = {}
    for p in pairs:
        by_src.setdefault(p.src.name, []).append(p)
    threads = []
    for plist in by_src.values():
        def work(plist: list[_Pair] = plist) -> None:
            script.run_pairs(plist, timeout=timeout, count=count, domain=domain)
        t = threading.Thread(target=work, name=f"probe-exec:{plist[0].src.name}", daemon=True)
        t.start()
        threads.append(t)
    return threads
