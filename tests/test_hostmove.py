"""Changing ``hosts:`` of an applied lab converges (dry-run: every host simulated by a dry-run
engine of its own): a host removed from the file has everything of the lab there deleted,
named as removed with where it was, and its record goes; the other hosts' VXLAN flood lists
drop it; an unreachable removed host is named and keeps its record; an endpoint moved to
another host keeps its address; dropping ``hosts:`` from a spread lab, or spreading a lab
applied on one host, is refused with a hint; destroy cleans hosts no longer in the file."""

from __future__ import annotations

import copy

import pytest

from hybridnb import multihost_apply
from hybridnb.core import naming
from hybridnb.errors import ConflictError, HybridError
from hybridnb.lab import Lab

THREE = {"a": {"sandbox": "hmva", "underlay": "192.168.250.1"},
         "b": {"sandbox": "hmvb", "underlay": "192.168.250.2"},
         "c": {"sandbox": "hmvc", "underlay": "192.168.250.3"}}
EPS = {"c1": {"kind": "container", "image": "busybox"},
       "c2": {"kind": "container", "image": "busybox", "host": "b"},
       "h3": {"kind": "host", "host": "c"}}
VX = naming.vxlan_device("hmvx")


def lab(tmp_path, hosts=THREE, eps=EPS, **moved):
    eps = copy.deepcopy(eps)
    for name, host in moved.items():
        if host is None:
            eps[name].pop("host", None)
        else:
            eps[name]["host"] = host
    doc = {"name": "hmvx", "endpoints": eps}
    if hosts is not None:
        doc["hosts"] = hosts
    return Lab.from_dict(doc, backend="dry-run", state_dir=tmp_path)


def without(*names):
    return {h: v for h, v in THREE.items() if h not in names}


def by_host(plan):
    return {h: sorted((a.op, a.kind, a.name) for a in p.actions) for h, p in plan.hosts}


def test_a_removed_host_has_its_share_deleted_and_the_others_stop_flooding_to_it(tmp_path):
    assert lab(tmp_path).apply().ok
    after = lab(tmp_path, without("b"), c2="c")
    plan = after.plan()
    assert plan.removed == ("b",)
    assert by_host(plan) == {
        "a": [("replace", "vxlan", VX)],
        "c": [("create", "container", "c2"), ("create", "network", "hnb-hmvx"),
              ("replace", "vxlan", VX)],
        "b": [("delete", "bridge", "hybr0"), ("delete", "container", "c2"),
              ("delete", "firewall", "hybr0"), ("delete", "network", "hnb-hmvx"),
              ("delete", "vxlan", VX)]}
    text = plan.to_text()
    assert text.splitlines()[0].startswith(
        "Plan for lab hmvx over 2 hosts, removing host b: ")
    assert "  host b (removed from hosts:, was sandbox hmvb): 0 to create" in text
    assert "its host was removed from hosts:" in text
    spec = {h: {a.kind: a.resource for a in p.actions} for h, p in plan.hosts}
    assert spec["a"]["vxlan"].spec["remotes"] == ["192.168.250.3"]
    assert spec["c"]["vxlan"].spec["remotes"] == ["192.168.250.1"]
    old = after.addresses()["c2"]
    done = after.apply()
    assert done.ok and list(done.hosts) == ["a", "c", "b"], done
    assert multihost_apply.recorded_hosts(after) == ["a", "c"]
    assert after.store.read("hmvx")["removed"] == {}
    assert after.addresses()["c2"] == old
    again = lab(tmp_path, without("b"), c2="c").plan()
    assert again.empty and again.removed == (), again


def test_down_to_one_host_keeps_the_lab_per_host_and_converges(tmp_path):
    assert lab(tmp_path).apply().ok
    one = lab(tmp_path, without("b", "c"), c2=None, h3=None)
    plan = one.plan()
    assert plan.removed == ("b", "c")
    assert ("delete", "vxlan", VX) in by_host(plan)["a"]       # no segment to join
    assert one.apply().ok
    assert multihost_apply.recorded_hosts(one) == ["a"]
    assert lab(tmp_path, without("b", "c"), c2=None, h3=None).plan().empty
    # and back to three hosts: the VXLAN again, the endpoints on their hosts
    back = lab(tmp_path)
    assert by_host(back.plan())["b"] == [
        ("create", "bridge", "hybr0"), ("create", "container", "c2"),
        ("create", "firewall", "hybr0"), ("create", "network", "hnb-hmvx"),
        ("create", "vxlan", VX)]
    assert back.apply().ok and lab(tmp_path).plan().empty


def test_an_endpoint_moved_to_another_host_keeps_its_address(tmp_path):
    assert lab(tmp_path).apply().ok
    before = lab(tmp_path).addresses()
    moved = lab(tmp_path, c2="a")
    assert by_host(moved.plan()) == {
        "a": [("create", "container", "c2")],
        "b": [("delete", "container", "c2"), ("delete", "network", "hnb-hmvx")],
        "c": []}
    done = moved.apply()
    assert done.ok
    # a dry-run engine has no namespace to announce it from: said, not hidden
    assert done.notes == ["container c2 moved to host a: not announced (hybridnb does not "
                          "enter it there); its peers find it once their entries expire"]
    assert lab(tmp_path, c2="a").addresses() == before
    assert lab(tmp_path, c2="a").plan().empty
    assert lab(tmp_path).apply().ok and lab(tmp_path).addresses() == before


