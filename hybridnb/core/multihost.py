"""One lab over several machines: the hosts, their engines' URLs, and the VXLAN that joins them.

A lab file may place its endpoints on several machines (``hosts:``, read by
:mod:`hybridnb.core.sections.hosts`) and stretch the one lab subnet over them with VXLAN
(``network.vxlan``)::

    hosts:
      a: {engine: local, underlay: 192.168.250.1}
      b: {docker: ssh://lab@b, libvirt: qemu+ssh://lab@b/system, underlay: b.lab.example}
    network: {vxlan: {vni: 4242, port: 4789}}
    endpoints:
      web: {kind: container}              # no host: the first host (the primary)
      db:  {kind: vm, host: b}

This module is pure: it parses and checks, it never resolves a name or opens a socket.  It
holds

* :class:`LabHost` and :class:`EngineURL`: where a host's engines are.  Docker URLs
  (``unix://``, ``tcp://`` — TLS on port 2376 or as ``https://`` — and ``ssh://``) and libvirt
  URIs (``qemu:///system``, ``qemu+ssh://user@host/system``, ``qemu+tls://``…) are parsed
  to say what is wrong with a bad one; the text itself is passed to the SDKs unchanged.
* :class:`VxlanSpec`: the VNI, the UDP port and the underlay MTU it rides on.  VXLAN costs
  :data:`VXLAN_OVERHEAD` bytes per frame (outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet
  14), so the lab MTU is the smallest underlay MTU minus 50 — 1450 over ordinary 1500-byte
  underlays, 1500 only when every host's underlay carries at least 1550 (jumbo frames);
  :func:`mtu_note` says which and why.
* :func:`placement` (endpoint → host) and :func:`vxlan_clash` (two labs that would share a
  segment on the same underlay).
"""

from __future__ import annotations

import ipaddress
import re
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from hybridnb.core.problems import DNS_LABEL, Collector, did_you_mean
from hybridnb.errors import Problem

if TYPE_CHECKING:  # pragma: no cover
    from hybridnb.core.resource import Resource
    from hybridnb.core.spec import LabSpec

#: Bytes VXLAN adds to every frame on the underlay: outer IPv4 (20), UDP (8), VXLAN (8) and
#: the inner Ethernet header (14).
VXLAN_OVERHEAD = 50
#: IANA's VXLAN port (RFC 7348).
VXLAN_PORT = 4789
VNI_RANGE = (1, 16_777_215)
#: the underlay MTU assumed when a host does not say (ordinary Ethernet)
UNDERLAY_MTU = 1500
UNDERLAY_MTU_RANGE = (626, 9216)          # lab MTU 576 .. the network key's 9000 (capped)
LAB_MTU_MAX = 9000

_SANDBOX = re.compile(r"^[a-z0-9][a-z0-9-]{0,23}$")
_DOCKER_SCHEMES = {"unix": "unix", "tcp": "tcp", "https": "tls", "ssh": "ssh"}
_LIBVIRT_TRANSPORTS = ("unix", "ssh", "libssh", "libssh2", "tls", "tcp")
_LIBVIRT_DRIVERS = ("qemu", "test")
_DOCKER_HINT = ("write unix:///var/run/docker.sock, tcp://HOST:2376 (TLS), https://HOST:2376 "
                "or ssh://USER@HOST")
_LIBVIRT_HINT = "write qemu:///system, qemu+ssh://USER@HOST/system or qemu+tls://HOST/system"


# ------------------------------------------------------------------------------ engine URLs

@dataclass(frozen=True)
class EngineURL:
    """A parsed engine URL; :attr:`url` is what the SDK receives, unchanged."""

    engine: str                    # docker | libvirt
    url: str
    transport: str                 # unix | tcp | tls | ssh (libssh, libssh2 for libvirt)
    user: str | None = None
    host: str | None = None
    port: int | None = None
    path: str = ""

    @property
    def remote(self) -> bool:
        """Whether the engine is reached over the network (not a local socket)."""
        return self.transport != "unix"

    def __str__(self) -> str:
        return self.url


