"""Pinned neighbour entries, so a big matrix does not overflow the kernel's ARP table.

Every network namespace on the machine shares one neighbour table, and the entries the
kernel *learns* are capped machine-wide by ``net.ipv4.neigh.default.gc_thresh3`` (1024 by
default).  A full matrix among N endpoints of this kernel (namespace hosts, containers, the
lab host) needs about N² entries: past the cap the kernel refuses new ones ("neighbor table
overflow") and the probes of half the pairs time out — measured on a lab of 45 hosts: 1022 of
2070 pairs ok, every other pair "timeout".

Permanent entries do not count against the cap.  When a run needs more than half of it,
:func:`pinned_neighbours` adds, for the length of the run, one permanent entry per (source,
target) pair — in each source's namespace, on the interface holding its address, with the
target's MAC as read from the target's own interface (VMs: the MAC the lab gave them) — and
afterwards removes exactly the entries it added.  A pair whose source already has an entry
(learned, or pinned by someone else) keeps it, untouched.  Small runs pin nothing: ARP keeps
being exercised as usual.

The entries go in as one batch of hand-packed ``RTM_NEWNEIGH``/``RTM_DELNEIGH`` messages per
namespace (48 bytes each, acknowledged one by one): pyroute2 0.9 spends 250–350 µs building
each message, about 1 s for the 2070 entries of a 46-namespace mesh; the batch takes
milliseconds.  Each endpoint's interface and MAC come from two ``ioctl`` calls inside its
namespace.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

from hybridnb.services.probe.endpoint import ProbeEndpoint

log = logging.getLogger(__name__)

GC_THRESH3 = "/proc/sys/net/ipv4/neigh/default/gc_thresh3"
NUD_PERMANENT = 0x80
_NETLINK_ROUTE = 0
_RTM_NEWNEIGH, _RTM_DELNEIGH, _NLMSG_ERROR = 28, 29, 2
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_EXCL, _NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
_NDA_DST, _NDA_LLADDR = 1, 2
_SIOCGIFADDR, _SIOCGIFHWADDR = 0x8915, 0x8927


def learned_budget() -> int:
    """Half the machine's cap on learned neighbour entries (the other half is for everyone
    else on the machine)."""
    try:
        with open(GC_THRESH3) as f:
            return int(f.read().strip()) // 2
    except (OSError, ValueError):
        return 512


def _link_holding(address: str) -> tuple[int, bytes] | None:
    """``(ifindex, MAC)`` of the interface in *this thread's* namespace whose IPv4 address
    is ``address``; None if there is none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for index, name in socket.if_nameindex():
            req = struct.pack("16s16x", name.encode()[:15])
            try:
                got = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, req)
                if socket.inet_ntoa(got[20:24]) != address:
                    continue
                hw = fcntl.ioctl(s.fileno(), _SIOCGIFHWADDR, req)
            except OSError:                  # no IPv4 address on it
                continue
            return index, hw[18:24]
    return None


def _neigh_messages(op: int, ifindex: int, entries: Sequence[tuple[str, bytes]]) -> bytes:
    """``RTM_NEWNEIGH`` (permanent; only where the namespace has no entry yet: ``EEXIST``
    otherwise) or ``RTM_DELNEIGH`` messages, one per ``(address, mac)``, sequence numbers
    1..n.  Only the last asks for an acknowledgement: the kernel answers failures anyway, in
    order, so one receive per batch tells which ones failed."""
    return _pack(op, ifindex, [_attrs(op, a, mac) for a, mac in entries])


def _attrs(op: int, address: str, mac: bytes) -> bytes:
    """The attributes of one message: the address, and the MAC when adding."""
    dst = struct.pack("HH4s", 8, _NDA_DST, socket.inet_aton(address))
    return dst + struct.pack("HH6s2x", 10, _NDA_LLADDR, mac) if op == _RTM_NEWNEIGH else dst


def _pack(op: int, ifindex: int, attrs: Sequence[bytes]) -> bytes:
    flags = _NLM_F_REQUEST | (_NLM_F_CREATE | _NLM_F_EXCL if op == _RTM_NEWNEIGH else 0)
    state = NUD_PERMANENT if op == _RTM_NEWNEIGH else 0
    head = struct.Struct("IHHIIBxxxiHBB")
    last = len(attrs)
    return b"".join(
        head.pack(28 + len(a), op, flags | (_NLM_F_ACK if seq == last else 0), seq, 0,
                  socket.AF_INET, ifindex, state, 0, 0) + a
        for seq, a in enumerate(attrs, 1))


