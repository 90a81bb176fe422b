"""Policies and loss compiled to nftables, as libnftables JSON (what ``nft -j -f`` reads).

**Why an ``inet`` table, not a ``bridge`` one.**  Every frame between two ports of the lab
bridge passes the bridge family's hooks, and the bridge family filters and counts — but it has
no connection tracking on our machines (``ct`` fails there), and a policy must be stateful
(replies of an allowed flow pass, the reverse flow is judged on its own).  With
``bridge-nf-call-iptables=1`` (the default, and on in every lab host) bridged IPv4 also passes
the IPv4 hooks through br_netfilter, conntrack included: an ``inet`` table's ``forward`` hook
sees it, with ``iifname``/``oifname`` both the bridge.  So a lab's policy is one table
``inet hnb-<lab>``:

* base chain ``forward`` (hook forward, priority filter, policy **accept**):
  ``iifname BR oifname BR goto east-west`` — only this lab's bridged traffic;
* base chain ``input`` (hook input): ``iifname BR goto to-gateway`` — endpoints to the gateway;
* ``east-west``: one nftables rule per policy rule and protocol, then the default;
* ``to-gateway``: replies to the gateway's own connections, the rules naming the gateway, the
  built-in DNS allowance, then the default;
* ``owner`` (never hooked): one rule whose comment is ``hybridnb:<lab> <fingerprint>``.

Rules match the flow's **original direction** from conntrack (``ct original ip saddr``,
``ct original ip daddr``, ``ct protocol``, ``ct original proto-dst``), not the packet's own
header: a reply carries the tuple of the connection it answers, so it gets that connection's
verdict (stateful), and a connection the new policy denies is cut at its next packet instead
of living on as "established".  ``meta l4proto {tcp, icmp}`` in front of a port match gives
nft the protocol context it needs for ``proto-dst`` and lets the ICMP errors a flow causes
(which carry its conntrack entry) share its verdict; ``nft list`` prints such ports in hex.

Base chains keep policy accept and the default is an explicit last rule: a base chain is
hooked while its transaction is being prepared, and a ``policy drop`` would drop everything
until the commit.  Verdicts combine with Docker's iptables rules as AND: a packet must pass
both (the DOCKER-USER accept rule lets lab traffic through iptables; our table decides).

Every rule has a counter and a comment naming what it comes from (``rule 3``, ``dns``,
``default``, ``from-gateway``), so :func:`counters` sums them back per policy rule.

**Loss** goes to a second table ``bridge hnb-<lab>-links`` (the impairment driver owns it):
per impaired endpoint a regular chain ``ep-<name>`` holding the endpoint's record, and, with
loss, base chains ``ep-<name>-fwd``/``-out`` (forward/output hooks: bridged and the
gateway's own frames) dropping ``numgen random mod 10000 < loss`` of what the endpoint's
port sends it.  The bridge family needs no br_netfilter and sees ARP like netem would.

This module is pure; :func:`to_text` renders a batch as ``nft -f`` text (for people and for
the benchmark's baseline).
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from hybridnb.core.policy import (ALLOW, DNS_PORT, Policy, Rule, Selector,
                                  Service)
from hybridnb.core.resource import Resource

INET = "inet"
BRIDGE = "bridge"
PREFIX = "hnb-"
FORWARD, INPUT, EAST_WEST, TO_GATEWAY = "forward", "input", "east-west", "to-gateway"
DEFAULT, DNS, FROM_GATEWAY = "default", "dns", "from-gateway"
OWNER = "owner"                 # regular chain holding the owner record (never hooked)


def policy_table(lab: str) -> str:
    return f"{PREFIX}{lab}"


def links_table(lab: str) -> str:
    return f"{PREFIX}{lab}-links"


# ------------------------------------------------------------------------------ expressions

def _match(left: dict[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def _ct(key: str, original: bool = True) -> dict[str, Any]:
    return {"ct": {"key": key, "dir": "original"}} if original else {"ct": {"key": key}}


def _ports(ranges: Iterable[tuple[int, int]]) -> Any:
    items: list[Any] = [lo if lo == hi else {"range": [lo, hi]} for lo, hi in ranges]
    return items[0] if len(items) == 1 and isinstance(items[0], int) else {"set": items}


def _rule(family: str, table: str, chain: str, exprs: list[dict[str, Any]],
          comment: str) -> dict[str, Any]:
    return {"add": {"rule": {"family": family, "table": table, "chain": chain,
                             "expr": exprs, "comment": comment}}}


def _chain(family: str, table: str, name: str, hook: str | None = None) -> dict[str, Any]:
    chain: dict[str, Any] = {"family": family, "table": table, "name": name}
    if hook is not None:
        chain.update({"type": "filter", "hook": hook, "prio": 0, "policy": "accept"})
    return {"add": {"chain": chain}}


def service_matches(svc_group: list[Service]) -> list[list[dict[str, Any]]]:
    """The match expressions for a rule's services: one list per nftables rule (``all`` is
    one empty list; TCP, UDP and ICMP each get one)."""
    if any(s.proto == "all" for s in svc_group):
        return [[]]
    out: list[list[dict[str, Any]]] = []
    for proto in ("tcp", "udp"):
        ports = [s.ports for s in svc_group if s.proto == proto]
        if not ports:
            continue
        merged = ports[0]
        for p in ports[1:]:
            merged = merged | p
        if merged.is_full():
            out.append([_match(_ct("protocol", False), proto)])
        else:
            out.append([_match(_meta("l4proto"), {"set": [proto, "icmp"]}),
                        _match(_ct("protocol", False), proto),
                        _match(_ct("proto-dst"), _ports(merged.ranges))])
    if any(s.proto == "icmp" for s in svc_group):
        out.append([_match(_ct("protocol", False), "icmp")])
    return out


# ------------------------------------------------------------------------------ policy

class _Sets:
    """Named address sets of a policy table (groups, kinds, per-rule lists), by first use."""

    def __init__(self, family: str, table: str, policy: Policy) -> None:
        self.family, self.table, self.policy = family, table, policy
        self.made: dict[str, list[str]] = {}

    def side(self, sel: Selector, rule: Rule, role: str) -> Any | None:
        """The right-hand side matching ``sel``'s endpoint addresses; None for ``any``."""
        if sel.any:
            return None
        addrs = sorted({self.policy.members[n].address for n in sel.names},
                       key=_addr_key)
        words = sel.text.split(", ")
        word = words[0] if len(words) == 1 else None
        if word is not None and word in self.policy.members:
            return addrs[0]
        if word is not None and word in self.policy.groups:
            name = f"g-{word}"
        elif word is not None:
            name = "s-" + "".join(c if c.isalnum() or c in "-_." else "-" for c in word)
        else:
            name = f"r{rule.number}-{role}"
        self.made.setdefault(name, addrs)
        return f"@{name}"

    def commands(self) -> list[dict[str, Any]]:
        out = []
        for name, addrs in sorted(self.made.items()):
            s: dict[str, Any] = {"family": self.family, "table": self.table, "name": name,
                                 "type": "ipv4_addr"}
            if addrs:
                s["elem"] = addrs
            out.append({"add": {"set": s}})
        return out


