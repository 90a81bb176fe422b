"""Network policies between a lab's endpoints: groups, rules, validation and ``explain``.

A lab file may say who may talk to whom on the lab bridge::

    groups:
      frontend: [web, api]                 # by name (endpoints, other groups, selectors)
      data: {labels: {tier: data}}         # by label (``members:`` and ``labels:`` unite)
    policies:
      default: allow                       # or deny: what no rule decides
      rules:
        - {from: frontend, to: data, allow: [tcp/5432]}
        - {from: any, to: data, deny: all}
        - {from: vms, to: frontend, allow: [http/80, icmp]}
        - {from: any, to: gateway, deny: [tcp/22], comment: no ssh to the lab host}

**Selectors** (``from:`` and ``to:``, a string or a list of them, which unite):

* an endpoint name, or a group name from ``groups:``;
* ``any`` — every endpoint of the lab (not the gateway);
* ``hosts``, ``containers``, ``vms`` — every endpoint of that kind (the plural of any kind
  the lab has works the same way);
* ``label:KEY=VALUE`` — every endpoint carrying that label;
* ``gateway`` — the lab's gateway (the lab host itself: its DNS server), only in ``to:``.

A group, an endpoint or a label may not take a built-in selector's name.

**Services** (``allow:``/``deny:``, a list, or one string): ``tcp/PORT``, ``udp/PORT``,
``http/PORT`` (TCP; ``http`` alone is ``tcp/80``), ranges ``tcp/8000-8080``, ``tcp`` or
``udp`` (every port), ``icmp``, and ``all`` (everything IPv4).

**Semantics**

* A rule matches a *flow* — a connection opened by an endpoint of ``from`` to an endpoint of
  ``to`` with one of the services — and the first rule that matches decides (allow or deny).
* Stateful: a flow's replies, and the ICMP errors it causes, follow its verdict; the opposite
  direction is a different flow with its own verdict.
* Built in, after the rules and before the default: DNS to the gateway (``udp/53``,
  ``tcp/53``) is allowed, so names resolve under ``default: deny``; a rule naming the gateway
  overrides it.  ARP (and IPv6 neighbour discovery) is never filtered.
* ``default`` decides every other flow between endpoints and from an endpoint to the gateway.
  What the gateway itself opens (probes from the lab host, doctor) is never filtered.

:func:`parse_policy` validates the ``groups:`` and ``policies:`` sections against the lab's
endpoints (:class:`Member`: name, kind, address, labels) and reports every problem at once,
each with its path and a hint.  Rules that can never match because earlier rules decide all
their flows come back as :attr:`Policy.warnings` with the rule numbers.
:meth:`Policy.explain` answers "would web reach db on tcp/5432?" with the deciding rule.

This module is pure: no host access.  :mod:`hybridnb.core.nftables` compiles a policy to the
nftables ruleset that enforces it.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from hybridnb.errors import Problem, ValidationError

ALLOW = "allow"
DENY = "deny"
VERDICTS = (ALLOW, DENY)
ANY = "any"
GATEWAY = "gateway"
LABEL_PREFIX = "label:"
KNOWN_KINDS = ("container", "vm", "host")
#: Protocols a service may name ("http" is TCP; "all" is every protocol).
PROTOCOLS = ("tcp", "udp", "http", "icmp", "all")
MAX_PORT = 65535
DNS_PORT = 53

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SERVICE = re.compile(r"^(?P<proto>[a-z0-9-]+)(?:/(?P<lo>\d+)(?:-(?P<hi>\d+))?)?$")
_SERVICE_HINT = "write tcp/PORT, udp/PORT, http/PORT, tcp/LOW-HIGH, tcp, udp, icmp or all"
_RULE_KEYS = ("from", "to", "allow", "deny", "comment")
_POLICY_KEYS = ("default", "rules")
_GROUP_KEYS = ("members", "labels")


def _did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    import difflib

    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def _typename(value: Any) -> str:
    return {str: "a string", int: "a number", float: "a number", bool: "a boolean",
            list: "a list", dict: "a mapping", type(None): "nothing"}.get(
                type(value), type(value).__name__)


# ------------------------------------------------------------------------------ members

@dataclass(frozen=True)
class Member:
    """What a policy needs to know of one endpoint."""

    name: str
    kind: str
    address: str
    labels: Mapping[str, str] = field(default_factory=dict)


def members_of(endpoints: Iterable[Any], addresses: Mapping[str, Any]) -> dict[str, Member]:
    """:class:`Member` records from endpoint specs (anything with ``name``, ``kind`` and,
    optionally, ``labels``) and the lab's address allocation."""
    out: dict[str, Member] = {}
    for ep in endpoints:
        labels = {str(k): str(v) for k, v in (getattr(ep, "labels", None) or {}).items()}
        out[ep.name] = Member(ep.name, ep.kind, str(addresses[ep.name]), labels)
    return dict(sorted(out.items()))


