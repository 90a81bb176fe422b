"""The policy driver: one transaction per change, ownership, and refusing what the kernel
cannot enforce.  The unit part fakes libnftables; the real part runs in a private namespace."""

from __future__ import annotations

import pytest

from hybridnb.core import nftables as nftjson
from hybridnb.core.nftables import policy_resource
from hybridnb.core.policy import Member, parse_policy
from hybridnb.core.resource import Observation
from hybridnb.drivers import nsutil
from hybridnb.drivers.nftables import Nft, PolicyDriver, nft_features
from hybridnb.errors import EngineUnavailable
from hybridnb.target import Target
from tests.helpers.privnet import private_netns

MEMBERS = {"a": Member("a", "host", "10.88.0.10"), "b": Member("b", "vm", "10.88.0.11")}


def resource(lab: str = "pl", rules=None):
    policy = parse_policy(None, {"default": "deny", "rules": rules or [
        {"from": "a", "to": "b", "allow": "icmp"}]}, MEMBERS)
    body = nftjson.policy_body(policy, lab=lab, bridge="br0", gateway="10.88.0.1")
    return policy_resource(lab, body, bridge="br0", gateway="10.88.0.1", rules=1,
                           default="deny")


class FakeNft:
    """Records batches; holds one table's listing like the kernel would answer."""

    def __init__(self) -> None:
        self.batches: list[dict] = []
        self.tables: dict[str, dict] = {}

    def run(self, batch, *, dry_run=False, what=""):
        self.batches.append(batch)
        cmds = batch["nftables"]
        name = cmds[0]["add"]["table"]["name"]
        if not dry_run:
            self.tables.pop(name, None)
            if len(cmds) > 2:                  # replace: keep what a listing would show
                self.tables[name] = {"nftables": [c["add"][k] and {k: c["add"][k]}
                                                  for c in cmds[2:] if "add" in c
                                                  for k in c["add"]]}
        return {}

    def list_table(self, family, table):
        return self.tables.get(table)


@pytest.fixture
def driver(monkeypatch):
    monkeypatch.setattr("hybridnb.drivers.nftables.available", lambda: True)
    drv = PolicyDriver(Target("t", netns=None))
    drv.nft = FakeNft()
    return drv


def test_without_libnftables_there_is_nothing_to_observe(monkeypatch):
    """Every plan observes every kind: a machine without nftables plans labs without
    policies as before (a policy is refused by ``check``)."""
    from hybridnb.drivers.impairments import LinkDriver

    monkeypatch.setattr("hybridnb.drivers.nftables.available", lambda: False)
    monkeypatch.setattr("hybridnb.drivers.impairments.nft_available", lambda: False)
    assert PolicyDriver(Target("t", netns=None)).observe("pl") == {}
    assert LinkDriver(Target("t", netns=None)).observe("pl") == {}


def test_create_and_update_are_one_transaction_each(driver):
    res = resource()
    driver.create("pl", res)
    driver.update("pl", resource(rules=[{"from": "b", "to": "a", "allow": "all"}]))
    assert len(driver.nft.batches) == 2
    for batch in driver.nft.batches:
        ident = {"family": "inet", "name": "hnb-pl"}
        assert batch["nftables"][:3] == [{"add": {"table": ident}},
                                         {"delete": {"table": ident}},
                                         {"add": {"table": ident}}]
    assert driver.observe("pl") != {"pl": Observation(res.fingerprint)}
    driver.create("pl", res)
    assert driver.observe("pl") == {"pl": Observation(res.fingerprint)}
    assert driver.observe("other") == {}


def test_delete_leaves_a_table_that_is_not_ours(driver):
    driver.create("pl", resource())
    driver.nft.tables["hnb-pl"]["nftables"] = [
        {"rule": {"chain": "owner", "comment": "hybridnb:someone-else fp"}}]
    driver.delete("pl", "pl")
    assert len(driver.nft.batches) == 1 and "hnb-pl" in driver.nft.tables
    driver.nft.tables.clear()
    driver.delete("pl", "pl")                    # gone already: fine, nothing sent
    assert len(driver.nft.batches) == 1


# ------------------------------------------------------------------------------ real

@pytest.mark.real
def test_refuses_without_br_netfilter_and_lists_features():
    from tests.gating import require_real

    require_real()
    with private_netns() as ns:
        drv = PolicyDriver(Target("t", netns=ns))
        nsutil.write_sysctl(ns, "net.bridge.bridge-nf-call-iptables", "0")
        with pytest.raises(EngineUnavailable) as err:
            drv.check("pl", resource())
        assert "bridge-nf-call-iptables is 0" in str(err.value)
        assert "modprobe br_netfilter" in str(err.value)
        feats = {f.name: f.ok for f in nft_features(ns)}
        assert feats == {"libnftables": True, "br_netfilter": False,
                         "nft inet forward + conntrack": True, "nft bridge numgen": True}
        nsutil.write_sysctl(ns, "net.bridge.bridge-nf-call-iptables", "1")
        drv.check("pl", resource())              # a dry run: nothing is made
        assert Nft(ns).tables() == []


@pytest.mark.real
def test_a_ruleset_the_kernel_refuses_is_refused_by_check():
    from tests.gating import require_real

    require_real()
    with private_netns() as ns:
        drv = PolicyDriver(Target("t", netns=ns))
        res = resource()
        bad = {**res.spec, "body": [
            {"add": {"table": {"family": "bridge", "name": "hnb-probe-bad"}}},
            {"add": {"chain": {"family": "bridge", "table": "hnb-probe-bad", "name": "f",
                               "type": "filter", "hook": "forward", "prio": 0,
                               "policy": "accept"}}},
            {"add": {"rule": {"family": "bridge", "table": "hnb-probe-bad", "chain": "f",
                              "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}},
                                                  "right": "established"}},
                                       {"accept": None}]}}}]}
        from hybridnb.core.resource import Resource

        with pytest.raises(EngineUnavailable, match="this kernel refuses the policy table"):
            drv.check("pl", Resource("policy", "pl", bad))
        assert Nft(ns).tables() == []
        drv.create("pl", res)
        assert drv.observe("pl") == {"pl": Observation(res.fingerprint)}
        assert set(drv.counters("pl")) == {"rule 1", "default", "dns", "from-gateway"}
        drv.delete("pl", "pl")
        assert Nft(ns).tables() == []
