"""The lab's DNS zone: every record the lab's name server answers, as plain data.

A lab serves one forward domain (``hybrid.local``) and the reverse zone(s) of its subnet
(``1.0.10.in-addr.arpa`` for 10.0.1.0/24).  :class:`Zone` turns the lab's facts — endpoint
names and addresses, the gateway, the services endpoints declare — into the complete record
set:

* ``A``   ``NAME.<domain>`` for every endpoint and ``gateway.<domain>`` for the gateway;
* ``PTR`` the reverse name of every such address that lies in the lab subnet;
* ``SOA``/``NS`` at the apex of every zone (the name server is ``gateway.<domain>``);
* ``SRV`` ``_svc._proto.NAME.<domain>`` for every service an endpoint declares, and the
  aggregate ``_svc._proto.<domain>`` listing every endpoint that offers it (the shape
  Prometheus' DNS service discovery asks for).

:meth:`Zone.lookup` answers a question the way an authoritative server must: the records, or
NODATA (the name exists, the type does not) or NXDOMAIN, both with the zone's SOA in the
authority section; ``None`` for names outside every zone the lab owns.  The SOA serial is
derived from the content, so equal zones have equal serials and fingerprints.

Pure: no sockets, no dnslib; names are lowercase, absolute (trailing dot) strings.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

#: Name of the gateway (and of the zone's name server) inside the lab domain.
GATEWAY_NAME = "gateway"
DEFAULT_TTL = 60
#: SOA timers: refresh, retry, expire (the minimum is the zone TTL: negative-answer caching).
SOA_TIMERS = (3600, 600, 86400)

_LABEL = re.compile(r"^(?:[a-z0-9_]|[a-z0-9_][a-z0-9_-]{0,61}[a-z0-9])$")


def absolute(name: str) -> str:
    """``Web.Hybrid.local`` → ``web.hybrid.local.`` (the form every record name uses)."""
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


def reverse_name(address: str) -> str:
    """``10.0.1.5`` → ``5.1.0.10.in-addr.arpa.``"""
    return ipaddress.IPv4Address(address).reverse_pointer + "."


def reverse_origins(subnet: ipaddress.IPv4Network) -> tuple[str, ...]:
    """The in-addr.arpa zones that cover a subnet at octet boundaries.

    A /24 (or a longer prefix) lives in one ``c.b.a.in-addr.arpa`` zone; a /16 in one
    ``b.a.in-addr.arpa``; a /20 spans sixteen /24 zones.
    """
    p = subnet.prefixlen
    if p >= 24:
        nets = [subnet.supernet(new_prefix=24)]
    elif p % 8 == 0:
        nets = [subnet]
    else:
        nets = list(subnet.subnets(new_prefix=(p // 8 + 1) * 8))
    out = []
    for net in nets:
        octets = str(net.network_address).split(".")[: net.prefixlen // 8]
        out.append(".".join(reversed(octets)) + ".in-addr.arpa.")
    return tuple(out)


@dataclass(frozen=True, order=True)
class Service:
    """An SRV service an endpoint offers: ``Service("http", "tcp", "web", 80)``."""

    service: str
    proto: str
    endpoint: str
    port: int
    priority: int = 0
    weight: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "service", self.service.lower().lstrip("_"))
        object.__setattr__(self, "proto", self.proto.lower().lstrip("_"))
        object.__setattr__(self, "endpoint", self.endpoint.lower())

    @classmethod
    def from_value(cls, value: "Service | Mapping[str, Any] | Iterable[Any]") -> "Service":
        if isinstance(value, Service):
            return value
        if isinstance(value, Mapping):
            return cls(**dict(value))
        return cls(*value)

    def to_dict(self) -> dict[str, Any]:
        return {"service": self.service, "proto": self.proto, "endpoint": self.endpoint,
                "port": self.port, "priority": self.priority, "weight": self.weight}


@dataclass(frozen=True, order=True)
class Record:
    """One resource record.  ``data`` by type: A ``(address,)``, PTR/NS ``(target,)``,
    SRV ``(priority, weight, port, target)``, SOA ``(mname, rname, serial, refresh, retry,
    expire, minimum)``."""

    name: str
    rtype: str
    data: tuple[Any, ...]
    ttl: int = DEFAULT_TTL

    @property
    def text(self) -> str:
        """The record as a zone-file line."""
        return f"{self.name} {self.ttl} IN {self.rtype} " + " ".join(str(d) for d in self.data)


@dataclass(frozen=True)
class Lookup:
    """The authoritative answer to one question.  ``rcode`` is ``NOERROR`` or ``NXDOMAIN``;
    an empty ``answer`` with ``NOERROR`` is NODATA.  ``authority`` holds the SOA for negative
    answers."""

    rcode: str
    answer: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()

    @property
    def nodata(self) -> bool:
        return self.rcode == "NOERROR" and not self.answer


@dataclass(frozen=True)
class Zone:
    """The lab's names: build once from the lab's facts, then look up or serialize."""

    domain: str
    records: Mapping[str, str]                  # endpoint name -> IPv4 address
    gateway: str
    services: tuple[Service, ...] = ()
    ttl: int = DEFAULT_TTL
    subnet: str | None = None                   # default: the gateway's /24
    upstream: tuple[str, ...] = ()              # resolvers for names outside the lab
    _index: dict[str, dict[str, tuple[Record, ...]]] = field(
        default_factory=dict, init=False, repr=False, compare=False)
    _existing: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)
    _all: tuple[Record, ...] = field(default=(), init=False, repr=False, compare=False)
    _origins: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("domain", absolute(self.domain))
        set_("records", {k.lower(): str(ipaddress.IPv4Address(v))
                         for k, v in sorted(self.records.items())})
        set_("gateway", str(ipaddress.IPv4Address(self.gateway)))
        set_("services", tuple(sorted(Service.from_value(s) for s in self.services)))
        set_("subnet", str(ipaddress.IPv4Network(self.subnet or f"{self.gateway}/24",
                                                 strict=False)))
        set_("upstream", tuple(str(ipaddress.IPv4Address(u)) for u in self.upstream))
        # every lookup asks for them: computed once (a server's zone load does ~20 per name)
        set_("_origins", (self.domain,) + reverse_origins(ipaddress.IPv4Network(self.subnet)))
        self._validate()
        records = self._build()
        index: dict[str, dict[str, list[Record]]] = {}
        for rec in records:
            index.setdefault(rec.name, {}).setdefault(rec.rtype, []).append(rec)
        set_("_index", {n: {t: tuple(rs) for t, rs in types.items()}
                        for n, types in index.items()})
        existing: set[str] = set()
        for name in index:
            origin = self.origin_of(name)
            while name != origin and name not in existing:
                existing.add(name)
                name = name.split(".", 1)[1]
            existing.add(name)
        set_("_existing", frozenset(existing))
        set_("_all", tuple(records))

    # ----------------------------------------------------------------- construction
    def _validate(self) -> None:
        problems = []
        if not self.domain.strip(".") or len(self.domain) > 200:
            problems.append(f"domain {self.domain!r} is not a valid domain name")
        for label in self.domain.rstrip(".").split("."):
            if not _LABEL.match(label):
                problems.append(f"domain {self.domain!r}: bad label {label!r}")
        for name in self.records:
            if not _LABEL.match(name) or name.startswith("_"):
                problems.append(f"endpoint name {name!r} is not a valid DNS label")
        if GATEWAY_NAME in self.records and self.records[GATEWAY_NAME] != self.gateway:
            problems.append(f"endpoint name {GATEWAY_NAME!r} is reserved for the gateway")
        for svc in self.services:
            for label in (svc.service, svc.proto):
                if not _LABEL.match(label) or label.startswith("_"):
                    problems.append(f"service {svc}: bad label {label!r}")
            if svc.endpoint not in self.records and svc.endpoint != GATEWAY_NAME:
                problems.append(f"service {svc.service}/{svc.proto} names unknown endpoint "
                                f"{svc.endpoint!r}")
            if not 0 <= svc.port <= 65535 or not 0 <= svc.priority <= 65535 \
                    or not 0 <= svc.weight <= 65535:
                problems.append(f"service {svc}: port/priority/weight out of range")
        if not 0 <= self.ttl <= 2**31 - 1:
            problems.append(f"ttl {self.ttl} out of range")
        if problems:
            raise ValueError("invalid DNS zone: " + "; ".join(problems))

    @property
    def nameserver(self) -> str:
        return f"{GATEWAY_NAME}.{self.domain}"

    @property
    def origins(self) -> tuple[str, ...]:
        """The zones this lab is authoritative for: the domain, then the reverse zones."""
        return self._origins

    def _content(self) -> dict[str, Any]:
        return {"domain": self.domain, "records": dict(self.records), "gateway": self.gateway,
                "services": [s.to_dict() for s in self.services], "ttl": self.ttl,
                "subnet": self.subnet}

    @property
    def serial(self) -> int:
        """SOA serial derived from the content (deterministic, never 0)."""
        digest = hashlib.sha256(json.dumps(self._content(), sort_keys=True).encode()).digest()
        return int.from_bytes(digest[:4], "big") or 1

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode())
        return digest.hexdigest()[:12]

    def _build(self) -> list[Record]:
        ttl, dom = self.ttl, self.domain
        hosts = dict(self.records)
        hosts[GATEWAY_NAME] = self.gateway
        net = ipaddress.IPv4Network(self.subnet)
        out: list[Record] = []
        serial = self.serial
        for origin in self.origins:
            out.append(Record(origin, "SOA", (self.nameserver, f"hostmaster.{dom}", serial,
                                              *SOA_TIMERS, ttl), ttl))
            out.append(Record(origin, "NS", (self.nameserver,), ttl))
        for name, addr in sorted(hosts.items()):
            fqdn = f"{name}.{dom}"
            out.append(Record(fqdn, "A", (addr,), ttl))
            if ipaddress.IPv4Address(addr) in net:
                out.append(Record(reverse_name(addr), "PTR", (fqdn,), ttl))
        for svc in self.services:
            target = f"{svc.endpoint}.{dom}"
            data = (svc.priority, svc.weight, svc.port, target)
            out.append(Record(f"_{svc.service}._{svc.proto}.{target}", "SRV", data, ttl))
            out.append(Record(f"_{svc.service}._{svc.proto}.{dom}", "SRV", data, ttl))
        return sorted(set(out))

    # ----------------------------------------------------------------------- queries
    @property
    def all_records(self) -> tuple[Record, ...]:
        return self._all

    def names(self) -> tuple[str, ...]:
        """Every owner name that holds records, sorted."""
        return tuple(sorted(self._index))

    def types_at(self, name: str) -> tuple[str, ...]:
        return tuple(sorted(self._index.get(absolute(name), {})))

    def origin_of(self, name: str) -> str | None:
        """The zone (longest matching origin) a name belongs to, or ``None``."""
        name = absolute(name)
        best = None
        for origin in self.origins:
            if (name == origin or name.endswith("." + origin)) and \
                    (best is None or len(origin) > len(best)):
                best = origin
        return best

    def soa(self, origin: str) -> Record:
        return self._index[origin]["SOA"][0]

    def lookup(self, name: str, rtype: str) -> Lookup | None:
        """Authoritative answer for ``name``/``rtype`` (``ANY`` gives every record at the
        name); ``None`` when the name is outside every zone of the lab."""
        name, rtype = absolute(name), rtype.upper()
        origin = self.origin_of(name)
        if origin is None:
            return None
        types = self._index.get(name)
        if types:
            if rtype == "ANY":
                return Lookup("NOERROR", tuple(r for t in sorted(types) for r in types[t]))
            if rtype in types:
                return Lookup("NOERROR", types[rtype])
        soa = (self.soa(origin),)
        if name in self._existing:
            return Lookup("NOERROR", (), soa)
        return Lookup("NXDOMAIN", (), soa)

    # ------------------------------------------------------------------- serialization
    def to_dict(self) -> dict[str, Any]:
        """The zone file content (JSON-able) the DNS server loads."""
        data = self._content()
        data["upstream"] = list(self.upstream)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Zone":
        return cls(domain=data["domain"], records=data.get("records", {}),
                   gateway=data["gateway"],
                   services=tuple(Service.from_value(s) for s in data.get("services", ())),
                   ttl=int(data.get("ttl", DEFAULT_TTL)), subnet=data.get("subnet"),
                   upstream=tuple(data.get("upstream", ())))

    def to_text(self) -> str:
        """The whole record set as zone-file lines (sorted, for humans and golden files)."""
        return "".join(r.text + "\n" for r in self._all)


def zone_from_spec(spec: Mapping[str, Any]) -> Zone:
    """The zone a ``dns`` resource spec describes."""
    return Zone(domain=spec["domain"], records=dict(spec.get("records", {})),
                gateway=spec["gateway"], services=tuple(spec.get("services", ())),
                ttl=int(spec.get("ttl", 60)), subnet=spec.get("subnet"),
                upstream=tuple(spec.get("upstream", ())))
