"""A connectivity matrix judged against a policy: ok, blocked (with the rule), failed, leak."""

from __future__ import annotations

import json

from hybridnb.core.policy import Member, parse_policy
from hybridnb.services.policyview import classify, flow_of, judge
from hybridnb.services.probe.matrix import ConnectivityMatrix, ProbeResult

MEMBERS = {"web": Member("web", "container", "10.0.1.100"),
           "db": Member("db", "vm", "10.0.1.200"),
           "h1": Member("h1", "host", "10.0.1.10")}
POLICY = parse_policy({"frontend": ["web"]}, {"default": "deny", "rules": [
    {"from": "frontend", "to": "db", "allow": ["tcp/5432", "icmp"]},
    {"from": "h1", "to": "any", "allow": "icmp"},
    {"from": "db", "to": "gateway", "deny": "udp/53"},
]}, MEMBERS)


def r(check, src, dst, ok, reason="", port=None):
    return ProbeResult(check, src, dst, ok, reason if ok is not True else "", port=port)


def matrix():
    results = [
        r("icmp", "web", "db", True), r("icmp", "db", "web", False, "timeout"),
        r("icmp", "h1", "web", True), r("icmp", "web", "h1", True),      # leak: rule? default
        r("icmp", "web", "gateway", False, "timeout"),
        r("tcp/5432", "web", "db", False, "refused", 5432),              # failed: allowed
        r("tcp/5432", "h1", "db", False, "timeout", 5432),               # blocked: default
        r("dns", "web", "db", True, port=53), r("dns", "db", "web", False, "timeout", 53),
        r("udp", "h1", "db", None, "no responder", 7),
    ]
    return ConnectivityMatrix.from_results(results, sources=["web", "db", "h1"],
                                           targets=["web", "db", "h1", "gateway"])


def test_flows_of_checks():
    assert str(flow_of(r("dns", "web", "db", True, port=53))) == "web -> gateway udp/53"
    assert str(flow_of(r("http", "web", "db", True, port=8080))) == "web -> db tcp/8080"
    assert str(flow_of(r("http", "web", "db", True))) == "web -> db tcp/80"
    assert str(flow_of(r("icmp", "web", "db", True))) == "web -> db icmp"


def test_classify_every_status():
    pm = classify(matrix(), POLICY)
    got = {(v.result.check, v.result.source, v.result.target): (v.status, v.rule)
           for v in pm.verdicts}
    assert got == {
        ("icmp", "web", "db"): ("ok", "rule 1"),
        ("icmp", "db", "web"): ("blocked", "default"),
        ("icmp", "h1", "web"): ("ok", "rule 2"),
        ("icmp", "web", "h1"): ("leak", "default"),
        ("icmp", "web", "gateway"): ("blocked", "default"),
        ("tcp/5432", "web", "db"): ("failed", "rule 1"),
        ("tcp/5432", "h1", "db"): ("blocked", "default"),
        ("dns", "web", "db"): ("ok", "built-in: DNS to the gateway"),
        ("dns", "db", "web"): ("blocked", "rule 3"),
        ("udp", "h1", "db"): ("skip", "default"),
    }
    assert pm.counts() == {"ok": 3, "blocked": 4, "failed": 1, "leak": 1, "skip": 1}
    assert not pm.ok and [str(v) for v in pm.unexpected()] == [
        "icmp web -> h1: leak by default",
        "tcp/5432 web -> db: failed by rule 1 (refused)",
    ]


def test_renders():
    pm = classify(matrix(), POLICY)
    text = pm.to_text()
    assert text.splitlines()[0] == (
        "10 probes against the policy: 3 ok, 4 blocked as the policy says, 1 failed, "
        "1 leaked through a deny, 1 skipped")
    assert "LEAK" in text and "blk" in text and "unexpected:" in text
    html = pm._repr_html_()
    assert "blk default" in html and html.count("<table>") == 4
    doc = json.loads(pm.to_json())
    assert doc["results"][1] == {"check": "icmp", "source": "db", "target": "web",
                                 "observed": "fail", "reason": "timeout", "status": "blocked",
                                 "expected": True, "policy": "deny", "rule": "default"}


def test_unknown_endpoints_are_judged_without_policy():
    m = ConnectivityMatrix.from_results([r("icmp", "x", "db", False, "timeout")])
    (v,) = classify(m, POLICY).verdicts
    assert v.decision is None and v.status == "failed" and v.rule == ""
    assert judge(r("icmp", "a", "b", True), None) == "ok"
