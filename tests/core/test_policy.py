"""The pure policy model: selectors, services, validation, first match, explain, shadowing."""

from __future__ import annotations

import pytest

from hybridnb.core.policy import (FULL, GATEWAY, Flow, Member, Ports, Space, members_of,
                                  parse_check, parse_policy, parse_service)
from hybridnb.errors import ValidationError

MEMBERS = {
    "web": Member("web", "container", "10.0.1.100", {"tier": "web"}),
    "api": Member("api", "container", "10.0.1.101", {"tier": "web", "team": "a"}),
    "db": Member("db", "vm", "10.0.1.200", {}),
    "cache": Member("cache", "vm", "10.0.1.201", {"tier": "data"}),
    "h1": Member("h1", "host", "10.0.1.10", {}),
}
GROUPS = {"frontend": ["web", "api"], "data": {"members": ["db"], "labels": {"tier": "data"}}}
RULES = [
    {"from": "frontend", "to": "data", "allow": ["tcp/5432"]},
    {"from": "any", "to": "data", "deny": "all"},
    {"from": "vms", "to": "frontend", "allow": ["http/80", "icmp"]},
    {"from": "h1", "to": "gateway", "deny": ["udp/53"], "comment": "no names for h1"},
]


def policy(rules=RULES, default="deny", groups=GROUPS):
    return parse_policy(groups, {"default": default, "rules": rules}, MEMBERS)


def problems(groups=None, policies=None, members=MEMBERS) -> list[str]:
    with pytest.raises(ValidationError) as exc:
        parse_policy(groups, policies, members)
    return [str(p) for p in exc.value.problems]


# ------------------------------------------------------------------------------ services

@pytest.mark.parametrize("text,proto,ports", [
    ("tcp/5432", "tcp", ((5432, 5432),)), ("udp/53", "udp", ((53, 53),)),
    ("http/8080", "tcp", ((8080, 8080),)), ("http", "tcp", ((80, 80),)),
    ("tcp/8000-8080", "tcp", ((8000, 8080),)), ("tcp", "tcp", FULL.ranges),
    ("icmp", "icmp", ()), ("all", "all", ()), ("TCP/22", "tcp", ((22, 22),)),
])
def test_services_parse(text, proto, ports):
    svc, probs = parse_service(text, "p")
    assert probs == [] and svc is not None
    assert (svc.proto, svc.ports.ranges) == (proto, ports)


@pytest.mark.parametrize("text,message,hint", [
    ("tpc/80", "unknown protocol 'tpc'", "did you mean 'tcp'?"),
    ("postgresql/5432", "unknown protocol 'postgresql'", "write tcp/5432 or udp/5432"),
    ("tcp/70000", "port 70000 is out of range", "ports are 1-65535"),
    ("tcp/90-80", "port 90-80 is out of range", "LOW <= HIGH"),
    ("icmp/8", "icmp takes no port", "write just 'icmp'"),
    ("tcp:80", "is not a service", "tcp/PORT"),
    (80, "expected a service string, got a number", "tcp/PORT"),
])
def test_bad_services_say_why(text, message, hint):
    svc, probs = parse_service(text, "policies.rules[0].allow[0]")
    assert svc is None and len(probs) == 1
    assert message in probs[0].message and hint in (probs[0].hint or "")
    assert probs[0].path == "policies.rules[0].allow[0]"


def test_ports_algebra():
    a = Ports.of([(1, 10), (20, 30)])
    assert str(a - Ports.of([(5, 25)])) == "1-4,26-30"
    assert str(a & Ports.of([(5, 25)])) == "5-10,20-25"
    assert str(a | Ports.of([(11, 19)])) == "1-30"
    assert not (a - FULL) and (FULL - a)
    space = Space.of([parse_service("tcp/80", "")[0], parse_service("icmp", "")[0]])
    assert str(space) == "tcp/80, icmp"
    assert str(Space.of([parse_service("all", "")[0]])) == "tcp, udp, icmp, other protocols"


# ------------------------------------------------------------------------------ selectors

def test_groups_by_names_labels_and_nesting():
    p = parse_policy({"frontend": ["web", "api"], "data": {"labels": {"tier": "data"}},
                      "all-fe": ["frontend", "label:team=a"], "guests": ["vms"]},
                     {"rules": []}, MEMBERS)
    assert p.groups == {"all-fe": frozenset({"web", "api"}), "data": frozenset({"cache"}),
                        "frontend": frozenset({"web", "api"}),
                        "guests": frozenset({"db", "cache"})}


