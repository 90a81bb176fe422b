"""The VXLAN fabric on one host: the device that stretches the lab bridge to the other hosts.

Resource kind ``vxlan`` (compiled per host by :func:`hybridnb.core.multihost.vxlan_resource`):
a VXLAN device named the same on every host, with the lab's VNI and UDP port, its ``local``
underlay address, enslaved to the lab bridge, learning on (so MACs move with their
endpoints), and *unicast head-end replication*: one all-zero FDB entry per other host's
underlay address, so broadcast and unknown unicast (ARP first) reach every host without
multicast on the underlay.  The device's MTU is the lab MTU, which leaves the 50 bytes of
VXLAN headers room inside the underlay's MTU (:mod:`hybridnb.core.multihost`).

Ownership is written on the device as on the bridges (:mod:`hybridnb.drivers.links`): it is
created with the "creating" device group and labelled ``hybridnb:<lab>:vxlan:<fingerprint>``
right after; a labelled device of another lab is never touched.  A changed spec re-makes the
device (a VXLAN device's VNI, port and local address cannot change in place); a changed set
of remote hosts only rewrites the FDB.

:func:`link_underlay` and :func:`unlink_underlay` make and remove the stand-in for the
network between machines that tests use: a veth pair between two sandboxes' namespaces with
a small subnet of its own.  They act only in the two namespaces they are given.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any, Mapping

from hybridnb.core.naming import owner_tag
from hybridnb.core.resource import Observation, Resource
from hybridnb.drivers import nsutil
from hybridnb.drivers.links import (CREATING_GROUP, InTargetNamespace, get_link, half_made,
                                    link_alias, link_kind, link_snapshot,
                                    netlink_errors)
from hybridnb.errors import ConflictError, EngineError, NotFoundError

ZERO_MAC = "00:00:00:00:00:00"
_NTF_SELF = 0x02


def vxlan_alias(lab: str, fingerprint: str) -> str:
    return f"{owner_tag(lab)}:vxlan:{fingerprint}"


def parse_vxlan_alias(alias: str) -> tuple[str, str] | None:
    """(lab, fingerprint) from a device alias, or None when it is not ours."""
    parts = alias.split(":")
    if len(parts) != 4 or parts[0] != "hybridnb" or parts[2] != "vxlan":
        return None
    return parts[1], parts[3]


def resolve_underlay(address: str) -> str:
    """An underlay address as an IPv4 address (a DNS name is looked up once, here)."""
    try:
        return str(ipaddress.IPv4Address(address))
    except ValueError:
        pass
    try:
        return socket.getaddrinfo(address, None, socket.AF_INET)[0][4][0]
    except OSError as exc:
        raise EngineError(f"cannot resolve the underlay address {address!r}: {exc}",
                          engine="kernel", hint="give the host's underlay as an IPv4 address"
                          ) from exc


def flood_list(ipr: Any, index: int) -> list[str]:
    """The all-zero FDB entries of a VXLAN device: the underlay addresses it floods to."""
    out = []
    for entry in ipr.fdb("dump", ifindex=index):
        if entry.get("ifindex") == index and entry.get_attr("NDA_LLADDR") == ZERO_MAC:
            dst = entry.get_attr("NDA_DST")
            if dst:
                out.append(dst)
    return sorted(out)


class VxlanDriver(InTargetNamespace):
    """Creates, observes and deletes a lab's VXLAN device in ``target.netns``."""

    kind = "vxlan"
    concurrent = False

    # -- observe --------------------------------------------------------------------------

    def observe(self, lab: str) -> Mapping[str, Observation]:
        out: dict[str, Observation] = {}
        with netlink_errors(f"cannot list VXLAN devices in {self._where}"):
            links = link_snapshot(self.netns)       # the observing pass's one dump
        for link in links:
            mark = parse_vxlan_alias(link.alias) if link.kind == "vxlan" else None
            if mark is not None and mark[0] == lab:
                running = bool(link.flags & 1) and bool(link.master)
                out[link.name] = Observation(
                    mark[1], running=running, reason="" if running else "down or detached")
        return dict(sorted(out.items()))

    def segments(self) -> list[tuple[str, int, int, str | None]]:
        """Every VXLAN device of the namespace, whoever made it: ``(device, VNI, UDP port,
        the hybridnb lab owning it or None)`` — what a lab's segment must not clash with."""
        out = []
        with netlink_errors(f"cannot list VXLAN devices in {self._where}"), \
                nsutil.iproute(self.netns) as ipr:
            for link in ipr.get_links():
                if link_kind(link) != "vxlan":
                    continue
                data = link.get(("linkinfo", "data")) or {}
                mark = parse_vxlan_alias(link_alias(link))
                out.append((str(link.get_attr("IFLA_IFNAME")), int(data.get("vxlan_id") or 0),
                            int(data.get("vxlan_port") or 0), mark[0] if mark else None))
        return sorted(out)

    def flood_list(self, device: str) -> list[str]:
        """The underlay addresses ``device`` sends broadcasts to (its all-zero FDB entries)."""
        with netlink_errors(f"cannot read the FDB of {device} in {self._where}"), \
                nsutil.iproute(self.netns) as ipr:
            link = get_link(ipr, device)
            return [] if link is None else flood_list(ipr, link["index"])

    # -- create / update ------------------------------------------------------------------

    def create(self, lab: str, resource: Resource) -> None:
        spec = resource.spec
        device = spec["device"]
        with netlink_errors(f"cannot create VXLAN device {device} in {self._where}"), \
                nsutil.iproute(self.netns) as ipr:
            bridge = get_link(ipr, spec["bridge"])
            if bridge is None or link_kind(bridge) != "bridge":
                raise NotFoundError(f"bridge {spec['bridge']} is missing in {self._where}",
                                    hint="create the lab bridge first")
            link = self._reusable(ipr, lab, resource)
            if link is None:
                index = self._add(ipr, resource)
            else:
                index = link["index"]
            ipr.link("set", index=index, ifalias=vxlan_alias(lab, resource.fingerprint),
                     group=0, mtu=int(spec["mtu"]), master=bridge["index"], state="up")
            self._sync_fdb(ipr, index, [resolve_underlay(r) for r in spec["remotes"]])

    update = create

    def _reusable(self, ipr: Any, lab: str, resource: Resource) -> Any | None:
        """The existing device when it is ours with the same VNI, port and local address
        (only its remotes or MTU changed); a stale one of ours is removed; another's is
        refused."""
        spec = resource.spec
        link = get_link(ipr, spec["device"])
        if link is None:
            return None
        mark = parse_vxlan_alias(link_alias(link))
        if not half_made(link) and (mark is None or mark[0] != lab):
            raise ConflictError(f"{spec['device']} in {self._where} is not lab {lab!r}'s "
                                "VXLAN device", hint="remove it, or rename the lab")
        data = link.get(("linkinfo", "data"))
        same = (link_kind(link) == "vxlan" and data is not None
                and data.get("vxlan_id") == spec["vni"]
                and data.get("vxlan_port") == spec["port"]
                and data.get("vxlan_local") == resolve_underlay(spec["local"]))
        if same and not half_made(link):
            return link
        ipr.link("del", index=link["index"])
        return None

    def _add(self, ipr: Any, resource: Resource) -> int:
        spec = resource.spec
        ipr.link("add", ifname=spec["device"], kind="vxlan", group=CREATING_GROUP,
                 vxlan_id=int(spec["vni"]), vxlan_port=int(spec["port"]),
                 vxlan_local=resolve_underlay(spec["local"]), vxlan_learning=1,
                 vxlan_ttl=64, mtu=int(spec["mtu"]))
        return ipr.link("get", ifname=spec["device"])[0]["index"]

    @staticmethod
    def _sync_fdb(ipr: Any, index: int, remotes: list[str]) -> None:
        have = set(flood_list(ipr, index))
        for dst in sorted(set(remotes) - have):
            ipr.fdb("append", ifindex=index, lladdr=ZERO_MAC, dst=dst)
        gone = have - set(remotes)
        # a host that left: its flood entry and every MAC learned behind it go (else frames
        # to those MACs would still be sent there until the entries age out)
        for entry in ipr.fdb("dump", ifindex=index):
            dst = entry.get_attr("NDA_DST")
            if entry.get("ifindex") == index and dst in gone:
                ipr.fdb("del", ifindex=index, lladdr=entry.get_attr("NDA_LLADDR"), dst=dst)

    # -- delete ---------------------------------------------------------------------------

    def delete(self, lab: str, name: str) -> None:
        with netlink_errors(f"cannot delete VXLAN device {name} in {self._where}"), \
                nsutil.iproute(self.netns) as ipr:
            link = get_link(ipr, name)
            if link is None:
                return
            mark = parse_vxlan_alias(link_alias(link))
            if (mark is not None and mark[0] == lab) or \
                    (half_made(link) and link_kind(link) == "vxlan"):
                ipr.link("del", index=link["index"])


