"""Policies and loss compiled to libnftables JSON: golden files, and the transaction shapes.

``golden/nftables/NAME.yaml`` (endpoints, groups, policies, bridge, gateway) compiles to the
batch in ``NAME.json`` and, rendered as ``nft -f`` text, ``NAME.nft``.  Regenerate with
``UPDATE_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hybridnb.core import nftables as nft
from hybridnb.core.policy import Member, parse_policy
from tests.golden import check_golden

GOLDEN = Path(__file__).resolve().parent / "golden" / "nftables"
CASES = sorted(GOLDEN.glob("*.yaml"))


def load(path: Path):
    data = yaml.safe_load(path.read_text())
    members = {n: Member(n, e["kind"], e["address"], e.get("labels") or {})
               for n, e in data["endpoints"].items()}
    policy = parse_policy(data.get("groups"), data["policies"], members)
    body = nft.policy_body(policy, lab=path.stem, bridge=data["bridge"],
                           gateway=data["gateway"])
    return policy, nft.replace_table(nft.INET, nft.policy_table(path.stem),
                                     f"hybridnb:{path.stem} 0123456789ab", body)


def test_enough_cases():
    assert len(CASES) >= 2


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_policy_golden(path: Path):
    _, batch = load(path)
    check_golden(path.with_suffix(".json"), json.dumps(batch, indent=1, sort_keys=True))
    check_golden(path.with_suffix(".nft"), nft.to_text(batch))


def test_transaction_replaces_the_table_whole():
    policy, batch = load(GOLDEN / "issue-example.yaml")
    cmds = batch["nftables"]
    ident = {"family": "inet", "name": "hnb-issue-example"}
    assert cmds[:3] == [{"add": {"table": ident}}, {"delete": {"table": ident}},
                        {"add": {"table": ident}}]
    assert cmds[4]["add"]["rule"]["comment"] == "hybridnb:issue-example 0123456789ab"
    assert cmds[4]["add"]["rule"]["chain"] == "owner"
    chains = [c["add"]["chain"] for c in cmds if "chain" in c.get("add", {})]
    base = [c for c in chains if "hook" in c]
    # base chains never drop by policy: they are hooked before the transaction commits
    assert {(c["name"], c["hook"], c["policy"]) for c in base} == {
        ("forward", "forward", "accept"), ("input", "input", "accept")}
    rules = [c["add"]["rule"] for c in cmds if "rule" in c.get("add", {})]
    assert all(any("counter" in e for e in r["expr"]) for r in rules
               if r["chain"] not in ("forward", "input"))
    assert {c["name"] for c in chains} == {"owner", "forward", "input", "east-west",
                                           "to-gateway"}
    east = [r["comment"] for r in rules if r["chain"] == "east-west"]
    assert east == ["rule 1", "rule 2", "rule 3", "default"]
    assert rules[-1]["comment"] == "default" and rules[-1]["expr"][-1] == {"accept": None}


def test_rules_match_the_original_direction():
    _, batch = load(GOLDEN / "issue-example.yaml")
    rule1 = next(c["add"]["rule"] for c in batch["nftables"]
                 if c.get("add", {}).get("rule", {}).get("comment") == "rule 1")
    lefts = [e["match"]["left"] for e in rule1["expr"] if "match" in e]
    assert {"ct": {"key": "ip saddr", "dir": "original"}} in lefts
    assert {"ct": {"key": "proto-dst", "dir": "original"}} in lefts
    # ICMP errors a flow causes share its verdict
    assert {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}},
                      "right": {"set": ["tcp", "icmp"]}}} in rule1["expr"]


def test_empty_selector_gets_an_empty_named_set():
    members = {"a": Member("a", "host", "10.0.0.2"), "b": Member("b", "vm", "10.0.0.3")}
    policy = parse_policy({"none": {"labels": {"x": "y"}}},
                          {"rules": [{"from": "none", "to": "b", "deny": "all"}]}, members)
    body = nft.policy_body(policy, lab="l", bridge="br", gateway="10.0.0.1")
    sets = [c["add"]["set"] for c in body if "set" in c.get("add", {})]
    assert sets == [{"family": "inet", "table": "hnb-l", "name": "g-none",
                     "type": "ipv4_addr"}]


def test_counters_sum_per_comment():
    listing = {"nftables": [
        {"table": {"family": "inet", "name": "hnb-l"}},
        {"rule": {"chain": "owner", "comment": "hybridnb:l fp", "expr": [{"counter": None}]}},
        {"rule": {"chain": "east-west", "comment": "rule 1",
                  "expr": [{"counter": {"packets": 3, "bytes": 300}}, {"accept": None}]}},
        {"rule": {"chain": "east-west", "comment": "rule 1",
                  "expr": [{"counter": {"packets": 2, "bytes": 100}}, {"accept": None}]}},
        {"rule": {"chain": "to-gateway", "comment": "default",
                  "expr": [{"counter": {"packets": 1, "bytes": 60}}, {"drop": None}]}},
        {"rule": {"chain": "east-west", "comment": "default",
                  "expr": [{"counter": {"packets": 4, "bytes": 240}}, {"drop": None}]}},
        {"rule": {"chain": "forward", "comment": "lab bridge",
                  "expr": [{"goto": {"target": "east-west"}}]}},
    ]}
    assert nft.policy_counters(listing) == {"rule 1": (5, 400), "default": (5, 300)}
    assert nft.owner_of(listing) == "hybridnb:l fp" and nft.owner_of(None) is None


def test_loss_update_and_remove():
    batch = nft.loss_update("lab", "db", "hybridnb:lab:db fp", "vnet3", 2000)
    check_golden(GOLDEN / "loss-update.nft", nft.to_text(batch))
    cmds = batch["nftables"]
    drops = [c["add"]["rule"] for c in cmds if c.get("add", {}).get("rule", {}).get(
        "comment") == "loss"]
    assert [r["chain"] for r in drops] == ["ep-db-fwd", "ep-db-out"]
    assert drops[0]["expr"][1] == {"match": {"op": "<", "left": {"numgen": {
        "mode": "random", "mod": 10000, "offset": 0}}, "right": 2000}}
    none = nft.loss_update("lab", "db", "rec", "vnet3", None)["nftables"]
    assert {"delete": {"chain": {"family": "bridge", "table": "hnb-lab-links",
                                 "name": "ep-db-fwd"}}} in none
    assert nft.loss_remove("lab", "db", last=True) == nft.delete_table("bridge", "hnb-lab-links")
    some = nft.loss_remove("lab", "db", last=False)["nftables"]
    assert [c["delete"]["chain"]["name"] for c in some if "delete" in c] == \
        ["ep-db", "ep-db-fwd", "ep-db-out"]
