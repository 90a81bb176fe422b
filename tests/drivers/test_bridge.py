"""The bridge driver against the real kernel, inside a private namespace (never the host's)."""

from __future__ import annotations

import pytest

from hybridnb.core.resource import Observation, Resource
from hybridnb.drivers import nsutil
from hybridnb.drivers.bridge import BridgeDriver
from hybridnb.drivers.links import CREATING_GROUP
from hybridnb.errors import ConflictError, NotFoundError
from hybridnb.target import Target
from tests.gating import require_real
from tests.helpers.hostsnap import diff, snapshot
from tests.helpers.privnet import private_netns, unique

pytestmark = pytest.mark.real


def _require_root() -> None:
    require_real()


@pytest.fixture
def ns():
    _require_root()
    with private_netns() as name:
        yield name


def bridge_res(name="hbt0", address="10.77.0.1/24", subnet="10.77.0.0/24", mtu=1450,
               adopt=False) -> Resource:
    return Resource("bridge", name, {"bridge": name, "address": address, "subnet": subnet,
                                     "mtu": mtu, "adopt": adopt})


def link(ns: str, name: str):
    with nsutil.iproute(ns) as ipr:
        found = ipr.link("get", ifname=name)[0]
        addrs = sorted(f"{a.get('address')}/{a['prefixlen']}"
                       for a in ipr.get_addr(family=2, index=found["index"]))
    return found, addrs


def test_create_observe_delete_round_trip(ns):
    before = snapshot(ns)
    drv = BridgeDriver(Target("t", netns=ns))
    lab, res = unique("lab"), bridge_res()
    drv.check(lab, res)
    drv.create(lab, res)
    assert drv.observe(lab) == {"hbt0": Observation(res.fingerprint)}
    assert drv.observe("otherlab") == {}
    found, addrs = link(ns, "hbt0")
    assert addrs == ["10.77.0.1/24"]
    assert found.get("mtu") == 1450 and found["flags"] & 1
    assert drv.observe(lab)["hbt0"].mtu == 1450          # status compares it with the lab's
    assert found.get("ifalias") == f"hybridnb:{lab}:{res.fingerprint}"
    drv.check(lab, res)                       # its own route is no conflict on re-apply
    changed = bridge_res(address="10.77.0.254/24", mtu=1400)
    drv.create(lab, changed)                  # converges in place
    assert drv.observe(lab) == {"hbt0": Observation(changed.fingerprint)}
    assert link(ns, "hbt0")[1] == ["10.77.0.254/24"]
    drv.delete(lab, "hbt0")
    drv.delete(lab, "hbt0")                   # already gone is fine
    assert drv.observe(lab) == {}
    assert diff(before, snapshot(ns)) == []


def test_adopt_keeps_other_addresses_and_restores_alias(ns):
    with nsutil.iproute(ns) as ipr:
        ipr.link("add", ifname="userbr", kind="bridge", mtu=1500)
        idx = ipr.link_lookup(ifname="userbr")[0]
        ipr.link("set", index=idx, ifalias="user: keep me", state="up")
        ipr.addr("add", index=idx, address="192.168.77.1", prefixlen=24)
    before = snapshot(ns)
    drv = BridgeDriver(Target("t", netns=ns))
    lab = unique("lab")
    res = bridge_res("userbr", adopt=True)
    drv.check(lab, res)
    drv.create(lab, res)
    assert drv.observe(lab) == {"userbr": Observation(res.fingerprint)}
    found, addrs = link(ns, "userbr")
    assert addrs == ["10.77.0.1/24", "192.168.77.1/24"]
    assert found.get("mtu") == 1500           # the user's MTU is left alone
    drv.create(lab, res)                      # idempotent: still knows it added the address
    drv.delete(lab, "userbr")
    found, addrs = link(ns, "userbr")
    assert addrs == ["192.168.77.1/24"]
    assert found.get("ifalias") == "user: keep me"
    assert drv.observe(lab) == {}
    assert diff(before, snapshot(ns)) == []


def test_adopt_with_gateway_already_present_removes_nothing(ns):
    with nsutil.iproute(ns) as ipr:
        ipr.link("add", ifname="userbr", kind="bridge")
        idx = ipr.link_lookup(ifname="userbr")[0]
        ipr.addr("add", index=idx, address="10.77.0.1", prefixlen=24)
    drv = BridgeDriver(Target("t", netns=ns))
    lab = unique("lab")
    drv.create(lab, bridge_res("userbr", adopt=True))
    drv.delete(lab, "userbr")
    found, addrs = link(ns, "userbr")
    assert addrs == ["10.77.0.1/24"] and not found.get("ifalias")


def test_adopt_missing_bridge_is_a_clear_error(ns):
    drv = BridgeDriver(Target("t", netns=ns))
    res = bridge_res("nosuchbr", adopt=True)
    with pytest.raises(NotFoundError, match="nosuchbr does not exist"):
        drv.check("l", res)
    with pytest.raises(NotFoundError, match="cannot be adopted"):
        drv.create("l", res)


def test_overlapping_route_is_refused_and_named(ns):
    with nsutil.iproute(ns) as ipr:
        ipr.link("add", ifname="other0", kind="bridge")
        idx = ipr.link_lookup(ifname="other0")[0]
        ipr.link("set", index=idx, state="up")
        ipr.route("add", dst="10.77.0.0/16", oif=idx, table=100)
    drv = BridgeDriver(Target("t", netns=ns))
    with pytest.raises(ConflictError) as err:
        drv.check("l", bridge_res())
    assert "overlaps route 10.77.0.0/16 dev other0 table 100" in str(err.value)
    drv.check("l", bridge_res(address="10.78.0.1/24", subnet="10.78.0.0/24"))


def test_foreign_bridge_name_is_refused(ns):
    with nsutil.iproute(ns) as ipr:
        ipr.link("add", ifname="hbt0", kind="bridge")
    drv = BridgeDriver(Target("t", netns=ns))
    with pytest.raises(ConflictError, match="not made by hybridnb"):
        drv.check("l", bridge_res())
    with pytest.raises(ConflictError):
        drv.create("l", bridge_res())
    drv.delete("l", "hbt0")                   # not ours: left alone
    assert link(ns, "hbt0")[0]
    with nsutil.iproute(ns) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="hbt0")[0], ifalias="hybridnb:other:x")
    with pytest.raises(ConflictError, match="belongs to lab 'other'"):
        drv.check("l", bridge_res())


def test_half_made_bridge_of_a_crash_is_replaced(ns):
    with nsutil.iproute(ns) as ipr:        # a crash right after "link add"
        ipr.link("add", ifname="hbt0", kind="bridge", group=CREATING_GROUP)
    drv = BridgeDriver(Target("t", netns=ns))
    lab, res = unique("lab"), bridge_res()
    drv.check(lab, res)
    drv.create(lab, res)
    assert drv.observe(lab) == {"hbt0": Observation(res.fingerprint)}
    assert link(ns, "hbt0")[0].get("group") == 0