def _exchange(sock: socket.socket, data: bytes, count: int) -> dict[int, int]:
    """Send a batch of ``count`` messages and read the kernel's answers up to the last one's
    acknowledgement: ``{seq: errno}`` of the messages that failed."""
    if not count:
        return {}
    sock.sendall(data)
    failed: dict[int, int] = {}
    while True:
        buf = sock.recv(1 << 20)
        offset = 0
        while offset + 16 <= len(buf):
            length, kind, _flags, seq, _pid = struct.unpack_from("IHHII", buf, offset)
            if kind == _NLMSG_ERROR:
                err = -struct.unpack_from("i", buf, offset + 16)[0]
                if err:
                    failed[seq] = err
                if seq == count:
                    return failed
            offset += (length + 3) & ~3 if length else len(buf)


@dataclass
class _Member:
    """An endpoint whose network stack is this kernel's: where entries are pinned."""

    ep: ProbeEndpoint
    sock: socket.socket
    index: int
    mac: bytes
    added: list[str] = field(default_factory=list)


def _open_member(ep: ProbeEndpoint) -> _Member | None:
    """Runs inside ``ep``'s namespace: its interface, MAC and a netlink socket there."""
    link = _link_holding(ep.address)
    if link is None:
        return None
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_ROUTE)
    sock.bind((0, 0))
    return _Member(ep, sock, link[0], link[1])


def _enter(eps: Sequence[ProbeEndpoint]) -> list[_Member]:
    """:func:`_open_member` on each endpoint's namespace worker, all at once (one trip to
    each, in parallel: one after the other they took ~1 ms each, a quarter of a second for
    200 endpoints); the namespaces it cannot enter get no pins."""
    from hybridnb.drivers import nsutil

    pool = nsutil.workers()
    pending = []
    for ep in eps:
        try:
            pending.append((ep, pool.submit(ep.netns, _open_member, ep)))
        except Exception as exc:  # noqa: BLE001 - a namespace we cannot enter: no pins there
            log.debug("not pinning in %s: %s", ep.name, exc)
    members = []
    for ep, future in pending:
        try:
            member = future.result()
        except Exception as exc:  # noqa: BLE001 - as above
            log.debug("not pinning in %s: %s", ep.name, exc)
            continue
        if member is not None:
            members.append(member)
    return members


def _mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


class Removal:
    """Where :func:`pinned_neighbours` removes its entries in the background (the caller's
    work after the block — building a matrix's results — overlaps the kernel's): :meth:`wait`
    returns once they are gone."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None

    def wait(self) -> None:
        if self.thread is not None:
            self.thread.join()
            self.thread = None


@contextlib.contextmanager
def pinned_neighbours(endpoints: Sequence[ProbeEndpoint], *, budget: int | None = None,
                      note: Callable[[str], None] | None = None,
                      removal: Removal | None = None) -> Iterator[int]:
    """Pin permanent neighbour entries between ``endpoints`` for the block when their full
    mesh needs more than ``budget`` learned entries (default: :func:`learned_budget`).
    Yields how many entries were pinned.  With ``removal``, they are removed on a thread
    after the block, and ``removal.wait()`` waits for that (the caller must call it)."""
    local = [e for e in endpoints if e.netns is not None]
    remote = [e for e in endpoints if e.netns is None and e.mac]
    needed = len(local) * (len(local) + len(remote) - 1)
    if needed <= (learned_budget() if budget is None else budget):
        yield 0
        return
    members = _enter(local)
    targets = [(m.ep.address, m.mac) for m in members] + \
              [(e.address, _mac_bytes(e.mac)) for e in remote if e.mac]
    attrs = {a: _attrs(_RTM_NEWNEIGH, a, mac) for a, mac in targets}   # packed once
    try:
        for m in members:
            entries = [a for a, _ in targets if a != m.ep.address]
            failed = _exchange(m.sock, _pack(_RTM_NEWNEIGH, m.index,
                                             [attrs[a] for a in entries]), len(entries))
            m.added = [a for seq, a in enumerate(entries, 1) if seq not in failed]
            refused = sorted({e for e in failed.values() if e != errno.EEXIST})
            if refused:
                log.debug("neighbour entries not pinned in %s: %s", m.ep.name,
                          ", ".join(os.strerror(e) for e in refused))
        pinned = sum(len(m.added) for m in members)
        if note:
            note(f"pinned {pinned} neighbour entries in {len(members)} namespaces (a full "
                 f"mesh needs {needed}; the kernel learns at most {learned_budget() * 2} "
                 f"machine-wide)")
        yield pinned
    finally:
        if removal is None:
            _unpin(members)
        else:
            removal.thread = threading.Thread(target=_unpin, args=(members,),
                                              name="probe-unpin", daemon=True)
            removal.thread.start()


def _unpin(members: Sequence[_Member]) -> None:
    """Remove exactly the entries that were added, and close the netlink sockets."""
    for m in members:
        if m.added:
            with contextlib.suppress(OSError):    # the namespace may be gone by now
                _exchange(m.sock, _neigh_messages(
                    _RTM_DELNEIGH, m.index, [(a, b"") for a in m.added]), len(m.added))
        m.sock.close()