class BadURL(ValueError):
    """A URL that cannot name an engine: ``args`` are (message, hint)."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message, hint)
        self.message, self.hint = message, hint


#: ``scheme://[user@]host[:port][/path][?query]`` (RFC 3986's shape, IPv6 hosts in brackets)
_URL = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?:(?P<user>[^@/?#]*)@)?"
                  r"(?P<host>\[[0-9a-fA-F:.]+\]|[^:/?#@]*)(?::(?P<port>[^/?#]*))?"
                  r"(?P<path>/[^?#]*)?(?:\?(?P<query>[^#]*))?$")


@dataclass(frozen=True)
class _Parts:
    scheme: str
    username: str | None
    hostname: str | None
    port: int | None
    path: str
    netloc: str


def _split(url: Any, hint: str) -> _Parts:
    """The parts of an engine URL (the standard library's ``urllib`` is off limits in the
    pure core; this is the subset engine URLs use)."""
    m = _URL.match(url) if isinstance(url, str) else None
    if m is None:
        raise BadURL(f"{url!r} is not a URL", hint)
    port = m.group("port")
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise BadURL(f"{url!r} has an invalid port", "a port is a number 1-65535")
    host = m.group("host") or None
    netloc = url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
    return _Parts(m.group("scheme"), m.group("user") or None,
                  host.strip("[]").lower() if host else None,
                  int(port) if port else None, m.group("path") or "", netloc)


def parse_docker_url(url: str) -> EngineURL:
    """Check a Docker engine URL; raise :class:`BadURL` with a hint for a bad one."""
    parts = _split(url, _DOCKER_HINT)
    transport = _DOCKER_SCHEMES.get(parts.scheme)
    if transport is None:
        raise BadURL(f"unknown Docker URL scheme {parts.scheme!r}",
                     did_you_mean(parts.scheme, _DOCKER_SCHEMES) or _DOCKER_HINT)
    if transport == "unix":
        if parts.netloc or not parts.path.startswith("/"):
            raise BadURL(f"{url!r} does not name a socket path",
                         "three slashes: unix:///var/run/docker.sock")
        return EngineURL("docker", url, "unix", path=parts.path)
    if not parts.hostname:
        raise BadURL(f"{url!r} names no host", _DOCKER_HINT)
    if transport == "ssh":
        if parts.path not in ("", "/"):
            raise BadURL(f"{url!r}: an ssh:// Docker URL has no path",
                         "docker runs `docker system dial-stdio` on the host: ssh://USER@HOST")
        return EngineURL("docker", url, "ssh", parts.username, parts.hostname, parts.port or 22)
    if transport == "tcp" and parts.port is None:
        raise BadURL(f"{url!r} names no port", "2376 with TLS, 2375 without: tcp://HOST:2376")
    port = parts.port or 2376
    return EngineURL("docker", url, "tls" if port == 2376 else transport, None,
                     parts.hostname, port)


def parse_libvirt_uri(uri: str) -> EngineURL:
    """Check a libvirt connection URI; raise :class:`BadURL` with a hint for a bad one."""
    parts = _split(uri, _LIBVIRT_HINT)
    driver, _, transport = parts.scheme.partition("+")
    if driver not in _LIBVIRT_DRIVERS:
        raise BadURL(f"unknown libvirt driver {driver!r}",
                     did_you_mean(driver, _LIBVIRT_DRIVERS) or _LIBVIRT_HINT)
    if transport and transport not in _LIBVIRT_TRANSPORTS:
        raise BadURL(f"unknown libvirt transport {transport!r}",
                     did_you_mean(transport, _LIBVIRT_TRANSPORTS)
                     or f"use one of: {', '.join(_LIBVIRT_TRANSPORTS)}")
    if driver == "qemu" and parts.path not in ("/system", "/session"):
        raise BadURL(f"{uri!r} names neither /system nor /session",
                     "qemu URIs end in /system (or /session): qemu+ssh://USER@HOST/system")
    if not parts.hostname:
        if transport not in ("", "unix"):
            raise BadURL(f"{uri!r}: transport {transport!r} needs a host", _LIBVIRT_HINT)
        return EngineURL("libvirt", uri, "unix", path=parts.path)
    if transport == "unix":
        raise BadURL(f"{uri!r}: a unix socket URI names no host", "qemu:///system")
    # libvirt's own default for a URI with a host and no transport is TLS
    return EngineURL("libvirt", uri, transport or "tls", parts.username, parts.hostname,
                     parts.port, parts.path)


# ------------------------------------------------------------------------------------ hosts

@dataclass(frozen=True)
class LabHost:
    """One machine of a lab: where its engines are and how the others reach it."""

    name: str
    engine: str | None = None            # "local": the backend the lab is applied with
    sandbox: str | None = None           # that sandbox's engines (tests: two on one machine)
    docker: EngineURL | None = None
    libvirt: EngineURL | None = None
    underlay: str | None = None          # IPv4 address or DNS name the other hosts reach
    mtu: int | None = None               # its underlay's MTU (None: 1500)

    @property
    def underlay_mtu(self) -> int:
        return self.mtu or UNDERLAY_MTU

    @property
    def where(self) -> str:
        """Its engines in a few words."""
        if self.engine:
            return self.engine
        if self.sandbox:
            return f"sandbox {self.sandbox}"
        return ", ".join(f"{u.engine} {u}" for u in (self.docker, self.libvirt)
                         if u is not None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("engine", "sandbox", "docker", "libvirt", "underlay", "mtu"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value if isinstance(value, (str, int)) else str(value)
        return out


@dataclass(frozen=True)
class Hosts:
    """The ``hosts:`` section: the machines in the order written; the first is the primary
    (it holds the gateway address and the lab's DNS server)."""

    hosts: tuple[LabHost, ...] = ()

    @property
    def primary(self) -> LabHost:
        return self.hosts[0]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hosts)

    def get(self, name: str) -> LabHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    @property
    def multi(self) -> bool:
        return len(self.hosts) > 1

    def __len__(self) -> int:
        return len(self.hosts)


