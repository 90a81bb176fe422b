"""A pcap file decoded into one readable line per packet: time, source, destination, protocol,
and what the packet says (``echo request id=7 seq=1``, ``[SYN, ACK]``, ``A web.hybrid.local ->
10.0.1.100``).

Decoding is dpkt's (Ethernet, ARP, IPv4/IPv6, ICMP, TCP, UDP, DNS); this module only picks the
fields a person reads.  :func:`decode_pcap` returns a :class:`PacketTable` that renders as
text and HTML (with a sequence picture, :mod:`hybridnb.render.packets`) and as data; its
``protocols()``, ``of(protocol)`` and ``involving(address)`` make tests and scripts short.
dpkt is imported on use (the ``capture`` extra).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

_TCP_FLAGS = ((0x02, "SYN"), (0x10, "ACK"), (0x01, "FIN"), (0x04, "RST"), (0x08, "PSH"))
_ICMP_TYPES = {0: "echo reply", 3: "destination unreachable", 5: "redirect",
               8: "echo request", 11: "time exceeded"}
_UNREACH = {0: "net", 1: "host", 2: "protocol", 3: "port", 4: "fragmentation needed",
            13: "administratively prohibited"}
_HTTP_STARTS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ",
                b"HTTP/1.")


@dataclass(frozen=True)
class PacketSummary:
    index: int
    time: float                       # seconds since the epoch
    src: str
    dst: str
    protocol: str                     # ARP ICMP TCP UDP DNS HTTP IPv6 other
    info: str
    length: int
    sport: int | None = None
    dport: int | None = None
    src_mac: str = ""
    dst_mac: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "time": round(self.time, 6), "src": self.src,
                "dst": self.dst, "protocol": self.protocol, "info": self.info,
                "length": self.length, "sport": self.sport, "dport": self.dport,
                "src_mac": self.src_mac, "dst_mac": self.dst_mac}


@dataclass(frozen=True)
class PacketTable:
    """The decoded packets of one capture (``title`` says of what)."""

    title: str
    packets: tuple[PacketSummary, ...] = ()
    path: str = ""
    truncated: int = 0                # packets beyond the decode limit

    def protocols(self) -> set[str]:
        return {p.protocol for p in self.packets}

    def of(self, protocol: str) -> list[PacketSummary]:
        return [p for p in self.packets if p.protocol == protocol.upper()]

    def involving(self, address: str) -> "PacketTable":
        return PacketTable(self.title, tuple(p for p in self.packets
                                             if address in (p.src, p.dst)), self.path)

    def __len__(self) -> int:
        return len(self.packets)

    def __iter__(self) -> Iterator[PacketSummary]:
        return iter(self.packets)

    def records(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.packets]

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "path": self.path, "truncated": self.truncated,
                "packets": self.records()}

    def figure(self, limit: int = 40) -> Any:
        from hybridnb.render.packets import sequence_figure

        return sequence_figure(self, limit=limit)

    def to_text(self, limit: int | None = 200) -> str:
        from hybridnb.render.packets import packets_text

        return packets_text(self, limit=limit)

    __repr__ = to_text
    __str__ = lambda self: self.to_text()  # noqa: E731

    def _repr_html_(self) -> str:
        from hybridnb.render.packets import packets_html

        return packets_html(self)


def _ip(addr: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if len(addr) == 16 else socket.AF_INET, addr)


def _mac(raw: bytes) -> str:
    return raw.hex(":")


def _tcp_info(tcp: Any) -> tuple[str, str]:
    flags = [name for bit, name in _TCP_FLAGS if tcp.flags & bit]
    data = bytes(tcp.data)
    if data.startswith(_HTTP_STARTS):
        first = data.split(b"\r\n", 1)[0].decode(errors="replace")
        return "HTTP", first
    text = f"{tcp.sport} → {tcp.dport} [{', '.join(flags)}]"
    if data:
        text += f" len={len(data)}"
    return "TCP", text


def _dns_info(payload: bytes) -> str | None:
    import dpkt

    try:
        msg = dpkt.dns.DNS(payload)
    except (dpkt.UnpackError, IndexError, ValueError):
        return None
    qtypes = {1: "A", 28: "AAAA", 12: "PTR", 33: "SRV", 5: "CNAME", 15: "MX", 16: "TXT",
              2: "NS", 6: "SOA"}
    q = msg.qd[0] if msg.qd else None
    what = f"{qtypes.get(q.type, q.type)} {q.name}" if q is not None else "(no question)"
    if msg.qr == dpkt.dns.DNS_Q:
        return f"query {what}"
    answers = []
    for rr in msg.an:
        if rr.type == 1 and len(rr.rdata) == 4:
            answers.append(socket.inet_ntoa(rr.rdata))
        elif rr.type == 12:
            answers.append(str(getattr(rr, "ptrname", "")))
        else:
            answers.append(qtypes.get(rr.type, str(rr.type)))
    rcode = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}.get(msg.rcode,
                                                                           str(msg.rcode))
    return f"answer {what} -> {', '.join(answers) or rcode}" + (
        f" ({rcode})" if answers and rcode != "NOERROR" else "")


def _icmp_info(icmp: Any) -> str:
    name = _ICMP_TYPES.get(icmp.type, f"type {icmp.type}")
    if icmp.type in (0, 8):
        echo = icmp.data
        return f"{name} id={echo.id} seq={echo.seq}"
    if icmp.type == 3:
        return f"{name} ({_UNREACH.get(icmp.code, icmp.code)})"
    return name


def _transport(ip: Any) -> tuple[str, str, int | None, int | None]:
    import dpkt

    data = ip.data
    if isinstance(data, dpkt.icmp.ICMP):
        return "ICMP", _icmp_info(data), None, None
    if isinstance(data, dpkt.tcp.TCP):
        proto, info = _tcp_info(data)
        if proto == "TCP" and 53 in (data.sport, data.dport) and len(data.data) > 2:
            dns = _dns_info(bytes(data.data)[2:])
            if dns:
                return "DNS", dns + " (tcp)", data.sport, data.dport
        return proto, info, data.sport, data.dport
    if isinstance(data, dpkt.udp.UDP):
        if 53 in (data.sport, data.dport):
            dns = _dns_info(bytes(data.data))
            if dns:
                return "DNS", dns, data.sport, data.dport
        return "UDP", f"{data.sport} → {data.dport} len={len(data.data)}", data.sport, data.dport
    if isinstance(data, dpkt.icmp6.ICMP6):
        return "ICMPv6", f"type {data.type}", None, None
    return f"IP proto {ip.p}", "", None, None


def summarize(index: int, ts: float, frame: bytes) -> PacketSummary:
    """One Ethernet frame as a :class:`PacketSummary`."""
    import dpkt

    eth = dpkt.ethernet.Ethernet(frame)
    smac, dmac = _mac(eth.src), _mac(eth.dst)
    data = eth.data
    if isinstance(data, dpkt.arp.ARP):
        spa, tpa = socket.inet_ntoa(data.spa), socket.inet_ntoa(data.tpa)
        info = (f"who-has {tpa} tell {spa}" if data.op == dpkt.arp.ARP_OP_REQUEST
                else f"{spa} is-at {_mac(data.sha)}")
        return PacketSummary(index, ts, spa, tpa, "ARP", info, len(frame), src_mac=smac,
                             dst_mac=dmac)
    if isinstance(data, (dpkt.ip.IP, dpkt.ip6.IP6)):
        proto, info, sport, dport = _transport(data)
        if isinstance(data, dpkt.ip6.IP6) and proto.startswith("IP proto"):
            proto = "IPv6"
        return PacketSummary(index, ts, _ip(data.src), _ip(data.dst), proto, info, len(frame),
                             sport, dport, smac, dmac)
    return PacketSummary(index, ts, smac, dmac, "other", f"ethertype 0x{eth.type:04x}",
                         len(frame), src_mac=smac, dst_mac=dmac)


def decode_frames(frames: Iterable[tuple[float, bytes]], *, title: str = "",
                  path: str = "", limit: int | None = None) -> PacketTable:
    """Decode ``(timestamp, frame)`` pairs (at most ``limit``)."""
    import dpkt

    out: list[PacketSummary] = []
    skipped = 0
    for i, (ts, frame) in enumerate(frames, 1):
        if limit is not None and len(out) >= limit:
            skipped += 1
            continue
        try:
            out.append(summarize(i, float(ts), bytes(frame)))
        except (dpkt.UnpackError, ValueError, IndexError, AttributeError) as exc:
            out.append(PacketSummary(i, float(ts), "?", "?", "malformed", str(exc)[:60],
                                     len(frame)))
    return PacketTable(title, tuple(out), path, skipped)


def decode_pcap(path: str | Path, *, limit: int | None = None,
                title: str | None = None) -> PacketTable:
    """Every packet of a pcap file (the first ``limit``), decoded."""
    import dpkt

    from hybridnb.errors import NotFoundError

    p = Path(path)
    try:
        fh = p.open("rb")
    except FileNotFoundError:
        raise NotFoundError(f"capture file {p} does not exist") from None
    with fh:
        try:
            reader = dpkt.pcap.Reader(fh)
        except ValueError:                               # empty or cut before its header
            return PacketTable(title or p.name, (), str(p))
        return decode_frames(reader, title=title or p.name, path=str(p), limit=limit)


__all__ = ["PacketSummary", "PacketTable", "decode_frames", "decode_pcap", "summarize"]
