"""The probe engine's plumbing: sockets in namespaces, one event loop, kernel timestamps.

* :func:`open_sockets` creates sockets inside namespaces — one batch per namespace on that
  namespace's worker thread (:mod:`hybridnb.drivers.nsutil`: setns once, microseconds per
  socket, no fork), all namespaces in parallel;
* :class:`Loop` is a ``selectors`` loop whose registrations carry their own handler;
* :func:`fd_budget` says how many file descriptors a run may use (raising the soft limit
  towards the hard one when it must);
* :func:`recv_ts` reads a datagram with its kernel receive time (``SO_TIMESTAMPNS``), so an
  RTT is that minus the time taken just before ``sendto`` and a busy loop does not inflate it;
* :func:`reason` turns an errno into the word a result shows (``refused``, ``timeout``…).
"""

from __future__ import annotations

import array
import errno
import os
import resource
import selectors
import socket
import struct
import threading
import time
from concurrent.futures import Future
from typing import Callable, Sequence

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
#: socket() arguments per kind of socket a plan asks for
SOCKET_ARGS = {"icmp": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
               "stream": (socket.AF_INET, socket.SOCK_STREAM, 0),
               "dgram": (socket.AF_INET, socket.SOCK_DGRAM, 0),
               "udp": (socket.AF_INET, socket.SOCK_DGRAM, 0),
               "dns": (socket.AF_INET, socket.SOCK_DGRAM, 0)}
#: descriptors kept free for everything else in the process (libvirt, logging, threads)
FD_MARGIN = 64

_ERRNO_REASONS = {errno.ECONNREFUSED: "refused", errno.EHOSTUNREACH: "host unreachable",
                  errno.ENETUNREACH: "network unreachable", errno.ETIMEDOUT: "timeout",
                  errno.ECONNRESET: "reset", errno.EPERM: "blocked (EPERM)",
                  errno.EACCES: "blocked (EACCES)", errno.EADDRNOTAVAIL: "address not available"}


def reason(err: int) -> str:
    return _ERRNO_REASONS.get(err, os.strerror(err).lower())


def errno_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno:
        return reason(exc.errno)
    return str(exc)


def checksum(data: bytes) -> int:
    """Internet checksum, computed in native byte order (the sum is order-independent)."""
    if len(data) % 2:
        data += b"\0"
    s = sum(array.array("H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def anc_ts(anc: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
            sec, nsec = struct.unpack("qq", payload[:16])
            return sec * 1_000_000_000 + nsec
    return None


def recv_ts(sock: socket.socket, size: int = 2048) -> tuple[bytes, int]:
    """One datagram and its kernel receive time (ns, CLOCK_REALTIME); raises BlockingIOError."""
    data, anc, _flags, _addr = sock.recvmsg(size, 64)
    ts = anc_ts(anc)
    return data, ts if ts is not None else time.time_ns()


def tcp_rtt(sock: socket.socket) -> float | None:
    """The kernel's RTT estimate of a just-connected socket (its SYN → SYN-ACK sample)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except OSError:
        return None
    if len(info) < 72:
        return None
    (rtt_us,) = struct.unpack_from("I", info, 68)   # struct tcp_info.tcpi_rtt
    return rtt_us / 1e6 if rtt_us else None


Handler = Callable[[socket.socket], None]


class Loop:
    """A selectors loop whose registrations carry their own handler."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self._lock = threading.Lock()      # send jobs may register from several threads

    def add(self, sock: socket.socket, events: int, handler: Handler) -> None:
        with self._lock:
            self.sel.register(sock, events, handler)

    def modify(self, sock: socket.socket, events: int, handler: Handler) -> None:
        self.sel.modify(sock, events, handler)

    def drop(self, sock: socket.socket) -> None:
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def run_once(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds and handle what is ready; returns how many."""
        ready = self.sel.select(max(timeout, 0.0))
        for key, _ev in ready:
            key.data(key.fileobj)
        return len(ready)

    def close(self) -> None:
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.sel.close()


def _make_sockets(kinds: Sequence[str]) -> list[socket.socket]:
    """Runs on a namespace's worker thread: create every socket of one batch."""
    out: list[socket.socket] = []
    try:
        for kind in kinds:
            out.append(socket.socket(*SOCKET_ARGS[kind]))
    except BaseException:
        for s in out:
            s.close()
        raise
    return out


def open_sockets(batches: dict[str | None, list[str]]
                 ) -> dict[str | None, list[socket.socket] | BaseException]:
    """Create each namespace's batch of sockets (``None``: this thread's own namespace), all
    namespaces in parallel; a namespace that cannot be entered gets its exception."""
    from hybridnb.drivers import nsutil

    pool = nsutil.workers()
    pending: dict[str | None, Future | list[socket.socket] | BaseException] = {}
    for ns, kinds in batches.items():
        if not kinds:
            continue
        try:
            pending[ns] = _make_sockets(kinds) if ns is None else pool.submit(ns, _make_sockets,
                                                                             kinds)
        except BaseException as exc:
            pending[ns] = exc
    out: dict[str | None, list[socket.socket] | BaseException] = {}
    for ns, f in pending.items():
        if isinstance(f, Future):
            try:
                out[ns] = f.result()
            except BaseException as exc:
                out[ns] = exc
        else:
            out[ns] = f
    return out


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 64


def fd_budget(needed: int) -> int:
    """File descriptors a run may hold at once: raises the soft limit towards ``needed`` (up
    to the hard limit) and returns what is free under it, less :data:`FD_MARGIN`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = open_fds()
    want = in_use + needed + FD_MARGIN
    if want > soft and soft != resource.RLIM_INFINITY:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        if new > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
                soft = new
            except (ValueError, OSError):
                pass
    if soft == resource.RLIM_INFINITY:
        return needed
    return max(soft - in_use - FD_MARGIN, 0)
