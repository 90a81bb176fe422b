"""Compile a validated lab into the resources the drivers create.

``compile_lab(spec, addresses)`` is the single place that decides *what exists* for a lab:

* ``bridge/<bridge>``    the Linux bridge with the gateway address (or adopts an existing one)
* ``firewall/<bridge>``  a DOCKER-USER accept rule for frames bridged between ports of the lab
  bridge (Docker's FORWARD policy DROP would kill VM and host traffic otherwise)
* ``network/hnb-<lab>``  the Docker network bound to the bridge (only when there are containers)
* ``host/<name>``, ``container/<name>``, ``vm/<name>``  one per endpoint
* ``dns/<lab>``          the lab's DNS service on the gateway (when ``network.dns`` is on)

Every resource spec is plain JSON-able data; the drivers' contract is documented per kind in
:mod:`hybridnb.drivers.base` and in the drivers themselves.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Mapping

from hybridnb.core import naming
from hybridnb.core.ipam import docker_ipam
from hybridnb.core.resource import Resource
from hybridnb.core.spec import ContainerSpec, HostSpec, LabSpec, VMSpec

IPv4 = ipaddress.IPv4Address


def compile_lab(spec: LabSpec, addresses: Mapping[str, IPv4]) -> list[Resource]:
    net = spec.network
    lab = spec.name
    prefix = net.subnet.prefixlen
    gw = str(net.gateway)
    dns_servers = [gw] if net.dns else []
    out: list[Resource] = [
        Resource("bridge", net.bridge, {
            "bridge": net.bridge, "address": f"{gw}/{prefix}", "subnet": str(net.subnet),
            "mtu": net.mtu, "adopt": net.adopt,
        }, f"{gw}/{prefix} mtu {net.mtu}" + (" (adopted)" if net.adopt else "")),
        Resource("firewall", net.bridge, {"bridge": net.bridge, "chain": "DOCKER-USER"},
                 f"DOCKER-USER accept {net.bridge} <-> {net.bridge}"),
    ]
    kinds = {ep.name: ep.kind for ep in spec.endpoints}
    containers = spec.of_kind("container")
    if containers:
        ip_range, aux = docker_ipam(net, addresses, kinds)
        dnet = naming.docker_network(lab)
        out.append(Resource("network", dnet, {
            "network": dnet, "bridge": net.bridge, "subnet": str(net.subnet), "gateway": gw,
            "ip_range": str(ip_range), "aux_addresses": aux, "mtu": net.mtu,
        }, f"{net.subnet} on {net.bridge}, docker range {ip_range}"))
    for ep in spec.endpoints:
        addr = str(addresses[ep.name])
        common: dict[str, Any] = {
            "endpoint": ep.name, "hostname": ep.name, "address": addr, "prefix": prefix,
            "gateway": gw, "bridge": net.bridge, "mtu": net.mtu, "dns": dns_servers,
            "domain": net.domain,
        }
        if isinstance(ep, HostSpec):
            veth, peer = naming.veth_pair(lab, ep.name)
            common.update({"netns": naming.object_name(lab, ep.name), "veth": veth,
                           "peer": peer, "mac": naming.mac_address(lab, ep.name)})
            out.append(Resource("host", ep.name, common, f"{addr} netns {common['netns']}"))
        elif isinstance(ep, ContainerSpec):
            common.update({
                "container": naming.object_name(lab, ep.name), "image": ep.image,
                "network": naming.docker_network(lab),
                "command": list(ep.command) if ep.command is not None else None,
                "env": dict(ep.env), "labels": dict(ep.labels),
                "ports": [{"container": p.container, "host": p.host, "protocol": p.protocol}
                          for p in ep.ports],
                "init": True,
            })
            out.append(Resource("container", ep.name, common, f"{addr} image {ep.image}"))
        elif isinstance(ep, VMSpec):
            common.update({
                "domain_name": naming.object_name(lab, ep.name), "template": ep.template,
                "memory": ep.memory, "vcpus": ep.vcpus, "mac": naming.mac_address(lab, ep.name),
                "image": ep.image, "kernel": ep.kernel, "initrd": ep.initrd,
            })
            out.append(Resource("vm", ep.name, common,
                                f"{addr} template {ep.template} {ep.memory} MiB"))
    if net.dns:
        records = {ep.name: str(addresses[ep.name]) for ep in spec.endpoints}
        services = [{"service": s.name, "proto": s.protocol, "endpoint": ep.name, "port": s.port}
                    for ep in spec.endpoints for s in ep.services]
        dns_spec: dict[str, Any] = {
            "domain": net.domain, "listen": gw, "subnet": str(net.subnet), "gateway": gw,
            "bridge": net.bridge, "records": records, "upstream": list(net.upstream)}
        if services:
            dns_spec["services"] = services
        srv = f", {len(services)} service{'' if len(services) == 1 else 's'}" if services else ""
        out.append(Resource("dns", lab, dns_spec, f"{net.domain} on {gw}:53, {len(records)} "
                            f"name{'' if len(records) == 1 else 's'}{srv}"))
    out.sort(key=Resource.sort_key)
    return out