def _addr_key(addr: str) -> tuple[int, ...]:
    return tuple(int(x) for x in addr.split("."))


def policy_body(policy: Policy, *, lab: str, bridge: str, gateway: str) -> list[dict[str, Any]]:
    """Sets, chains and rules of the lab's policy table (the commands after the table's own
    add/delete/add, see :func:`replace_table`)."""
    f, t = INET, policy_table(lab)
    sets = _Sets(f, t, policy)
    east: list[dict[str, Any]] = []
    gw: list[dict[str, Any]] = [_rule(f, t, TO_GATEWAY, [
        _match(_ct("ip saddr"), gateway), {"counter": None}, {"accept": None}], FROM_GATEWAY)]
    for rule in policy.rules:
        src = sets.side(rule.source, rule, "from")
        head = [] if src is None else [_match(_ct("ip saddr"), src)]
        verdict = {"accept": None} if rule.verdict == ALLOW else {"drop": None}
        services = service_matches(list(rule.services))
        if rule.target.any or rule.target.names:
            dst = sets.side(rule.target, rule, "to")
            dmatch = [] if dst is None else [_match(_ct("ip daddr"), dst)]
            east += [_rule(f, t, EAST_WEST, head + dmatch + m + [{"counter": None}, verdict],
                           f"rule {rule.number}") for m in services]
        if rule.target.gateway:
            gw += [_rule(f, t, TO_GATEWAY, head + m + [{"counter": None}, verdict],
                         f"rule {rule.number}") for m in services]
    gw.append(_rule(f, t, TO_GATEWAY, [
        _match(_meta("l4proto"), {"set": ["tcp", "udp", "icmp"]}),
        _match(_ct("protocol", False), {"set": ["tcp", "udp"]}),
        _match(_ct("proto-dst"), DNS_PORT), {"counter": None}, {"accept": None}], DNS))
    final = {"accept": None} if policy.default == ALLOW else {"drop": None}
    east.append(_rule(f, t, EAST_WEST, [{"counter": None}, final], DEFAULT))
    gw.append(_rule(f, t, TO_GATEWAY, [{"counter": None}, final], DEFAULT))
    hooks = [
        _chain(f, t, FORWARD, "forward"), _chain(f, t, INPUT, "input"),
        _chain(f, t, EAST_WEST), _chain(f, t, TO_GATEWAY),
        _rule(f, t, FORWARD, [_match(_meta("iifname"), bridge), _match(_meta("oifname"), bridge),
                              {"goto": {"target": EAST_WEST}}], "lab bridge"),
        _rule(f, t, INPUT, [_match(_meta("iifname"), bridge),
                            {"goto": {"target": TO_GATEWAY}}], "lab bridge"),
    ]
    return sets.commands() + hooks + east + gw


