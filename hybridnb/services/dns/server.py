"""The lab's name server process.

Run as its own process (so it outlives the notebook kernel that started it)::

    python -m hybridnb.services.dns.server --zone ZONE.json --listen 10.0.1.1 --port 53 \\
        --subnet 10.0.1.0/24 --log query.log --pidfile dns.pid --status status.json

* UDP: one blocking ``recvfrom``/``sendto`` loop on the main thread; plain questions are
  answered by :func:`~hybridnb.services.dns.wire.fast_answer` from pre-encoded templates,
  everything else by the strict slow path.  Answers too large for UDP are truncated (TC).
* TCP: an accept thread and one short-lived thread per connection (bounded), RFC 7766 framing.
* Access: only clients in ``--subnet`` (repeatable), loopback and the lab host itself (any
  address of the server's own namespace) get answers; others get REFUSED (never larger than
  their query), so the server is not an open resolver.  The lab host counts whatever its
  source address: Docker masquerades the lab subnet leaving by any interface but the bridge,
  which rewrites the host's own queries to its gateway address (they leave by ``lo``) to
  another of its addresses.
* Names outside the lab are relayed to the zone's ``upstream`` resolvers (the lab's
  ``network.upstream``; none by default), else REFUSED; the upstream's answer (rcode, RA,
  records) goes back under the client's ID, and a question no upstream answers within
  ``FORWARD_TIMEOUT`` gets SERVFAIL.  Only allowed clients are ever forwarded.
* ``SIGUSR1`` writes the query log's pending records now (readers need not wait for the
  writer thread) and then rewrites ``<log>.flushed``.  Every answer is logged *before* it is
  sent, so a client that got its answer and then asks for the log finds its query there
  (the logged latency ends when the answer is ready to send).
* ``SIGHUP`` reloads the zone file: the new answers are built on a thread and swapped in, the
  socket keeps receiving meanwhile, so no query is dropped.  ``SIGTERM``/``SIGINT`` stop.
* The pidfile is written once the sockets are bound and the zone is loaded (readiness); the
  status file (JSON: fingerprint, serial, names, load time) after every (re)load.
"""

from __future__ import annotations

import argparse
import errno
import gc
import ipaddress
import json
import logging
import os
import random
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from hybridnb.core.dnszone import Zone
from hybridnb.services.dns import wire
from hybridnb.services.dns.querylog import QueryLog

log = logging.getLogger("hybridnb.dns")

MAX_TCP_CLIENTS = 64
TCP_IDLE = 10.0
FORWARD_TIMEOUT = 2.0                 # then SERVFAIL
MAX_FORWARDS = 4096                   # questions in flight upstream
RCVBUF = 4 * 1024 * 1024


#: The signals the server handles (on its main thread only).
_SIGNALS = {signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT}


class _Stop(Exception):
    pass


