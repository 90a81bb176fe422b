"""The probe engine's clients: one object per socket unit, sending probes and reading replies.

Each client owns one socket of a :class:`~hybridnb.services.probe.plan.Unit` and the
:class:`PairState` of the pairs it probes:

* :class:`IcmpClient` — one raw ICMP socket per source: every echo to every target, sent
  round by round (attempt 0 to everyone, then attempt 1…), matched by identifier, sequence
  and a per-run token; ICMP errors (unreachable, TTL exceeded) fail their pair;
* :class:`StreamClient` — one TCP attempt: connect (TCP: done, RTT from the kernel's
  ``TCP_INFO``), or a pair's ``count`` ``GET /`` requests on one keep-alive connection (HTTP:
  each status line decides; RTT from the request's send to its status line);
* :class:`UdpClient` — one connected socket per UDP pair, ``count`` datagrams on it; our
  responders append their receive/send times so their own delay is subtracted;
* :class:`DnsClient` — one socket per source to the DNS server, an ``A`` query per target and
  attempt, matched by query id; the answer must hold the target's address.

Life of a client: built on the engine's thread (socket options, registration), ``send()`` on
one of the send lanes (threads: ``sendto`` on a veth does the whole kernel round trip in the
caller's context), ``started(now)`` back on the engine's thread (deadlines, immediate
failures), then reply handlers from the event loop, until :meth:`Client.finish` — everything
answered, failed or past its deadline — closes the socket and gives its descriptors back.
"""

from __future__ import annotations

import errno
import secrets
import selectors
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from hybridnb.services.probe.matrix import ProbeResult
from hybridnb.services.probe.plan import PairSpec, Unit
from hybridnb.services.probe.schedule import Pacer
from hybridnb.services.probe.wire import (
    SO_TIMESTAMPNS,
    Loop,
    checksum,
    errno_reason,
    open_sockets,
    reason,
    recv_ts,
    tcp_rtt,
)

SOL_RAW = 255
ICMP_FILTER = 1
ICMP_ECHO_REPLY, ICMP_UNREACH, ICMP_ECHO, ICMP_TIMXCEED = 0, 3, 8, 11
UNREACH_CODES = {0: "network unreachable", 1: "host unreachable", 2: "protocol unreachable",
                  3: "port unreachable", 9: "administratively prohibited",
                  10: "administratively prohibited", 13: "administratively prohibited"}
UDP_MAGIC = b"hnbP"
UDP_PROBE_LEN = 4 + 8 + 2          # magic, run token, attempt


def icmp_ident(netns: str) -> int:
    """A source namespace's ICMP identifier: the same in every run, so repeated runs refresh
    the lab's connection-tracking entries for their echoes instead of adding new ones (a
    200-endpoint matrix is 39,800 ICMP entries, kept 30 s; the table holds
    ``nf_conntrack_max`` for the whole namespace).  Replies are told apart by the run's
    token, errors by the quoted destination.  FNV-1a, folded to 16 bits (as ``_fast.c``)."""
    h = 2166136261
    for b in netns.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return (h ^ (h >> 16)) & 0xFFFF


@dataclass(eq=False)
class PairState:
    """What one planned pair has seen so far."""

    spec: PairSpec
    rtts: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sent: int = 0
    detail: str = ""
    deadline: float | None = None     # monotonic; its first attempt's send + timeout
    final: ProbeResult | None = None  # set whole (script sources, sources that failed early)

    def answered(self, rtt: float) -> None:
        self.rtts.append(max(rtt, 0.0))

    def failed(self, why: str) -> None:
        self.errors.append(why)

    def result(self) -> ProbeResult:
        s = self.spec
        if self.final is not None:
            return self.final
        if s.skip is not None or s.fail is not None:
            return ProbeResult(s.check.name, s.src.name, s.dst.name,
                               None if s.skip is not None else False, s.skip or s.fail or "",
                               port=s.port, address=s.address)
        ok = bool(self.rtts)
        why = "" if ok else (self.errors[0] if self.errors else "timeout")
        return ProbeResult(s.check.name, s.src.name, s.dst.name, ok, why,
                           rtts=tuple(self.rtts), sent=self.sent, received=len(self.rtts),
                           port=s.port, address=s.address, detail=self.detail)