# ------------------------------------------------------------------------------ services

@dataclass(frozen=True)
class Ports:
    """A set of ports as sorted, disjoint, inclusive ranges; ``FULL`` is every port."""

    ranges: tuple[tuple[int, int], ...] = ()

    @staticmethod
    def of(ranges: Iterable[tuple[int, int]]) -> "Ports":
        merged: list[list[int]] = []
        for lo, hi in sorted(ranges):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        return Ports(tuple((a, b) for a, b in merged))

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def __contains__(self, port: int) -> bool:
        return any(lo <= port <= hi for lo, hi in self.ranges)

    def __or__(self, other: "Ports") -> "Ports":
        return Ports.of(self.ranges + other.ranges)

    def __sub__(self, other: "Ports") -> "Ports":
        out: list[tuple[int, int]] = []
        for lo, hi in self.ranges:
            pieces = [(lo, hi)]
            for olo, ohi in other.ranges:
                nxt = []
                for a, b in pieces:
                    if ohi < a or olo > b:
                        nxt.append((a, b))
                        continue
                    if a < olo:
                        nxt.append((a, olo - 1))
                    if ohi < b:
                        nxt.append((ohi + 1, b))
                pieces = nxt
            out.extend(pieces)
        return Ports.of(out)

    def __and__(self, other: "Ports") -> "Ports":
        return self - (self - other)

    def is_full(self) -> bool:
        return self.ranges == ((1, MAX_PORT),)

    def __str__(self) -> str:
        return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.ranges)


FULL = Ports(((1, MAX_PORT),))
NONE = Ports()


@dataclass(frozen=True)
class Service:
    """One entry of ``allow:``/``deny:`` as written (``label``) and what it matches:
    ``proto`` is ``tcp``, ``udp``, ``icmp`` or ``all``; ``ports`` for TCP/UDP."""

    label: str
    proto: str
    ports: Ports = NONE

    def matches(self, proto: str, port: int | None) -> bool:
        if self.proto == "all":
            return True
        if self.proto != proto:
            return False
        if self.proto in ("tcp", "udp"):
            return self.ports.is_full() or (port is not None and port in self.ports)
        return True


@dataclass(frozen=True)
class Space:
    """A set of flows' protocol parts (what a rule's services cover), for shadow analysis:
    TCP ports, UDP ports, ICMP, and every other IP protocol."""

    tcp: Ports = NONE
    udp: Ports = NONE
    icmp: bool = False
    other: bool = False

    @staticmethod
    def of(services: Iterable[Service]) -> "Space":
        tcp, udp, icmp, other = NONE, NONE, False, False
        for s in services:
            if s.proto == "all":
                return Space(FULL, FULL, True, True)
            if s.proto == "tcp":
                tcp = tcp | s.ports
            elif s.proto == "udp":
                udp = udp | s.ports
            elif s.proto == "icmp":
                icmp = True
        return Space(tcp, udp, icmp, other)

    def __bool__(self) -> bool:
        return bool(self.tcp) or bool(self.udp) or self.icmp or self.other

    def __sub__(self, o: "Space") -> "Space":
        return Space(self.tcp - o.tcp, self.udp - o.udp, self.icmp and not o.icmp,
                     self.other and not o.other)

    def __and__(self, o: "Space") -> "Space":
        return Space(self.tcp & o.tcp, self.udp & o.udp, self.icmp and o.icmp,
                     self.other and o.other)

    def __or__(self, o: "Space") -> "Space":
        return Space(self.tcp | o.tcp, self.udp | o.udp, self.icmp or o.icmp,
                     self.other or o.other)

    def __str__(self) -> str:
        parts = []
        for proto, ports in (("tcp", self.tcp), ("udp", self.udp)):
            if ports:
                parts.append(proto if ports.is_full() else f"{proto}/{ports}")
        parts += ["icmp"] if self.icmp else []
        parts += ["other protocols"] if self.other else []
        return ", ".join(parts)


