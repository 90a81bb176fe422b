"""Relaying out-of-lab questions to the lab's upstream resolvers (the zone's ``upstream``).

Only allowed clients are ever forwarded (the server decides; see :mod:`.server`).  UDP
questions go out under a fresh random ID; the first reply whose source, ID and question match
goes back to the client under the client's ID; a question no upstream answers within
``FORWARD_TIMEOUT`` seconds (or that cannot be sent at all) gets SERVFAIL.  TCP clients get a
blocking relay (:meth:`Forwarder.ask`).  Every relayed answer is logged before it is sent.
"""

from __future__ import annotations

import logging
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hybridnb.daemons.dns import wire
from hybridnb.daemons.dns.querylog import Entry, QueryLog

log = logging.getLogger("hybridnb.dns")

FORWARD_TIMEOUT = 2.0                 # then SERVFAIL
MAX_FORWARDS = 4096                   # questions in flight upstream


def _question_end(data: bytes) -> int:
    """Offset just past the (already validated, uncompressed) question of a query."""
    i = 12
    while data[i]:
        i += 1 + data[i]
    return i + 5


@dataclass(frozen=True)
class _Pending:
    """A question in flight upstream."""

    client_id: bytes            # the client's query ID (2 bytes)
    question: bytes             # the question as the client sent it (replies must match it)
    addr: Any                   # the client's address
    received: float             # wall clock
    name: str
    qtype: str
    fail: bytes                 # the SERVFAIL to send if no upstream answers in time
    deadline: float             # monotonic


class Forwarder:
    """Relays out-of-lab questions to the upstream resolvers over UDP, each under a fresh
    random ID.  The first reply whose source, ID and question match goes back to the client
    under the client's ID; a question no upstream answers within ``timeout`` seconds (or that
    cannot be sent at all) gets the SERVFAIL the slow path prepared, so a silent upstream
    costs the client a bounded wait, not a retry loop."""

    def __init__(self, upstream: Sequence[str], deliver: Callable[[bytes, Any], Any],
                 querylog: QueryLog,
                 timeout: float = FORWARD_TIMEOUT) -> None:
        self.upstream = [(u, 53) for u in upstream]
        self.deliver = deliver                       # deliver(wire, addr)
        self.querylog = querylog
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("0.0.0.0", 0))
        self.sock.settimeout(min(0.1, timeout / 4))  # how often expired questions are failed
        # upstream query ID -> question; insertion order is deadline order (one timeout)
        self.pending: dict[int, _Pending] = {}
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
        entry = _Pending(data[:2], data[12:_question_end(data)], addr, t0, name, qtype, fail,
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

    def _finish(self, entry: _Pending, out: bytes, rcode: str) -> None:
        if self.querylog.enabled:
            self.querylog.append(Entry(entry.received, entry.addr[0],
                                       f"{entry.name}\t{entry.qtype}\t{rcode}", time.time()))
        try:
            self.deliver(entry.client_id + out[2:], entry.addr)
        except OSError as exc:
            log.debug("forward reply to %s: %s", entry.addr, exc)

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
            if entry is None or data[12:12 + len(entry.question)] != entry.question:
                return                                   # late, duplicate or forged
            del self.pending[qid]
        rcode = data[3] & 0x0F
        self._finish(entry, data, "FWD:" + wire.RCODE_NAMES.get(rcode, str(rcode)))

    def _expire(self) -> None:
        now = time.monotonic()
        expired = []
        with self.lock:
            for qid, entry in self.pending.items():
                if entry.deadline > now:
                    break
                expired.append(qid)
            entries = [self.pending.pop(qid) for qid in expired]
        for entry in entries:
            self._finish(entry, entry.fail, "FWD:TIMEOUT")

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
                        head = recv_exact(t, 2)
                        resp = recv_exact(t, struct.unpack(">H", head)[0]) if head else None
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


def recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf
