"""Who answers for each lab address: one ARP sweep from the gateway, inside the lab host.

An address answered by two MACs is a duplicate (a rogue machine on the bridge, a VM given a
container's address); an endpoint answering with a MAC other than its own is not the
endpoint the plan made; an endpoint that does not answer is not on the wire.  The sweep sends
one ARP request per address ("who has A? tell <gateway>", from the bridge's MAC) on a raw
packet socket bound to the lab bridge in the lab host's namespace, resends once to the silent
ones, and collects every reply for ``timeout`` seconds (less when everyone has answered and a
short grace for late duplicates has passed).

Safety: only addresses inside the lab's subnet are ever asked for, and only on the lab bridge
inside the lab host; anything else raises.  Frames are built and parsed with dpkt.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import time
from typing import Iterable

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6


def _request(src_mac: bytes, src_ip: str, target: str) -> bytes:
    import dpkt

    arp = dpkt.arp.ARP(op=dpkt.arp.ARP_OP_REQUEST, sha=src_mac, spa=socket.inet_aton(src_ip),
                       tha=b"\0" * 6, tpa=socket.inet_aton(target))
    return bytes(dpkt.ethernet.Ethernet(dst=BROADCAST, src=src_mac,
                                        type=dpkt.ethernet.ETH_TYPE_ARP, data=arp))


def _reply(frame: bytes) -> tuple[str, str] | None:
    """(sender address, sender MAC) of an ARP reply, else None."""
    import dpkt

    try:
        eth = dpkt.ethernet.Ethernet(frame)
    except (dpkt.UnpackError, ValueError):
        return None
    arp = eth.data
    if not isinstance(arp, dpkt.arp.ARP) or arp.op != dpkt.arp.ARP_OP_REPLY:
        return None
    return socket.inet_ntoa(arp.spa), arp.sha.hex(":")


def arp_sweep(netns: str | None, bridge: str, gateway: str, bridge_mac: str,
              subnet: str | ipaddress.IPv4Network, targets: Iterable[str], *,
              timeout: float = 0.4, grace: float = 0.05) -> dict[str, set[str]]:
    """``{address: {MACs that answered}}`` for every target (empty set: no answer)."""
    from hybridnb.drivers.nsutil import socket_in_netns

    net = ipaddress.IPv4Network(subnet)
    wanted = sorted(set(targets), key=ipaddress.IPv4Address)
    outside = [a for a in wanted if ipaddress.IPv4Address(a) not in net]
    if outside:
        raise ValueError(f"refusing to ARP for addresses outside {net}: {outside}")
    answers: dict[str, set[str]] = {a: set() for a in wanted}
    if not wanted:
        return answers
    mac = bytes.fromhex(bridge_mac.replace(":", ""))
    sock = socket_in_netns(netns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    try:
        sock.bind((bridge, ETH_P_ARP))
        sock.setblocking(False)
        frames = {a: _request(mac, gateway, a) for a in wanted}
        for frame in frames.values():
            sock.send(frame)
        start = time.monotonic()
        resent = False
        all_since: float | None = None
        while True:
            now = time.monotonic()
            if now - start >= timeout or (all_since is not None and now - all_since >= grace):
                break
            if not resent and now - start >= timeout / 3:
                for a in wanted:
                    if not answers[a]:
                        sock.send(frames[a])
                resent = True
            ready, _, _ = select.select([sock], [], [], 0.01)
            while ready:
                try:
                    frame = sock.recv(2048)
                except BlockingIOError:
                    break
                got = _reply(frame)
                if got is not None and got[0] in answers:
                    answers[got[0]].add(got[1])
            if all_since is None and all(answers.values()):
                all_since = time.monotonic()
    finally:
        sock.close()
    return answers


__all__ = ["arp_sweep"]