@dataclass
class RunContext:
    """What every client of one run shares."""

    loop: Loop
    states: Sequence[PairState]
    token: bytes
    count: int
    domain: str
    timeout: float
    release: Callable[["Client"], None]
    #: packets in flight and slow targets' turns (schedule.Pacer); touched on the engine's
    #: thread only (a send lane sends what the engine allotted it beforehand)
    pacer: Pacer = field(default_factory=lambda: Pacer(1 << 30))


class Client:
    """One unit's socket and the pairs it probes."""

    def __init__(self, run: RunContext, index: int, unit: Unit, sock: socket.socket) -> None:
        self.run = run
        self.index = index
        self.unit = unit
        self.sock = sock
        self.pairs = [run.states[i] for i in unit.pairs]
        self.deadline = 0.0
        self.finished = False
        sock.setblocking(False)

    @property
    def outstanding(self) -> int:
        """Probes sent and not yet answered or failed."""
        return 0

    def send(self) -> None:
        """Send this unit's probes (runs on a send lane)."""

    def started(self, now: float) -> None:
        """Back on the engine's thread after the send: deadlines, immediate outcomes."""
        for st in self.pairs:
            if st.deadline is None:
                st.deadline = now + self.run.timeout
        self.deadline = max(st.deadline or now for st in self.pairs)
        if self.outstanding == 0:
            self.finish()

    @property
    def pending(self) -> bool:
        """Packets still to send (paced clients)."""
        return False

    def settled(self, key: int, sent_ns: int) -> None:
        """Packet ``key`` (sent at ``sent_ns``, ``time.time_ns()``) is answered or failed
        (paced clients free its place)."""

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.run.loop.drop(self.sock)
            self.run.release(self)


Packet = tuple[int, PairState, bytes]


class _Paced(Client):
    """A socket for many packets (ICMP echoes, DNS queries of one source): they go as the
    run's :class:`~hybridnb.services.probe.schedule.Pacer` allows — what fits the packet
    window on the send lane (:attr:`allow`, allotted by the engine beforehand), the rest from
    the event loop (:meth:`pump`) as answers come back; packets towards slow targets one at a
    time per target.  The deadline is the last packet's send + ``timeout``."""

    def __init__(self, run: RunContext, index: int, unit: Unit, sock: socket.socket,
                 *more: object) -> None:
        super().__init__(run, index, unit, sock, *more)   # type: ignore[call-arg]
        self.sent_at: dict[int, int] = {}
        self.packets: list[Packet] = []
        self.pos = 0                           # the next of packets to go
        self.allow = 0                         # allotted to the send lane (counted at allot_at)
        self.allot_at = 0.0
        self.went = 0                          # of those, sent
        self.slowq: list[Packet] = []          # towards slow targets, waiting for their turn
        self.turns: dict[int, tuple[str, float]] = {}   # key -> (slow target, its turn)
        self.last = 0.0                        # monotonic: the last packet sent

    @property
    def outstanding(self) -> int:
        return len(self.sent_at)

    @property
    def pending(self) -> bool:
        return self.pos < len(self.packets) or bool(self.slowq)

    def transmit(self, key: int, st: PairState, data: bytes) -> bool:
        """Send one packet; whether it went."""
        raise NotImplementedError

    def _go(self, n: int, count: bool) -> int:
        """Send up to ``n`` packets in order, setting aside those towards slow targets;
        ``count``: in the window (on the engine's thread only)."""
        went, pacer = 0, self.run.pacer
        while self.pos < len(self.packets) and went < n:
            item = self.packets[self.pos]
            self.pos += 1
            if pacer.is_slow(item[1].spec.dst.name):
                self.slowq.append(item)
            elif self.transmit(*item):
                went += 1
                if count:
                    pacer.sent(self.sent_at[item[0]] / 1e9)
        if went:
            self.last = time.monotonic()
        return went

    def send(self) -> None:
        self.went = self._go(self.allow, False)

    def started(self, now: float) -> None:
        pacer = self.run.pacer
        if self.allow:                                  # what the lane sent, at its times
            pacer.answered(self.allot_at, self.allow)
            for t in self.sent_at.values():
                pacer.sent(t / 1e9)
        self.allow = self.went = 0
        for st in self.pairs:
            if st.deadline is None:
                st.deadline = now + self.run.timeout
        self.pump(now)
        self.deadline = (self.last or now) + self.run.timeout
        if self.outstanding == 0 and not self.pending:
            self.finish()

    def pump(self, now: float) -> None:
        """Send what the packet window and the slow targets' turns allow now."""
        pacer = self.run.pacer
        room = pacer.room(time.time())
        if room > 0 and self.pos < len(self.packets):
            self._go(room, True)
        kept: list[Packet] = []
        for item in self.slowq:
            name = item[1].spec.dst.name
            if pacer.inflight >= pacer.cap or not pacer.slow_free(name, now):
                kept.append(item)
                continue
            stamp = pacer.slow_take(name, now)
            if self.transmit(*item):
                pacer.sent(self.sent_at[item[0]] / 1e9)
                self.turns[item[0]] = (name, stamp)
                self.last = time.monotonic()
            else:
                pacer.slow_done(name, stamp)
        self.slowq = kept
        if self.last:
            self.deadline = self.last + self.run.timeout

    def settled(self, key: int, sent_ns: int) -> None:
        """Packet ``key`` is answered or failed: its place in the window (and its slow
        target's turn) is free."""
        self.run.pacer.answered(sent_ns / 1e9)
        turn = self.turns.pop(key, None)
        if turn is not None:
            self.run.pacer.slow_done(*turn)

    def give_up_sent(self) -> None:
        """Every packet sent is older than the timeout: no longer in flight."""
        for t in self.sent_at.values():
            self.run.pacer.answered(t / 1e9)
        self.sent_at.clear()
        self.turns.clear()

    def finish(self) -> None:
        if not self.finished:
            for t in self.sent_at.values():
                self.run.pacer.answered(t / 1e9)
        super().finish()