def test_an_unreachable_removed_host_is_named_and_keeps_its_record(tmp_path, monkeypatch):
    assert lab(tmp_path).apply().ok
    real = multihost_apply._destroy_host
    down = {"b"}

    def destroy_host(lab_, host, progress):
        if host in down:
            from hybridnb.errors import EngineError
            raise EngineError("the Docker engine is not reachable")
        return real(lab_, host, progress)

    def plan_gone(lab_, host):
        from hybridnb.errors import EngineError
        raise EngineError("the Docker engine is not reachable")

    monkeypatch.setattr(multihost_apply, "_destroy_host", destroy_host)
    monkeypatch.setattr(multihost_apply, "_plan_gone", plan_gone)
    after = lab(tmp_path, without("b"), c2="a")
    plan = after.plan()
    assert plan.removed == () and "host b" not in by_host(plan)
    assert any(n.startswith("host b (removed from hosts:, was sandbox hmvb): the Docker "
                            "engine is not reachable: its share of the lab stays recorded")
               for n in plan.notes), plan.notes
    with pytest.raises(HybridError) as info:
        after.apply()
    assert str(info.value).startswith("host b (removed from hosts:, was sandbox hmvb): ")
    assert "stays recorded" in str(info.value)
    assert info.value.result.hosts["a"].ok              # the rest was made
    assert multihost_apply.recorded_hosts(after) == ["a", "b", "c"]
    assert after.store.read("hmvx")["removed"]["b"] == {"sandbox": "hmvb",
                                                        "underlay": "192.168.250.2"}
    assert "Lab.forget_host('b') drops the record" in str(info.value)
    # b answers again: the next apply finishes, from the record alone
    down.clear()
    monkeypatch.undo()
    plan = lab(tmp_path, without("b"), c2="a").plan()
    assert plan.removed == ("b",) and by_host(plan)["a"] == [], plan
    assert lab(tmp_path, without("b"), c2="a").apply().ok
    assert multihost_apply.recorded_hosts(after) == ["a", "c"]
    assert lab(tmp_path, without("b"), c2="a").plan().empty


def test_destroy_cleans_hosts_no_longer_in_the_file(tmp_path):
    assert lab(tmp_path).apply().ok
    gone = lab(tmp_path, without("c"), h3="a")
    done = gone.destroy()
    assert done.ok and list(done.hosts) == ["a", "b", "c"]
    assert multihost_apply.recorded_hosts(gone) == [] and not gone.store.labs()
    # a file without hosts: at all destroys every recorded share too
    assert lab(tmp_path).apply().ok
    flat = lab(tmp_path, None, c2=None, h3=None)
    assert list(flat.destroy().hosts) == ["a", "b", "c"]
    assert multihost_apply.recorded_hosts(flat) == []


def test_dropping_hosts_from_a_spread_lab_is_refused_with_a_hint(tmp_path):
    assert lab(tmp_path).apply().ok
    flat = lab(tmp_path, None, c2=None, h3=None)
    for step in (flat.plan, flat.apply):
        with pytest.raises(ConflictError) as info:
            step()
        assert "lab hmvx is applied over hosts a, b, c" in str(info.value)
        assert "one host is enough" in info.value.hint
    assert multihost_apply.recorded_hosts(flat) == ["a", "b", "c"]


def test_spreading_a_lab_applied_on_one_host_is_refused_with_a_hint(tmp_path):
    assert lab(tmp_path, None, c2=None, h3=None).apply().ok
    spread = lab(tmp_path)
    for step in (spread.plan, spread.apply):
        with pytest.raises(ConflictError) as info:
            step()
        assert "is applied as a one-host lab on the dry-run backend" in str(info.value)
        assert "destroy it first" in info.value.hint
    assert multihost_apply.recorded_hosts(spread) == []
    assert lab(tmp_path, None, c2=None, h3=None).plan().empty


def test_a_host_name_kept_with_other_engines_is_refused_and_a_new_name_converges(tmp_path):
    assert lab(tmp_path).apply().ok
    other = dict(THREE, b={"sandbox": "hmvz", "underlay": "192.168.250.2"})
    with pytest.raises(ConflictError) as info:
        lab(tmp_path, other).plan()
    assert str(info.value).startswith(
        "host b now names other engines (sandbox hmvz) than those holding its share of lab "
        "hmvx (sandbox hmvb)")
    assert "give the new machine another host name" in info.value.hint
    # an underlay change is the same machine: the VXLAN devices follow
    moved = dict(THREE, b={"sandbox": "hmvb", "underlay": "192.168.250.9"})
    assert by_host(lab(tmp_path, moved).plan())["b"] == [("replace", "vxlan", VX)]
    # the new machine under a new name: b's share removed, d's made
    renamed = dict(without("b"), d={"sandbox": "hmvz", "underlay": "192.168.250.4"})
    plan = lab(tmp_path, renamed, c2="d").plan()
    assert plan.removed == ("b",) and ("create", "container", "c2") in by_host(plan)["d"]
    assert lab(tmp_path, renamed, c2="d").apply().ok
    assert multihost_apply.recorded_hosts(lab(tmp_path, renamed, c2="d")) == ["a", "c", "d"]


def test_a_host_gone_for_good_can_be_forgotten_explicitly_and_only_when_removed(tmp_path):
    from hybridnb.errors import NotFoundError

    assert lab(tmp_path).apply().ok
    with pytest.raises(ConflictError) as info:
        lab(tmp_path).forget_host("b")
    assert "host b is still in lab hmvx's hosts:" in str(info.value)
    after = lab(tmp_path, without("b"), c2="a")
    with pytest.raises(NotFoundError):
        after.forget_host("z")
    assert after.forget_host("b") == ["bridge/hybr0", "container/c2", "firewall/hybr0",
                                      "network/hnb-hmvx", f"vxlan/{VX}"]
    assert multihost_apply.recorded_hosts(after) == ["a", "c"]
    plan = lab(tmp_path, without("b"), c2="a").plan()
    assert plan.removed == () and "b" not in dict(plan.hosts), plan
