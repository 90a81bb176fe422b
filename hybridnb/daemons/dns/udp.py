"""Datagram I/O of the name server, a batch at a time.

The server's UDP loop takes every queued query at once, answers them and sends the answers at
once, so the fixed costs of a turn (system calls, releasing the GIL, the loop itself) are
shared by the batch.  Two implementations with one interface (:class:`BatchIO`):

* ``mmsg`` — :mod:`._mmsg`, a small C extension built by ``pip install``: one ``recvmmsg``
  and one ``sendmmsg`` per batch (Linux), the senders' addresses kept in C and turned into
  text only when they change;
* ``portable`` — :class:`PortableBatch`: ``recvfrom`` (waiting for the first datagram, then
  ``MSG_DONTWAIT`` for the rest of the batch) and one ``sendto`` per answer; used where the
  extension is not built (no compiler at install time, not Linux).

:func:`open_batch` picks one: ``auto`` takes ``mmsg`` when it is there.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any, Protocol

#: Datagrams per batch at most.
BATCH = 64
#: Bytes read per datagram (longer ones are truncated, as ``recvfrom(4096)`` would).
BUFSIZE = 4096
IO_CHOICES = ("auto", "mmsg", "portable")


class BatchIO(Protocol):
    """What the server's UDP loop needs from its socket."""

    def recv(self) -> tuple[list[bytes], list[str]]:
        """Wait for at least one datagram; the queued datagrams and their senders' addresses
        (text), up to the batch size."""

    def send(self, replies: list[bytes | None]) -> int:
        """Send ``replies[i]`` (``None``: nothing) to the sender of datagram ``i`` of the
        last :meth:`recv`; the number sent."""

    def addr(self, i: int) -> Any:
        """The sender of datagram ``i`` of the last :meth:`recv` (a socket address)."""


class PortableBatch:
    """:class:`BatchIO` over ``recvfrom``/``sendto``."""

    def __init__(self, sock: socket.socket, size: int = BATCH) -> None:
        self.sock = sock
        self.size = size if hasattr(socket, "MSG_DONTWAIT") else 1
        self.addrs: list[Any] = []

    def recv(self) -> tuple[list[bytes], list[str]]:
        recvfrom = self.sock.recvfrom
        data, addr = recvfrom(BUFSIZE)
        datas, addrs = [data], [addr]
        if self.size > 1:
            dontwait = socket.MSG_DONTWAIT
            try:
                while len(datas) < self.size:
                    data, addr = recvfrom(BUFSIZE, dontwait)
                    datas.append(data)
                    addrs.append(addr)
            except (BlockingIOError, InterruptedError):
                pass
        self.addrs = addrs
        return datas, [a[0] for a in addrs]

    def send(self, replies: Sequence[bytes | None]) -> int:
        sent = 0
        sendto = self.sock.sendto
        for reply, addr in zip(replies, self.addrs):
            if reply is not None:
                try:
                    sendto(reply, addr)
                    sent += 1
                except OSError:
                    pass                    # as the kernel would drop it
        return sent

    def addr(self, i: int) -> Any:
        return self.addrs[i]


class _MmsgBatch:
    """:class:`BatchIO` over the C extension (keeps the socket referenced)."""

    def __init__(self, sock: socket.socket, size: int = BATCH) -> None:
        from hybridnb.daemons.dns._mmsg import Batch

        self.sock = sock
        self._batch = Batch(sock.fileno(), size, BUFSIZE)
        self.recv = self._batch.recv
        self.send = self._batch.send
        self.addr = self._batch.addr


def mmsg_available() -> bool:
    """True when the recvmmsg/sendmmsg extension is built and importable."""
    try:
        from hybridnb.daemons.dns import _mmsg  # noqa: F401
    except ImportError:
        return False
    return True


def open_batch(sock: socket.socket, io: str = "auto", size: int = BATCH) -> BatchIO:
    """Batch I/O on the datagram socket ``sock``: ``mmsg``, ``portable`` or ``auto`` (the
    first when it is built).  Asking for ``mmsg`` where it is not built raises ImportError."""
    if io not in IO_CHOICES:
        raise ValueError(f"io must be one of {', '.join(IO_CHOICES)}, not {io!r}")
    if io == "portable" or (io == "auto" and not mmsg_available()):
        return PortableBatch(sock, size)
    return _MmsgBatch(sock, size)  # type: ignore[return-value]