# ------------------------------------------------------------------------------- underlay

def link_underlay(netns_a: str, netns_b: str, network: str, *, names: tuple[str, str],
                  mtu: int = 1500) -> tuple[str, str]:
    """A veth pair ``names`` between two namespaces, the first two addresses of ``network``
    on its ends (a /30 or /31 of its own), up: the stand-in for the network between two
    machines.  Returns the two addresses."""
    net = ipaddress.IPv4Network(network)
    hosts = list(net.hosts())[:2] if net.prefixlen < 31 else list(net)[:2]
    addrs = (str(hosts[0]), str(hosts[1]))
    with netlink_errors(f"cannot link {netns_a} and {netns_b}"), \
            nsutil.iproute(netns_a) as ipr:
        fd = os.open(nsutil.netns_path(netns_b), os.O_RDONLY | os.O_CLOEXEC)
        try:
            ipr.link("add", ifname=names[0], kind="veth", mtu=mtu,
                     peer={"ifname": names[1], "mtu": mtu, "net_ns_fd": fd})
        finally:
            os.close(fd)
        index = ipr.link_lookup(ifname=names[0])[0]
        ipr.addr("add", index=index, address=addrs[0], prefixlen=net.prefixlen)
        ipr.link("set", index=index, state="up")
    with netlink_errors(f"cannot configure {names[1]} in {netns_b}"), \
            nsutil.iproute(netns_b) as ipr:
        index = ipr.link_lookup(ifname=names[1])[0]
        ipr.addr("add", index=index, address=addrs[1], prefixlen=net.prefixlen)
        ipr.link("set", index=index, state="up")
    return addrs


def unlink_underlay(netns_a: str, name_a: str) -> None:
    """Remove the veth pair (both ends go with one)."""
    with netlink_errors(f"cannot remove {name_a} in {netns_a}"), \
            nsutil.iproute(netns_a) as ipr:
        link = get_link(ipr, name_a)
        if link is not None and link_kind(link) == "veth":
            ipr.link("del", index=link["index"])