#: Every flow (what ``all`` covers).
EVERYTHING = Space(FULL, FULL, True, True)


def parse_service(text: Any, path: str) -> tuple[Service | None, list[Problem]]:
    """One service string → :class:`Service`, or the problems with it."""
    if not isinstance(text, str):
        return None, [Problem(path, f"expected a service string, got {_typename(text)}",
                              _SERVICE_HINT)]
    m = _SERVICE.match(text.strip().lower())
    if m is None:
        return None, [Problem(path, f"{text!r} is not a service", _SERVICE_HINT)]
    proto, lo, hi = m.group("proto"), m.group("lo"), m.group("hi")
    if proto not in PROTOCOLS:
        hint = _did_you_mean(proto, PROTOCOLS)
        if hint is None and lo is not None:
            hint = f"name the transport: write tcp/{lo} or udp/{lo}"
        return None, [Problem(path, f"unknown protocol {proto!r} in {text!r}",
                              hint or _SERVICE_HINT)]
    if proto in ("icmp", "all"):
        if lo is not None:
            return None, [Problem(path, f"{proto} takes no port", f"write just {proto!r}")]
        return Service(text, proto), []
    if lo is None:
        return Service(text, "tcp" if proto == "http" else proto,
                       Ports(((80, 80),)) if proto == "http" else FULL), []
    low, high = int(lo), int(hi) if hi is not None else int(lo)
    if not (1 <= low <= MAX_PORT and 1 <= high <= MAX_PORT) or low > high:
        return None, [Problem(path, f"port {lo}{'-' + hi if hi else ''} is out of range",
                              "ports are 1-65535, ranges LOW-HIGH with LOW <= HIGH")]
    return Service(text, "tcp" if proto == "http" else proto, Ports(((low, high),))), []


# ------------------------------------------------------------------------------ selectors

@dataclass(frozen=True)
class Selector:
    """A resolved ``from:``/``to:`` value: the text as written, the endpoints it selects,
    and whether it is ``any`` (every endpoint) or includes the gateway."""

    text: str
    names: frozenset[str]
    any: bool = False
    gateway: bool = False

    def has(self, name: str) -> bool:
        if name == GATEWAY:
            return self.gateway
        return self.any or name in self.names

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Rule:
    """One rule of ``policies.rules`` (``number`` counts from 1, as messages say)."""

    number: int
    source: Selector
    target: Selector
    verdict: str
    services: tuple[Service, ...]
    comment: str = ""

    @property
    def path(self) -> str:
        return f"policies.rules[{self.number - 1}]"

    @property
    def space(self) -> Space:
        return Space.of(self.services)

    def matches(self, src: str, dst: str, proto: str, port: int | None) -> bool:
        return (self.source.has(src) and self.target.has(dst)
                and any(s.matches(proto, port) for s in self.services))

    def describe(self) -> str:
        return (f"{self.source} -> {self.target} {self.verdict} "
                f"{', '.join(s.label for s in self.services)}")

    def __str__(self) -> str:
        return f"rule {self.number} ({self.describe()})"


@dataclass(frozen=True)
class Flow:
    """A connection to judge: ``proto`` is tcp, udp, icmp (or another IP protocol name)."""

    source: str
    target: str
    proto: str
    port: int | None = None

    @property
    def check(self) -> str:
        return self.proto if self.port is None else f"{self.proto}/{self.port}"

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} {self.check}"


