"""The lab model: a network and its endpoints, validated all at once.

A lab is described by a plain mapping — what a YAML lab file holds, and what ``hybridnb.Lab``
builds step by step::

    name: demo
    network: {bridge: hybr0, subnet: 10.0.1.0/24, gateway: 10.0.1.1, domain: hybrid.local}
    endpoints:
      web: {kind: container, image: busybox, address: 10.0.1.100}
      vm1: {kind: vm, template: test, memory: 128}
      h1:  {kind: host}

:func:`parse_lab` turns such a mapping into a frozen :class:`LabSpec`.  The file is a set of
*sections*: the built-in ``name``, ``network``, ``endpoints`` and ``expect`` here, and any
section registered in :mod:`hybridnb.core.sections`.  Each endpoint is read by its kind's
module (:mod:`hybridnb.core.kinds`), so this module names no kind.  Parsing never stops at the
first problem: every problem is collected with its path (``endpoints.web.address``) and a
hint, and one :class:`~hybridnb.errors.ValidationError` carries them all.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from hybridnb.core.kinds import KINDS, EndpointSpec, endpoint_to_dict, parse_endpoint
from hybridnb.core.multihost import VxlanSpec, check_mtu, parse_vxlan
from hybridnb.core.problems import DNS_LABEL, Collector, did_you_mean, typename
from hybridnb.core.sections import Section, extra_sections
from hybridnb.errors import ValidationError

DEFAULT_SUBNET = "10.0.1.0/24"
DEFAULT_BRIDGE = "hybr0"
DEFAULT_DOMAIN = "hybrid.local"
DEFAULT_LAB = "hybrid"
RESERVED_LAB_NAMES = ("sbx",)

_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_LABNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,22}[a-z0-9])?$")
_MTU = (576, 9000)


@dataclass(frozen=True)
class NetworkSpec:
    bridge: str = DEFAULT_BRIDGE
    subnet: ipaddress.IPv4Network = ipaddress.IPv4Network(DEFAULT_SUBNET)
    gateway: ipaddress.IPv4Address = ipaddress.IPv4Address("10.0.1.1")
    domain: str = DEFAULT_DOMAIN
    mtu: int = 1500
    adopt: bool = False                          # use an existing bridge instead of creating one
    dns: bool = True                             # serve NAME.<domain> on the gateway
    upstream: tuple[str, ...] = ()               # resolvers for names outside the lab
    pools: Mapping[str, ipaddress.IPv4Address] = field(default_factory=dict)  # kind -> first address
    vxlan: VxlanSpec | None = None               # the lab stretched over hosts (core.multihost)


@dataclass(frozen=True)
class LabSpec:
    name: str = DEFAULT_LAB
    network: NetworkSpec = NetworkSpec()
    endpoints: tuple[EndpointSpec, ...] = ()
    expect: tuple[str, ...] = ()
    #: values of the registered sections (:mod:`hybridnb.core.sections`), by key
    sections: Mapping[str, Any] = field(default_factory=dict)

    def endpoint(self, name: str) -> EndpointSpec:
        for ep in self.endpoints:
            if ep.name == name:
                return ep
        raise KeyError(name)

    def of_kind(self, kind: str) -> tuple[EndpointSpec, ...]:
        return tuple(ep for ep in self.endpoints if ep.kind == kind)


# ---------------------------------------------------------------------------------- name

class NameSection(Section):
    key = "name"
    order = 0
    absent = DEFAULT_LAB
    value = "string"
    help = ("the lab's name: 1-24 lowercase letters, digits and `-`; names its namespaces, "
            "Docker network and state")

    def parse(self, c: Collector, raw: Any, parsed: Mapping[str, Any]) -> str:
        name = raw
        if not isinstance(name, str) or not _LABNAME.match(name):
            c.add("name", f"{name!r} is not a valid lab name",
                  "use 1-24 lowercase letters, digits and '-', e.g. demo")
            return DEFAULT_LAB
        if name in RESERVED_LAB_NAMES:
            c.add("name", f"the lab name {name!r} is reserved",
                  "it would clash with the sandbox's own namespaces (hnb-sbx-*); pick another")
            return DEFAULT_LAB
        return name


# ------------------------------------------------------------------------------- network

_NET_KEYS = ("bridge", "subnet", "gateway", "domain", "mtu", "adopt", "dns", "upstream", "pools",
             "vxlan")
#: the lab-file reference of the network keys: type, meaning (and a default in words)
_NET_HELP: dict[str, tuple[str, ...]] = {
    "bridge": ("interface name", "the Linux bridge (1-15 characters)"),
    "subnet": ("IPv4 subnet", "the lab's subnet, /8 to /29"),
    "gateway": ("IPv4 address", "the bridge's address, the Docker network's gateway and the "
                "lab's DNS server", "first address of the subnet"),
    "domain": ("domain name", "every endpoint resolves as `NAME.<domain>`"),
    "mtu": ("integer", "MTU of the bridge and every port, 576-9000"),
    "adopt": ("boolean", "use an existing bridge of that name instead of creating one (it is "
              "left in place on destroy)"),
    "dns": ("boolean", "serve the lab's names (A, PTR, SRV) on the gateway"),
    "upstream": ("list of IPv4 addresses", "resolvers the lab's DNS forwards other names to "
                 "(none: it answers only its own names)"),
    "pools": ("mapping kind → IPv4 address", "where each kind's automatic addresses start"),
    "vxlan": ("`{vni, port}`", "the VXLAN segment joining the `hosts:` (VNI 1-16777215, UDP "
              "port); with two hosts or more the lab MTU becomes the smallest underlay MTU "
              "minus 50", "with 2+ hosts: VNI from the lab name, port 4789"),
}


def _bridge(c: Collector, data: Mapping[str, Any], kw: dict[str, Any]) -> None:
    bridge = data.get("bridge", DEFAULT_BRIDGE)
    if c.typed(bridge, str, "network.bridge", "an interface name", "e.g. hybr0") is None:
        return
    if _IFNAME.match(bridge):
        kw["bridge"] = bridge
    else:
        c.add("network.bridge", f"{bridge!r} is not a valid interface name",
              "use 1-15 letters, digits, '-', '_' or '.', e.g. hybr0")


def _subnet(c: Collector, data: Mapping[str, Any]) -> ipaddress.IPv4Network | None:
    raw = data.get("subnet", DEFAULT_SUBNET)
    if not isinstance(raw, (str, ipaddress.IPv4Network)):
        c.add("network.subnet", f"expected a subnet, got {typename(raw)}",
              "write it like 10.0.1.0/24")
        return None
    try:
        subnet = ipaddress.IPv4Network(str(raw), strict=True)
    except ValueError as exc:
        hint = "write it like 10.0.1.0/24"
        try:
            loose = ipaddress.IPv4Network(str(raw), strict=False)
            hint = f"host bits are set: did you mean {loose}?"
        except ValueError:
            pass
        c.add("network.subnet", f"{raw!r} is not an IPv4 subnet ({exc})", hint)
        return None
    if subnet.prefixlen > 29:
        c.add("network.subnet", f"{subnet} is too small for a lab",
              "use a prefix of /29 or shorter, e.g. /24")
        return None
    if subnet.prefixlen < 8:
        c.add("network.subnet", f"{subnet} is too large", "use a prefix between /8 and /29")
        return None
    return subnet


def _gateway(c: Collector, data: Mapping[str, Any], subnet: ipaddress.IPv4Network | None,
             kw: dict[str, Any]) -> None:
    if "gateway" in data:
        gw = c.address(data["gateway"], "network.gateway")
    else:
        gw = next(subnet.hosts()) if subnet is not None else None
    if gw is None or subnet is None:
        return
    if gw not in subnet:
        c.add("network.gateway", f"{gw} is outside the subnet {subnet}",
              f"use an address inside {subnet}, e.g. {next(subnet.hosts())}")
    elif gw in (subnet.network_address, subnet.broadcast_address):
        c.add("network.gateway", f"{gw} is the network or broadcast address of {subnet}",
              f"use a host address, e.g. {next(subnet.hosts())}")
    else:
        kw["gateway"] = gw


def _domain(c: Collector, data: Mapping[str, Any], kw: dict[str, Any]) -> None:
    domain = data.get("domain", DEFAULT_DOMAIN)
    if c.typed(domain, str, "network.domain", "a domain name", "e.g. hybrid.local") is None:
        return
    labels = domain.rstrip(".").split(".")
    if all(DNS_LABEL.match(lb) for lb in labels) and len(domain) <= 200:
        kw["domain"] = domain.rstrip(".")
    else:
        c.add("network.domain", f"{domain!r} is not a valid domain name",
              "use lowercase DNS labels separated by dots, e.g. hybrid.local")


def _mtu_and_flags(c: Collector, data: Mapping[str, Any], kw: dict[str, Any]) -> None:
    mtu = data.get("mtu", 1500)
    if c.typed(mtu, int, "network.mtu", "a number", "e.g. 1500") is not None:
        if _MTU[0] <= mtu <= _MTU[1]:
            kw["mtu"] = mtu
        else:
            c.add("network.mtu", f"MTU {mtu} is out of range",
                  f"use a value between {_MTU[0]} and {_MTU[1]} (1500 for Ethernet, 1450 "
                  "under VXLAN)")
    for flag in ("adopt", "dns"):
        if flag in data and \
                c.typed(data[flag], bool, f"network.{flag}", "true or false",
                        "write true or false, without quotes") is not None:
            kw[flag] = data[flag]


def _upstream(c: Collector, data: Mapping[str, Any], kw: dict[str, Any]) -> None:
    upstream = data.get("upstream", [])
    if c.typed(upstream, list, "network.upstream", "a list of resolver addresses",
               "e.g. [192.0.2.53]") is not None:
        ups = [c.address(u, f"network.upstream[{i}]") for i, u in enumerate(upstream)]
        kw["upstream"] = tuple(str(u) for u in ups if u is not None)


def _vxlan(c: Collector, data: Mapping[str, Any], parsed: Mapping[str, Any],
           kw: dict[str, Any]) -> None:
    """``vxlan`` (:mod:`hybridnb.core.multihost`): with it, the lab MTU leaves VXLAN its 50
    bytes — the smallest underlay MTU minus 50 unless the file gives a smaller one."""
    vx = parse_vxlan(c, data.get("vxlan"), parsed.get("hosts"), str(parsed.get("name")))
    if vx is None:
        return
    kw["vxlan"] = vx
    if "mtu" not in data:
        kw["mtu"] = vx.lab_mtu
    elif "mtu" in kw:
        check_mtu(c, vx, kw["mtu"])


def _pools(c: Collector, data: Mapping[str, Any], subnet: ipaddress.IPv4Network | None,
           kw: dict[str, Any]) -> None:
    """``pools: {KIND: first address}`` for any registered endpoint kind."""
    pools = c.mapping(data.get("pools"), "network.pools")
    if not pools:
        return
    c.unknown_keys(pools, KINDS, "network.pools")
    parsed: dict[str, ipaddress.IPv4Address] = {}
    for kind in KINDS:
        if kind not in pools:
            continue
        addr = c.address(pools[kind], f"network.pools.{kind}")
        if addr is not None and subnet is not None and addr not in subnet:
            c.add(f"network.pools.{kind}", f"{addr} is outside the subnet {subnet}",
                  "pool starts must lie inside the lab subnet")
        elif addr is not None:
            parsed[kind] = addr
    kw["pools"] = parsed


class NetworkSection(Section):
    key = "network"
    order = 10
    help = "the bridge and subnet every endpoint sits on"

    def reference_rows(self) -> tuple[tuple[str, str, str, str], ...]:
        defaults = NetworkSpec()
        rows = []
        for key in _NET_KEYS:
            typ, meaning, *default = _NET_HELP[key]
            value = getattr(defaults, key)
            if default:
                shown = default[0]
            elif isinstance(value, bool):
                shown = "true" if value else "false"
            else:
                shown = str(value) if value or value == 0 else ""
            rows.append((key, typ, shown, meaning))
        return tuple(rows)

    def parse(self, c: Collector, raw: Any, parsed: Mapping[str, Any]) -> NetworkSpec:
        data = c.mapping(raw, "network")
        if data is None:
            return NetworkSpec()
        c.unknown_keys(data, _NET_KEYS, "network")
        kw: dict[str, Any] = {}
        _bridge(c, data, kw)
        subnet = _subnet(c, data)
        if subnet is not None:
            kw["subnet"] = subnet
        _gateway(c, data, subnet, kw)
        _domain(c, data, kw)
        _mtu_and_flags(c, data, kw)
        _upstream(c, data, kw)
        _pools(c, data, subnet, kw)
        _vxlan(c, data, parsed, kw)
        return NetworkSpec(**kw)

    def dump(self, net: NetworkSpec) -> dict[str, Any]:
        network: dict[str, Any] = {"bridge": net.bridge, "subnet": str(net.subnet),
                                   "gateway": str(net.gateway), "domain": net.domain,
                                   "mtu": net.mtu}
        if net.adopt:
            network["adopt"] = True
        if not net.dns:
            network["dns"] = False
        if net.upstream:
            network["upstream"] = list(net.upstream)
        if net.pools:
            network["pools"] = {k: str(v) for k, v in sorted(net.pools.items())}
        if net.vxlan is not None:
            network["vxlan"] = net.vxlan.to_dict()
        return network


# ----------------------------------------------------------------------------- endpoints

class EndpointsSection(Section):
    key = "endpoints"
    order = 20
    help = "endpoints by name (DNS labels); each has a `kind` and the fields of its kind"

    def parse(self, c: Collector, raw: Any, parsed: Mapping[str, Any]) -> tuple[EndpointSpec, ...]:
        endpoints: list[EndpointSpec] = []
        raw_eps = c.mapping(raw, "endpoints")
        if raw_eps is not None:
            for name, entry in raw_eps.items():
                ep = parse_endpoint(c, name, entry)
                if ep is not None:
                    endpoints.append(ep)
        return tuple(sorted(endpoints, key=lambda e: e.name))

    def check(self, c: Collector, lab: LabSpec) -> None:
        _check_addresses(c, lab.network, lab.endpoints)

    def dump(self, endpoints: tuple[EndpointSpec, ...]) -> dict[str, Any]:
        return {ep.name: endpoint_to_dict(ep) for ep in endpoints}


def _check_addresses(c: Collector, net: NetworkSpec, endpoints: tuple[EndpointSpec, ...]) -> None:
    subnet = net.subnet
    used: dict[ipaddress.IPv4Address, str] = {}
    for ep in endpoints:
        if ep.address is None:
            continue
        path = f"{ep.path}.address"
        if ep.address not in subnet:
            c.add(path, f"{ep.address} is outside the lab subnet {subnet}",
                  "use an address inside the subnet, or leave it out to get one allocated")
        elif ep.address == subnet.network_address:
            c.add(path, f"{ep.address} is the network address of {subnet}",
                  "use a host address, or leave it out to get one allocated")
        elif ep.address == subnet.broadcast_address:
            c.add(path, f"{ep.address} is the broadcast address of {subnet}",
                  "use a host address, or leave it out to get one allocated")
        elif ep.address == net.gateway:
            c.add(path, f"{ep.address} is the gateway address",
                  "the gateway belongs to the bridge; pick another address")
        elif ep.address in used:
            c.add(path, f"{ep.address} is already used by endpoint {used[ep.address]!r}",
                  "give each endpoint its own address, or leave it out to get one allocated")
        else:
            used[ep.address] = ep.name


# -------------------------------------------------------------------------------- expect

class ExpectSection(Section):
    key = "expect"
    order = 30
    value = "list of strings"
    help = ("connectivity the lab must show, checked by `hybridnb validate`: `SOURCE -> TARGET "
            "CHECK ok|blocked`, CHECK one of `icmp`, `tcp/PORT`, `udp/PORT`, `http[/PORT]`, "
            "`dns`")
    _EXAMPLE: ClassVar[str] = "e.g. - web -> db tcp/5432 ok"

    def parse(self, c: Collector, raw: Any, parsed: Mapping[str, Any]) -> tuple[str, ...]:
        expect = [] if raw is None else raw
        if c.typed(expect, list, "expect", "a list of expectations", self._EXAMPLE) is None:
            return ()
        if not all(isinstance(e, str) for e in expect):
            c.add("expect", "every expectation is one string", self._EXAMPLE)
            return ()
        return tuple(expect)

    def check(self, c: Collector, lab: LabSpec) -> None:
        from hybridnb.core.expect import parse_expectations

        try:
            parse_expectations(lab.expect, names=[e.name for e in lab.endpoints])
        except ValidationError as exc:
            c.problems.extend(exc.problems)

    def dump(self, expect: tuple[str, ...]) -> list[str] | None:
        return list(expect) if expect else None


BUILTIN_SECTIONS: tuple[Section, ...] = (NameSection(), NetworkSection(), EndpointsSection(),
                                         ExpectSection())
_BUILTIN_KEYS = tuple(s.key for s in BUILTIN_SECTIONS)


def sections() -> tuple[Section, ...]:
    """The built-in sections and the registered ones, in parse order."""
    return tuple(sorted(BUILTIN_SECTIONS + extra_sections(), key=lambda s: s.order))


# ------------------------------------------------------------------------------- parsing

def parse_lab(data: Any, *, source: str | None = None) -> LabSpec:
    """Validate a lab mapping and build the :class:`LabSpec`; raise one
    :class:`ValidationError` listing every problem."""
    c = Collector()
    top = c.mapping(data, "(top)")
    if top is None:
        raise ValidationError(c.problems, source=source)
    every = sections()
    c.unknown_keys(top, [s.key for s in every], "")
    values: dict[str, Any] = {}
    for section in every:
        values[section.key] = section.parse(c, top.get(section.key, section.absent), values)
    extra = {k: v for k, v in values.items() if k not in _BUILTIN_KEYS}
    spec = LabSpec(name=values["name"], network=values["network"],
                   endpoints=values["endpoints"], expect=values["expect"], sections=extra)
    for section in every:
        section.check(c, spec)
    if c.problems:
        raise ValidationError(c.problems, source=source)
    for section in every:
        spec = section.complete(spec)
    return spec


# --------------------------------------------------------------------------- serialisation

def lab_to_dict(spec: LabSpec) -> dict[str, Any]:
    """The canonical mapping of a spec (what ``parse_lab`` reads back to the same spec)."""
    out: dict[str, Any] = {}
    for section in sections():
        if section.key in _BUILTIN_KEYS:
            value = getattr(spec, section.key)
        elif section.key in spec.sections:
            value = spec.sections[section.key]
        else:
            continue
        dumped = section.dump(value)
        if dumped is not None:
            out[section.key] = dumped
    return out


__all__ = ["DEFAULT_BRIDGE", "DEFAULT_DOMAIN", "DEFAULT_LAB", "DEFAULT_SUBNET", "LabSpec",
           "NetworkSpec", "EndpointSpec", "did_you_mean", "endpoint_to_dict", "lab_to_dict",
           "parse_lab", "sections"]
