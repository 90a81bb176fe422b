"""Responders: the engine's own listeners, standing in for a built-in check's service.

A :class:`~hybridnb.services.probe.plan.ResponderSpec` becomes a socket bound to the target's
address inside the target's namespace, from the first probe towards it to the last:

* a stream listener — for ``tcp`` the client's connect is the probe: the listener defers
  accepting until a connection sends something (``TCP_DEFER_ACCEPT``), so a probe that connects
  and resets is never accepted (one that sends a FIN, as ``nc`` does, is accepted and closed at
  once); for ``http`` it reads each request and answers ``200 OK``, keeping the connection
  for the next request when the request asks for it (HTTP/1.1 without ``Connection: close``,
  or ``Connection: keep-alive``), as a web server does;
* a UDP echo, which appends its kernel receive time and its send time to our own probes so the
  client can subtract the time the datagram spent in this loop.

The plan decides where responders go (never on a port the user asserts).  If the port is
already taken (``EADDRINUSE``: something really listens there) the responder steps aside and
the real service answers.
"""

from __future__ import annotations

import selectors
import socket
import struct
import time

from hybridnb.services.probe.clients import UDP_MAGIC, UDP_PROBE_LEN, head_end, head_keeps
from hybridnb.services.probe.plan import ResponderSpec
from hybridnb.services.probe.wire import SO_TIMESTAMPNS, Loop, anc_ts

#: The answer to a request that does not keep its connection (HTTP/1.0, ``Connection: close``).
HTTP_RESPONSE = (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n"
                 b"Connection: close\r\n\r\nhybridnb\n")
#: The answer to one that does (HTTP/1.1, ``Connection: keep-alive``): the connection stays.
HTTP_RESPONSE_KEEP = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n"
                      b"\r\nhybridnb\n")


def start_responder(loop: Loop, spec: ResponderSpec, sock: socket.socket | None
                    ) -> "StreamResponder | UdpResponder | None":
    """Bind and register one responder on ``sock`` (made in the target's namespace); None
    when it cannot listen (no socket, or the port is taken: the probe then shows what a
    client sees).  The result's :meth:`close` stops it."""
    if sock is None:
        return None
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((spec.address, spec.port))
        if spec.kind == "stream":
            # hand over only connections that send something (a request, a FIN): a ``tcp``
            # probe's handshake completes in the kernel and its reset removes the embryonic
            # connection — no socket, accept or close on this side (the client sees the same)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
            sock.listen(4096)
    except OSError:
        sock.close()
        return None
    if spec.kind == "stream":
        responder: StreamResponder | UdpResponder = StreamResponder(loop, spec.http, sock)
        loop.add(sock, selectors.EVENT_READ, responder.accept)
    else:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        responder = UdpResponder(loop, sock)
        loop.add(sock, selectors.EVENT_READ, udp_echo)
    return responder


class UdpResponder:
    """A UDP echo (see :func:`udp_echo`)."""

    def __init__(self, loop: Loop, sock: socket.socket) -> None:
        self.loop = loop
        self.sock = sock

    def close(self) -> None:
        self.loop.drop(self.sock)


class StreamResponder:
    """Accepts TCP probes (closed at once) or answers HTTP requests."""

    def __init__(self, loop: Loop, http: bool, sock: socket.socket | None = None) -> None:
        self.loop = loop
        self.http = http
        self.sock = sock
        self.buffers: dict[socket.socket, bytes] = {}

    def close(self) -> None:
        """Stop listening; connections still being read are closed too."""
        for conn in list(self.buffers):
            self.loop.drop(conn)
        self.buffers.clear()
        if self.sock is not None:
            self.loop.drop(self.sock)

    def accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:             # BlockingIOError included: the queue is empty
                return
            if not self.http:
                conn.close()
                continue
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
        buf = self.buffers.get(conn, b"") + data
        while data:
            end = head_end(buf)
            if end < 0:
                if len(buf) <= 8192:
                    self.buffers[conn] = buf
                    return
                end = len(buf)
            keep = head_keeps(buf[:end], response=False)[0]
            try:
                conn.send(HTTP_RESPONSE_KEEP if keep else HTTP_RESPONSE)
            except OSError:
                keep = False
            if not keep:
                break
            buf = buf[end:]
            if not buf:
                self.buffers[conn] = buf
                return
        self.buffers.pop(conn, None)
        self.loop.drop(conn)


def udp_echo(sock: socket.socket) -> None:
    """Echo each datagram; our own probes (marked) get this responder's kernel receive time
    and its send time appended."""
    while True:
        try:
            data, anc, _flags, addr = sock.recvmsg(2048, 64)
        except OSError:                 # BlockingIOError included: nothing more for now
            return
        if len(data) == UDP_PROBE_LEN and data.startswith(UDP_MAGIC):
            rx = anc_ts(anc)
            if rx is not None:
                data += struct.pack("!QQ", rx, time.time_ns())
        try:
            sock.sendto(data, addr)
        except OSError:
            pass