@dataclass(frozen=True)
class Decision:
    """What the policy does with a flow and why: ``rule`` is the deciding rule's number, or
    None for a built-in (``builtin`` names it) or the default."""

    flow: Flow
    verdict: str
    rule: int | None = None
    builtin: str = ""
    why: str = ""

    @property
    def allowed(self) -> bool:
        return self.verdict == ALLOW

    @property
    def decided_by(self) -> str:
        """``rule 2``, ``default`` or ``built-in: ...`` — short, for tables."""
        if self.rule is not None:
            return f"rule {self.rule}"
        return f"built-in: {self.builtin}" if self.builtin else "default"

    def __str__(self) -> str:
        return f"{self.flow}: {self.verdict} ({self.why})"

    def _repr_html_(self) -> str:
        colour = "#d4edda" if self.allowed else "#f8d7da"
        return (f"<div style='background:{colour};padding:4px'><code>"
                f"{html.escape(str(self.flow))}</code>: <b>{self.verdict}</b> "
                f"({html.escape(self.why)})</div>")

    def __repr__(self) -> str:
        return str(self)


def parse_check(check: str) -> tuple[str, int | None]:
    """``tcp/5432`` → (``tcp``, 5432); ``http`` → (``tcp``, 80); ``http/8080`` → (``tcp``,
    8080); ``icmp`` → (``icmp``, None); ``dns`` → (``udp``, 53).  ValueError if malformed."""
    text = check.strip().lower()
    if text == "dns":
        return "udp", DNS_PORT
    m = re.match(r"^(?P<proto>[a-z0-9-]+)(?:/(?P<port>\d{1,5}))?$", text)
    if m is None or (m.group("port") is not None and m.group("proto") not in
                     ("tcp", "udp", "http")):
        raise ValueError(f"{check!r} is not a check (write tcp/PORT, udp/PORT, http/PORT, "
                         "icmp or dns)")
    proto, port = m.group("proto"), m.group("port")
    if proto == "http":
        return "tcp", int(port) if port else 80
    return proto, int(port) if port else None


# ------------------------------------------------------------------------------ policy