def policy_resource(lab: str, body: list[dict[str, Any]], *, bridge: str, gateway: str,
                    rules: int, default: str) -> Resource:
    """The ``policy`` resource of a lab (what the lab compiler will emit in phase 2)."""
    return Resource("policy", lab, {"table": policy_table(lab), "bridge": bridge,
                                    "gateway": gateway, "body": body},
                    f"inet {policy_table(lab)}: {rules} rule"
                    f"{'' if rules == 1 else 's'}, default {default}")


def replace_table(family: str, table: str, comment: str,
                  body: list[dict[str, Any]]) -> dict[str, Any]:
    """One transaction that replaces the table whole: add (so that it exists), delete, add
    again, the owner record (a rule in chain ``owner`` whose comment is ``comment``: nft 1.0's
    JSON keeps no table comments), then ``body``.  The kernel commits a batch atomically:
    packets see the old table or the new one, never neither."""
    ident = {"family": family, "name": table}
    return {"nftables": [{"add": {"table": dict(ident)}}, {"delete": {"table": dict(ident)}},
                         {"add": {"table": dict(ident)}}, _chain(family, table, OWNER),
                         _rule(family, table, OWNER, [{"counter": None}], comment), *body]}


def delete_table(family: str, table: str) -> dict[str, Any]:
    """Delete the table if it exists (add first, so that the delete never fails)."""
    ident = {"family": family, "name": table}
    return {"nftables": [{"add": {"table": dict(ident)}}, {"delete": {"table": ident}}]}


# ------------------------------------------------------------------------------ loss

def endpoint_chains(endpoint: str) -> tuple[str, str, str]:
    """(record chain, forward-hook chain, output-hook chain) of an endpoint in the links table."""
    return f"ep-{endpoint}", f"ep-{endpoint}-fwd", f"ep-{endpoint}-out"


def loss_update(lab: str, endpoint: str, record: str, port: str | None,
                loss: int | None) -> dict[str, Any]:
    """One transaction that sets an endpoint's part of the links table: its record chain
    (a counter rule whose comment is ``record``) and, with ``loss`` (1/100 %) on ``port``,
    the drop rules; without loss its hook chains are removed.  Other endpoints' chains are
    untouched."""
    f, t = BRIDGE, links_table(lab)
    rec, fwd, out = endpoint_chains(endpoint)
    cmds: list[dict[str, Any]] = [{"add": {"table": {"family": f, "name": t}}},
                                  _chain(f, t, rec), {"flush": {"chain": _ident(f, t, rec)}},
                                  _rule(f, t, rec, [{"counter": None}], record)]
    for name, hook in ((fwd, "forward"), (out, "output")):
        cmds += [_chain(f, t, name, hook), {"flush": {"chain": _ident(f, t, name)}}]
        if loss and port is not None:
            cmds.append(_rule(f, t, name, [
                _match(_meta("oifname"), port),
                _match({"numgen": {"mode": "random", "mod": 10000, "offset": 0}}, loss, "<"),
                {"counter": None}, {"drop": None}], "loss"))
        else:
            cmds.append({"delete": {"chain": _ident(f, t, name)}})
    return {"nftables": cmds}


def loss_remove(lab: str, endpoint: str, *, last: bool) -> dict[str, Any]:
    """Remove an endpoint's chains; with ``last`` the whole links table."""
    f, t = BRIDGE, links_table(lab)
    if last:
        return delete_table(f, t)
    cmds: list[dict[str, Any]] = [{"add": {"table": {"family": f, "name": t}}}]
    for name, hook in zip(endpoint_chains(endpoint), (None, "forward", "output")):
        cmds += [_chain(f, t, name, hook), {"flush": {"chain": _ident(f, t, name)}},
                 {"delete": {"chain": _ident(f, t, name)}}]
    return {"nftables": cmds}


