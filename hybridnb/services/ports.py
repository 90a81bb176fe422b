"""Which bridge port is which endpoint: the veth of a host or a container, the tap of a VM.

Every frame an endpoint sends or receives crosses one port of the lab bridge, in the lab host
(the namespace holding the bridge).  Its counters are the endpoint's traffic, and capturing on
it sees exactly the endpoint's frames.  What each kind of endpoint tells us:

* a namespace host names its bridge-side veth in its spec (``veth``, from
  :func:`hybridnb.core.naming.veth_pair`);
* a container's ``eth0`` (inside the namespace its driver reports, ``/proc/PID/ns/net``) is a
  veth whose peer index (``IFLA_LINK``) is the port's index in the lab host;
* a VM's NIC is the tap libvirt made, the ``<target dev>`` of the running domain's XML; a
  driver without that answer falls back to libvirt's tap MAC (the guest MAC with ``fe`` as
  its first byte).

The mapping is resolved kind-agnostically from what the spec and the drivers offer (a
``veth`` in the spec, a driver with ``netns_paths``, a driver with ``interfaces``), so a new
kind of endpoint that offers one of them needs no change here.  Endpoints that are down
(no namespace, no tap) are listed in :attr:`PortMap.missing` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from hybridnb.drivers.base import LinksThere, NamespaceSource, PortInterfaces
from hybridnb.drivers.linkstats import Link, LinkDumper, dump_links
from hybridnb.errors import HybridError
from hybridnb.services.labview import LabView


@dataclass(frozen=True)
class Port:
    endpoint: str
    kind: str
    ifname: str                       # the port's name on the lab host
    ifindex: int
    mac: str | None = None            # the endpoint's own MAC (its eth0 / the guest NIC)
    how: str = ""                     # how the port was found


@dataclass(frozen=True)
class PortMap:
    lab: str
    netns: str | None
    bridge: str
    bridge_index: int
    ports: Mapping[str, Port] = field(default_factory=dict)
    missing: Mapping[str, str] = field(default_factory=dict)      # endpoint -> why

    def by_index(self) -> dict[int, Port]:
        return {p.ifindex: p for p in self.ports.values()}

    def port(self, endpoint: str) -> Port:
        try:
            return self.ports[endpoint]
        except KeyError:
            from hybridnb.errors import NotFoundError

            why = self.missing.get(endpoint)
            raise NotFoundError(
                f"endpoint {endpoint!r} of lab {self.lab} has no port on {self.bridge}"
                + (f": {why}" if why else ""),
                hint="is it running? (status)") from None


class LinksOver:
    """A :class:`~hybridnb.drivers.linkstats.LinkDumper` of a lab host on another machine:
    each dump is one request to the bridge driver there
    (:class:`~hybridnb.drivers.base.LinksThere`: the remote host's agent)."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.netns: str | None = None

    def dump(self, wanted: Any = None) -> dict[int, Link]:
        links = self.driver.links_there(None)
        return {i: lk for i, lk in links.items() if wanted is None or i in wanted}

    def close(self) -> None:
        pass

    def __enter__(self) -> "LinksOver":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def remote(view: LabView) -> bool:
    """Whether ``view``'s lab host is read where it is (another machine, through its
    agent), never in a namespace of this machine."""
    return isinstance(view.driver("bridge"), LinksThere)


def link_dumper(view: LabView) -> Any:
    """What dumps ``view``'s lab host's links: a netlink socket in its namespace here, or —
    a host of another machine — its agent there (:class:`LinksOver`)."""
    if remote(view):
        return LinksOver(view.driver("bridge"))
    return LinkDumper(view.netns)


def resolve_ports(view: LabView, links: Mapping[int, Link] | None = None) -> PortMap:
    """Find every endpoint's bridge port in ``view``'s lab host (one link dump, plus one per
    container namespace and one domain XML per VM) — on a remote host, each dump by its
    agent, the containers' namespaces as seen there."""
    if links is None:
        with link_dumper(view) as dumper:
            links = dumper.dump()
    by_name = {link.name: link for link in links.values()}
    netns = None if remote(view) else view.netns
    bridge = by_name.get(view.bridge)
    bridge_index = bridge.index if bridge is not None else 0
    ports: dict[str, Port] = {}
    missing: dict[str, str] = {}
    if bridge is None:
        return PortMap(view.name, netns, view.bridge, 0, {},
                       {r.name: f"bridge {view.bridge} is missing" for r in view.endpoints()})
    resolvers = _Resolvers(view, links, by_name)
    for res in view.endpoints():
        try:
            port = resolvers.port(res)
        except HybridError as exc:
            missing[res.name] = exc.message
            continue
        if isinstance(port, str):
            missing[res.name] = port
        elif links[port.ifindex].master != bridge_index:
            missing[res.name] = f"{port.ifname} is not a port of {view.bridge}"
        else:
            ports[res.name] = port
    return PortMap(view.name, netns, view.bridge, bridge_index, ports, missing)


class _Resolvers:
    """Per-kind ways of finding a port; container namespaces are asked once per lab."""

    def __init__(self, view: LabView, links: Mapping[int, Link],
                 by_name: Mapping[str, Link]) -> None:
        self.view, self.links, self.by_name = view, links, by_name
        self._netns: dict[str, dict[str, str]] = {}

    def port(self, res: Any) -> Port | str:
        spec = res.spec
        if spec.get("veth"):
            link = self.by_name.get(spec["veth"])
            if link is None:
                return f"veth {spec['veth']} is missing"
            return Port(res.name, res.kind, link.name, link.index, spec.get("mac"), "veth name")
        driver = self.view.driver(res.kind)
        bridge = self.view.driver("bridge")
        if isinstance(bridge, LinksThere) and hasattr(driver, "netns_paths_there"):
            return self._peer_of_eth0(res, driver.netns_paths_there, bridge.links_there)
        if isinstance(driver, NamespaceSource):
            return self._peer_of_eth0(res, driver.netns_paths, dump_links)
        if isinstance(driver, PortInterfaces):
            return self._tap(res, driver)
        return self._by_tap_mac(res, "no driver tells its port")

    def _peer_of_eth0(self, res: Any, paths_of: Any, dump: Any) -> Port | str:
        paths = self._netns.get(res.kind)
        if paths is None:
            paths = self._netns[res.kind] = dict(paths_of(self.view.name))
        path = paths.get(res.name)
        if path is None:
            return f"{res.kind} {res.name} is not running"
        inside = dump(path)
        eth0 = next((link for link in inside.values() if link.name == "eth0"), None)
        if eth0 is None or not eth0.link:
            return f"{res.kind} {res.name} has no eth0 veth"
        link = self.links.get(eth0.link)
        if link is None:
            return f"the peer of {res.name}'s eth0 (index {eth0.link}) is not on the lab host"
        return Port(res.name, res.kind, link.name, link.index, eth0.mac, "peer of eth0")

    def _tap(self, res: Any, driver: Any) -> Port | str:
        nics = driver.interfaces(self.view.name, res.name)
        nic = next((n for n in nics if n.get("bridge") == self.view.bridge), None)
        if nic is None:
            return f"{res.kind} {res.name} has no NIC on {self.view.bridge}"
        link = self.by_name.get(nic.get("tap") or "")
        if link is None:
            return f"{res.kind} {res.name} is not running (no tap)"
        return Port(res.name, res.kind, link.name, link.index, nic.get("mac") or None,
                    "domain XML")

    def _by_tap_mac(self, res: Any, why: str) -> Port | str:
        mac = res.spec.get("mac")
        if not mac:
            return why
        tap_mac = "fe" + str(mac)[2:]
        link = next((lk for lk in self.links.values() if lk.mac == tap_mac), None)
        if link is None:
            return why
        return Port(res.name, res.kind, link.name, link.index, mac, "tap MAC")


__all__ = ["Port", "PortMap", "resolve_ports"]