def test_selectors_in_rules():
    p = policy()
    r1, r2, r3, r4 = p.rules
    assert r1.source.names == {"web", "api"} and r1.target.names == {"db", "cache"}
    assert r2.source.any and not r2.source.gateway
    assert r3.source.names == {"db", "cache"}
    assert r4.target.gateway and not r4.target.names and r4.comment == "no names for h1"


def test_members_of_reads_specs():
    class Ep:
        def __init__(self, name, kind, labels=None):
            self.name, self.kind = name, kind
            if labels is not None:
                self.labels = labels

    m = members_of([Ep("b", "vm"), Ep("a", "container", {"x": 1})], {"a": "10.0.0.2",
                                                                      "b": "10.0.0.3"})
    assert list(m) == ["a", "b"] and m["a"].labels == {"x": "1"} and m["b"].labels == {}


# ------------------------------------------------------------------------------ validation

def test_every_problem_at_once_with_paths_and_hints():
    got = problems(
        {"frontend": ["web", "wbe"], "any": ["db"], "db": ["web"], "loop": ["loop2"],
         "loop2": ["loop"]},
        {"default": "block", "rules": [
            {"from": "frontend", "to": "frontnd", "allow": ["tcp/5432"]},
            {"from": "gateway", "to": "db", "allow": "tpc/1"},
            {"form": "web", "to": "db", "deny": "all"},
            {"from": "web", "to": "db", "allow": "all", "deny": "all"},
            {"from": "web", "to": "db"},
            "web -> db",
        ]})
    assert got == sorted(got)
    expected = [
        "groups.any: 'any' is a built-in selector (hint: give the group another name)",
        "groups.db: group 'db' has the name of an endpoint (hint: give the group another name)",
        "groups.frontend[1]: unknown endpoint or group 'wbe' (hint: did you mean 'web'?)",
        "groups.loop: groups include each other: loop -> loop2 -> loop (hint: a group may not "
        "contain itself)",
        "policies.default: unknown default 'block' (hint: write allow or deny)",
        "policies.rules[0].to: unknown endpoint or group 'frontnd' (hint: did you mean 'frontend'?)",
        "policies.rules[1].allow: unknown protocol 'tpc' in 'tpc/1' (hint: did you mean "
        "'tcp'?)",
        "policies.rules[1].from: the gateway is never filtered as a source (hint: put "
        "'gateway' in to:, or leave it out)",
        "policies.rules[2].form: unknown key 'form' (hint: did you mean 'from'?)",
        "policies.rules[2].from: rule 3 has no from: (hint: name endpoints or groups, or any)",
        "policies.rules[3]: a rule cannot both allow and deny (hint: split it into two rules)",
        "policies.rules[4]: a rule needs exactly one of allow: or deny: (hint: add allow: "
        "[...] or deny: all)",
        "policies.rules[5]: expected a rule mapping, got a string (hint: write {from: web, "
        "to: db, allow: [tcp/5432]})",
    ]
    for line in expected:
        assert line in got, line


def test_structure_problems():
    assert problems(["web"], None) == [
        "groups: expected a mapping of group names, got a list (hint: write e.g. groups: "
        "{frontend: [web, api]})"]
    assert "policies: expected a mapping, got a list" in problems(None, [])[0]
    assert "policies.rules: expected a list of rules, got a string" in \
        problems(None, {"rules": "x"})[0]
    assert "policies.rules[0].allow: expected a list of services, got a list" in \
        problems(None, {"rules": [{"from": "web", "to": "db", "allow": []}]})[0]
    assert "groups.g: group 'g' names no members" in problems({"g": {}}, None)[0]
    assert "groups.g.lables: unknown key 'lables' (hint: did you mean 'labels'?)" in \
        problems({"g": {"lables": {"a": "b"}}}, None)
    assert "groups.g[0]: a group cannot hold the gateway" in problems({"g": ["gateway"]},
                                                                      None)[0]
    bad_label = problems(None, {"rules": [{"from": "label:tier", "to": "db", "deny": "all"}]})
    assert "is not a label selector" in bad_label[0]


def test_endpoint_named_like_a_builtin_is_refused():
    members = dict(MEMBERS, any=Member("any", "host", "10.0.1.11"))
    got = problems(None, {"rules": []}, members)
    assert got == ["endpoints.any: endpoint 'any' has the name of a built-in selector "
                   "(hint: rename the endpoint, or it cannot be named in policies)"]


def test_no_policies_means_no_policy_but_groups_are_checked():
    assert parse_policy({"fe": ["web"]}, None, MEMBERS) is None
    assert problems({"fe": ["nope"]}, None)


# ------------------------------------------------------------------------------ deciding