@dataclass(frozen=True)
class Policy:
    """A validated policy: the default verdict, the rules in order, the groups as resolved
    endpoint sets, the endpoints it was validated against, and shadowing warnings."""

    default: str
    rules: tuple[Rule, ...]
    members: Mapping[str, Member]
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    warnings: tuple[Problem, ...] = ()

    def decide(self, flow: Flow) -> Decision:
        if flow.source == GATEWAY:
            return Decision(flow, ALLOW, builtin="from the gateway",
                            why="what the gateway opens is never filtered")
        for rule in self.rules:
            if rule.matches(flow.source, flow.target, flow.proto, flow.port):
                return Decision(flow, rule.verdict, rule.number, why=f"decided by {rule}")
        if flow.target == GATEWAY and flow.proto in ("udp", "tcp") and flow.port == DNS_PORT:
            return Decision(flow, ALLOW, builtin="DNS to the gateway",
                            why="built-in: DNS to the gateway is always allowed "
                                "unless a rule says otherwise")
        return Decision(flow, self.default, why=f"no rule matches: default {self.default}")

    def explain(self, source: str, target: str, check: str = "icmp") -> Decision:
        """Would ``source`` reach ``target`` with ``check`` (``tcp/5432``, ``http``,
        ``icmp``, ``dns``)?  ``dns`` is the source asking the gateway's DNS server.
        Raises ValidationError for an unknown endpoint or a malformed check."""
        problems = []
        for role, name in (("source", source), ("target", target)):
            if name not in self.members and name != GATEWAY:
                problems.append(Problem(role, f"unknown endpoint {name!r}",
                                        _did_you_mean(name, self.members) or
                                        "name an endpoint of the lab or 'gateway'"))
        try:
            proto, port = parse_check(check)
        except ValueError as exc:
            problems.append(Problem("check", str(exc)))
        if problems:
            raise ValidationError(problems)
        if check.strip().lower() == "dns":
            target = GATEWAY
        return self.decide(Flow(source, target, proto, port))

    def denied_pairs(self, check: str = "icmp") -> list[tuple[str, str]]:
        """Ordered endpoint pairs whose ``check`` flow the policy denies."""
        proto, port = parse_check(check)
        names = sorted(self.members)
        return [(a, b) for a in names for b in names
                if a != b and not self.decide(Flow(a, b, proto, port)).allowed]

    def allowed(self, source: str, target: str) -> Space:
        """Every flow ``source`` may open to ``target`` (first match wins; the built-in DNS
        allowance for the gateway; the default for the rest)."""
        left, allowed = EVERYTHING, Space()
        for rule in self.rules:
            if left and rule.source.has(source) and rule.target.has(target):
                if rule.verdict == ALLOW:
                    allowed = allowed | (left & rule.space)
                left = left - rule.space
        if target == GATEWAY:
            dns = Space(tcp=Ports(((DNS_PORT, DNS_PORT),)), udp=Ports(((DNS_PORT, DNS_PORT),)))
            allowed, left = allowed | (left & dns), left - dns
        return allowed | left if self.default == ALLOW else allowed

    def closed_pairs(self) -> list[tuple[str, str]]:
        """Unordered endpoint pairs (sorted) between which the policy allows no flow at all,
        in either direction — what the topology draws as denied."""
        names = sorted(self.members)
        return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
                if not self.allowed(a, b) and not self.allowed(b, a)]

    def with_addresses(self, addresses: Mapping[str, Any]) -> "Policy":
        """The same policy over the endpoints' allocated addresses."""
        from dataclasses import replace

        members = {n: replace(m, address=str(addresses[n])) for n, m in self.members.items()}
        return replace(self, members=members)

    # -- rendering ------------------------------------------------------------------------

    def rows(self, counters: Mapping[str, tuple[int, int]] | None = None
             ) -> list[dict[str, Any]]:
        """The rules as table rows (plus the built-ins and the default), with packet and
        byte counters when ``counters`` (keyed ``rule N``, ``dns``, ``default``) is given."""
        rows = [{"rule": str(r.number), "from": r.source.text, "to": r.target.text,
                 "verdict": r.verdict, "services": ", ".join(s.label for s in r.services),
                 "comment": r.comment, "key": f"rule {r.number}"} for r in self.rules]
        rows.append({"rule": "-", "from": ANY, "to": GATEWAY, "verdict": ALLOW,
                     "services": "udp/53, tcp/53", "comment": "built-in: DNS to the gateway",
                     "key": "dns"})
        rows.append({"rule": "-", "from": ANY, "to": "any, gateway", "verdict": self.default,
                     "services": "all", "comment": "default", "key": "default"})
        for row in rows:
            if counters is not None:
                packets, octets = counters.get(row["key"], (0, 0))
                row["packets"], row["bytes"] = packets, octets
        return rows

    def to_text(self, counters: Mapping[str, tuple[int, int]] | None = None) -> str:
        cols = ["rule", "from", "to", "verdict", "services", "comment"]
        if counters is not None:
            cols[4:4] = ["packets"]
        rows = [{k: str(v) for k, v in r.items()} for r in self.rows(counters)]
        width = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in cols}
        out = [f"Policy: {len(self.rules)} rule{'s' if len(self.rules) != 1 else ''}, "
               f"default {self.default}"]
        out.append("  ".join(c.ljust(width[c]) for c in cols).rstrip())
        out.append("  ".join("-" * width[c] for c in cols))
        out += ["  ".join(r[c].ljust(width[c]) for c in cols).rstrip() for r in rows]
        out += [f"warning: {w}" for w in self.warnings]
        return "\n".join(out)

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        rows = []
        for r in self.rows():
            colour = "#d4edda" if r["verdict"] == ALLOW else "#f8d7da"
            cells = "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in
                            ("rule", "from", "to", "verdict", "services", "comment"))
            rows.append(f"<tr style='background:{colour}'>{cells}</tr>")
        warn = "".join(f"<li>{html.escape(str(w))}</li>" for w in self.warnings)
        return (f"<div><b>Policy: {len(self.rules)} rules, default {self.default}</b>"
                "<table><thead><tr><th>rule</th><th>from</th><th>to</th><th>verdict</th>"
                "<th>services</th><th>comment</th></tr></thead><tbody>" + "".join(rows) +
                "</tbody></table>" + (f"<ul>{warn}</ul>" if warn else "") + "</div>")


# ------------------------------------------------------------------------------ parsing

