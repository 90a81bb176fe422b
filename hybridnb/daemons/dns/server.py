"""The lab's name server process.

Run as its own process (so it outlives the notebook kernel that started it); how it is
launched, reloaded, flushed, stopped and read is :mod:`.control`::

    python -m hybridnb.daemons.dns.server --zone ZONE.json --listen 10.0.1.1 --port 53 \\
        --subnet 10.0.1.0/24 --log query.log --pidfile dns.pid --status status.json

* UDP: the main thread serves a batch per turn (:meth:`Server.serve_udp`): every queued
  query at once (``recvmmsg`` through :mod:`.udp`), the ones a template answers by
  :func:`~hybridnb.daemons.dns.wire.answer_batch`, the rest by the strict slow path, then
  every answer at once (``sendmmsg``).  Answers too large for UDP are truncated (TC).
* TCP: an accept thread and one short-lived thread per connection (bounded), RFC 7766 framing.
* Access: only clients in ``--subnet`` (repeatable), loopback and the lab host itself (any
  address of the server's own namespace) get answers; others get REFUSED (never larger than
  their query), so the server is not an open resolver.  The lab host counts whatever its
  source address: Docker masquerades the lab subnet leaving by any interface but the bridge,
  which rewrites the host's own queries to its gateway address (they leave by ``lo``) to
  another of its addresses.
* Names outside the lab are relayed to the zone's ``upstream`` resolvers (:mod:`.forward`;
  none by default), else REFUSED.  Only allowed clients are ever forwarded.
* :data:`~.control.FLUSH` (SIGUSR1) writes the query log's pending records now and then
  rewrites the flushed mark.  Every answer is logged *before* it is sent (a batch is logged,
  then sent), so a client that got its answer and then asks for the log finds its query
  there; the logged latency ends when the answer is ready to send.
* :data:`~.control.RELOAD` (SIGHUP) reloads the zone file: the new answers are built on a
  thread and swapped in, the socket keeps receiving meanwhile, so no query is dropped.
  ``SIGTERM``/``SIGINT`` stop.
* The pidfile is written once the sockets are bound and the zone is loaded (readiness); the
  status file (:class:`~.control.ServerStatus`) after every (re)load.
"""

from __future__ import annotations

import argparse
import errno
import gc
import ipaddress
import json
import logging
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hybridnb.core.dnszone import Zone
from hybridnb.daemons.dns import control, udp, wire
from hybridnb.daemons.dns.forward import Forwarder, recv_exact
from hybridnb.daemons.dns.querylog import Entry, QueryLog

log = logging.getLogger("hybridnb.dns")

MAX_TCP_CLIENTS = 64
TCP_IDLE = 10.0
RCVBUF = 4 * 1024 * 1024


#: The signals the server handles (on its main thread only).
_SIGNALS = {control.RELOAD, control.FLUSH, signal.SIGTERM, signal.SIGINT}


class _Stop(Exception):
    pass


