"""Parsing and evaluating connectivity expectations (pure)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hybridnb.core.expect import Expectation, evaluate, parse_expectation, parse_expectations
from hybridnb.errors import ValidationError


def test_parse_the_documented_forms():
    got = parse_expectations([
        "web -> db tcp/5432 ok",
        "web -> vm1 icmp ok",
        "guest -> db tcp/5432 blocked",
        "  a->b   UDP/53   OK ",
        "web -> gateway http ok",
        "web -> db http/8080 blocked",
        "web -> db dns ok",
    ])
    assert got == [
        Expectation("web", "db", "tcp", 5432, "ok"),
        Expectation("web", "vm1", "icmp", None, "ok"),
        Expectation("guest", "db", "tcp", 5432, "blocked"),
        Expectation("a", "b", "udp", 53, "ok"),
        Expectation("web", "gateway", "http", None, "ok"),
        Expectation("web", "db", "http", 8080, "blocked"),
        Expectation("web", "db", "dns", None, "ok"),
    ]
    assert str(got[0]) == "web -> db tcp/5432 ok"
    assert got[3].check == "udp/53"


@pytest.mark.parametrize("line, fragment", [
    ("web db tcp/5432 ok", "joined by '->'"),
    ("web -> db tcp ok", "tcp needs a port"),
    ("web -> db tcp/70000 ok", "out of range"),
    ("web -> db icmp/5 ok", "icmp takes no port"),
    ("web -> db tpc/5432 ok", "did you mean 'tcp'"),
    ("web -> db tcp/5432 okay", "did you mean 'ok'"),
    ("web -> db tcp/5432 maybe", "'ok' or 'blocked'"),
    ("web -> web icmp ok", "against itself"),
    ("gateway -> web icmp ok", "only a target"),
    ("web -> db icmp", "not an expectation"),
])
def test_bad_lines_say_what_is_wrong(line, fragment):
    with pytest.raises(ValidationError) as err:
        parse_expectation(line)
    assert fragment in str(err.value)


def test_every_problem_reported_at_once_with_paths():
    with pytest.raises(ValidationError) as err:
        parse_expectations(["web -> db icmp ok", "web db", "web -> dbb icmp ok", 7],
                           names=["web", "db"])
    paths = [p.path for p in err.value.problems]
    assert paths == ["expect[1]", "expect[2]", "expect[3]"]
    text = str(err.value)
    assert "unknown target endpoint 'dbb'" in text and "did you mean 'db'" in text
    assert "expected a string, got int" in text


def test_gateway_is_a_known_target():
    assert parse_expectations(["web -> gateway icmp ok"], names=["web"])[0].target == "gateway"


@dataclass
class R:
    ok: bool | None
    reason: str = ""


class FakeResults:
    def __init__(self, table):
        self.table = table

    def lookup(self, protocol, source, target, port=None):
        return self.table.get((protocol, source, target, port))


def test_evaluate_ok_blocked_missing_and_skipped():
    results = FakeResults({
        ("icmp", "web", "db", None): R(True),
        ("tcp", "guest", "db", 5432): R(False, "timeout"),
        ("tcp", "web", "db", 5432): R(False, "refused"),
        ("udp", "web", "db", 53): R(None, "no responder"),
    })
    exps = parse_expectations([
        "web -> db icmp ok",            # holds
        "guest -> db tcp/5432 blocked",  # holds
        "web -> db tcp/5432 ok",         # fails: refused
        "web -> db icmp blocked",        # fails: reachable
        "web -> db http ok",             # fails: not probed
        "web -> db udp/53 blocked",      # fails: skipped
    ])
    report = evaluate(exps, results)
    assert [r.holds for r in report.results] == [True, True, False, False, False, False]
    assert [r.observed for r in report.results] == ["ok", "fail", "fail", "ok", "missing", "skip"]
    assert report.results[2].reason == "refused"
    assert report.exit_code == 1
    assert report.summary() == "4 of 6 expectations fail"
    text = report.to_text()
    assert "PASS  web -> db icmp ok" in text and "FAIL  web -> db tcp/5432 ok" in text
    assert "observed missing (http was not probed)" in text
    assert "<table>" in report._repr_html_()
    assert report.records()[1] == {
        "expectation": "guest -> db tcp/5432 blocked", "source": "guest", "target": "db",
        "check": "tcp/5432", "expected": "blocked", "observed": "fail", "holds": True,
        "reason": "timeout"}


def test_all_hold_exit_zero():
    report = evaluate(parse_expectations(["a -> b icmp ok"]),
                      FakeResults({("icmp", "a", "b", None): R(True)}))
    assert report.exit_code == 0 and report.ok
    assert report.summary() == "1 expectation holds"


def test_with_a_policy_blocked_means_blocked_by_the_policy():
    from hybridnb.core.policy import Member, parse_policy

    members = {n: Member(n, "host", f"10.0.1.{i + 10}")
               for i, n in enumerate(("web", "db", "guest"))}
    policy = parse_policy(None, {"default": "deny", "rules": [
        {"from": "web", "to": "db", "allow": ["tcp/5432", "icmp"]}]}, members)
    results = FakeResults({
        ("tcp", "guest", "db", 5432): R(False, "timeout"),      # denied, failed: blocked
        ("tcp", "web", "db", 5432): R(False, "refused"),        # allowed, failed
        ("icmp", "web", "db", None): R(True),                   # allowed, ok
        ("icmp", "guest", "db", None): R(True),                 # denied, passed: leak
        ("dns", "guest", "web", None): R(True),                 # built-in DNS allowance
    })
    exps = parse_expectations([
        "guest -> db tcp/5432 blocked",   # holds: the default denies it
        "web -> db tcp/5432 blocked",     # fails: it failed, but the policy allows it
        "web -> db icmp ok",              # holds
        "guest -> db icmp ok",            # fails: a leak
        "guest -> db tcp/5432 ok",        # fails: blocked
        "guest -> web dns ok",            # holds
    ])
    report = evaluate(exps, results, policy=policy)
    assert [r.holds for r in report.results] == [True, False, True, False, False, True]
    assert [r.observed for r in report.results] == ["blocked", "fail", "ok", "leak", "blocked",
                                                    "ok"]
    assert report.results[0].reason == "by default (timeout)"
    assert report.results[1].reason == ("refused; the policy allows it (rule 1): not blocked "
                                        "by the policy")
    assert "yet it got through" in report.results[3].reason