class _Parser:
    """Collects every problem while resolving groups and rules."""

    def __init__(self, members: Mapping[str, Member], kinds: Sequence[str]) -> None:
        self.members = members
        self.problems: list[Problem] = []
        self.kinds = {k + "s": k for k in sorted(set(kinds) | {m.kind for m in
                                                               members.values()})}
        self.raw_groups: Mapping[str, Any] = {}
        self.groups: dict[str, frozenset[str]] = {}
        self._resolving: list[str] = []

    def add(self, path: str, message: str, hint: str | None = None) -> None:
        self.problems.append(Problem(path, message, hint))

    @property
    def builtins(self) -> tuple[str, ...]:
        return (ANY, GATEWAY, *self.kinds)

    # -- groups -----------------------------------------------------------------------

    def parse_groups(self, raw: Any) -> None:
        if raw is None:
            return
        if not isinstance(raw, Mapping):
            self.add("groups", f"expected a mapping of group names, got {_typename(raw)}",
                     "write e.g. groups: {frontend: [web, api]}")
            return
        self.raw_groups = raw
        for name in raw:
            path = f"groups.{name}"
            if not isinstance(name, str) or not _NAME.match(name):
                self.add(path, f"{name!r} is not a group name",
                         "use letters, digits, '-', '_' and '.'")
            elif name in self.builtins or name.startswith(LABEL_PREFIX):
                self.add(path, f"{name!r} is a built-in selector", "give the group another name")
            elif name in self.members:
                self.add(path, f"group {name!r} has the name of an endpoint",
                         "give the group another name")
        for name in raw:
            if isinstance(name, str):
                self.group(name)

    def group(self, name: str) -> frozenset[str]:
        if name in self.groups:
            return self.groups[name]
        if name in self._resolving:
            cycle = " -> ".join(self._resolving[self._resolving.index(name):] + [name])
            self.add(f"groups.{name}", f"groups include each other: {cycle}",
                     "a group may not contain itself")
            return frozenset()
        self._resolving.append(name)
        try:
            found = self._group_members(name, self.raw_groups[name], f"groups.{name}")
        finally:
            self._resolving.pop()
        self.groups[name] = found
        return found

    def _group_members(self, name: str, raw: Any, path: str) -> frozenset[str]:
        names: set[str] = set()
        if isinstance(raw, (list, tuple, str)):
            return self._names(raw, path, in_group=True)
        if not isinstance(raw, Mapping):
            self.add(path, f"expected a list of members or a mapping, got {_typename(raw)}",
                     "write [web, api] or {labels: {tier: web}}")
            return frozenset()
        for key in raw:
            if key not in _GROUP_KEYS:
                self.add(f"{path}.{key}", f"unknown key {key!r}",
                         _did_you_mean(str(key), _GROUP_KEYS) or "groups take members, labels")
        if "members" in raw:
            names |= self._names(raw["members"], f"{path}.members", in_group=True)
        if "labels" in raw:
            names |= self._labels(raw["labels"], f"{path}.labels")
        if "members" not in raw and "labels" not in raw:
            self.add(path, f"group {name!r} names no members", "give members: or labels:")
        return frozenset(names)

    def _labels(self, raw: Any, path: str) -> frozenset[str]:
        if not isinstance(raw, Mapping) or not raw:
            self.add(path, f"expected a mapping of labels, got {_typename(raw)}",
                     "write labels: {tier: web}")
            return frozenset()
        want = {str(k): str(v) for k, v in raw.items()}
        return frozenset(m.name for m in self.members.values()
                         if all(m.labels.get(k) == v for k, v in want.items()))

    # -- selectors --------------------------------------------------------------------

    def _names(self, raw: Any, path: str, *, in_group: bool) -> frozenset[str]:
        sel = self.selector(raw, path, in_group=in_group)
        if sel is None:
            return frozenset()
        return frozenset(self.members) if sel.any else sel.names

    def selector(self, raw: Any, path: str, *, in_group: bool = False,
                 role: str = "from") -> Selector | None:
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, (list, tuple)) or not items:
            self.add(path, f"expected a selector or a list of them, got {_typename(raw)}",
                     "name endpoints, groups, any, hosts/containers/vms or label:KEY=VALUE")
            return None
        names: set[str] = set()
        is_any = gateway = False
        for i, item in enumerate(items):
            where = path if isinstance(raw, str) else f"{path}[{i}]"
            if not isinstance(item, str):
                self.add(where, f"expected a name, got {_typename(item)}")
                continue
            if item == ANY:
                is_any = True
            elif item == GATEWAY:
                gateway = self._gateway(where, in_group, role)
            else:
                names |= self._one(item, where)
        text = raw if isinstance(raw, str) else ", ".join(str(i) for i in items)
        return Selector(text, frozenset(names), is_any, gateway)

    def _gateway(self, where: str, in_group: bool, role: str) -> bool:
        if in_group:
            self.add(where, "a group cannot hold the gateway",
                     "name the gateway directly in a rule's to:")
            return False
        if role == "from":
            self.add(where, "the gateway is never filtered as a source",
                     "put 'gateway' in to:, or leave it out")
            return False
        return True

    def _one(self, item: str, where: str) -> frozenset[str]:
        if item in self.kinds:
            return frozenset(m.name for m in self.members.values()
                             if m.kind == self.kinds[item])
        if item.startswith(LABEL_PREFIX):
            key, eq, value = item[len(LABEL_PREFIX):].partition("=")
            if not key or not eq:
                self.add(where, f"{item!r} is not a label selector", "write label:KEY=VALUE")
                return frozenset()
            return self._labels({key: value}, where)
        if item in self.raw_groups:
            return self.group(item)
        if item in self.members:
            return frozenset([item])
        choices = list(self.members) + list(self.raw_groups) + list(self.builtins)
        self.add(where, f"unknown endpoint or group {item!r}",
                 _did_you_mean(item, choices) or
                 "name an endpoint, a group, any, hosts/containers/vms or label:KEY=VALUE")
        return frozenset()

    # -- rules ------------------------------------------------------------------------

    def services(self, raw: Any, path: str) -> tuple[Service, ...]:
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, (list, tuple)) or not items:
            self.add(path, f"expected a list of services, got {_typename(raw)}", _SERVICE_HINT)
            return ()
        out = []
        for i, item in enumerate(items):
            svc, probs = parse_service(item, path if isinstance(raw, str) else f"{path}[{i}]")
            self.problems.extend(probs)
            if svc is not None:
                out.append(svc)
        return tuple(out)

    def rule(self, raw: Any, index: int) -> Rule | None:
        path = f"policies.rules[{index}]"
        if not isinstance(raw, Mapping):
            self.add(path, f"expected a rule mapping, got {_typename(raw)}",
                     "write {from: web, to: db, allow: [tcp/5432]}")
            return None
        for key in raw:
            if key not in _RULE_KEYS:
                self.add(f"{path}.{key}", f"unknown key {key!r}",
                         _did_you_mean(str(key), _RULE_KEYS) or
                         f"rules take {', '.join(_RULE_KEYS)}")
        verdicts = [v for v in VERDICTS if v in raw]
        if len(verdicts) != 1:
            self.add(path, "a rule needs exactly one of allow: or deny:" if not verdicts
                     else "a rule cannot both allow and deny",
                     "split it into two rules" if verdicts else "add allow: [...] or deny: all")
        missing = [k for k in ("from", "to") if k not in raw]
        for key in missing:
            self.add(f"{path}.{key}", f"rule {index + 1} has no {key}:",
                     "name endpoints or groups, or any")
        source = self.selector(raw["from"], f"{path}.from") if "from" in raw else None
        target = (self.selector(raw["to"], f"{path}.to", role="to") if "to" in raw else None)
        services = self.services(raw[verdicts[0]], f"{path}.{verdicts[0]}") if verdicts else ()
        comment = raw.get("comment", "")
        if not isinstance(comment, str):
            self.add(f"{path}.comment", f"expected a string, got {_typename(comment)}")
        if len(verdicts) != 1 or source is None or target is None or not services:
            return None
        return Rule(index + 1, source, target, verdicts[0], services, str(comment))


