"""Changing ``hosts:`` of a lab applied over two real sandboxes converges (issue 17).

Two sandboxes (``<test sandbox>a``, ``<test sandbox>b``; Docker only) joined by a veth
underlay, 192.168.254.0/30, stand in for two machines.  Checked:

* **removing host b** from a 2-host lab (the MTU pinned, see :func:`open_lab`) with a container on each (its container moved to a):
  the plan names b as removed, with its sandbox, and lists the deletion of everything the
  lab made there (container, Docker network, firewall rule, VXLAN device, bridge) and on a
  only the VXLAN device going and the container arriving; apply; b's namespace snapshot is
  then **exactly** its clean one, a's kernel holds no FDB entry towards b's underlay
  address, b's record is gone, the container kept its address, and the next plan is empty;
* **moving an endpoint a → b and back**: the plan holds only its deletion on one host and
  its creation on the other; after each apply it has its address, and its name resolves
  and answers from the other host's container (gratuitous ARP from its new place: without
  it the ping from the other host was lost to the bridges' stale learned entries);
* **removing a remote host** (given by its Docker URL): its share deleted through its agent,
  which is then gone too;
* the VXLAN update that drops a host's flood entry also drops the MACs learned behind it;
* a VXLAN device with the lab's VNI and port already in a host's kernel, not this lab's,
  refuses plan and apply before any host changes.

Every packet goes to an address this test made, inside those namespaces.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from hybridnb import multihost_apply
from hybridnb.core import naming
from hybridnb.drivers import nsutil
from hybridnb.lab import Lab
from tests.gating import require_real
from tests.helpers import hostsnap
from tests.helpers.twohosts import snapshots, two_sandboxes
from tests.realengines import ENGINE_TOOLS, SANDBOX_NAME

pytestmark = [pytest.mark.real]

UNDERLAY = "192.168.254.0/30"
ULINK = ("hnbhm0", "hnbhm1")
BOXES = {"a": f"{SANDBOX_NAME}a", "b": f"{SANDBOX_NAME}b"}
HOSTS = {"a": {"sandbox": BOXES["a"], "underlay": "192.168.254.1"},
         "b": {"sandbox": BOXES["b"], "underlay": "192.168.254.2"}}


def ours(name: str) -> bool:
    return name.startswith("hnb-hmv")


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Both sandboxes up, joined by the underlay, snapshotted; taken down at the end."""
    require_real(tools=ENGINE_TOOLS)
    with two_sandboxes(BOXES, UNDERLAY, ULINK, ours) as (boxes, before):
        yield {"boxes": boxes, "before": before, "tmp": tmp_path_factory}


def open_lab(state: Path, name: str, hosts: dict[str, Any], eps: dict[str, Any]) -> Lab:
    """The lab; its MTU pinned at 1450, so that going down to one host (no VXLAN to leave
    room for) does not raise it to 1500 — which would change every endpoint too."""
    doc = {"name": name, "hosts": hosts, "network": {"mtu": 1450},
           "endpoints": copy.deepcopy(eps)}
    return Lab.from_dict(doc, backend="sandbox", sandbox=BOXES["a"], state_dir=state)


def by_host(plan: Any) -> dict[str, list[tuple[str, str, str]]]:
    return {h: sorted((a.op, a.kind, a.name) for a in p.actions) for h, p in plan.hosts}


def fdb_towards(netns: str, address: str) -> list[str]:
    """Every FDB entry of ``netns``'s kernel that sends to ``address`` (a VXLAN peer)."""
    with nsutil.iproute(netns) as ipr:
        return [str(e) for e in ipr.fdb("dump") if e.get_attr("NDA_DST") == address]


def same_as(before: Any, after: Any, where: str) -> None:
    assert hostsnap.diff(before, after) == [], where
    assert before.sections == after.sections, where


def reaches_by_name(lab: Lab, src: str, dst: str) -> None:
    address = str(lab.addresses()[dst])
    out = lab.exec(src, f"nslookup {dst}.hybrid.local").check()
    assert address in out.stdout, out
    lab.exec(src, f"ping -c1 -W2 {dst}.hybrid.local").check()


