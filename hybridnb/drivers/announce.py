"""Gratuitous ARP from an endpoint that moved: where it now is, at once, for every host.

When an endpoint of a lab spread over hosts moves to another host (its ``host:`` edited, or
its host removed from ``hosts:``), it keeps its address, but the segment still remembers the
old place: the bridges learned its MAC behind their VXLAN port (or on the old host's local
port), the VXLAN devices learned it behind the old host's underlay address, and its peers'
ARP caches may hold its old MAC.  Until each entry ages out (minutes for the bridges'
tables), frames to it go where it no longer is.  :func:`announce` sends two gratuitous ARP
requests ("who has A? tell A", from A's MAC, broadcast) from the interface holding the
endpoint's address, inside its own network namespace: every bridge and VXLAN device on the
way learns its new place, and Linux neighbours that know the address take the new MAC.

Safety: only the address the endpoint holds is announced, on its own interface, in its own
namespace; frames are built with dpkt.
"""

from __future__ import annotations

import socket
import time

from hybridnb.errors import EngineError

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6


def garp_frame(mac: bytes, address: str) -> bytes:
    """A gratuitous ARP request for ``address`` from ``mac`` (broadcast)."""
    import dpkt

    ip = socket.inet_aton(address)
    arp = dpkt.arp.ARP(op=dpkt.arp.ARP_OP_REQUEST, sha=mac, spa=ip, tha=b"\0" * 6, tpa=ip)
    return bytes(dpkt.ethernet.Ethernet(dst=BROADCAST, src=mac,
                                        type=dpkt.ethernet.ETH_TYPE_ARP, data=arp))


def _interface_of(netns: str, address: str) -> str:
    from hybridnb.drivers import nsutil

    with nsutil.iproute(netns) as ipr:
        for entry in ipr.get_addr(family=socket.AF_INET):
            if entry.get_attr("IFA_ADDRESS") == address:
                return str(entry.get_attr("IFA_LABEL"))
    raise EngineError(f"no interface holds {address} in {netns}", engine="kernel")


def announce(netns: str, address: str, *, count: int = 2, gap: float = 0.05) -> str:
    """Send ``count`` gratuitous ARP requests for ``address`` from the interface holding it
    in ``netns``; returns that interface's MAC (``aa:bb:…``)."""
    from hybridnb.drivers.nsutil import socket_in_netns

    iface = _interface_of(netns, address)
    sock = socket_in_netns(netns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    try:
        sock.bind((iface, ETH_P_ARP))
        mac = sock.getsockname()[4]
        frame = garp_frame(mac, address)
        for i in range(count):
            if i:
                time.sleep(gap)
            sock.send(frame)
    except OSError as exc:
        raise EngineError(f"cannot announce {address} on {iface} in {netns}: {exc}",
                          engine="kernel") from exc
    finally:
        sock.close()
    return mac.hex(":")