@pytest.mark.parametrize("src,dst,check,verdict,by", [
    ("web", "db", "tcp/5432", "allow", "rule 1"),
    ("web", "cache", "tcp/5432", "allow", "rule 1"),
    ("web", "db", "tcp/5433", "deny", "rule 2"),
    ("h1", "db", "icmp", "deny", "rule 2"),
    ("db", "web", "http", "allow", "rule 3"),
    ("db", "web", "http/8080", "deny", "default"),
    ("cache", "api", "icmp", "allow", "rule 3"),
    ("web", "api", "icmp", "deny", "default"),
    ("web", "web2", "icmp", None, None),
    ("h1", "gateway", "udp/53", "deny", "rule 4"),
    ("h1", "web", "dns", "deny", "rule 4"),
    ("web", "db", "dns", "allow", "built-in: DNS to the gateway"),
    ("web", "gateway", "tcp/53", "allow", "built-in: DNS to the gateway"),
    ("web", "gateway", "icmp", "deny", "default"),
])
def test_first_match_wins(src, dst, check, verdict, by):
    p = policy()
    if verdict is None:
        with pytest.raises(ValidationError, match="unknown endpoint 'web2'"):
            p.explain(src, dst, check)
        return
    d = p.explain(src, dst, check)
    assert (d.verdict, d.decided_by) == (verdict, by)


def test_explain_says_why():
    p = policy()
    d = p.explain("web", "db", "tcp/5432")
    assert str(d) == ("web -> db tcp/5432: allow (decided by rule 1 "
                      "(frontend -> data allow tcp/5432))")
    assert "allow" in d._repr_html_()
    assert str(p.explain("web", "api", "icmp")) == \
        "web -> api icmp: deny (no rule matches: default deny)"
    assert p.decide(Flow(GATEWAY, "db", "tcp", 22)).allowed     # the gateway is not filtered
    with pytest.raises(ValidationError, match="not a check"):
        p.explain("web", "db", "tcp/x")


def test_default_allow_and_denied_pairs():
    p = policy(rules=[{"from": "web", "to": "db", "deny": "icmp"}], default="allow")
    assert p.denied_pairs("icmp") == [("web", "db")]
    assert p.denied_pairs("tcp/22") == []


def test_parse_check():
    assert parse_check("dns") == ("udp", 53)
    assert parse_check("http") == ("tcp", 80)
    assert parse_check("tcp") == ("tcp", None)
    assert parse_check("gre") == ("gre", None)
    with pytest.raises(ValueError):
        parse_check("tcp/")


# ------------------------------------------------------------------------------ shadowing

def test_shadowed_rules_are_warned_with_numbers():
    p = policy(rules=[
        {"from": "any", "to": "data", "deny": "all"},                    # 1
        {"from": "frontend", "to": "data", "allow": ["tcp/5432"]},       # 2: shadowed by 1
        {"from": "web", "to": "api", "allow": ["tcp/1-100"]},            # 3
        {"from": "web", "to": "api", "allow": ["tcp/101-200"]},          # 4
        {"from": "web", "to": "api", "allow": ["tcp/50-150"]},           # 5: by 3 and 4
        {"from": "web", "to": "api", "deny": ["tcp/150-250"]},           # 6: partly: fine
        {"from": "web", "to": "data", "allow": "icmp"},                  # 7: by 1
        {"from": "label:tier=none", "to": "web", "allow": "all"},         # 8: selects nobody
    ])
    got = [str(w) for w in p.warnings]
    assert got == [
        "policies.rules[1]: rule 2 never matches: rule 1 decides every flow it covers, the "
        "other way (hint: move it above rule 1, narrow rule 1, or remove it)",
        "policies.rules[4]: rule 5 never matches: rule 3, rule 4 decide every flow it covers "
        "(hint: it is redundant: remove it)",
        "policies.rules[6]: rule 7 never matches: rule 1 decides every flow it covers, the "
        "other way (hint: move it above rule 1, narrow rule 1, or remove it)",
        "policies.rules[7]: rule 8 selects no pair of endpoints (label:tier=none -> web) "
        "(hint: check its groups and selectors)",
    ]
    assert "warning: policies.rules[1]" in p.to_text()


def test_the_issue_example_has_no_warning():
    assert policy().warnings == ()


# ------------------------------------------------------------------------------ rendering

def test_table_with_counters():
    p = policy()
    text = p.to_text({"rule 1": (10, 840), "default": (3, 180)})
    lines = text.splitlines()
    assert lines[0] == "Policy: 4 rules, default deny"
    assert lines[1].split() == ["rule", "from", "to", "verdict", "packets", "services",
                                "comment"]
    assert lines[3].split()[:5] == ["1", "frontend", "data", "allow", "10"]
    assert "built-in: DNS to the gateway" in text and lines[-1].split()[5] == "3"
    html = p._repr_html_()
    assert html.count("<tr style=") == 6