class IcmpClient(_Paced):
    """Every echo from one source, on one raw socket (paced: :class:`_Paced`)."""

    def __init__(self, run: RunContext, index: int, unit: Unit, sock: socket.socket) -> None:
        super().__init__(run, index, unit, sock)
        self.seq_pair: dict[int, PairState] = {}
        self.ident = icmp_ident(unit.netns)
        count = run.count
        if len(self.pairs) * count > 0xFFFF:
            for st in self.pairs:
                st.failed("too many ICMP probes from one source")
            return
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        allowed = (1 << ICMP_ECHO_REPLY) | (1 << ICMP_UNREACH) | (1 << ICMP_TIMXCEED)
        try:
            sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", ~allowed & 0xFFFFFFFF))
        except OSError:
            pass
        for i, st in enumerate(self.pairs):
            for attempt in range(count):
                seq = i * count + attempt
                self.seq_pair[seq] = st
                body = struct.pack("!BBHHH", ICMP_ECHO, 0, 0, self.ident, seq) + run.token + \
                    struct.pack("!Q", seq)
                pkt = body[:2] + struct.pack("=H", checksum(body)) + body[4:]
                self.packets.append((seq, st, pkt))
        # round by round: attempt 0 to every target, then attempt 1…
        self.packets.sort(key=lambda t: (t[0] % count, t[0]))
        run.loop.add(sock, selectors.EVENT_READ, self.receive)

    def transmit(self, key: int, st: PairState, data: bytes) -> bool:
        st.sent += 1
        self.sent_at[key] = time.time_ns()
        try:
            self.sock.sendto(data, (st.spec.address, 0))
        except OSError as exc:
            self.sent_at.pop(key, None)
            st.failed(errno_reason(exc))
            return False
        return True

    def receive(self, s: socket.socket) -> None:
        while True:
            try:
                data, ts = recv_ts(s)
            except OSError:              # BlockingIOError included: nothing more for now
                break
            ihl = (data[0] & 0x0F) * 4
            if len(data) < ihl + 8:
                continue
            if data[ihl] == ICMP_ECHO_REPLY:
                self._reply(data, ihl, ts)
            elif data[ihl] in (ICMP_UNREACH, ICMP_TIMXCEED):
                self._error(data, ihl)
        if not self.sent_at and not self.pending:
            self.finish()

    def _reply(self, data: bytes, ihl: int, ts: int) -> None:
        rid, seq = struct.unpack_from("!HH", data, ihl + 4)
        if rid != self.ident or data[ihl + 8:ihl + 16] != self.run.token:
            return
        t0 = self.sent_at.pop(seq, None)
        if t0 is not None:
            self.settled(seq, t0)
            self.seq_pair[seq].answered((ts - t0) / 1e9)

    def _error(self, data: bytes, ihl: int) -> None:
        typ, code = data[ihl], data[ihl + 1]
        inner = ihl + 8
        if len(data) < inner + 20:
            return
        iihl = (data[inner] & 0x0F) * 4
        if len(data) < inner + iihl + 8 or data[inner + iihl] != ICMP_ECHO:
            return
        rid, seq = struct.unpack_from("!HH", data, inner + iihl + 4)
        st = self.seq_pair.get(seq)
        if rid != self.ident or st is None or \
                socket.inet_ntoa(data[inner + 16:inner + 20]) != st.spec.address:
            return                                      # not ours, or an older run's
        t0 = self.sent_at.pop(seq, None)
        if t0 is None:
            return
        self.settled(seq, t0)
        self.seq_pair[seq].failed("TTL exceeded" if typ == ICMP_TIMXCEED else
                                  UNREACH_CODES.get(code, f"unreachable (code {code})"))