HOST_KEYS = ("engine", "sandbox", "docker", "libvirt", "underlay", "mtu")
#: the lab-file reference of a host's keys: type, meaning
HOST_HELP: dict[str, tuple[str, str]] = {
    "engine": ("local", "this machine: the engines of the backend the lab is applied with"),
    "sandbox": ("sandbox name", "the engines of that sandbox (two sandboxes stand in for two "
                "machines in tests)"),
    "docker": ("URL", "its Docker engine: unix://, tcp://HOST:2376 or https:// (TLS, "
               "certificates from $DOCKER_CERT_PATH), ssh://USER@HOST; given to the Docker SDK "
               "unchanged. A host with URLs only is remote: hybridnb's agent container "
               "makes its bridge, VXLAN device, namespace hosts and link impairments, runs "
               "its share of the probes and watches it through this engine"),
    "libvirt": ("URI", "its libvirt: qemu:///system, qemu+ssh://USER@HOST/system, "
                "qemu+tls://HOST/system; given to libvirt unchanged (on a remote host, VMs' "
                "boot files are uploaded into a storage pool there)"),
    "underlay": ("IPv4 address or DNS name", "where the other hosts send its VXLAN traffic; "
                 "required when there are two hosts or more"),
    "mtu": ("integer", "the MTU its underlay carries (default 1500); the lab MTU is the "
            "smallest one minus 50"),
}