def _ident(family: str, table: str, chain: str) -> dict[str, str]:
    return {"family": family, "table": table, "name": chain}


# ------------------------------------------------------------------------------ reading

def owner_of(listing: Mapping[str, Any] | None) -> str | None:
    """The owner record of a table this module made (its ``owner`` rule's comment), or None
    when the table is absent or has none."""
    for rule in rules_of(listing or {}):
        if rule.get("chain") == OWNER:
            return str(rule.get("comment", ""))
    return None


def rules_of(listing: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [item["rule"] for item in listing.get("nftables", []) if "rule" in item]


def chains_of(listing: Mapping[str, Any]) -> list[str]:
    return [item["chain"]["name"] for item in listing.get("nftables", []) if "chain" in item]


def counters(listing: Mapping[str, Any], *, chains: Iterable[str] | None = None
             ) -> dict[str, tuple[int, int]]:
    """Packets and bytes per rule comment (``rule 3``, ``dns``, ``default``…), summed over
    the nftables rules that carry it."""
    want = set(chains) if chains is not None else None
    out: dict[str, tuple[int, int]] = {}
    for rule in rules_of(listing):
        if want is not None and rule.get("chain") not in want:
            continue
        key = rule.get("comment")
        for expr in rule.get("expr", []):
            if "counter" in expr and key:
                c = expr["counter"] or {}
                p, b = out.get(key, (0, 0))
                out[key] = (p + int(c.get("packets", 0)), b + int(c.get("bytes", 0)))
    return out


def policy_counters(listing: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """Counters of a policy table per rule, the built-in DNS allowance and the default (the
    default's two rules — east-west and to the gateway — summed)."""
    return counters(listing, chains=(EAST_WEST, TO_GATEWAY))


# ------------------------------------------------------------------------------ text

def to_text(batch: Mapping[str, Any]) -> str:
    """``nft -f`` text for a batch this module makes (the same commands, one per line)."""
    lines = []
    for cmd in batch["nftables"]:
        (verb, obj), = cmd.items()
        (what, spec), = obj.items()
        lines.append(f"{verb} {what} {_object_text(what, spec)}".rstrip())
    return "\n".join(lines) + "\n"


def _object_text(what: str, s: Mapping[str, Any]) -> str:
    if what == "table":
        return f"{s['family']} {s['name']}"
    where = f"{s['family']} {s['table']} {_q(s['name'] if what != 'rule' else s['chain'])}"
    if what == "set":
        elems = f" elements = {{ {', '.join(s['elem'])} }};" if s.get("elem") else ""
        return f"{where} {{ type {s['type']};{elems} }}"
    if what == "chain":
        if "hook" in s:
            return (f"{where} {{ type {s['type']} hook {s['hook']} priority {s['prio']}; "
                    f"policy {s['policy']}; }}")
        return where
    exprs = " ".join(_expr_text(e) for e in s["expr"])
    return f"{where} {exprs} comment {json.dumps(s['comment'])}"


def _q(name: str) -> str:
    return name                     # our names are letters, digits, '-', '_' and '.'



def _expr_text(e: Mapping[str, Any]) -> str:
    (key, val), = e.items()
    if key == "match":
        op = "" if val["op"] == "==" else f"{val['op']} "
        return f"{_left_text(val['left'])} {op}{_value_text(val['right'])}"
    if key == "counter":
        return "counter"
    if key in ("goto", "jump"):
        return f"{key} {_q(val['target'])}"
    return key


def _left_text(left: Mapping[str, Any]) -> str:
    if "meta" in left:
        return f"meta {left['meta']['key']}"
    if "numgen" in left:
        n = left["numgen"]
        return f"numgen {n['mode']} mod {n['mod']}"
    ct = left["ct"]
    return f"ct {ct['dir']} {ct['key']}" if "dir" in ct else f"ct {ct['key']}"


def _value_text(v: Any) -> str:
    if isinstance(v, Mapping) and "set" in v:
        return "{ " + ", ".join(_value_text(x) for x in v["set"]) + " }"
    if isinstance(v, Mapping) and "range" in v:
        return f"{v['range'][0]}-{v['range'][1]}"
    if isinstance(v, str) and not v.startswith("@") and not v[:1].isdigit():
        return json.dumps(v) if not v.isalnum() else v
    return str(v)