#: The longest HTTP response head read; longer, its connection is not reused.
HTTP_HEAD = 4096


def http_request(host: str) -> bytes:
    """The ``GET /`` an ``http`` probe sends (HTTP/1.1: the connection stays open for the
    pair's next request)."""
    return f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: hybridnb-probe\r\n\r\n".encode()


def head_end(buf: bytes | bytearray) -> int:
    """Where an HTTP head (request or response) ends: just past its blank line, or -1."""
    ends = [i + k for i, k in ((buf.find(b"\n\n"), 2), (buf.find(b"\r\n\r\n"), 4)) if i >= 0]
    return min(ends) if ends else -1


def head_keeps(head: bytes, response: bool) -> tuple[bool, int | None, bool]:
    """(the connection carries another request after this message, its ``Content-Length``
    or None, it has a ``Transfer-Encoding``) of an HTTP head: HTTP/1.1 keeps it unless
    ``Connection: close``, anything else only with ``Connection: keep-alive``."""
    lines = head.split(b"\n")
    first = lines[0].rstrip() if response else lines[0].strip()
    v11 = first.startswith(b"HTTP/1.1") if response else first.endswith(b"HTTP/1.1")
    conn, length, chunked = 0, None, False
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            continue
        name, value = name.lower(), value.lower()
        if name == b"connection":
            if b"close" in value:
                conn = -1
            elif b"keep-alive" in value and conn == 0:
                conn = 1
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"content-length":
            v = value.strip()
            length = int(v) if v.isdigit() and len(v) < 10 else None
    return conn == 1 or (v11 and conn == 0), length, chunked