def _underlay(c: Collector, raw: Any, path: str) -> str | None:
    if not isinstance(raw, str) or not raw:
        c.add(path, f"expected an IPv4 address or a DNS name, got {raw!r}",
              "e.g. 192.168.250.2 or b.lab.example")
        return None
    try:
        addr = ipaddress.IPv4Address(raw)
    except ValueError:
        labels = raw.rstrip(".").split(".")
        if raw[0].isdigit() and all(lb.isdigit() for lb in labels):
            c.add(path, f"{raw!r} is not an IPv4 address", "write it like 192.168.250.2")
            return None
        if not all(DNS_LABEL.match(lb.lower()) for lb in labels):
            c.add(path, f"{raw!r} is neither an IPv4 address nor a DNS name",
                  "e.g. 192.168.250.2 or b.lab.example")
            return None
        return raw.rstrip(".").lower()
    if addr.is_loopback or addr.is_multicast or addr.is_unspecified or addr.is_link_local \
            or addr == ipaddress.IPv4Address("255.255.255.255"):
        c.add(path, f"{addr} cannot be an underlay address",
              "use a unicast address the other hosts route to (not loopback, multicast, "
              "link-local or 0.0.0.0)")
        return None
    return str(addr)


def _url(c: Collector, raw: Any, path: str, parse: Any) -> EngineURL | None:
    try:
        return parse(raw)
    except BadURL as exc:
        c.add(path, exc.message, exc.hint)
        return None


def _engines(c: Collector, data: Mapping[str, Any], path: str, kw: dict[str, Any]) -> None:
    """Where the host's engines are: exactly one of engine, sandbox, docker/libvirt URLs."""
    if "engine" in data:
        if data["engine"] == "local":
            kw["engine"] = "local"
        else:
            c.add(f"{path}.engine", f"unknown engine {data['engine']!r}",
                  "engine: local (this machine); remote hosts give docker: and libvirt: URLs")
    if "sandbox" in data:
        box = data["sandbox"]
        if isinstance(box, str) and _SANDBOX.match(box):
            kw["sandbox"] = box
        else:
            c.add(f"{path}.sandbox", f"{box!r} is not a sandbox name",
                  "1-24 characters: lowercase letters, digits, '-'")
    if "docker" in data:
        kw["docker"] = _url(c, data["docker"], f"{path}.docker", parse_docker_url)
    if "libvirt" in data:
        kw["libvirt"] = _url(c, data["libvirt"], f"{path}.libvirt", parse_libvirt_uri)
    given = [k for k in ("engine", "sandbox") if k in data]
    if "docker" in data or "libvirt" in data:
        given.append("docker/libvirt")
    if not given:
        c.add(path, "it says nowhere where its engines are",
              "give engine: local, sandbox: NAME, or docker: and libvirt: URLs")
    elif len(given) > 1:
        c.add(path, f"{' and '.join(given)}: give only one", "a host's engines are in one place")


def parse_host(c: Collector, name: Any, raw: Any) -> LabHost | None:
    """One entry of ``hosts:``; None when anything is wrong (all reported)."""
    path = f"hosts.{name}"
    if not isinstance(name, str) or not DNS_LABEL.match(name):
        c.add(path, f"{name!r} is not a valid host name",
              "use a DNS label: lowercase letters, digits and '-', e.g. b")
        return None
    data = c.mapping(raw, path)
    if data is None:
        return None
    c.unknown_keys(data, HOST_KEYS, path)
    kw: dict[str, Any] = {}
    _engines(c, data, path, kw)
    if "underlay" in data:
        kw["underlay"] = _underlay(c, data["underlay"], f"{path}.underlay")
    if "mtu" in data:
        low, high = UNDERLAY_MTU_RANGE
        mtu = c.typed(data["mtu"], int, f"{path}.mtu", "a number", "e.g. 1500, or 9000 with "
                      "jumbo frames")
        if mtu is not None and not low <= mtu <= high:
            c.add(f"{path}.mtu", f"underlay MTU {mtu} is out of range",
                  f"use {low} to {high} (1500 for Ethernet, 9000 with jumbo frames)")
        elif mtu is not None:
            kw["mtu"] = mtu
    # kept when something is wrong too (the lab is refused anyway): its endpoints then read
    # "hosts.b.docker: ..." rather than "unknown host 'b'"
    return LabHost(name, **kw)


