"""The ``hosts:`` section: the machines a lab is spread over.

::

    hosts:
      a: {engine: local, underlay: 192.168.250.1}
      b: {docker: ssh://lab@b, libvirt: qemu+ssh://lab@b/system, underlay: 192.168.250.2}

The first host is the primary (the gateway address and the lab's DNS server live there); an
endpoint's ``host:`` (a field every kind has) names where it runs, and an endpoint without one
runs on the primary.  Parsing (:func:`hybridnb.core.multihost.parse_hosts`) checks every host
— its engines (exactly one of ``engine: local``, ``sandbox: NAME``, Docker/libvirt URLs, each
URL parsed), its underlay address (required with two hosts or more, never shared), its
underlay MTU — and :meth:`HostsSection.check` checks the endpoints against it: an unknown
``host:``, a ``host:`` in a lab without ``hosts:``, a kind placed on a host whose engines
cannot run it.  The section is parsed before ``network`` (order 5) because the network's
VXLAN defaults and MTU depend on it (:func:`hybridnb.core.multihost.parse_vxlan`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from hybridnb.core.multihost import HOST_HELP, HOST_KEYS, Hosts, LabHost, parse_hosts
from hybridnb.core.problems import Collector, did_you_mean
from hybridnb.core.sections import Section

if TYPE_CHECKING:  # pragma: no cover
    from hybridnb.core.spec import LabSpec

#: the remote engine an endpoint kind needs on a host that is reached by URL (a namespace
#: host is made by hybridnb's agent container there, started through its Docker engine;
#: kinds not listed need netlink on the machine: local or sandbox only)
_ENGINE_OF_KIND = {"container": "docker", "vm": "libvirt", "host": "docker"}


def _can_run(host: LabHost, kind: str) -> str | None:
    """Why ``host`` cannot run an endpoint of ``kind``, or None."""
    if host.engine or host.sandbox:
        return None
    engine = _ENGINE_OF_KIND.get(kind)
    if engine is None:
        return (f"a {kind} endpoint is made with netlink on the machine itself, and host "
                f"{host.name!r} is reached only through its engines' URLs")
    if getattr(host, engine) is None:
        why = " (hybridnb's agent container there makes it)" if kind == "host" else ""
        return f"host {host.name!r} names no {engine} engine for a {kind}{why}"
    return None


class HostsSection(Section):
    key = "hosts"
    order = 5
    help = ("the machines the lab is spread over, in order (the first is the primary); "
            "endpoints choose one with `host:`")
    #: the VXLAN device joins the lab bridge right after the bridge is made
    stages = {"vxlan": 15}

    def reference_rows(self) -> tuple[tuple[str, str, str, str], ...]:
        defaults = {"mtu": "1500"}
        return tuple((f"NAME.{key}", HOST_HELP[key][0], defaults.get(key, ""),
                      HOST_HELP[key][1]) for key in HOST_KEYS)

    def parse(self, c: Collector, raw: Any, parsed: Mapping[str, Any]) -> Hosts | None:
        return parse_hosts(c, raw)

    def check(self, c: Collector, lab: LabSpec) -> None:
        hosts = lab.sections.get("hosts")
        names = hosts.names if isinstance(hosts, Hosts) else ()
        for ep in lab.endpoints:
            host = getattr(ep, "host", None)
            if host is None:
                continue
            path = f"{ep.path}.host"
            if not names:
                c.add(path, f"host {host!r} but the lab has no hosts: section",
                      "list the machines under hosts:, or leave host: out")
            elif host not in names:
                c.add(path, f"unknown host {host!r}",
                      did_you_mean(host, names) or f"hosts: {', '.join(names)}")
            elif isinstance(hosts, Hosts):
                why = _can_run(hosts.get(host), ep.kind)
                if why:
                    c.add(path, why, "place it on a host with engine: local or sandbox:, or "
                          "give that host the engine's URL")

    def dump(self, value: Any) -> Any:
        if not isinstance(value, Hosts) or not value.hosts:
            return None
        return {h.name: h.to_dict() for h in value.hosts}


SECTION = HostsSection()
