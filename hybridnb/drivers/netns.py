"""Plain hosts (resource kind ``host``): one network namespace per endpoint, wired to the bridge.

A host is the cheapest endpoint a lab can have — no daemon, no image, about a millisecond to
make — which is why tests and scale experiments use them.  Each one is

* a network namespace ``spec["netns"]`` (``hnb-<lab>-<name>``) with ``lo`` up and the
  namespace-local sysctl ``net.ipv4.ping_group_range`` opened, so unprivileged ICMP datagram
  sockets (``ping`` without raw sockets) work inside;
* a veth pair created in one request: ``spec["veth"]`` in the target namespace, enslaved to the
  lab bridge and up, and its peer created directly inside the host namespace as ``eth0``, with
  ``spec["address"]/spec["prefix"]``, ``spec["mtu"]`` and a default route via ``spec["gateway"]``;
* optionally ``/etc/netns/<netns>/resolv.conf`` naming the lab's DNS (``ip netns exec`` shows
  it to programs as ``/etc/resolv.conf``).

Ownership and the fingerprint are written in the alias of the bridge-side veth:
``hybridnb:<lab>:<endpoint>:<fingerprint>``.  ``create`` first removes leftovers of a crashed
earlier attempt (a veth of the same name, the namespace); ``delete`` removes the veth, the
namespace and the resolv.conf.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import socket
import threading
import time
from typing import Any, Mapping

from hybridnb.core import naming
from hybridnb.core.naming import owner_tag
from hybridnb.core.resource import Observation, Resource
from hybridnb.drivers import nsutil
from hybridnb.drivers.links import (CREATING_GROUP, InTargetNamespace, get_link, half_made,
                                    link_alias, link_kind, link_snapshot, netlink_errors)
from hybridnb.errors import ConflictError, NotFoundError
from hybridnb.target import Target

log = logging.getLogger(__name__)

ETC_NETNS = "/etc/netns"
PING_GROUP_RANGE = "0 2147483647"


def host_alias(lab: str, endpoint: str, fingerprint: str) -> str:
    return f"{owner_tag(lab)}:{endpoint}:{fingerprint}"


def parse_host_alias(alias: str) -> tuple[str, str, str] | None:
    """(lab, endpoint, fingerprint) from a host veth alias, or None."""
    parts = alias.split(":")
    if len(parts) != 4 or parts[0] != "hybridnb":
        return None
    return parts[1], parts[2], parts[3]


class NetnsHostDriver(InTargetNamespace):
    """Creates namespace hosts on the lab bridge in ``target.netns``.

    Actions on different hosts may run on concurrent threads; each thread keeps its own
    netlink socket into the target namespace (call :meth:`close` when done)."""

    kind = "host"
    concurrent = True

    def __init__(self, target: Target, *, etc_netns: str = ETC_NETNS) -> None:
        super().__init__(target)
        self.etc_netns = etc_netns
        self._local = threading.local()
        self._opened: list[Any] = []
        self._lock = threading.Lock()

    def _ipr(self) -> Any:
        """This thread's IPRoute into the target namespace (opened once, ~2-4 ms)."""
        ipr = getattr(self._local, "ipr", None)
        if ipr is None:
            ipr = nsutil.iproute(self.netns)
            self._local.ipr = ipr
            with self._lock:
                self._opened.append(ipr)
        return ipr

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for ipr in opened:
            try:
                ipr.close()
            except Exception:  # pragma: no cover - closing a dead socket
                pass
        self._local = threading.local()

    # -- observe --------------------------------------------------------------------------

    def labs(self) -> set[str]:
        """Every lab with a host on a bridge of this namespace."""
        with netlink_errors(f"cannot list hosts in {self._where}"):
            links = link_snapshot(self.netns)
        marks = (parse_host_alias(link.alias) for link in links if link.kind == "veth")
        return {mark[0] for mark in marks if mark is not None}

    def observe(self, lab: str) -> Mapping[str, Observation]:
        with netlink_errors(f"cannot list hosts in {self._where}"):
            links = link_snapshot(self.netns)
        marks = {}
        for link in links:
            mark = parse_host_alias(link.alias) if link.kind == "veth" else None
            if mark is not None and mark[0] == lab:
                marks[mark[1]] = mark[2]
        # a host whose namespace is gone is not whole
        whole = nsutil.existing_netns(naming.object_name(lab, name) for name in marks)
        return {name: Observation(fingerprint) for name, fingerprint in sorted(marks.items())
                if naming.object_name(lab, name) in whole}

    def netns_paths(self, lab: str) -> dict[str, str | None]:
        """Per host of the lab that is whole: its namespace, where probes open sockets."""
        return {name: nsutil.netns_path(naming.object_name(lab, name))
                for name in self.observe(lab)}

    # -- check / create -------------------------------------------------------------------

    def check(self, lab: str, resource: Resource) -> None:
        """Refuse, before anything is made, a host whose namespace name is held by the same
        lab name on another lab host (namespace names are machine-wide)."""
        spec = resource.spec
        if not _wired(spec["netns"]):
            return
        with netlink_errors(f"cannot inspect {self._where}"):
            ours = get_link(self._ipr(), spec["veth"]) is not None
        if not ours:
            raise self._held_elsewhere(lab, spec["endpoint"], spec["netns"])

    def create(self, lab: str, resource: Resource) -> None:
        spec = resource.spec
        ep = spec["endpoint"]
        ns, veth = spec["netns"], spec["veth"]
        what = f"cannot create host {ep!r} (namespace {ns})"
        ipr = self._ipr()
        with netlink_errors(what):
            bridge = get_link(ipr, spec["bridge"])
            if bridge is None or link_kind(bridge) != "bridge":
                raise NotFoundError(f"{what}: bridge {spec['bridge']} is missing in "
                                    f"{self._where}", hint="create the lab bridge first")
            self._remove_leftovers(ipr, lab, ep, veth, spec.get("peer"), ns)
            nsutil.create_netns(ns)
            try:
                self._wire(ipr, lab, resource, bridge["index"])
            except BaseException:
                self._remove(ipr, lab, ep, veth, ns)
                raise

    def _wire(self, ipr: Any, lab: str, resource: Resource, bridge_index: int) -> None:
        spec = resource.spec
        ns, veth, mtu = spec["netns"], spec["veth"], int(spec["mtu"])
        fd = os.open(nsutil.netns_path(ns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            # a stable MAC: a re-created host keeps its address, so its peers' ARP entries
            # (and the gateway's) stay right
            peer = {"ifname": "eth0", "mtu": mtu, "net_ns_fd": fd}
            if spec.get("mac"):
                peer["address"] = spec["mac"]
            ipr.link("add", ifname=veth, kind="veth", group=CREATING_GROUP, mtu=mtu, peer=peer)
        finally:
            os.close(fd)
        index = ipr.link_lookup(ifname=veth)[0]
        ipr.link("set", index=index, ifalias=host_alias(lab, spec["endpoint"],
                                                         resource.fingerprint),
                 group=0, master=bridge_index, state="up")
        nsutil.run_in_netns(ns, _configure_inside, spec)
        if spec.get("dns"):
            self._write_resolv(ns, spec)
        _wait_forwarding(ipr, index)



    def _write_resolv(self, ns: str, spec: Mapping[str, Any]) -> None:
        d = os.path.join(self.etc_netns, ns)
        os.makedirs(d, exist_ok=True)
        lines = [f"search {spec['domain']}"] if spec.get("domain") else []
        lines += [f"nameserver {s}" for s in spec["dns"]]
        with open(os.path.join(d, "resolv.conf"), "w") as f:
            f.write("\n".join(lines) + "\n")

    # -- delete ---------------------------------------------------------------------------

    def delete(self, lab: str, name: str) -> None:
        veth, peer = naming.veth_pair(lab, name)
        ns = naming.object_name(lab, name)
        with netlink_errors(f"cannot delete host {name!r} (namespace {ns})"):
            if self.netns is not None and not nsutil.netns_exists(self.netns):
                # the lab host is gone, and the veth with it: only the namespace is left
                if not _wired(ns):
                    self._remove(None, lab, name, None, ns)
                return
            try:
                self._remove_leftovers(self._ipr(), lab, name, veth, peer, ns)
            except _HeldElsewhere:
                log.warning("not deleting namespace %s: it is wired to a bridge outside %s",
                            ns, self._where)

    def _remove_leftovers(self, ipr: Any, lab: str, ep: str, veth: str, peer: str | None,
                          ns: str) -> None:
        found = False
        for ifname in (veth, peer):
            if not ifname:
                continue
            link = get_link(ipr, ifname)
            if link is None:
                continue
            mark = parse_host_alias(link_alias(link))
            mine = half_made(link) or (mark is not None and mark[:2] == (lab, ep))
            if not mine:
                raise ConflictError(
                    f"interface {ifname} in {self._where} exists and does not belong to "
                    f"host {ep!r} of lab {lab!r}",
                    hint="remove it by hand if it is a leftover")
            self._remove(ipr, lab, ep, ifname, None)
            found = True
        if not found and _wired(ns):
            # host namespace names are machine-wide: the same lab name applied on another
            # lab host (another sandbox) owns this one — never delete it from here
            raise self._held_elsewhere(lab, ep, ns)
        self._remove(ipr, lab, ep, None, ns)

    def _held_elsewhere(self, lab: str, ep: str, ns: str) -> "_HeldElsewhere":
        return _HeldElsewhere(
            f"namespace {ns} (host {ep!r} of lab {lab!r}) exists and is wired to a bridge "
            f"outside {self._where}",
            hint="the same lab name is applied on another lab host (another sandbox?): "
                 "destroy it there, or give this lab another name")

    def _remove(self, ipr: Any, lab: str, ep: str, veth: str | None, ns: str | None) -> None:
        if veth is not None:
            try:
                ipr.link("del", ifname=veth)
            except Exception as exc:
                if getattr(exc, "code", None) not in (19, 2):   # ENODEV, ENOENT
                    raise
        if ns is not None:
            nsutil.delete_netns(ns)
            d = os.path.join(self.etc_netns, ns)
            if os.path.isdir(d):
                shutil.rmtree(d, ignore_errors=True)


class _HeldElsewhere(ConflictError):
    """A host namespace of this name belongs to a lab on another lab host."""


def _wired(ns: str) -> bool:
    """True when namespace ``ns`` exists and still has its ``eth0`` (whose other end, the
    veth, lives on some lab host's bridge)."""
    if not nsutil.netns_exists(ns):
        return False
    try:
        names = nsutil.run_in_netns(ns, socket.if_nameindex)
    except OSError:
        return False
    return any(name == "eth0" for _, name in names)


def _configure_inside(spec: Mapping[str, Any]) -> None:
    """Runs on a thread inside the host namespace: lo, eth0, address, route, sysctl."""
    from pyroute2 import IPRoute

    iface = ipaddress.IPv4Interface(f"{spec['address']}/{spec['prefix']}")
    with IPRoute(groups=0) as ipr:
        ipr.link("set", index=1, state="up")
        eth0 = ipr.link_lookup(ifname="eth0")[0]
        bcast = (str(iface.network.broadcast_address)
                 if iface.network.prefixlen < 31 else None)
        ipr.addr("add", index=eth0, address=str(iface.ip), prefixlen=iface.network.prefixlen,
                 broadcast=bcast)
        ipr.link("set", index=eth0, state="up")
        if spec.get("gateway"):
            ipr.route("add", dst="0.0.0.0/0", gateway=spec["gateway"], oif=eth0)
    with open("/proc/sys/net/ipv4/ping_group_range", "w") as f:
        f.write(PING_GROUP_RANGE)


def _wait_forwarding(ipr: Any, index: int, timeout: float = 3.0) -> None:
    """Return once the bridge side of the veth is operationally up.  The kernel reports a new
    port's carrier through linkwatch, which may lag up to a second behind; until then the
    bridge does not forward to it, and a probe right after apply would be lost."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while time.monotonic() < deadline:
        link = ipr.link("get", index=index)[0]
        if link.get_attr("IFLA_OPERSTATE") == "UP":
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