def load_zone(path: str | os.PathLike[str]) -> tuple[Zone, str]:
    """The zone in a zone file and the fingerprint to report for it (the ``fingerprint``
    the writer stored in the file, else the zone's own)."""
    data = json.loads(Path(path).read_text())
    zone = Zone.from_dict(data)
    return zone, str(data.get("fingerprint") or zone.fingerprint)


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the hot loop.  Each batch allocates a few lists
    (replies, log codes) that die with the turn; at the default threshold (700 allocations)
    the collector would run every few batches and walk whatever lives.  With a high threshold
    it rarely runs, and what exists at start (the zone, the answers) is frozen out of its
    sight."""
    gc.freeze()
    gc.set_threshold(100_000)


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


def _udp_socket(listen: str, port: int) -> socket.socket:
    # no SO_REUSEADDR/SO_REUSEPORT: a second server on the same address must fail, not
    # silently share the queries with the first
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for opt in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, RCVBUF)
            break
        except OSError:
            continue
    sock.bind((listen, port))
    return sock


class Server:
    """One authoritative server instance (UDP + TCP on one address); ``io`` picks the UDP
    batch I/O (:func:`~hybridnb.daemons.dns.udp.open_batch`)."""

    def __init__(self, zone_file: str, listen: str, port: int = 53,
                 subnets: Sequence[str] = (), querylog: QueryLog | None = None,
                 status_file: str | None = None, io: str = "auto") -> None:
        self.zone_file = zone_file
        self.listen = listen
        self.subnets = [ipaddress.ip_network(s, strict=False) for s in subnets]
        self.querylog = querylog or QueryLog(None)
        self.status_file = Path(status_file) if status_file else None
        self._acl: dict[str, float] = {}
        self._reload_lock = threading.Lock()
        self.answers, fingerprint = self._load()
        self.udp = _udp_socket(listen, port)
        self.port = self.udp.getsockname()[1]
        self.io = udp.open_batch(self.udp, io)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((listen, self.port))
        self.tcp.listen(64)
        self._tcp_slots = threading.BoundedSemaphore(MAX_TCP_CLIENTS)
        self.forwarder = Forwarder(self.answers.zone.upstream, self.udp.sendto, self.querylog)
        self._loaded(fingerprint)

    # --------------------------------------------------------------------- zone
    def _load(self) -> tuple[wire.Answers, str]:
        zone, fingerprint = load_zone(self.zone_file)
        return wire.Answers(zone), fingerprint

    def _loaded(self, fingerprint: str) -> None:
        """Tell the world (the status file) what is served now."""
        if self.status_file is not None:
            zone = self.answers.zone
            control.write_status(self.status_file, control.ServerStatus(
                pid=os.getpid(), fingerprint=fingerprint, zone_fingerprint=zone.fingerprint,
                serial=zone.serial, names=len(zone.names()), loaded_at=time.time()))

    def reload(self) -> None:
        """Rebuild the answers from the zone file and swap them in (keeps the old ones if
        the file is broken); the status file says so only once they serve."""
        with self._reload_lock:
            try:
                answers, fingerprint = self._load()
            except Exception as exc:  # noqa: BLE001 - a bad file must not kill the server
                log.error("zone reload failed, keeping the old zone: %s", exc)
                return
            self.answers = answers
            self.forwarder.set_upstream(answers.zone.upstream)
            self._loaded(fingerprint)
            log.info("zone reloaded: serial %s, %d names", answers.zone.serial,
                     len(answers.zone.names()))

    # ---------------------------------------------------------------------- acl
    def allowed(self, ip: str) -> bool:
        return bool(self._admit(ip))

    def _admit(self, ip: str) -> float:
        """The client's query log code (nonzero) if it may query, else ``0.0`` — cached in
        ``_acl``, which the hot path reads directly."""
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
        """The UDP loop (main thread), one batch per turn: receive every queued query, answer
        what the templates answer (:func:`wire.answer_batch`), let the slow path decide the
        rest, log the batch, send every answer.  Logging costs two monotonic clock reads and
        one ``array.extend`` per batch plus one list append per query (see
        :mod:`~hybridnb.daemons.dns.querylog`)."""
        recv, send = self.io.recv, self.io.send
        clock = time.monotonic
        log_on = self.querylog.enabled
        log_extend = self.querylog.fast_extend
        acl = self._acl
        answer_batch = wire.answer_batch
        while True:
            try:
                datas, ips = recv()
                t0 = clock()
                codes = [t0, 0.0, 0.0]
                replies, slow = answer_batch(self.answers, acl, datas, ips, codes)
                if slow:
                    self._slow_batch(datas, ips, replies, slow, t0)
                if log_on and len(codes) > 3:
                    codes[1] = clock()
                    codes[2] = len(codes) - 3.0
                    log_extend(codes)
                send(replies)
            except (_Stop, KeyboardInterrupt):
                return
            except OSError as exc:
                log.debug("udp: %s", exc)

    def _slow_batch(self, datas: list[bytes], ips: list[str], replies: list[bytes | None],
                    slow: list[int], t0: float) -> None:
        """Decide the replies at positions ``slow`` with the slow path (and forward what
        goes upstream); ``t0`` is the batch's monotonic receive time."""
        received = time.time() - (time.monotonic() - t0)
        querylog = self.querylog
        for i in slow:
            ip = ips[i]
            ok = self._acl.get(ip)
            if ok is None:
                ok = self._admit(ip)
            data = datas[i]
            reply = wire.slow_answer(self.answers, data, allowed=bool(ok))
            if reply.forward:
                self.forwarder.forward(data, self.io.addr(i), received, reply.name,
                                       reply.qtype, reply.wire)
                continue
            if querylog.enabled:
                querylog.append(Entry(received, ip, f"{reply.name}\t{reply.qtype}\t{reply.rcode}",
                                      time.time()))
            replies[i] = reply.wire

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

    def _tcp_answer(self, data: bytes, ok: bool) -> tuple[bytes | None, wire.Reply, str]:
        """The reply to one TCP query (relayed upstream if it is not ours) and its log code."""
        reply = wire.slow_answer(self.answers, data, tcp=True, allowed=ok)
        if not reply.forward:
            return reply.wire, reply, reply.rcode
        out = self.forwarder.ask(data)
        if out is None:
            return reply.wire, reply, "FWD:TIMEOUT"            # SERVFAIL
        return out, reply, "FWD:" + wire.RCODE_NAMES.get(out[3] & 0x0F, "?")

    def _tcp_client(self, conn: socket.socket, addr: Any) -> None:
        try:
            conn.settimeout(TCP_IDLE)
            ok = self.allowed(addr[0])
            while True:
                head = recv_exact(conn, 2)
                data = recv_exact(conn, struct.unpack(">H", head)[0]) if head else None
                if data is None:
                    return
                t0 = time.time()
                out, reply, rcode = self._tcp_answer(data, ok)
                if out is None:
                    return
                if self.querylog.enabled:
                    self.querylog.append(Entry(t0, addr[0],
                                               f"{reply.name}\t{reply.qtype}\t{rcode}/TCP",
                                               time.time()))
                conn.sendall(struct.pack(">H", len(out)) + out)
        except OSError:
            return
        finally:
            conn.close()
            self._tcp_slots.release()

    # ------------------------------------------------------------------- running
    def run(self, pidfile: str | None = None, flushed: Path | None = None) -> None:
        """Serve until SIGTERM/SIGINT; ``flushed`` is the mark rewritten after each flush."""
        def on_hup(_sig: int, _frm: Any) -> None:
            threading.Thread(target=self.reload, name="dns-reload", daemon=True).start()

        def on_term(_sig: int, _frm: Any) -> None:
            raise _Stop

        def on_flush(_sig: int, _frm: Any) -> None:
            self.querylog.flush_marked(flushed)

        signal.signal(control.RELOAD, on_hup)
        signal.signal(control.FLUSH, on_flush)
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        # helper threads start with our signals blocked (they inherit the mask), so the
        # kernel hands every signal to the main thread, whose recvmmsg it interrupts: a
        # flush request is served at once even when no query comes in
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            self.querylog.start()
            threading.Thread(target=self.serve_tcp, name="dns-tcp-accept", daemon=True).start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        tune_gc()
        if pidfile:
            control.write_atomic(Path(pidfile), f"{os.getpid()}\n")
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


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {control.MODULE}",
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
    p.add_argument("--io", choices=udp.IO_CHOICES, default="auto",
                   help="UDP batch I/O: recvmmsg/sendmmsg (mmsg), recvfrom/sendto (portable), "
                        "or the first that is available (auto, the default)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    querylog = QueryLog(args.log, max_bytes=args.log_max_bytes)
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)     # the forwarder thread starts now
    try:
        server = Server(args.zone, args.listen, args.port, args.subnet, querylog, args.status,
                        io=args.io)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        log.error("%s:%d is already in use: another name server (another lab on the same "
                  "gateway address?) serves there", args.listen, args.port)
        return 1
    log.info("serving %s on %s:%d (serial %s, %s I/O)", server.answers.zone.domain,
             args.listen, server.port, server.answers.zone.serial,
             type(server.io).__name__)
    server.run(args.pidfile, control.flushed_mark(args.log) if args.log else None)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