def _clashes(c: Collector, hosts: tuple[LabHost, ...]) -> None:
    """Two hosts that are one machine, or that share an underlay address."""
    seen: dict[tuple[str, str], str] = {}
    for h in hosts:
        keys = [("underlay", h.underlay), ("engine", h.engine), ("sandbox", h.sandbox),
                ("docker", h.docker and h.docker.url)]
        for key, value in keys:
            if value is None:
                continue
            other = seen.setdefault((key, value), h.name)
            if other != h.name:
                c.add(f"hosts.{h.name}.{key}", f"host {other!r} has the same {key} {value!r}",
                      "each host is its own machine with its own underlay address")


def parse_hosts(c: Collector, raw: Any) -> Hosts | None:
    """The ``hosts:`` section (None when absent or empty)."""
    data = c.mapping(raw, "hosts")
    if not data:
        return None
    hosts = [h for h in (parse_host(c, name, entry) for name, entry in data.items())
             if h is not None]
    _clashes(c, tuple(hosts))
    if len(data) > 1:
        for h in hosts:
            if "underlay" not in (data[h.name] or {}):
                c.add(f"hosts.{h.name}", "it has no underlay address",
                      "with two hosts or more, each says where the others reach it: "
                      "underlay: ADDRESS")
    return Hosts(tuple(hosts)) if hosts else None


# ------------------------------------------------------------------------------------ VXLAN

@dataclass(frozen=True)
class VxlanSpec:
    """``network.vxlan``: the segment that stretches the lab bridge over the hosts."""

    vni: int
    port: int = VXLAN_PORT
    #: the smallest underlay MTU among the hosts (not written back: it comes from hosts:)
    underlay_mtu: int = UNDERLAY_MTU
    #: the host whose underlay is the smallest (for the MTU note)
    narrowest: str = ""

    @property
    def lab_mtu(self) -> int:
        """The largest lab MTU the underlay carries with VXLAN's 50 bytes added."""
        return min(self.underlay_mtu - VXLAN_OVERHEAD, LAB_MTU_MAX)

    def to_dict(self) -> dict[str, int]:
        return {"vni": self.vni, "port": self.port}


def default_vni(lab: str) -> int:
    """A VNI derived from the lab's name (two labs sharing hosts get different ones)."""
    return 1 + zlib.crc32(lab.encode()) % VNI_RANGE[1]


def _bounded(c: Collector, data: Mapping[str, Any], key: str, bounds: tuple[int, int],
             hint: str) -> int | None:
    path = f"network.vxlan.{key}"
    value = c.typed(data[key], int, path, "a number", hint)
    if value is not None and not bounds[0] <= value <= bounds[1]:
        c.add(path, f"{key} {value} is out of range", f"use {bounds[0]} to {bounds[1]}; {hint}")
        return None
    return value


def parse_vxlan(c: Collector, raw: Any, hosts: Hosts | None, lab: str) -> VxlanSpec | None:
    """``network.vxlan`` — present when written, or made with defaults when the lab has two
    hosts or more (VNI from the lab name, port 4789); None for a one-machine lab."""
    if raw is None and (hosts is None or not hosts.multi):
        return None
    data = c.mapping(raw, "network.vxlan")
    if data is None:
        return None
    c.unknown_keys(data, ("vni", "port"), "network.vxlan")
    vni = default_vni(lab)
    port = VXLAN_PORT
    if "vni" in data:
        vni = _bounded(c, data, "vni", VNI_RANGE, "e.g. 4242") or vni
    if "port" in data:
        port = _bounded(c, data, "port", (1, 65535), f"{VXLAN_PORT} is VXLAN's own") or port
    narrowest, mtu = "", UNDERLAY_MTU
    if hosts is not None and hosts.hosts:
        h = min(hosts.hosts, key=lambda h: h.underlay_mtu)
        narrowest, mtu = h.name, h.underlay_mtu
    return VxlanSpec(vni, port, mtu, narrowest)