def load_zone(path: str | os.PathLike[str]) -> tuple[Zone, str]:
    """The zone in a zone file and the fingerprint to report for it (the ``fingerprint``
    the writer stored in the file, else the zone's own)."""
    data = json.loads(Path(path).read_text())
    zone = Zone.from_dict(data)
    return zone, str(data.get("fingerprint") or zone.fingerprint)


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the hot loop.  The loop's only allocations that
    live on are query log entries (tuples, so tracked), freed by the next flush; at the default
    threshold (700 allocations) the collector would walk each of them once or more, several
    percent of the per-query cost.  With a threshold above a flush's worth of entries it
    rarely runs, and what exists at start (the zone, the answers) is frozen out of its sight."""
    gc.freeze()
    gc.set_threshold(100_000)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _question_end(data: bytes) -> int:
    """Offset just past the (already validated, uncompressed) question of a query."""
    i = 12
    while data[i]:
        i += 1 + data[i]
    return i + 5


class Forwarder:
    """Relays out-of-lab questions to the upstream resolvers over UDP, each under a fresh
    random ID.  The first reply whose source, ID and question match goes back to the client
    under the client's ID; a question no upstream answers within ``timeout`` seconds (or that
    cannot be sent at all) gets the SERVFAIL the slow path prepared, so a silent upstream
    costs the client a bounded wait, not a retry loop."""

    def __init__(self, upstream: Sequence[str], deliver: Any, querylog: QueryLog,
                 timeout: float = FORWARD_TIMEOUT) -> None:
        self.upstream = [(u, 53) for u in upstream]
        self.deliver = deliver                       # deliver(wire, addr)
        self.querylog = querylog
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("0.0.0.0", 0))
        self.sock.settimeout(min(0.1, timeout / 4))  # how often expired questions are failed
        # qid -> (client id, question, client addr, t0, name, type, SERVFAIL wire, deadline);
        # insertion order is deadline order (one timeout for all)
        self.pending: dict[int, tuple[bytes, bytes, Any, float, str, str, bytes, float]] = {}
        self.lock = threading.Lock()
        self.rng = random.SystemRandom()
        self._closed = False
        self.thread = threading.Thread(target=self._run, name="dns-forward", daemon=True)
        self.thread.start()

    def set_upstream(self, upstream: Sequence[str]) -> None:
        self.upstream = [(u, 53) for u in upstream]

    def forward(self, data: bytes, addr: Any, t0: float, name: str, qtype: str,
                fail: bytes) -> None:
        """Send ``data`` (a validated query) upstream; ``fail`` answers it if none replies."""
        upstream = self.upstream
        entry = (data[:2], data[12:_question_end(data)], addr, t0, name, qtype, fail,
                 time.monotonic() + self.timeout)
        qid = None
        with self.lock:
            if upstream and len(self.pending) < MAX_FORWARDS:
                for _ in range(32):
                    qid = self.rng.getrandbits(16)
                    if qid not in self.pending:
                        self.pending[qid] = entry
                        break
                else:
                    qid = None
        if qid is None:
            self._finish(entry, fail, "FWD:BUSY")
            return
        msg = struct.pack(">H", qid) + data[2:]
        sent = 0
        for up in upstream:
            try:
                self.sock.sendto(msg, up)
                sent += 1
            except OSError as exc:
                log.debug("forward to %s: %s", up[0], exc)
        if not sent:
            with self.lock:
                gone = self.pending.pop(qid, None)
            if gone is not None:
                self._finish(entry, fail, "FWD:UNREACHABLE")

    def _finish(self, entry: tuple[Any, ...], out: bytes, rcode: str) -> None:
        orig_id, _question, addr, t0, name, qtype = entry[:6]
        if self.querylog.enabled:
            self.querylog.append((t0, addr[0], f"{name}\t{qtype}\t{rcode}", time.time()))
        try:
            self.deliver(orig_id + out[2:], addr)
        except OSError as exc:
            log.debug("forward reply to %s: %s", addr, exc)

    def _run(self) -> None:
        while not self._closed:
            try:
                data, src = self.sock.recvfrom(65535)
            except socket.timeout:
                data = None
            except OSError:
                if self._closed:
                    return
                time.sleep(0.01)
                continue
            if data is not None:
                self._reply(data, src)
            self._expire()

    def _reply(self, data: bytes, src: Any) -> None:
        if len(data) < 17 or not data[2] & 0x80 or src not in self.upstream:
            return
        qid = (data[0] << 8) | data[1]
        with self.lock:
            entry = self.pending.get(qid)
            if entry is None or data[12:12 + len(entry[1])] != entry[1]:
                return                                   # late, duplicate or forged
            del self.pending[qid]
        rcode = data[3] & 0x0F
        self._finish(entry, data, "FWD:" + wire.RCODE_NAMES.get(rcode, str(rcode)))

    def _expire(self) -> None:
        now = time.monotonic()
        expired = []
        with self.lock:
            for qid, entry in self.pending.items():
                if entry[7] > now:
                    break
                expired.append(qid)
            entries = [self.pending.pop(qid) for qid in expired]
        for entry in entries:
            self._finish(entry, entry[6], "FWD:TIMEOUT")

    def ask(self, data: bytes) -> bytes | None:
        """Blocking relay for TCP clients: the first upstream that answers in time (over TCP
        if its UDP answer is truncated), or ``None``."""
        upstream = self.upstream
        question = data[12:_question_end(data)]
        deadline = time.monotonic() + self.timeout
        for k, up in enumerate(upstream):
            left = (deadline - time.monotonic()) / (len(upstream) - k)
            if left <= 0:
                break
            qid = struct.pack(">H", self.rng.getrandbits(16))
            msg = qid + data[2:]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.settimeout(left)
                    s.sendto(msg, up)
                    while True:
                        resp, src = s.recvfrom(65535)
                        if src == up and len(resp) >= 12 and resp[:2] == qid \
                                and resp[2] & 0x80 and resp[12:12 + len(question)] == question:
                            break
                if resp[2] & 0x02:                      # TC: ask again over TCP
                    with socket.create_connection(up, timeout=left) as t:
                        t.sendall(struct.pack(">H", len(msg)) + msg)
                        head = _recv_exact(t, 2)
                        resp = _recv_exact(t, struct.unpack(">H", head)[0]) if head else None
                    if resp is None or len(resp) < 12 or resp[:2] != qid:
                        continue
                return data[:2] + resp[2:]
            except OSError:
                continue
        return None

    def close(self) -> None:
        self._closed = True
        self.thread.join(timeout=1)
        self.sock.close()


def _is_own_address(ip: str) -> bool:
    """True when ``ip`` is an address of this network namespace (the lab host): binding to it
    succeeds.  Unless the namespace allows binding to any address at all."""
    try:
        with open("/proc/sys/net/ipv4/ip_nonlocal_bind") as f:
            if f.read().strip() != "0":
                return False
    except OSError:
        return False
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((ip, 0))
        except OSError:
            return False
    return True


class Server:
    """One authoritative server instance (UDP + TCP on one address)."""

    def __init__(self, zone_file: str, listen: str, port: int = 53,
                 subnets: Sequence[str] = (), querylog: QueryLog | None = None,
                 status_file: str | None = None) -> None:
        self.zone_file = zone_file
        self.listen = listen
        self.subnets = [ipaddress.ip_network(s, strict=False) for s in subnets]
        self.querylog = querylog or QueryLog(None)
        self.status_file = Path(status_file) if status_file else None
        self._acl: dict[str, float] = {}
        self._reload_lock = threading.Lock()
        self.answers = self._load()
        # no SO_REUSEADDR on UDP: a second server on the same address must fail, not
        # silently share the queries with the first
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for opt in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
            try:
                self.udp.setsockopt(socket.SOL_SOCKET, opt, RCVBUF)
                break
            except OSError:
                continue
        self.udp.bind((listen, port))
        self.port = self.udp.getsockname()[1]
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((listen, self.port))
        self.tcp.listen(64)
        self._tcp_slots = threading.BoundedSemaphore(MAX_TCP_CLIENTS)
        self.forwarder = Forwarder(self.answers.zone.upstream, self.udp.sendto, self.querylog)

    # --------------------------------------------------------------------- zone
    def _load(self) -> wire.Answers:
        zone, fingerprint = load_zone(self.zone_file)
        answers = wire.Answers(zone)
        if self.status_file is not None:
            _write_atomic(self.status_file, json.dumps({
                "pid": os.getpid(), "fingerprint": fingerprint,
                "zone_fingerprint": zone.fingerprint, "serial": zone.serial,
                "names": len(zone.names()), "loaded_at": time.time()}, sort_keys=True))
        return answers

    def reload(self) -> None:
        """Rebuild the answers from the zone file and swap them in (keeps the old ones if
        the file is broken)."""
        with self._reload_lock:
            try:
                answers = self._load()
            except Exception as exc:  # noqa: BLE001 - a bad file must not kill the server
                log.error("zone reload failed, keeping the old zone: %s", exc)
                return
            self.answers = answers
            self.forwarder.set_upstream(answers.zone.upstream)
            log.info("zone reloaded: serial %s, %d names", answers.zone.serial,
                     len(answers.zone.names()))

    # ---------------------------------------------------------------------- acl
    def allowed(self, ip: str) -> bool:
        return bool(self._admit(ip))

    def _admit(self, ip: str) -> float:
        """The client's query log code (nonzero) if it may query, else ``0.0`` — cached in
        ``_acl``, which the hot loop reads directly."""
        code = self._acl.get(ip)
        if code is None:
            try:
                addr = ipaddress.ip_address(ip.split("%", 1)[0])
                ok = addr.is_loopback or any(addr in net for net in self.subnets) \
                    or _is_own_address(str(addr))
            except ValueError:
                ok = False
            code = self.querylog.client_code(ip) if ok else 0.0
            if len(self._acl) > 65536:
                self._acl.clear()
            self._acl[ip] = code
        return code

    # ---------------------------------------------------------------------- udp
    def serve_udp(self) -> None:
        """The hot loop (main thread).  :func:`wire.plain_answer` and :func:`wire.fast_answer`
        inlined: a function call and its result tuple are a measurable share of the per-query
        cost in CPython.  Logging costs two monotonic clock reads, one float addition and three
        array appends per query (see :mod:`~hybridnb.services.dns.querylog`); ``ok`` is the
        client's log code from the access cache."""
        recv = self.udp.recvfrom
        send = self.udp.sendto
        clock = time.monotonic
        acl = self._acl
        log_on = self.querylog.enabled
        log_append = self.querylog.fast_append
        qd1, ar0, ar1, opt_head, opts = wire._QD1, wire._AR0, wire._AR1, wire._OPT_HEAD, wire._OPT
        max_udp = wire.MAX_UDP
        while True:
            try:
                data, addr = recv(4096)
                if log_on:
                    t0 = clock()
                ip = addr[0]
                ok = acl.get(ip)
                if ok:
                    hit = self.answers.plain.get(data[2:])
                    if hit is not None:
                        if log_on:
                            log_append(t0)
                            log_append(ok + hit[1])
                            log_append(clock())
                        send(data[:2] + hit[0], addr)
                        continue
                    n = len(data)
                    if n >= 17 and not data[2] & 0xFA and data[4:10] == qd1:
                        ar = data[10:12]
                        qe = 0
                        if ar == ar0:
                            qe = n
                        elif ar == ar1 and n >= 28 and data[n - 11:n - 8] == opt_head \
                                and data[n - 2:] == ar0 and not data[n - 5]:
                            qe = n - 11
                        by_type = self.answers.table.get(data[qe - 4:qe]) if qe else None
                        t = by_type.get(data[12:qe - 4].lower()) if by_type else None
                        if t is not None:
                            flags = t.flags[(data[2] & 1) | ((data[3] & 0x10) >> 3)]
                            if qe == n:
                                if t.length <= 512:
                                    if log_on:
                                        log_append(t0)
                                        log_append(ok + t.logcode)
                                        log_append(clock())
                                    send(data[:2] + flags + t.counts + data[12:] + t.body, addr)
                                    continue
                            else:
                                payload = (data[n - 8] << 8) | data[n - 7]
                                if t.length + 11 <= (max_udp if payload >= max_udp else
                                                     payload if payload > 512 else 512):
                                    if log_on:
                                        log_append(t0)
                                        log_append(ok + t.logcode)
                                        log_append(clock())
                                    send(b"".join((data[:2], flags, t.counts_edns, data[12:qe],
                                                   t.body, opts[data[n - 4] >> 7])), addr)
                                    continue
                elif ok is None:
                    ok = self._admit(ip)
                self._slow_udp(data, addr, time.time() - (clock() - t0) if log_on else 0.0,
                               bool(ok))
            except (_Stop, KeyboardInterrupt):
                return
            except OSError as exc:
                log.debug("udp: %s", exc)

    def _slow_udp(self, data: bytes, addr: Any, t0: float, ok: bool) -> None:
        reply = wire.slow_answer(self.answers, data, allowed=ok)
        if reply.forward:
            self.forwarder.forward(data, addr, t0, reply.name, reply.qtype, reply.wire)
            return
        if self.querylog.enabled:
            self.querylog.append((t0, addr[0], f"{reply.name}\t{reply.qtype}\t{reply.rcode}",
                                  time.time()))
        if reply.wire is not None:
            self.udp.sendto(reply.wire, addr)

    # ---------------------------------------------------------------------- tcp
    def serve_tcp(self) -> None:
        while True:
            try:
                conn, addr = self.tcp.accept()
            except OSError:
                return
            if not self._tcp_slots.acquire(blocking=False):
                conn.close()
                continue
            threading.Thread(target=self._tcp_client, args=(conn, addr), daemon=True,
                             name="dns-tcp").start()

    def _tcp_client(self, conn: socket.socket, addr: Any) -> None:
        try:
            conn.settimeout(TCP_IDLE)
            ok = self.allowed(addr[0])
            while True:
                head = _recv_exact(conn, 2)
                if head is None:
                    return
                data = _recv_exact(conn, struct.unpack(">H", head)[0])
                if data is None:
                    return
                t0 = time.time()
                reply = wire.slow_answer(self.answers, data, tcp=True, allowed=ok)
                out = reply.wire
                rcode = reply.rcode
                if reply.forward:
                    out = self.forwarder.ask(data)
                    if out is None:
                        out = reply.wire                # SERVFAIL
                        rcode = "FWD:TIMEOUT"
                    else:
                        rcode = "FWD:" + wire.RCODE_NAMES.get(out[3] & 0x0F, "?")
                if out is None:
                    return
                if self.querylog.enabled:
                    self.querylog.append((t0, addr[0],
                                          f"{reply.name}\t{reply.qtype}\t{rcode}/TCP",
                                          time.time()))
                conn.sendall(struct.pack(">H", len(out)) + out)
        except OSError:
            return
        finally:
            conn.close()
            self._tcp_slots.release()

    # ------------------------------------------------------------------- running
    def run(self, pidfile: str | None = None) -> None:
        def on_hup(_sig: int, _frm: Any) -> None:
            threading.Thread(target=self.reload, name="dns-reload", daemon=True).start()

        def on_term(_sig: int, _frm: Any) -> None:
            raise _Stop

        def on_usr1(_sig: int, _frm: Any) -> None:
            self.querylog.flush_marked()

        signal.signal(signal.SIGHUP, on_hup)
        signal.signal(signal.SIGUSR1, on_usr1)
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        # helper threads start with our signals blocked (they inherit the mask), so the
        # kernel hands every signal to the main thread, whose recvfrom it interrupts: a
        # SIGUSR1 is served at once even when no query comes in
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            self.querylog.start()
            threading.Thread(target=self.serve_tcp, name="dns-tcp-accept", daemon=True).start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        tune_gc()
        if pidfile:
            _write_atomic(Path(pidfile), f"{os.getpid()}\n")
        try:
            self.serve_udp()
        finally:
            self.close()
            if pidfile:
                try:
                    if Path(pidfile).read_text().strip() == str(os.getpid()):
                        os.unlink(pidfile)
                except OSError:
                    pass

    def close(self) -> None:
        for s in (self.udp, self.tcp):
            try:
                s.close()
            except OSError:
                pass
        self.forwarder.close()
        self.querylog.close()


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hybridnb.services.dns.server",
                                description="hybridnb's authoritative DNS server for a lab")
    p.add_argument("--zone", required=True, help="zone file (JSON, see hybridnb.core.dnszone)")
    p.add_argument("--listen", default="127.0.0.1")
    p.add_argument("--port", type=int, default=53)
    p.add_argument("--subnet", action="append", default=[],
                   help="client subnet allowed to query (repeatable; loopback always is)")
    p.add_argument("--log", help="query log file (rotating); omit to log nothing")
    p.add_argument("--log-max-bytes", type=int, default=8 * 1024 * 1024)
    p.add_argument("--pidfile")
    p.add_argument("--status", help="status file (JSON) rewritten after every zone load")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    querylog = QueryLog(args.log, max_bytes=args.log_max_bytes)
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)     # the forwarder thread starts now
    try:
        server = Server(args.zone, args.listen, args.port, args.subnet, querylog, args.status)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        log.error("%s:%d is already in use: another name server (another lab on the same "
                  "gateway address?) serves there", args.listen, args.port)
        return 1
    log.info("serving %s on %s:%d (serial %s)", server.answers.zone.domain, args.listen,
             server.port, server.answers.zone.serial)
    server.run(args.pidfile)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