def test_removing_host_b_removes_its_share_and_converges(two) -> None:
    boxes, before = two["boxes"], two["before"]
    state = two["tmp"].mktemp("hostmove-remove")
    eps = {"c1": {"kind": "container"}, "c2": {"kind": "container", "host": "b"}}
    spread = open_lab(state, "hmvr", HOSTS, eps)
    one = {"a": HOSTS["a"]}
    try:
        t0 = time.monotonic()
        assert spread.apply().ok
        print(f"apply over a and b: {time.monotonic() - t0:.2f}s")
        assert fdb_towards(boxes["a"].netns, "192.168.254.2")
        address = spread.addresses()["c2"]
        gathered = open_lab(state, "hmvr", one, {"c1": eps["c1"], "c2": {"kind": "container"}})
        plan = gathered.plan()
        print(plan.to_text())
        vx = naming.vxlan_device("hmvr")
        assert plan.removed == ("b",)
        assert by_host(plan) == {
            "a": [("create", "container", "c2"), ("delete", "vxlan", vx)],
            "b": [("delete", "bridge", "hybr0"), ("delete", "container", "c2"),
                  ("delete", "firewall", "hybr0"), ("delete", "network", "hnb-hmvr"),
                  ("delete", "vxlan", vx)]}
        assert f"host b (removed from hosts:, was sandbox {BOXES['b']}): " in plan.to_text()
        t0 = time.monotonic()
        done = gathered.apply()
        assert done.ok, done
        print(f"apply removing host b: {time.monotonic() - t0:.2f}s")
        same_as(before["b"], snapshots({"b": boxes["b"]}, ours)["b"], "b")
        assert fdb_towards(boxes["a"].netns, "192.168.254.2") == []
        assert multihost_apply.recorded_hosts(gathered) == ["a"]
        assert gathered.addresses()["c2"] == address
        lab = open_lab(state, "hmvr", one, {"c1": eps["c1"], "c2": {"kind": "container"}})
        left = lab.plan()
        assert left.empty, left.to_text()
        reaches_by_name(lab, "c1", "c2")
    finally:
        done = open_lab(state, "hmvr", one, eps | {"c2": {"kind": "container"}}).destroy()
        assert done.ok, done
    after = snapshots(boxes, ours)
    for h in ("a", "b"):
        same_as(before[h], after[h], h)


def test_moving_an_endpoint_to_the_other_host_and_back(two) -> None:
    boxes, before = two["boxes"], two["before"]
    state = two["tmp"].mktemp("hostmove-move")
    eps = {"c1": {"kind": "container"}, "c2": {"kind": "container", "host": "b"},
           "m": {"kind": "container"}}
    lab = open_lab(state, "hmvm", HOSTS, eps)
    try:
        assert lab.apply().ok
        address = lab.addresses()["m"]
        reaches_by_name(lab, "c2", "m")
        for there, other in (("b", "c1"), ("a", "c2")):
            moved = open_lab(state, "hmvm", HOSTS, eps | {"m": {"kind": "container",
                                                               "host": there}})
            plan = moved.plan()
            print(plan.to_text())
            here = "a" if there == "b" else "b"
            assert by_host(plan) == {here: [("delete", "container", "m")],
                                     there: [("create", "container", "m")]}, plan.to_text()
            t0 = time.monotonic()
            done = moved.apply()
            assert done.ok and done.notes == [], done     # announced from where it is now
            print(f"m moved to {there}: {time.monotonic() - t0:.2f}s")
            assert moved.addresses()["m"] == address
            reaches_by_name(moved, other, "m")
            reaches_by_name(moved, "m", other)
            assert moved.plan().empty
    finally:
        assert open_lab(state, "hmvm", HOSTS, eps).destroy().ok
    after = snapshots(boxes, ours)
    for h in ("a", "b"):
        same_as(before[h], after[h], h)


def test_a_host_dropped_from_the_flood_list_takes_the_macs_learned_behind_it(two) -> None:
    """3 hosts → 2 without a third sandbox: the VXLAN driver's update to fewer remotes (what
    the remaining hosts get when one is removed) drops the flood entry *and* every MAC
    learned behind the removed host's underlay address, so no frame is sent there until
    the entries would have aged out."""
    from hybridnb.core.resource import Resource
    from hybridnb.drivers.vxlan import VxlanDriver

    boxes, before = two["boxes"], two["before"]
    netns = boxes["a"].netns
    left, gone = "192.168.254.2", "192.168.254.9"     # .9: a host that was never up

    def device(remotes: list[str]) -> Resource:
        spec = {"device": "hxhmvfdb0", "bridge": "hnbhmvbr0", "vni": 4245, "port": 4789,
                "local": "192.168.254.1", "host": "a", "mtu": 1450, "remotes": remotes}
        return Resource("vxlan", "hxhmvfdb0", spec, "test")

    driver = VxlanDriver(boxes["a"].target())
    with nsutil.iproute(netns) as ipr:
        ipr.link("add", ifname="hnbhmvbr0", kind="bridge")
    try:
        driver.create("hmvf", device([left, gone]))
        with nsutil.iproute(netns) as ipr:                 # as if learned behind .9
            index = ipr.link_lookup(ifname="hxhmvfdb0")[0]
            ipr.fdb("append", ifindex=index, lladdr="02:00:00:00:00:09", dst=gone)
        assert len(fdb_towards(netns, gone)) == 2
        driver.update("hmvf", device([left]))
        assert fdb_towards(netns, gone) == []
        assert driver.flood_list("hxhmvfdb0") == [left]
    finally:
        driver.delete("hmvf", "hxhmvfdb0")
        with nsutil.iproute(netns) as ipr:
            ipr.link("del", ifname="hnbhmvbr0")
    same_as(before["a"], snapshots({"a": boxes["a"]}, ours)["a"], "a")


