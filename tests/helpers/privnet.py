"""Private network namespaces and tiny probes for real-kernel driver tests.

``private_netns()`` makes an isolated namespace (only ``lo``, up; no default route; IPv6 off) that stands
in for the lab host, and removes it — and any host namespace named after the test's lab — at
the end.  ``icmp_ping(ns, dst)`` sends raw ICMP echoes from inside a namespace; tests only
ever aim it at addresses they created themselves on their own bridge.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from contextlib import contextmanager
from typing import Iterator

from hybridnb.drivers import nsutil

_seq = itertools.count(1)


def unique(prefix: str = "t") -> str:
    """A name unique to this process and call, short enough for namespace/lab names."""
    return f"{prefix}{os.getpid() % 100000}x{next(_seq)}"


@contextmanager
def private_netns(lab: str | None = None) -> Iterator[str]:
    """A fresh namespace with ``lo`` up and nothing else; deleted afterwards together with the
    host namespaces ``hnb-<lab>-*`` of ``lab``."""
    name = f"hnb-{unique('ns')}"
    nsutil.create_netns(name)
    try:
        # no IPv6: link-local addresses appear asynchronously and would make snapshots racy
        for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"):
            nsutil.write_sysctl(name, key, "1")
        with nsutil.iproute(name) as ipr:
            ipr.link("set", index=1, state="up")
        yield name
    finally:
        if lab is not None:
            for entry in os.listdir(nsutil.NETNS_RUN_DIR):
                if entry.startswith(f"hnb-{lab}-"):
                    nsutil.delete_netns(entry)
        nsutil.delete_netns(name)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def icmp_ping(netns: str, dst: str, timeout: float = 1.0, attempts: int = 3, *,
              size: int = 0, df: bool = False) -> float | None:
    """Round-trip time in seconds of an ICMP echo from ``netns`` to ``dst`` — up to
    ``attempts`` echoes, each waited for ``timeout`` seconds (a loaded 2-core CI machine may
    drop a first packet while ARP resolves); None if every one was lost.  ``size``: the IP
    packet's size in bytes (the payload is padded); ``df``: set Don't Fragment (a packet
    larger than the route's MTU then raises ``OSError`` EMSGSIZE at once)."""
    sock = nsutil.socket_in_netns(netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        if df:
            sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_MTU_DISCOVER", 10),
                            getattr(socket, "IP_PMTUDISC_DO", 2))
        ident = (os.getpid() + next(_seq)) & 0xFFFF
        payload = b"hybridnb-test"
        payload += b"." * max(0, size - 28 - len(payload))
        for seq in range(1, attempts + 1):
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) \
                + payload
            start = time.perf_counter()
            sock.sendto(packet, (dst, 0))
            deadline = start + timeout
            while True:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                sock.settimeout(left)
                try:
                    data, addr = sock.recvfrom(65535)
                except socket.timeout:
                    break
                ihl = (data[0] & 0x0F) * 4
                kind, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
                if kind == 0 and rid == ident and rseq == seq and addr[0] == dst:
                    return time.perf_counter() - start
        return None
    finally:
        sock.close()
