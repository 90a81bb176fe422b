"""Capture frames on one interface of the host the agent runs on; the pcap goes to stdout.

``python3 -m hybridnb.remote.sniff IFACE [--count N] [--snaplen N] [--filter JSON]`` runs in
the agent container (``network_mode=host``, ``NET_RAW``) of a remote host: an ``AF_PACKET``
socket on the lab bridge there (or on one endpoint's bridge port), promiscuous — what
tcpdump would open, so the agent image needs no tcpdump — writes a pcap (Ethernet, microsecond times)
frame by frame to stdout, which ``docker exec`` streams back to the capture on this machine
(:class:`hybridnb.services.capture.RemoteCapture`).  ``--filter`` is a classic BPF program
(``[[code, jt, jf, k], ...]``) compiled by tcpdump on *this* machine (``tcpdump -ddd``) and
attached before the socket is bound, so no frame slips past it.

It ends after ``--count`` frames, or when its stdin closes (the capture's stop: frames
already queued are written first), and prints tcpdump's counting words on stderr
(``N packets captured``, ``N packets received by filter``, ``N packets dropped by kernel``).
Pure standard library: it runs in the agent image's Python.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import sys
from typing import Sequence

ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
SO_TIMESTAMP = 29
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
LINKTYPE_ETHERNET = 1
_TIMEVAL = struct.Struct("=qq")


def pcap_header(snaplen: int) -> bytes:
    """The pcap file header (little-endian magic of this host, Ethernet)."""
    return struct.pack("=IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET)


def pcap_record(sec: int, usec: int, frame: bytes, wire_len: int) -> bytes:
    return struct.pack("=IIII", sec, usec, len(frame), wire_len) + frame


def attach_filter(sock: socket.socket, program: Sequence[Sequence[int]]) -> object:
    """Attach a classic BPF program; returns the buffer that must outlive the socket's use."""
    import ctypes

    blob = b"".join(struct.pack("=HBBI", *map(int, ins)) for ins in program)
    buf = ctypes.create_string_buffer(blob, len(blob))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                    struct.pack("HL", len(program), ctypes.addressof(buf)))
    return buf


def open_socket(iface: str, program: Sequence[Sequence[int]] | None) -> tuple[socket.socket,
                                                                              object]:
    """A packet socket on ``iface``: filter first, then bound (nothing unfiltered queued)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    keep = attach_filter(sock, program) if program else None
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind((iface, ETH_P_ALL))
    # promiscuous, as tcpdump: a bridge hands its device only the frames for itself
    # otherwise, not those it forwards between ports (undone when the socket closes)
    sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP,
                    struct.pack("iHH8s", socket.if_nametoindex(iface), PACKET_MR_PROMISC, 0,
                                b""))
    return sock, keep


def _frame(sock: socket.socket, snaplen: int) -> bytes | None:
    """One frame as a pcap record (None: nothing queued on a non-blocking socket)."""
    try:
        data, anc, _flags, _addr = sock.recvmsg(snaplen, 64)
    except BlockingIOError:
        return None
    sec = usec = 0
    for level, kind, raw in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMP and len(raw) >= _TIMEVAL.size:
            sec, usec = _TIMEVAL.unpack_from(raw)
    if not sec:
        import time

        now = time.time()
        sec, usec = int(now), int((now % 1) * 1e6)
    return pcap_record(sec, usec, data, len(data))


def _stats(sock: socket.socket) -> tuple[int, int]:
    try:
        packets, drops = struct.unpack("=II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        return packets, drops
    except OSError:
        return 0, 0


def capture(iface: str, out: int, stdin: int, *, count: int = 0, snaplen: int = 65535,
            program: Sequence[Sequence[int]] | None = None) -> tuple[int, int, int]:
    """Write a pcap of ``iface`` to fd ``out`` until ``count`` frames or EOF on ``stdin``;
    returns (captured, received by filter, dropped by kernel)."""
    sock, _keep = open_socket(iface, program)
    os.write(out, pcap_header(snaplen))
    sys.stderr.write(f"listening on {iface}, link-type EN10MB (Ethernet)\n")
    sys.stderr.flush()
    n, received, dropped = 0, 0, 0
    watch = [sock, stdin]
    while not count or n < count:
        ready, _, _ = select.select(watch, [], [])
        if sock in ready:
            record = _frame(sock, snaplen)
            if record is not None:
                os.write(out, record)
                n += 1
        if stdin in ready and not os.read(stdin, 4096):      # the capture's stop
            sock.setblocking(False)
            while not count or n < count:               # what the kernel already holds
                record = _frame(sock, snaplen)
                if record is None:
                    break
                os.write(out, record)
                n += 1
            break
    received, dropped = _stats(sock)
    sock.close()
    return n, received, dropped


def main(argv: list[str]) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python3 -m hybridnb.remote.sniff")
    parser.add_argument("iface")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--snaplen", type=int, default=65535)
    parser.add_argument("--filter", default="", help="a BPF program as JSON (tcpdump -ddd)")
    args = parser.parse_args(argv)
    program = json.loads(args.filter) if args.filter else None
    try:
        n, received, dropped = capture(args.iface, sys.stdout.fileno(), sys.stdin.fileno(),
                                       count=args.count, snaplen=args.snaplen, program=program)
    except OSError as exc:
        sys.stderr.write(f"{args.iface}: {exc.strerror or exc}\n")
        return 1
    sys.stderr.write(f"{n} packets captured\n{received} packets received by filter\n"
                     f"{dropped} packets dropped by kernel\n")
    return 0


if __name__ == "__main__":          # pragma: no cover - run in the agent container
    sys.exit(main(sys.argv[1:]))