def parse_policy(groups: Any, policies: Any, members: Mapping[str, Member], *,
                 kinds: Sequence[str] = KNOWN_KINDS, source: str | None = None
                 ) -> Policy | None:
    """Validate a lab's ``groups:`` and ``policies:`` sections against its endpoints.

    Returns None when the lab has no ``policies:`` (nothing is enforced; groups alone are
    still checked).  Raises one :class:`ValidationError` listing every problem."""
    p = _Parser(members, kinds)
    p.parse_groups(groups)
    for name in sorted(members):
        if name in p.builtins:
            p.add(f"endpoints.{name}", f"endpoint {name!r} has the name of a built-in selector",
                  "rename the endpoint, or it cannot be named in policies")
    policy = None
    if policies is not None:
        policy = _parse_policies(p, policies)
    if p.problems:
        raise ValidationError(p.problems, source=source)
    return policy


def _parse_policies(p: _Parser, raw: Any) -> Policy | None:
    if not isinstance(raw, Mapping):
        p.add("policies", f"expected a mapping, got {_typename(raw)}",
              "write policies: {default: allow, rules: [...]}")
        return None
    for key in raw:
        if key not in _POLICY_KEYS:
            p.add(f"policies.{key}", f"unknown key {key!r}",
                  _did_you_mean(str(key), _POLICY_KEYS) or "policies take default and rules")
    default = raw.get("default", ALLOW)
    if default not in VERDICTS:
        p.add("policies.default", f"unknown default {default!r}", "write allow or deny")
        default = ALLOW
    rules_raw = raw.get("rules") or []
    if not isinstance(rules_raw, (list, tuple)):
        p.add("policies.rules", f"expected a list of rules, got {_typename(rules_raw)}",
              "write rules: [{from: web, to: db, allow: [tcp/5432]}]")
        rules_raw = []
    rules = [p.rule(r, i) for i, r in enumerate(rules_raw)]
    good = tuple(r for r in rules if r is not None)
    groups = dict(sorted(p.groups.items()))
    return Policy(default, good, dict(p.members), groups,
                  tuple(shadow_warnings(good, p.members)))


