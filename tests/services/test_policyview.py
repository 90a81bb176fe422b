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


# ------------------------------------------------------------------ the matrix, judged

def test_a_judged_matrix_counts_blocked_apart_and_names_the_rule():
    from hybridnb.services.policyview import judge_matrix

    m = matrix()
    plain_failures = len(m.failures())
    judge_matrix(m, POLICY)
    assert m.judged[("icmp", "db", "web")] == ("blocked", "default")
    assert m.judged[("icmp", "web", "h1")] == ("leak", "default")
    assert ("tcp/5432", "web", "db") not in m.judged              # allowed, failed: a failure
    assert [(x.check, x.source, x.target) for x in m.failures()] == [("tcp/5432", "web", "db")]
    assert len(m.blocked()) == plain_failures - 1
    assert [x.target for x in m.leaks()] == ["h1"] and not m.ok
    assert m.counts() == {"ok": 4, "fail": 1, "skip": 1, "blocked": 4}
    assert m.summary().endswith("4 ok (1 leaked through a deny), 4 blocked by the policy, "
                                "1 failed, 1 skipped")
    text = m.to_text()
    assert "blocked by the policy, as it says:" in text
    assert "dns       db -> web: blocked by rule 3" in text
    assert "icmp      web -> h1: leak (the policy denies it: default)" in text
    grid = m.grid("icmp")
    cells = {(row["source"], c["target"]): c for row in grid["rows"] for c in row["cells"]}
    assert cells[("db", "web")]["status"] == "blocked" and cells[("db", "web")]["text"] == \
        "blocked" and "blocked by default" in cells[("db", "web")]["title"]
    assert cells[("web", "h1")]["text"] == "LEAK"
    assert "⊘ rule 3" in m.grid_html("dns")
    assert json.loads(m.to_json())["policy"][0] == {
        "check": "dns", "source": "db", "target": "web", "status": "blocked", "rule": "rule 3"}


def test_an_unjudged_matrix_is_what_it_was():
    m = matrix()
    assert m.counts() == {"ok": 4, "fail": 5, "skip": 1} and "blocked" not in m.summary()
    assert "policy" not in json.loads(m.to_json()) and m.blocked() == [] == m.leaks()


def test_policy_table_and_links_view_render():
    from hybridnb.services.policyview import LinkRow, LinksView, PolicyTable, where_applied

    table = PolicyTable("lab", POLICY, {"rule 1": (12, 1000), "default": (3, 180)}, "up",
                        "hnb-lab")
    text = table.to_text()
    assert text.splitlines()[0] == ("Policy of lab lab: 3 rules, default deny in hnb-lab — up "
                                    "(packets counted since the last change)")
    assert text.splitlines()[3].split()[:5] == ["1", "frontend", "db", "allow", "12"]
    assert table.records()[0]["packets"] == 12 and table.to_dict()["default"] == "deny"
    assert "<table" in table._repr_html_() and "1000" in table._repr_html_()
    bare = PolicyTable("lab", POLICY, None, "up", "hnb-lab", "the dry-run backend counts "
                       "no packets")
    assert "packets" not in bare.to_text().splitlines()[1]
    where = where_applied({"port": "veth1", "ifb": True, "guest": True, "dropped": 3})
    assert where == "port veth1, rate both ways (IFB), delay inside the guest"
    view = LinksView("lab", (LinkRow("db", "vm", "delay 50ms", "up", where, 0),))
    assert "db        vm    delay 50ms   up     port veth1" in view.to_text()
    assert view.records()[0]["dropped"] == 0 and "<table" in view._repr_html_()
