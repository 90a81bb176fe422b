"""The lab model: a network and its endpoints, validated all at once.

A lab is described by a plain mapping — what a YAML lab file holds, and what ``hybridnb.Lab``
builds step by step::

    name: demo
    network: {bridge: hybr0, subnet: 10.0.1.0/24, gateway: 10.0.1.1, domain: hybrid.local}
    endpoints:
      web: {kind: container, image: busybox, address: 10.0.1.100}
      vm1: {kind: vm, template: test, memory: 128}
      h1:  {kind: host}

:func:`parse_lab` turns such a mapping into frozen :class:`LabSpec` objects.  It never stops at
the first problem: every problem is collected with its path (``endpoints.web.address``) and a
hint, and one :class:`~hybridnb.errors.ValidationError` carries them all.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from hybridnb.errors import Problem, ValidationError

KINDS = ("container", "vm", "host")
TEMPLATES = ("test", "base", "docker")
DEFAULT_SUBNET = "10.0.1.0/24"
DEFAULT_BRIDGE = "hybr0"
DEFAULT_DOMAIN = "hybrid.local"
DEFAULT_LAB = "hybrid"
RESERVED_LAB_NAMES = ("sbx",)

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_PORT = re.compile(r"^(?:(?P<host>\d{1,5}):)?(?P<container>\d{1,5})(?:/(?P<proto>tcp|udp))?$")
_ENVKEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LABNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,22}[a-z0-9])?$")


@dataclass(frozen=True)
class PortMap:
    container: int
    host: int | None = None
    protocol: str = "tcp"

    def __str__(self) -> str:
        head = f"{self.host}:" if self.host is not None else ""
        return f"{head}{self.container}/{self.protocol}"


@dataclass(frozen=True)
class ServiceSpec:
    """A service an endpoint offers (``http/80``, ``postgresql/5432``, ``dns/53/udp``): it
    becomes an SRV record ``_http._tcp.NAME.<domain>`` and a real port the probes test."""

    name: str
    port: int
    protocol: str = "tcp"

    def __str__(self) -> str:
        tail = f"/{self.protocol}" if self.protocol != "tcp" else ""
        return f"{self.name}/{self.port}{tail}"


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


@dataclass(frozen=True)
class EndpointSpec:
    name: str
    kind: str
    address: ipaddress.IPv4Address | None = None
    services: tuple[ServiceSpec, ...] = ()

    @property
    def path(self) -> str:
        return f"endpoints.{self.name}"


@dataclass(frozen=True)
class ContainerSpec(EndpointSpec):
    kind: str = "container"
    image: str = "busybox"
    command: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[PortMap, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VMSpec(EndpointSpec):
    kind: str = "vm"
    template: str = "test"
    memory: int = 128                            # MiB
    vcpus: int = 1
    image: str | None = None                     # cloud image (templates base/docker)
    kernel: str | None = None                    # direct kernel boot (template test)
    initrd: str | None = None


@dataclass(frozen=True)
class HostSpec(EndpointSpec):
    kind: str = "host"


@dataclass(frozen=True)
class LabSpec:
    name: str = DEFAULT_LAB
    network: NetworkSpec = NetworkSpec()
    endpoints: tuple[EndpointSpec, ...] = ()
    expect: tuple[str, ...] = ()

    def endpoint(self, name: str) -> EndpointSpec:
        for ep in self.endpoints:
            if ep.name == name:
                return ep
        raise KeyError(name)

    def of_kind(self, kind: str) -> tuple[EndpointSpec, ...]:
        return tuple(ep for ep in self.endpoints if ep.kind == kind)


# ----------------------------------------------------------------------------------- parsing

_TOP_KEYS = ("name", "network", "endpoints", "expect")
_NET_KEYS = ("bridge", "subnet", "gateway", "domain", "mtu", "adopt", "dns", "upstream", "pools")
_COMMON_KEYS = ("kind", "address", "services")
_SERVICE = re.compile(r"^(?P<name>[a-z][a-z0-9-]{0,14})/(?P<port>\d{1,5})(?:/(?P<proto>tcp|udp))?$")
RESERVED_ENDPOINT_NAMES = ("gateway",)
_KIND_KEYS: dict[str, tuple[str, ...]] = {
    "container": _COMMON_KEYS + ("image", "command", "env", "ports", "labels"),
    "vm": _COMMON_KEYS + ("template", "memory", "vcpus", "image", "kernel", "initrd"),
    "host": _COMMON_KEYS,
}
MIN_VM_MEMORY = 96
_VM_FILE_EXAMPLES = {"image": "e.g. /var/lib/hybridnb/images/debian-12.qcow2",
                     "kernel": "e.g. /boot/vmlinuz-6.1.0-28-amd64",
                     "initrd": "e.g. /boot/initrd.img-6.1.0-28-amd64"}


def did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


class _Collector:
    """Accumulates problems while parsing; helpers return ``None`` for a bad value."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, path: str, message: str, hint: str | None = None) -> None:
        self.problems.append(Problem(path, message, hint))

    def unknown_keys(self, data: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
        for key in data:
            if key not in allowed:
                where = f"{path}.{key}" if path else str(key)
                hint = did_you_mean(str(key), allowed) or f"allowed keys: {', '.join(allowed)}"
                self.add(where, f"unknown key {key!r}", hint)

    def mapping(self, value: Any, path: str) -> Mapping[str, Any] | None:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.add(path, f"expected a mapping, got {_typename(value)}",
                     "write it as 'key: value' lines indented under it")
            return None
        return value

    def typed(self, value: Any, kind: type | tuple[type, ...], path: str, what: str,
              hint: str | None = None) -> Any:
        if isinstance(value, bool) and kind is int:
            self.add(path, f"expected {what}, got a boolean", hint)
            return None
        if not isinstance(value, kind):
            self.add(path, f"expected {what}, got {_typename(value)}", hint)
            return None
        return value


def _typename(value: Any) -> str:
    if value is None:
        return "nothing"
    return {str: "a string", int: "a number", float: "a decimal number", bool: "a boolean",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _text_value(c: _Collector, value: Any, path: str) -> bool:
    """An env or label value: a string or a number (written as text); true/false, nothing,
    lists and mappings are refused rather than turned into 'True', 'None' or '[1]'."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return True
    c.add(path, f"expected a string value, got {_typename(value)}",
          "quote it, e.g. 'true'" if isinstance(value, bool) else "quote it")
    return False


def _address(c: _Collector, value: Any, path: str) -> ipaddress.IPv4Address | None:
    if not isinstance(value, (str, ipaddress.IPv4Address)):
        c.add(path, f"expected an IPv4 address, got {_typename(value)}", "write it like 10.0.1.100")
        return None
    try:
        return ipaddress.IPv4Address(str(value))
    except ValueError:
        c.add(path, f"{value!r} is not an IPv4 address", "write it like 10.0.1.100")
        return None


def _parse_network(c: _Collector, raw: Any) -> NetworkSpec:
    data = c.mapping(raw, "network")
    if data is None:
        return NetworkSpec()
    c.unknown_keys(data, _NET_KEYS, "network")
    kw: dict[str, Any] = {}

    bridge = data.get("bridge", DEFAULT_BRIDGE)
    if c.typed(bridge, str, "network.bridge", "an interface name", "e.g. hybr0") is not None:
        if _IFNAME.match(bridge):
            kw["bridge"] = bridge
        else:
            c.add("network.bridge", f"{bridge!r} is not a valid interface name",
                  "use 1-15 letters, digits, '-', '_' or '.', e.g. hybr0")

    subnet = None
    raw_subnet = data.get("subnet", DEFAULT_SUBNET)
    try:
        if not isinstance(raw_subnet, (str, ipaddress.IPv4Network)):
            raise TypeError(f"expected a subnet, got {_typename(raw_subnet)}")
        subnet = ipaddress.IPv4Network(str(raw_subnet), strict=True)
    except TypeError as exc:
        c.add("network.subnet", str(exc), "write it like 10.0.1.0/24")
    except ValueError as exc:
        hint = "write it like 10.0.1.0/24"
        try:
            loose = ipaddress.IPv4Network(str(raw_subnet), strict=False)
            hint = f"host bits are set: did you mean {loose}?"
        except ValueError:
            pass
        c.add("network.subnet", f"{raw_subnet!r} is not an IPv4 subnet ({exc})", hint)
    if subnet is not None:
        if subnet.prefixlen > 29:
            c.add("network.subnet", f"{subnet} is too small for a lab",
                  "use a prefix of /29 or shorter, e.g. /24")
            subnet = None
        elif subnet.prefixlen < 8:
            c.add("network.subnet", f"{subnet} is too large", "use a prefix between /8 and /29")
            subnet = None
        else:
            kw["subnet"] = subnet

    if "gateway" in data:
        gw = _address(c, data["gateway"], "network.gateway")
    else:
        gw = next(subnet.hosts()) if subnet is not None else None
    if gw is not None and subnet is not None:
        if gw not in subnet:
            c.add("network.gateway", f"{gw} is outside the subnet {subnet}",
                  f"use an address inside {subnet}, e.g. {next(subnet.hosts())}")
        elif gw in (subnet.network_address, subnet.broadcast_address):
            c.add("network.gateway", f"{gw} is the network or broadcast address of {subnet}",
                  f"use a host address, e.g. {next(subnet.hosts())}")
        else:
            kw["gateway"] = gw

    domain = data.get("domain", DEFAULT_DOMAIN)
    if c.typed(domain, str, "network.domain", "a domain name", "e.g. hybrid.local") is not None:
        labels = domain.rstrip(".").split(".")
        if all(_LABEL.match(lb) for lb in labels) and len(domain) <= 200:
            kw["domain"] = domain.rstrip(".")
        else:
            c.add("network.domain", f"{domain!r} is not a valid domain name",
                  "use lowercase DNS labels separated by dots, e.g. hybrid.local")

    mtu = data.get("mtu", 1500)
    if c.typed(mtu, int, "network.mtu", "a number", "e.g. 1500") is not None:
        if 576 <= mtu <= 9000:
            kw["mtu"] = mtu
        else:
            c.add("network.mtu", f"MTU {mtu} is out of range",
                  "use a value between 576 and 9000 (1500 for Ethernet, 1450 under VXLAN)")

    for flag in ("adopt", "dns"):
        if flag in data and c.typed(data[flag], bool, f"network.{flag}", "true or false",
                                      "write true or false, without quotes") is not None:
            kw[flag] = data[flag]

    upstream = data.get("upstream", [])
    if c.typed(upstream, list, "network.upstream", "a list of resolver addresses",
               "e.g. [192.0.2.53]") is not None:
        ups = [_address(c, u, f"network.upstream[{i}]") for i, u in enumerate(upstream)]
        kw["upstream"] = tuple(str(u) for u in ups if u is not None)

    pools = c.mapping(data.get("pools"), "network.pools")
    if pools:
        c.unknown_keys(pools, KINDS, "network.pools")
        parsed: dict[str, ipaddress.IPv4Address] = {}
        for kind in KINDS:
            if kind in pools:
                addr = _address(c, pools[kind], f"network.pools.{kind}")
                if addr is not None and subnet is not None and addr not in subnet:
                    c.add(f"network.pools.{kind}", f"{addr} is outside the subnet {subnet}",
                          "pool starts must lie inside the lab subnet")
                elif addr is not None:
                    parsed[kind] = addr
        kw["pools"] = parsed
    return NetworkSpec(**kw)


def _pattern_list(c: _Collector, raw: Any, path: str, pattern: re.Pattern[str],
                  port_groups: tuple[str, ...], what: str, hint: str,
                  build: Callable[[re.Match[str]], Any]) -> tuple[Any, ...] | None:
    """A list of strings each matching ``pattern`` with its port groups in 1-65535 (ports,
    services); every bad item is reported.  None when anything was wrong."""
    if c.typed(raw, list, path, "a list", hint) is None:
        return None
    out, ok = [], True
    for i, item in enumerate(raw):
        m = pattern.match(str(item))
        if not m or not all(1 <= int(m.group(g)) <= 65535 for g in port_groups if m.group(g)):
            c.add(f"{path}[{i}]", f"{item!r} is not {what}", hint)
            ok = False
            continue
        out.append(build(m))
    return tuple(out) if ok else None


def _parse_endpoint(c: _Collector, name: Any, raw: Any) -> EndpointSpec | None:
    path = f"endpoints.{name}"
    ok = True
    if not isinstance(name, str) or not _LABEL.match(name):
        c.add(path, f"{name!r} is not a valid endpoint name",
              "names are DNS labels: lowercase letters, digits and '-', at most 63, "
              "not starting or ending with '-'")
        ok = False
    if name in RESERVED_ENDPOINT_NAMES:
        c.add(path, f"the name {name!r} is reserved for the lab's gateway",
              "pick another name; the gateway is gateway.<domain> already")
        ok = False
    data = c.mapping(raw, path)
    if data is None:
        return None
    kind = data.get("kind")
    if kind is None:
        c.add(f"{path}.kind", "missing kind", "add 'kind: container', 'kind: vm' or 'kind: host'")
        return None
    if kind not in KINDS:
        c.add(f"{path}.kind", f"unknown kind {kind!r}", did_you_mean(str(kind), KINDS)
              or "use container, vm or host")
        return None
    c.unknown_keys(data, _KIND_KEYS[kind], path)
    kw: dict[str, Any] = {"name": str(name)}
    if data.get("address") is not None:
        addr = _address(c, data["address"], f"{path}.address")
        if addr is None:
            ok = False
        kw["address"] = addr
    services = _pattern_list(
        c, data.get("services", []), f"{path}.services", _SERVICE, ("port",), "a service",
        "write NAME/PORT or NAME/PORT/udp, e.g. http/80 or dns/53/udp",
        lambda m: ServiceSpec(m.group("name"), int(m.group("port")), m.group("proto") or "tcp"))
    if services is None:
        ok = False
    else:
        kw["services"] = services

    if kind == "container":
        image = data.get("image", "busybox")
        if c.typed(image, str, f"{path}.image", "an image name", "e.g. nginx:alpine") is None:
            ok = False
        elif not image.strip():
            c.add(f"{path}.image", "image is empty", "e.g. busybox or nginx:alpine")
            ok = False
        else:
            kw["image"] = image
        if data.get("command") is not None:
            cmd = data["command"]
            if isinstance(cmd, str):
                kw["command"] = tuple(cmd.split())
            elif isinstance(cmd, list) and all(isinstance(x, (str, int)) for x in cmd):
                kw["command"] = tuple(str(x) for x in cmd)
            else:
                c.add(f"{path}.command", "expected a string or a list of strings",
                      "e.g. [httpd, -f, -p, '80']")
                ok = False
        env = c.mapping(data.get("env"), f"{path}.env")
        if env is None:
            ok = False
        else:
            for key, value in env.items():
                if not isinstance(key, str) or not _ENVKEY.match(key):
                    c.add(f"{path}.env.{key}", f"{key!r} is not a valid variable name",
                          "use letters, digits and '_', not starting with a digit")
                    ok = False
                elif not _text_value(c, value, f"{path}.env.{key}"):
                    ok = False
            kw["env"] = {str(k): str(v) for k, v in sorted(env.items(), key=lambda kv: str(kv[0]))}
        ports = _pattern_list(
            c, data.get("ports", []), f"{path}.ports", _PORT, ("host", "container"),
            "a port mapping",
            "write HOST:CONTAINER/PROTO, e.g. '8080:80/tcp', with ports 1-65535",
            lambda m: PortMap(int(m.group("container")),
                              int(m.group("host")) if m.group("host") else None,
                              m.group("proto") or "tcp"))
        if ports is None:
            ok = False
        else:
            kw["ports"] = ports
        labels = c.mapping(data.get("labels"), f"{path}.labels")
        if labels is None:
            ok = False
        else:
            for key in labels:
                if str(key).startswith("hybridnb."):
                    c.add(f"{path}.labels.{key}", "labels starting with 'hybridnb.' are reserved",
                          "choose another prefix")
                    ok = False
                elif not _text_value(c, labels[key], f"{path}.labels.{key}"):
                    ok = False
            kw["labels"] = {str(k): str(v) for k, v in sorted(labels.items(), key=lambda kv: str(kv[0]))}
        return ContainerSpec(**kw) if ok else None

    if kind == "vm":
        template = data.get("template", "test")
        if template not in TEMPLATES:
            c.add(f"{path}.template", f"unknown template {template!r}",
                  did_you_mean(str(template), TEMPLATES) or f"use one of: {', '.join(TEMPLATES)}")
            ok = False
        else:
            kw["template"] = template
        memory = data.get("memory", 128)
        if c.typed(memory, int, f"{path}.memory", "a size in MiB", "e.g. 128") is None:
            ok = False
        elif memory < MIN_VM_MEMORY:
            c.add(f"{path}.memory", f"{memory} MiB is too little for a guest",
                  f"give it at least {MIN_VM_MEMORY} MiB")
            ok = False
        else:
            kw["memory"] = memory
        vcpus = data.get("vcpus", 1)
        if c.typed(vcpus, int, f"{path}.vcpus", "a number of CPUs", "e.g. 1") is None:
            ok = False
        elif not 1 <= vcpus <= 64:
            c.add(f"{path}.vcpus", f"{vcpus} vCPUs is out of range", "use 1 to 64")
            ok = False
        else:
            kw["vcpus"] = vcpus
        for key in ("image", "kernel", "initrd"):
            if data.get(key) is not None:
                if c.typed(data[key], str, f"{path}.{key}", "a file path",
                           _VM_FILE_EXAMPLES[key]) is None:
                    ok = False
                else:
                    kw[key] = data[key]
        if kw.get("template") in ("base", "docker") and (kw.get("kernel") or kw.get("initrd")):
            c.add(f"{path}.kernel", "kernel/initrd apply only to the 'test' template",
                  "drop them, or use template: test")
            ok = False
        return VMSpec(**kw) if ok else None

    return HostSpec(**kw) if ok else None


def parse_lab(data: Any, *, source: str | None = None) -> LabSpec:
    """Validate a lab mapping and build the :class:`LabSpec`; raise one
    :class:`ValidationError` listing every problem."""
    c = _Collector()
    top = c.mapping(data, "(top)")
    if top is None:
        raise ValidationError(c.problems, source=source)
    c.unknown_keys(top, _TOP_KEYS, "")

    name = top.get("name", DEFAULT_LAB)
    if not isinstance(name, str) or not _LABNAME.match(name):
        c.add("name", f"{name!r} is not a valid lab name",
              "use 1-24 lowercase letters, digits and '-', e.g. demo")
        name = DEFAULT_LAB
    elif name in RESERVED_LAB_NAMES:
        c.add("name", f"the lab name {name!r} is reserved",
              "it would clash with the sandbox's own namespaces (hnb-sbx-*); pick another")
        name = DEFAULT_LAB

    network = _parse_network(c, top.get("network"))

    endpoints: list[EndpointSpec] = []
    raw_eps = c.mapping(top.get("endpoints"), "endpoints")
    if raw_eps is not None:
        for ep_name, raw in raw_eps.items():
            ep = _parse_endpoint(c, ep_name, raw)
            if ep is not None:
                endpoints.append(ep)

    _check_addresses(c, network, endpoints)

    expect = top.get("expect", [])
    if c.typed(expect, list, "expect", "a list of expectations",
               "e.g. - web -> db tcp/5432 ok") is None:
        expect = []
    elif not all(isinstance(e, str) for e in expect):
        c.add("expect", "every expectation is one string", "e.g. - web -> db tcp/5432 ok")
        expect = []
    else:
        from hybridnb.core.expect import parse_expectations

        try:
            parse_expectations(expect, names=[e.name for e in endpoints])
        except ValidationError as exc:
            c.problems.extend(exc.problems)

    if c.problems:
        raise ValidationError(c.problems, source=source)
    endpoints.sort(key=lambda e: e.name)
    return LabSpec(name=name, network=network, endpoints=tuple(endpoints),
                   expect=tuple(expect))


def _check_addresses(c: _Collector, net: NetworkSpec, endpoints: list[EndpointSpec]) -> None:
    subnet = net.subnet
    used: dict[ipaddress.IPv4Address, str] = {}
    for ep in sorted(endpoints, key=lambda e: e.name):
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


# --------------------------------------------------------------------------- serialisation

def lab_to_dict(spec: LabSpec) -> dict[str, Any]:
    """The canonical mapping of a spec (what ``parse_lab`` reads back to the same spec)."""
    net = spec.network
    network: dict[str, Any] = {"bridge": net.bridge, "subnet": str(net.subnet),
                               "gateway": str(net.gateway), "domain": net.domain, "mtu": net.mtu}
    if net.adopt:
        network["adopt"] = True
    if not net.dns:
        network["dns"] = False
    if net.upstream:
        network["upstream"] = list(net.upstream)
    if net.pools:
        network["pools"] = {k: str(v) for k, v in sorted(net.pools.items())}
    eps: dict[str, Any] = {}
    for ep in spec.endpoints:
        eps[ep.name] = endpoint_to_dict(ep)
    out: dict[str, Any] = {"name": spec.name, "network": network, "endpoints": eps}
    if spec.expect:
        out["expect"] = list(spec.expect)
    return out


_DEFAULTS: dict[str, Callable[[], EndpointSpec]] = {
    "container": lambda: ContainerSpec(name="x"),
    "vm": lambda: VMSpec(name="x"),
    "host": lambda: HostSpec(name="x"),
}


def endpoint_to_dict(ep: EndpointSpec) -> dict[str, Any]:
    """Mapping form of an endpoint, leaving out values equal to the defaults."""
    out: dict[str, Any] = {"kind": ep.kind}
    default = _DEFAULTS[ep.kind]()
    for key in _KIND_KEYS[ep.kind][1:]:
        value = getattr(ep, key)
        if value == getattr(default, key) or value is None:
            continue
        if key == "address":
            value = str(value)
        elif key in ("ports", "services"):
            value = [str(p) for p in value]
        elif key == "command":
            value = list(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        out[key] = value
    return out