class StreamClient(Client):
    """One TCP connect (``tcp``), or a pair's ``count`` ``GET /`` requests (``http``) on one
    keep-alive connection: the next request goes on the same connection once the response
    (status line, headers, ``Content-Length`` bytes of body) is read, on a new connection
    when the server closes it or cannot keep it; each request's RTT is from its send to the
    status line.  Connections end with a reset (no FIN exchange, no TIME_WAIT)."""

    def __init__(self, run: RunContext, index: int, unit: Unit, sock: socket.socket) -> None:
        super().__init__(run, index, unit, sock)
        self.st = self.pairs[0]
        spec = self.st.spec
        self.http = spec.protocol == "http"
        self.error: str | None = None
        self.waiting = False
        self.t0 = 0.0
        self.t_req = 0.0
        self.req = 0                  # http: the request under way
        self.answered = False         # its status line was judged
        self.body_left = -1           # >= 0: body bytes still to skip
        self.buf = bytearray()
        host = f"{spec.dst.name}.{run.domain}" if spec.dst.kind != "gateway" else spec.address
        self.request = http_request(host)

    @property
    def outstanding(self) -> int:
        return int(self.waiting)

    def send(self) -> None:
        self.error = self._connect()

    def _connect(self) -> str | None:
        self.t0 = time.perf_counter()
        err = self.sock.connect_ex((self.st.spec.address, self.st.spec.port or 0))
        if err in (0, errno.EINPROGRESS):
            self.waiting = True
            self.run.loop.add(self.sock, selectors.EVENT_WRITE, self.writable)
            return None
        return reason(err)

    def started(self, now: float) -> None:
        self.st.sent += 1
        if self.st.deadline is None:
            self.st.deadline = now + self.run.timeout
        if self.error is not None:
            self.st.failed(self.error)
            self.error = None
            if self.http:
                self._next(False)
        super().started(now)

    def _end(self) -> None:
        self.waiting = False
        _reset(self.sock)
        self.finish()

    def _done(self, rtt: float | None = None, why: str | None = None) -> None:
        if why is not None:
            self.st.failed(why)
        elif rtt is not None:
            self.st.answered(rtt)
        self._end()

    def _next(self, keep: bool) -> None:
        """The current request is answered or failed: the pair's next one, on this
        connection (``keep``) or a new one; none past the pair's deadline."""
        self.req += 1
        deadline = self.st.deadline
        if self.req >= self.run.count or (deadline is not None and time.monotonic() >= deadline):
            self._end()
            return
        self.st.sent += 1
        if keep:
            self._request(self.sock)
            return
        self.run.loop.drop(_reset(self.sock))
        made = open_sockets({self.unit.netns: ["stream"]})[self.unit.netns]
        if isinstance(made, BaseException):
            self.st.failed(f"cannot open sockets in {self.unit.netns}: {made}")
            self.waiting = False
            self.finish()
            return
        self.sock = made[0]
        self.sock.setblocking(False)
        why = self._connect()
        if why is not None:
            self.st.failed(why)
            self._next(False)

    def writable(self, s: socket.socket) -> None:
        if s is not self.sock or self.finished:        # an event of a connection left behind
            return
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            if not self.http:
                self._done(why=reason(err))
                return
            self.st.failed(reason(err))
            self._next(False)
            return
        if not self.http:
            rtt = tcp_rtt(s)
            self._done(rtt if rtt is not None else time.perf_counter() - self.t0)
            return
        self.run.loop.modify(s, selectors.EVENT_READ, self.readable)
        self._request(s)

    def _request(self, s: socket.socket) -> None:
        self.buf.clear()
        self.answered = False
        self.body_left = -1
        self.t_req = time.perf_counter()
        try:
            s.send(self.request)
        except OSError as exc:
            self.st.failed(errno_reason(exc))
            self._next(False)

    def readable(self, s: socket.socket) -> None:
        if s is not self.sock or self.finished:
            return
        try:
            data = s.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if not self.answered and self.body_left < 0:
                self.st.failed(errno_reason(exc))
            self._next(False)
            return
        if self.body_left >= 0:                       # skipping the body
            self.body_left -= len(data)
            if not data or self.body_left <= 0:
                self._next(bool(data) and self.body_left == 0)
            return
        self.buf.extend(data)
        if not self.answered:
            line_end = self.buf.find(b"\n")
            if data and line_end < 0 and len(self.buf) < HTTP_HEAD:
                return
            self.answered = True
            rtt = time.perf_counter() - self.t_req
            line = bytes(self.buf[:line_end if line_end >= 0 else len(self.buf)]).strip()
            why = _http_verdict(line, self.st)
            if why is None:
                self.st.answered(rtt)
            else:
                self.st.failed(why)
        end = head_end(self.buf)
        if not data or (end < 0 and len(self.buf) >= HTTP_HEAD):
            self._next(False)
            return
        if end < 0:
            return
        keeps, length, chunked = head_keeps(bytes(self.buf[:end]), response=True)
        left = -1 if length is None else length - (len(self.buf) - end)
        if not keeps or chunked or left < 0:
            self._next(False)
            return
        self.body_left = left
        if left == 0:
            self._next(True)


def _http_verdict(line: bytes, st: PairState) -> str | None:
    """None when the status line says the request worked, else why not."""
    parts = line.split()
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        status = int(parts[1])
        st.detail = f"HTTP {status}"
        return None if status < 400 else f"HTTP {status}"
    return "connection closed without a response" if not line else "not an HTTP response"