def check_mtu(c: Collector, vx: VxlanSpec, mtu: int) -> None:
    """A lab MTU written in the file must leave VXLAN its 50 bytes."""
    if mtu > vx.lab_mtu:
        where = f" (host {vx.narrowest!r})" if vx.narrowest else ""
        c.add("network.mtu", f"MTU {mtu} does not fit VXLAN over an underlay of "
              f"{vx.underlay_mtu}{where}: VXLAN adds {VXLAN_OVERHEAD} bytes",
              f"use network.mtu: {vx.lab_mtu} or less, or leave it out to get it; MTU "
              f"{mtu} needs an underlay of {mtu + VXLAN_OVERHEAD} on every host "
              "(hosts.NAME.mtu, jumbo frames)")


def mtu_note(vx: VxlanSpec, mtu: int) -> str:
    """Why the lab has the MTU it has, in one sentence."""
    where = f" (host {vx.narrowest})" if vx.narrowest else ""
    if mtu < vx.lab_mtu:
        return (f"lab MTU {mtu}, as written; the underlay{where} carries {vx.underlay_mtu}, "
                f"room for {vx.lab_mtu} with VXLAN's {VXLAN_OVERHEAD} bytes")
    if vx.underlay_mtu - VXLAN_OVERHEAD >= 1500:
        return (f"lab MTU {mtu}: every host's underlay carries {vx.underlay_mtu} (jumbo "
                f"frames), room for VXLAN's {VXLAN_OVERHEAD} bytes")
    return (f"lab MTU {mtu}: VXLAN adds {VXLAN_OVERHEAD} bytes to every frame and the "
            f"smallest underlay{where} carries {vx.underlay_mtu}; an underlay of "
            f"{1500 + VXLAN_OVERHEAD} or more on every host (jumbo frames, hosts.NAME.mtu) "
            "would give 1500")


def fabric_notes(lab: LabSpec) -> list[Problem]:
    """What a plan says about a lab spread over hosts: which MTU it has and why."""
    vx = lab.network.vxlan
    if vx is None:
        return []
    return [Problem("network.mtu", mtu_note(vx, lab.network.mtu),
                    f"every endpoint gets MTU {lab.network.mtu}; a packet larger than that "
                    "is fragmented or, with DF set, refused at its sender")]


# -------------------------------------------------------------------------------- placement

def placement(lab: LabSpec) -> dict[str, str]:
    """Endpoint name → the host it runs on (its ``host:``, else the first host); an empty
    mapping for a lab without ``hosts:``."""
    hosts = lab.sections.get("hosts")
    if not isinstance(hosts, Hosts) or not hosts.hosts:
        return {}
    first = hosts.primary.name
    return {ep.name: getattr(ep, "host", None) or first for ep in lab.endpoints}


def vxlan_resource(lab: LabSpec, host: str) -> Resource | None:
    """The VXLAN device ``host`` needs (kind ``vxlan``, named after the device): enslaved to
    the lab bridge, sending to every other host's underlay address (unicast head-end
    replication), learning MACs; None for a one-machine lab."""
    from hybridnb.core.naming import vxlan_device
    from hybridnb.core.resource import Resource

    hosts, vx = lab.sections.get("hosts"), lab.network.vxlan
    if vx is None or not isinstance(hosts, Hosts) or not hosts.multi:
        return None
    me = hosts.get(host)
    device = vxlan_device(lab.name)
    spec = {"device": device, "bridge": lab.network.bridge, "vni": vx.vni, "port": vx.port,
            "local": me.underlay, "host": host, "mtu": lab.network.mtu,
            "remotes": [h.underlay for h in hosts.hosts if h.name != host]}
    summary = (f"vni {vx.vni} udp/{vx.port} {me.underlay} -> "
               f"{', '.join(str(r) for r in spec['remotes'])} mtu {lab.network.mtu}")
    return Resource("vxlan", device, spec, summary)


#: resource kinds every host of a spread lab has (the bridge, stretched; the firewall rule
#: and the policy table, which filter what is bridged on that host)
EVERY_HOST = ("bridge", "firewall", "policy")
#: resource kinds only the primary has (the lab's DNS server, on the gateway address)
PRIMARY_ONLY = ("dns",)
#: Docker's option that binds a network to an existing bridge without putting the gateway
#: address on it (moby#40579, Docker 20.10+): the gateway lives on the primary's bridge
INHIBIT_IPV4 = "inhibit_ipv4"