# ------------------------------------------------------------------------------ shadowing

def _pairs(rule: Rule, names: Sequence[str]) -> set[tuple[str, str]]:
    sources = names if rule.source.any else sorted(rule.source.names)
    targets = list(names if rule.target.any else sorted(rule.target.names))
    if rule.target.gateway:
        targets.append(GATEWAY)
    return {(s, t) for s in sources for t in targets if s != t}


def shadow_warnings(rules: Sequence[Rule], members: Mapping[str, Member]) -> list[Problem]:
    """A warning for every rule that can never decide a flow: the rules before it decide
    every flow it covers (first match wins) — or it selects no endpoint at all."""
    names = sorted(members)
    pairs = [_pairs(r, names) for r in rules]
    spaces = [r.space for r in rules]
    out: list[Problem] = []
    by_pair: dict[tuple[str, str], list[int]] = {}
    for j, rule in enumerate(rules):
        if not pairs[j]:
            out.append(Problem(rule.path, f"rule {rule.number} selects no pair of endpoints "
                                          f"({rule.source} -> {rule.target})",
                               "check its groups and selectors"))
            continue
        seen = sorted({i for pair in pairs[j] for i in by_pair.get(pair, ())})
        earlier = [i for i in seen if spaces[i] & spaces[j]]
        for pair in pairs[j]:
            by_pair.setdefault(pair, []).append(j)
        if not earlier:
            continue
        covering = _covering(j, earlier, pairs, spaces)
        if covering is None:
            continue
        verdicts = {rules[i].verdict for i in covering}
        by = ", ".join(f"rule {rules[i].number}" for i in covering)
        differs = verdicts != {rule.verdict}
        out.append(Problem(
            rule.path, f"rule {rule.number} never matches: {by} decide{'s' if len(covering) == 1 else ''} "
            f"every flow it covers" + (", the other way" if differs else ""),
            f"move it above {by}, narrow {by}, or remove it" if differs else
            "it is redundant: remove it"))
    return out


def _covering(j: int, earlier: list[int], pairs: list[set[tuple[str, str]]],
              spaces: list[Space]) -> list[int] | None:
    """The earlier rules that together cover rule ``j`` entirely, or None."""
    used: set[int] = set()
    for pair in sorted(pairs[j]):
        left = spaces[j]
        for i in earlier:
            if pair in pairs[i] and left & spaces[i]:
                left = left - spaces[i]
                used.add(i)
                if not left:
                    break
        if left:
            return None
    return sorted(used)
