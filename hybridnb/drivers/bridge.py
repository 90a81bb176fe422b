"""The lab bridge (resource kind ``bridge``), made with pyroute2 in the target's namespace.

A lab's endpoints all hang off one Linux bridge that carries the gateway address.  The spec
(see :mod:`hybridnb.core.compile`) is ``{"bridge", "address": "GW/PREFIX", "subnet", "mtu",
"adopt"}``.  On the non-primary hosts of a lab spread over several hosts
(:func:`hybridnb.core.multihost.host_resources`) ``address`` is ``None`` (the gateway lives
on the primary's bridge only; this bridge carries no lab address) and ``mac`` gives the
bridge a MAC of its own on the shared VXLAN segment.

Ownership is written on the bridge in its interface alias:

* a bridge hybridnb created:  ``hybridnb:<lab>:<fingerprint>`` — deleting the lab deletes it;
* an adopted bridge (``adopt: true``, the user's own bridge):
  ``hybridnb:<lab>:<fingerprint>:adopted:<address we added or ->:<the alias it had before>``
  — deleting the lab removes only the address we added and restores the old alias; its other
  addresses, its MTU and its ports are never touched.

``check`` runs before anything is changed (also before an in-place update) and refuses a
subnet that overlaps a route already in the target namespace (other than on the lab's own
bridges: the one changed, or the old one a renamed bridge replaces), naming the route, a bridge name that exists but belongs to someone else, and an
adopted bridge declared owned.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any, Mapping

from hybridnb.core.naming import owner_tag
from hybridnb.core import naming
from hybridnb.core.resource import Observation, Resource
from hybridnb.drivers import nsutil
from hybridnb.drivers.links import (CREATING_GROUP, InTargetNamespace, get_link, half_made,
                                    link_alias, link_kind, link_snapshot, netlink_errors)
from hybridnb.errors import ConflictError, NotFoundError

log = logging.getLogger(__name__)

_RT_TABLES = {253: "default", 254: "main", 255: "local"}


@dataclass(frozen=True)
class BridgeMark:
    """What the alias of a bridge says about its owner."""

    lab: str
    fingerprint: str
    adopted: bool = False
    added: str | None = None        # "GW/PREFIX" we added to an adopted bridge
    previous: str = ""              # the alias an adopted bridge had before

    def alias(self) -> str:
        text = f"{owner_tag(self.lab)}:{self.fingerprint}"
        if self.adopted:
            text += f":adopted:{self.added or '-'}:{self.previous}"
        return text

    @classmethod
    def parse(cls, alias: str) -> "BridgeMark | None":
        parts = alias.split(":", 5)
        if len(parts) < 3 or parts[0] != "hybridnb":
            return None
        if len(parts) == 3:
            return cls(parts[1], parts[2])
        if len(parts) >= 5 and parts[3] == "adopted":
            previous = parts[5] if len(parts) == 6 else ""
            return cls(parts[1], parts[2], True, None if parts[4] == "-" else parts[4], previous)
        return None


def _ipv4_addrs(ipr: Any, index: int) -> set[str]:
    return {f"{a.get('address')}/{a['prefixlen']}"
            for a in ipr.get_addr(family=2, index=index)}


def _add_addr(ipr: Any, index: int, address: str) -> None:
    iface = ipaddress.IPv4Interface(address)
    ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen,
             broadcast=str(iface.network.broadcast_address)
             if iface.network.prefixlen < 31 else None)


def _del_addr(ipr: Any, index: int, address: str) -> None:
    iface = ipaddress.IPv4Interface(address)
    ipr.addr("del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)


class BridgeDriver(InTargetNamespace):
    """Creates, adopts, observes and deletes lab bridges in ``target.netns``."""

    kind = "bridge"
    concurrent = False

    def netns_paths(self, lab: str) -> dict[str, str | None]:
        """Per bridge of the lab: the namespace holding it (the lab host, where the gateway
        probes from); ``None`` is the host's own namespace."""
        path = nsutil.netns_path(self.netns)
        return {name: path for name in self.observe(lab)}

    # -- observe --------------------------------------------------------------------------

    def observe(self, lab: str) -> Mapping[str, Observation]:
        out: dict[str, Observation] = {}
        with netlink_errors(f"cannot list bridges in {self._where}"):
            links = link_snapshot(self.netns)
        for link in links:
            if link.kind != "bridge":
                continue
            mark = BridgeMark.parse(link.alias)
            if mark is not None and mark.lab == lab:
                out[link.name] = Observation(mark.fingerprint, mtu=link.mtu or None)
        return dict(sorted(out.items()))

    # -- check ----------------------------------------------------------------------------

    def check(self, lab: str, resource: Resource) -> None:
        """Refuse, before anything changes, a bridge name held by someone else (unless
        adopting), a missing bridge to adopt, and a subnet overlapping a foreign route."""
        spec = resource.spec
        name = spec["bridge"]
        subnet = ipaddress.ip_network(spec["subnet"])
        with netlink_errors(f"cannot inspect {self._where}"), nsutil.iproute(self.netns) as ipr:
            link = get_link(ipr, name)
            self._check_name(lab, name, spec, link)
            mark = BridgeMark.parse(link_alias(link)) if link is not None else None
            if mark is not None and mark.adopted and not spec.get("adopt"):
                raise ConflictError(
                    f"bridge {name} was adopted by lab {lab!r}, it cannot become owned",
                    hint="keep network.adopt: true, or destroy the lab first")
            links = ipr.get_links()
            names = {l["index"]: l.get("ifname") for l in links}
            # this lab's own bridges: the one to change, or the old one a rename replaces
            own = {l["index"] for l in links if link_kind(l) == "bridge"
                   and getattr(BridgeMark.parse(link_alias(l)), "lab", None) == lab}
            if link is not None:
                own.add(link["index"])
            for route in ipr.route("dump", family=2):
                clash = self._overlap(route, subnet, own, names)
                if clash:
                    raise ConflictError(
                        f"subnet {subnet} of lab {lab!r} overlaps route {clash} "
                        f"in {self._where}",
                        hint="choose another network.subnet, or remove that route")

    def _check_name(self, lab: str, name: str, spec: Mapping[str, Any], link: Any) -> None:
        if link is None:
            if spec.get("adopt"):
                raise NotFoundError(
                    f"bridge {name} does not exist in {self._where}, so it cannot be adopted",
                    hint="create the bridge first, or set network.adopt to false")
            return
        if half_made(link):
            return
        if link_kind(link) != "bridge":
            raise ConflictError(
                f"interface {name} in {self._where} exists and is a "
                f"{link_kind(link) or 'device'}, not a bridge",
                hint="choose another network.bridge name")
        mark = BridgeMark.parse(link_alias(link))
        if mark is not None and mark.lab != lab:
            raise ConflictError(f"bridge {name} in {self._where} belongs to lab {mark.lab!r}",
                                hint="choose another network.bridge name")
        if mark is None and not spec.get("adopt"):
            raise ConflictError(
                f"bridge {name} already exists in {self._where} and was not made by hybridnb",
                hint="set network.adopt: true to use it, or choose another network.bridge")

    @staticmethod
    def _overlap(route: Any, subnet: Any, own: set[int],
                 names: Mapping[int, str]) -> str | None:
        dst_len = route["dst_len"]
        if dst_len == 0:                      # a default route overlaps everything
            return None
        oif = route.get("oif")
        if oif in own:
            return None
        dst = route.get("dst")
        if dst is None:
            return None
        net = ipaddress.ip_network(f"{dst}/{dst_len}", strict=False)
        if not net.overlaps(subnet):
            return None
        table = route.get("table") or route["table"]
        text = f"{net}" if dst_len < 32 else f"{dst}"
        if oif is not None:
            text += f" dev {names.get(oif, oif)}"
        elif route.get("gateway"):
            text += f" via {route.get('gateway')}"
        return f"{text} table {_RT_TABLES.get(table, table)}"

    # -- create / update ------------------------------------------------------------------

    def create(self, lab: str, resource: Resource) -> None:
        spec = resource.spec
        name = spec["bridge"]
        with netlink_errors(f"cannot create bridge {name} in {self._where}"), \
                nsutil.iproute(self.netns) as ipr:
            if spec.get("adopt"):
                self._adopt(ipr, lab, resource)
            else:
                self._own(ipr, lab, resource)

    update = create

    def _own(self, ipr: Any, lab: str, resource: Resource) -> None:
        spec = resource.spec
        name, mtu, address = spec["bridge"], int(spec["mtu"]), spec.get("address")
        link = get_link(ipr, name)
        if link is not None and half_made(link):
            ipr.link("del", index=link["index"])
            link = None
        if link is not None:
            self._check_name(lab, name, spec, link)
            mark = BridgeMark.parse(link_alias(link))
            assert mark is not None
            if mark.adopted:
                raise ConflictError(
                    f"bridge {name} was adopted by lab {lab!r}, it cannot become owned",
                    hint="destroy the lab first, or keep network.adopt: true")
        else:
            # The kernel pins a bridge's MTU (instead of following its smallest port, and
            # 1500 once it has none) only when a request *changes* it; an MTU given at
            # creation does not count.  So create it one off and set the real value below.
            ipr.link("add", ifname=name, kind="bridge", group=CREATING_GROUP,
                     mtu=mtu - 1 if mtu > 68 else mtu + 1)
            link = ipr.link("get", ifname=name)[0]
        index = link["index"]
        alias = BridgeMark(lab, resource.fingerprint).alias()
        # a fixed MAC: otherwise the bridge takes its lowest port's, and the gateway's MAC
        # changes (stale ARP everywhere) whenever a container is re-created
        ipr.link("set", index=index, ifalias=alias, group=0, mtu=mtu,
                 address=spec.get("mac") or naming.bridge_mac(lab, name))
        have = _ipv4_addrs(ipr, index)
        for stale in sorted(have - {address}):
            _del_addr(ipr, index, stale)
        if address and address not in have:
            _add_addr(ipr, index, address)
        ipr.link("set", index=index, state="up")

    def _adopt(self, ipr: Any, lab: str, resource: Resource) -> None:
        spec = resource.spec
        name, address = spec["bridge"], spec["address"]
        link = get_link(ipr, name)
        self._check_name(lab, name, spec, link)
        index = link["index"]
        old = BridgeMark.parse(link_alias(link))
        if old is None:
            previous, added = link_alias(link), None
        elif old.adopted:
            previous, added = old.previous, old.added
        else:                                  # our own bridge, now declared adopted
            previous, added = "", None
        have = _ipv4_addrs(ipr, index)
        if added is not None and added != address and added in have:
            _del_addr(ipr, index, added)       # the gateway we added earlier changed
            have.discard(added)
            added = None
        if address not in have:
            _add_addr(ipr, index, address)
            added = address
        mark = BridgeMark(lab, resource.fingerprint, True, added, previous)
        ipr.link("set", index=index, ifalias=mark.alias())
        if not link["flags"] & 1:              # IFF_UP
            ipr.link("set", index=index, state="up")

    # -- delete ---------------------------------------------------------------------------

    def delete(self, lab: str, name: str) -> None:
        with netlink_errors(f"cannot delete bridge {name} in {self._where}"), \
                nsutil.iproute(self.netns) as ipr:
            link = get_link(ipr, name)
            if link is None:
                return
            if half_made(link) and link_kind(link) == "bridge":
                ipr.link("del", index=link["index"])
                return
            mark = BridgeMark.parse(link_alias(link))
            if mark is None or mark.lab != lab:
                log.warning("not deleting bridge %s: it does not belong to lab %s", name, lab)
                return
            index = link["index"]
            if not mark.adopted:
                ipr.link("del", index=index)
                return
            if mark.added and mark.added in _ipv4_addrs(ipr, index):
                _del_addr(ipr, index, mark.added)
            ipr.link("set", index=index, ifalias=mark.previous)
