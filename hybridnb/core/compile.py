"""Compile a validated lab into the resources the drivers create.

``compile_lab(spec, addresses)`` is the single place that decides *what exists* for a lab:

* ``bridge/<bridge>``    the Linux bridge with the gateway address (or adopts an existing one)
* ``firewall/<bridge>``  a DOCKER-USER accept rule for frames bridged between ports of the lab
  bridge (Docker's FORWARD policy DROP would kill VM and host traffic otherwise)
* what each endpoint kind makes once per lab (``Kind.compile_shared``: the container kind's
  Docker network ``network/hnb-<lab>``, only when there are containers)
* one resource per endpoint, compiled by its kind (:mod:`hybridnb.core.kinds`)
* what registered sections compile (:mod:`hybridnb.core.sections`)
* ``dns/<lab>``          the lab's DNS service on the gateway (when ``network.dns`` is on)

Every resource spec is plain JSON-able data; the drivers' contract is documented per kind in
:mod:`hybridnb.drivers.base`, the kind modules and the drivers themselves.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Mapping

from hybridnb.core.kinds import CompileContext, get, kinds
from hybridnb.core.resource import Resource
from hybridnb.core.sections import extra_sections
from hybridnb.core.spec import LabSpec

IPv4 = ipaddress.IPv4Address


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _infrastructure(spec: LabSpec) -> list[Resource]:
    net = spec.network
    prefix = net.subnet.prefixlen
    gw = str(net.gateway)
    return [
        Resource("bridge", net.bridge, {
            "bridge": net.bridge, "address": f"{gw}/{prefix}", "subnet": str(net.subnet),
            "mtu": net.mtu, "adopt": net.adopt,
        }, f"{gw}/{prefix} mtu {net.mtu}" + (" (adopted)" if net.adopt else "")),
        Resource("firewall", net.bridge, {"bridge": net.bridge, "chain": "DOCKER-USER"},
                 f"DOCKER-USER accept {net.bridge} <-> {net.bridge}"),
    ]


#: The SRV weight of every service an endpoint offers (equal shares).
SRV_WEIGHT = 1


def _dns(spec: LabSpec, addresses: Mapping[str, IPv4]) -> Resource:
    net = spec.network
    gw = str(net.gateway)
    records = {ep.name: str(addresses[ep.name]) for ep in spec.endpoints}
    # every endpoint weighs the same, 1: clients that weight by SRV (HAProxy's
    # server-template) send it traffic — weight 0 would mean "only when no other is up"
    services = [{"service": s.name, "proto": s.protocol, "endpoint": ep.name, "port": s.port,
                 "weight": SRV_WEIGHT} for ep in spec.endpoints for s in ep.services]
    dns_spec: dict[str, Any] = {
        "domain": net.domain, "listen": gw, "subnet": str(net.subnet), "gateway": gw,
        "bridge": net.bridge, "records": records, "upstream": list(net.upstream)}
    if services:
        dns_spec["services"] = services
    srv = f", {_plural(len(services), 'service')}" if services else ""
    return Resource("dns", spec.name, dns_spec,
                    f"{net.domain} on {gw}:53, {_plural(len(records), 'name')}{srv}")


def compile_lab(spec: LabSpec, addresses: Mapping[str, IPv4]) -> list[Resource]:
    ctx = CompileContext(spec.name, spec.network, addresses,
                         {ep.name: ep.kind for ep in spec.endpoints}, spec.sections)
    out = _infrastructure(spec)
    for kind in kinds():
        out += kind.compile_shared(spec.of_kind(kind.name), ctx)
    for ep in spec.endpoints:
        out.append(get(ep.kind).compile(ep, ctx))
    for section in extra_sections():
        out += section.compile(spec, ctx)
    if spec.network.dns:
        out.append(_dns(spec, addresses))
    out.sort(key=Resource.sort_key)
    return out