def _reset(sock: socket.socket) -> socket.socket:
    """Make ``sock``'s close a reset (no FIN exchange, no TIME_WAIT)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    return sock


class _DatagramClient(Client):
    """A connected datagram socket: probes keyed by an id, errors fail what is outstanding."""

    def __init__(self, run: RunContext, index: int, unit: Unit, sock: socket.socket,
                 server: tuple[str, int]) -> None:
        super().__init__(run, index, unit, sock)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.server = server
        self.sent_at: dict[int, int] = {}
        self.owner: dict[int, PairState] = {}
        self.payloads: list[tuple[int, PairState, bytes]] = []
        self.error: str | None = None

    @property
    def outstanding(self) -> int:
        return len(self.sent_at)

    def send(self) -> None:
        if self.connect():
            for key, st, payload in self.payloads:
                self.transmit(key, st, payload)

    def connect(self) -> bool:
        """Connect to the server and listen for replies; False: failed (said at started)."""
        try:
            self.sock.connect(self.server)
        except OSError as exc:
            self.error = errno_reason(exc)
            return False
        self.run.loop.add(self.sock, selectors.EVENT_READ, self.receive)
        return True

    def transmit(self, key: int, st: PairState, data: bytes) -> bool:
        """Send one datagram; whether it went."""
        st.sent += 1
        self.sent_at[key] = time.time_ns()
        try:
            self.sock.send(data)
        except OSError as exc:
            self.sent_at.pop(key, None)
            st.failed(_dgram_reason(exc))
            return False
        return True

    def started(self, now: float) -> None:
        if self.error is not None:
            for st in self.pairs:
                st.failed(self.error)
        super().started(now)

    def receive(self, s: socket.socket) -> None:
        while self.sent_at:
            try:
                data, ts = recv_ts(s)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # an ICMP error reported on the connected socket (port unreachable…)
                why = _dgram_reason(exc)
                for key in list(self.sent_at):
                    self.settled(key, self.sent_at.pop(key))
                    self.owner[key].failed(why)
                break
            self.reply(data, ts)
        if not self.sent_at and not self.pending:
            self.finish()

    def reply(self, data: bytes, ts: int) -> None:
        raise NotImplementedError


def _dgram_reason(exc: OSError) -> str:
    if exc.errno == errno.ECONNREFUSED:
        return "refused (port unreachable)"
    return errno_reason(exc)


class UdpClient(_DatagramClient):
    """``count`` datagrams to one target's UDP echo (ours or the real service)."""

    def __init__(self, run: RunContext, index: int, unit: Unit, sock: socket.socket) -> None:
        st = run.states[unit.pairs[0]]
        super().__init__(run, index, unit, sock, (st.spec.address, st.spec.port or 0))
        for i in range(run.count):
            self.owner[i] = st
            self.payloads.append((i, st, UDP_MAGIC + run.token + struct.pack("!H", i)))

    def reply(self, data: bytes, ts: int) -> None:
        if len(data) < UDP_PROBE_LEN or data[4:12] != self.run.token:
            return
        key = struct.unpack_from("!H", data, 12)[0]
        t0 = self.sent_at.pop(key, None)
        if t0 is None:
            return
        held = 0
        if len(data) == UDP_PROBE_LEN + 16:   # our responder: minus its own delay
            r_rx, r_tx = struct.unpack_from("!QQ", data, UDP_PROBE_LEN)
            held = max(r_tx - r_rx, 0)
        self.owner[key].answered((ts - t0 - held) / 1e9)


class DnsClient(_Paced, _DatagramClient):
    """Every ``A`` query of one source, on one socket to the DNS server (paced:
    :class:`_Paced`)."""

    def __init__(self, run: RunContext, index: int, unit: Unit, sock: socket.socket) -> None:
        first = run.states[unit.pairs[0]].spec
        super().__init__(run, index, unit, sock, (first.address, first.port or 53))
        total = len(self.pairs) * run.count
        if total > 0x10000:
            for st in self.pairs:
                st.failed("too many DNS probes from one source")
            return
        from dnslib import DNSRecord  # lazy: only when DNS is probed

        base = secrets.randbelow(0x10000)
        for attempt in range(run.count):          # round by round, like ICMP
            for i, st in enumerate(self.pairs):
                qid = (base + attempt * len(self.pairs) + i) & 0xFFFF
                q = DNSRecord.question(f"{st.spec.dst.name}.{run.domain}.", "A")
                q.header.id = qid
                self.owner[qid] = st
                self.packets.append((qid, st, q.pack()))

    transmit = _DatagramClient.transmit

    def send(self) -> None:
        if self.connect():
            _Paced.send(self)

    def started(self, now: float) -> None:
        if self.error is not None:
            for st in self.pairs:
                st.failed(self.error)
            self.pos, self.slowq = len(self.packets), []
        _Paced.started(self, now)

    def reply(self, data: bytes, ts: int) -> None:
        if len(data) < 2:
            return
        key = int.from_bytes(data[:2], "big")
        t0 = self.sent_at.pop(key, None)
        if t0 is None:
            return
        self.settled(key, t0)
        st = self.owner[key]
        verdict = dns_verdict(data, st.spec.dst.address)
        if verdict is None:
            st.detail = st.spec.dst.address
            st.answered((ts - t0) / 1e9)
        else:
            st.failed(verdict)


def dns_verdict(data: bytes, expected: str) -> str | None:
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


CLIENTS: dict[str, type[Client]] = {"icmp": IcmpClient, "stream": StreamClient,
                                    "udp": UdpClient, "dns": DnsClient}