def _placed_on(lab: LabSpec, res: Resource, host: str, where: Mapping[str, str]) -> bool:
    """Whether ``res`` (of the whole lab) belongs to ``host``."""
    primary = lab.sections["hosts"].primary.name
    if res.kind in EVERY_HOST:
        return True
    if res.kind in PRIMARY_ONLY:
        return host == primary
    if res.kind == "network":           # the Docker network: where containers run
        return any(where.get(ep.name) == host for ep in lab.endpoints
                   if ep.kind == "container")
    # an endpoint, or what a section makes for one (a link's impairments) follows it
    if res.name in where:
        return where[res.name] == host
    return host == primary               # anything else of the lab: on the primary


def _for_host(lab: LabSpec, res: Resource, host: str) -> Resource:
    """``res`` as ``host`` makes it: a non-primary host's bridge carries no lab address and
    has its own MAC; its Docker network leaves the (absent) gateway address alone."""
    from hybridnb.core.naming import bridge_mac
    from hybridnb.core.resource import Resource

    if host == lab.sections["hosts"].primary.name:
        return res
    if res.kind == "bridge":
        spec = dict(res.spec, address=None,
                    mac=bridge_mac(lab.name, lab.network.bridge, host))
        return Resource(res.kind, res.name, spec,
                        f"no lab address (gateway on the primary) mtu {lab.network.mtu}")
    if res.kind == "network":
        return Resource(res.kind, res.name, dict(res.spec, **{INHIBIT_IPV4: True}),
                        res.summary + ", gateway on the primary")
    return res


def host_resources(lab: LabSpec, compiled: list[Resource], host: str) -> list[Resource]:
    """What ``host`` makes of a lab spread over several hosts: of the whole lab's resources
    (``compiled``, one IPAM over the whole spec: :func:`hybridnb.core.compile.compile_lab`)
    the bridge, the firewall rule and the policy table on every host, the DNS server on the
    primary only, the Docker network where containers run, each endpoint (and its link) on
    its host (:func:`placement`) — plus the host's VXLAN device (:func:`vxlan_resource`).
    A non-primary host's bridge carries no lab address and a MAC of its own."""
    from hybridnb.core.resource import Resource

    where = placement(lab)
    out = [_for_host(lab, r, host) for r in compiled if _placed_on(lab, r, host, where)]
    vx = vxlan_resource(lab, host)
    if vx is not None:
        out.append(vx)
    out.sort(key=Resource.sort_key)
    return out


def vxlan_clash(a: LabSpec, b: LabSpec) -> str | None:
    """Why two labs cannot both run on the same hosts (the same VNI and port over a shared
    underlay address would merge their segments), or None."""
    va, vb = a.network.vxlan, b.network.vxlan
    ha, hb = a.sections.get("hosts"), b.sections.get("hosts")
    if va is None or vb is None or not isinstance(ha, Hosts) or not isinstance(hb, Hosts):
        return None
    if (va.vni, va.port) != (vb.vni, vb.port):
        return None
    shared = sorted({h.underlay for h in ha.hosts} & {h.underlay for h in hb.hosts} - {None})
    if not shared:
        return None
    return (f"labs {a.name!r} and {b.name!r} both use VNI {va.vni} on UDP port {va.port} "
            f"over {', '.join(str(s) for s in shared)}: their segments would merge")


__all__ = [
    "VXLAN_OVERHEAD",
    "VXLAN_PORT",
    "BadURL",
    "EngineURL",
    "Hosts",
    "LabHost",
    "VxlanSpec",
    "check_mtu",
    "default_vni",
    "fabric_notes",
    "host_resources",
    "mtu_note",
    "parse_docker_url",
    "parse_hosts",
    "parse_libvirt_uri",
    "parse_vxlan",
    "placement",
    "vxlan_clash",
    "vxlan_resource",
]