def test_a_vxlan_device_on_the_labs_vni_not_of_this_lab_is_refused_at_plan_time(two) -> None:
    """Another user's lab (another state directory) or a device hybridnb did not make, with
    the lab's VNI and port, in a host's kernel: the plan is refused naming host and device."""
    from hybridnb.errors import ConflictError

    boxes, before = two["boxes"], two["before"]
    state = two["tmp"].mktemp("hostmove-clash")
    lab = Lab.from_dict({"name": "hmvc", "hosts": HOSTS, "network": {"vxlan": {"vni": 4246}},
                         "endpoints": {"c1": {"kind": "container"}}},
                        backend="sandbox", sandbox=BOXES["a"], state_dir=state)
    with nsutil.iproute(boxes["a"].netns) as ipr:
        ipr.link("add", ifname="hnbhmvfx0", kind="vxlan", vxlan_id=4246, vxlan_port=4789)
    try:
        with pytest.raises(ConflictError) as info:
            lab.plan()
        print(info.value)
        assert str(info.value).startswith(
            f"host a (sandbox {BOXES['a']}): VXLAN device hnbhmvfx0 there (a device hybridnb "
            "did not make) already uses VNI 4246 on UDP port 4789: lab hmvc's segment would "
            "merge with it"), info.value
        with nsutil.iproute(boxes["a"].netns) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="hnbhmvfx0")[0],
                     ifalias="hybridnb:hmvother:vxlan:0123abcd")
        with pytest.raises(ConflictError) as info:
            lab.apply()
        assert "VXLAN device hnbhmvfx0 there (lab 'hmvother''s) already uses VNI 4246" in \
            str(info.value), info.value
        assert "network.vxlan.vni" in info.value.hint
        # refused before any host changed: nothing made, nothing recorded, on b either
        assert not multihost_apply.recorded_hosts(lab) and not lab.store.labs()
    finally:
        with nsutil.iproute(boxes["a"].netns) as ipr:
            ipr.link("del", ifname="hnbhmvfx0")
        if multihost_apply.recorded_hosts(lab):
            lab.destroy()
    assert not lab.plan().empty                          # the same lab plans again
    after = snapshots(boxes, ours)
    for h in ("a", "b"):
        same_as(before[h], after[h], h)


def test_removing_a_remote_host_takes_its_agent_container_too(two) -> None:
    """Host b given only by its Docker URL (a remote host: its fabric made by hybridnb's
    agent container there): removing it from ``hosts:`` deletes its share through the
    agent, the plan says the agent goes too, and after apply no agent container is left on
    b; b's namespace is exactly its clean snapshot."""
    import docker

    from hybridnb.remote import agentbox

    boxes, before = two["boxes"], two["before"]
    state = two["tmp"].mktemp("hostmove-remote")
    url = boxes["b"].target().docker_url
    hosts = {"a": HOSTS["a"], "b": {"docker": url, "underlay": "192.168.254.2"}}
    eps = {"c1": {"kind": "container"}, "c2": {"kind": "container", "host": "b"}}
    one = {"a": HOSTS["a"]}
    gathered = {"c1": eps["c1"], "c2": {"kind": "container"}}
    api_b = docker.APIClient(base_url=url, version="auto")
    try:
        t0 = time.monotonic()
        assert open_lab(state, "hmvq", hosts, eps).apply().ok
        print(f"apply with remote b (agent image imported): {time.monotonic() - t0:.2f}s")
        assert agentbox.agents(api_b)
        plan = open_lab(state, "hmvq", one, gathered).plan()
        print(plan.to_text())
        assert f"host b (removed from hosts:, was docker {url}): " in plan.to_text()
        assert by_host(plan)["b"] == [
            ("delete", "bridge", "hybr0"), ("delete", "container", "c2"),
            ("delete", "firewall", "hybr0"), ("delete", "network", "hnb-hmvq"),
            ("delete", "vxlan", naming.vxlan_device("hmvq"))]
        assert "host b: hybridnb's agent container there goes too, once no lab of " \
            "hybridnb uses that engine any more" in plan.notes
        t0 = time.monotonic()
        assert open_lab(state, "hmvq", one, gathered).apply().ok
        print(f"apply removing remote b: {time.monotonic() - t0:.2f}s")
        assert agentbox.agents(api_b) == []
        same_as(before["b"], snapshots({"b": boxes["b"]}, ours)["b"], "b")
        assert open_lab(state, "hmvq", one, gathered).plan().empty
    finally:
        assert open_lab(state, "hmvq", one, gathered).destroy().ok
        api_b.close()
    same_as(before["a"], snapshots({"a": boxes["a"]}, ours)["a"], "a")
