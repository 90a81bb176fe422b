"""Planning: ordering, replace cascades, updates, leftovers, emptiness, rendering."""

from __future__ import annotations

from hybridnb.core.plan import changed_paths, destroy_plan, diff
from hybridnb.core.resource import Observation as Seen
from hybridnb.core.resource import Resource


def res(kind, name, **spec):
    return Resource(kind, name, spec, f"{kind} {name}")


def seen(**names):
    return {n: Seen(fp) for n, fp in names.items()}


def test_empty_observed_creates_in_kind_order():
    desired = [res("container", "b"), res("bridge", "br"), res("host", "a"), res("dns", "d")]
    plan = diff("t", desired, {})
    assert [(a.op, a.kind) for a in plan.actions] == [
        ("create", "bridge"), ("create", "host"), ("create", "container"), ("create", "dns")]


def test_unchanged_is_empty():
    desired = [res("bridge", "br", mtu=1500), res("host", "a", x=1)]
    observed = {"bridge": seen(br=desired[0].fingerprint), "host": seen(a=desired[1].fingerprint)}
    plan = diff("t", desired, observed)
    assert plan.empty and plan.unchanged == 2
    assert "no changes" in plan.to_text()


def test_stopped_is_replaced_even_if_updatable():
    d = res("container", "c", image="x")
    stopped = Seen(d.fingerprint, running=False, reason="Exited (137) 2 seconds ago")
    plan = diff("t", [d], {"container": {"c": stopped}}, updatable=["container"])
    assert [(a.op, a.reason) for a in plan.actions] == [("replace", "not running")]


def test_a_stopped_vm_and_a_stopped_container_read_the_same():
    c, v = res("container", "c", image="x"), res("vm", "v", memory=128)
    plan = diff("t", [c, v], {"container": {"c": Seen(c.fingerprint, False, "Exited (0)")},
                              "vm": {"v": Seen(v.fingerprint, False, "shut off")}})
    assert [(a.op, a.kind, a.reason) for a in plan.actions] == [
        ("replace", "container", "not running"), ("replace", "vm", "not running")]


def test_a_changed_endpoint_names_what_changed():
    old = res("container", "c", create={"image": "busybox", "command": ["sh"], "hostname": "c"},
              endpoint_config={"ipv4_address": "10.0.1.100"}, address="10.0.1.100")
    new = res("container", "c", create={"image": "nginx", "stop_signal": "TERM", "hostname": "c"},
              endpoint_config={"ipv4_address": "10.0.1.101"}, address="10.0.1.101")
    vm_old, vm_new = res("vm", "v", memory=128, vcpus=1), res("vm", "v", memory=256, vcpus=1)
    observed = {"container": seen(c=old.fingerprint), "vm": seen(v=vm_old.fingerprint)}
    recorded = {("container", "c"): dict(old.spec), ("vm", "v"): dict(vm_old.spec)}
    plan = diff("t", [new, vm_new], observed, recorded)
    assert [(a.name, a.reason) for a in plan.actions] == [
        ("c", "changed: address, command, image, stop_signal"), ("v", "changed: memory")]
    # the recorded spec is not what the engine holds (changed behind our back): no guess
    plan = diff("t", [new], {"container": seen(c="0123456789ab")},
                {("container", "c"): recorded[("container", "c")]})
    assert [a.reason for a in plan.actions] == ["changed"]
    unknown = diff("t", [new], {"container": observed["container"]}, [("container", "c")])
    assert [a.reason for a in unknown.actions] == ["changed"]


def test_changed_paths():
    assert changed_paths({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 4}, "e": 5}) == [
        ("b", "c"), ("b", "d"), ("e",)]


def test_bridge_replace_cascades():
    br, h, c = res("bridge", "br", mtu=9000), res("host", "h"), res("container", "c")
    observed = {"bridge": seen(br="old"), "host": seen(h=h.fingerprint),
                "container": seen(c=c.fingerprint)}
    plan = diff("t", [br, h, c], observed)
    assert [(a.op, a.name) for a in plan.actions] == [
        ("replace", "br"), ("replace", "h"), ("replace", "c")]


def test_update_for_updatable_kinds():
    d = res("dns", "lab", records={"a": 1})
    plan = diff("t", [d], {"dns": seen(lab="old")}, updatable=["dns"])
    assert [a.op for a in plan.actions] == ["update"]


def test_deletes_first_in_reverse_order_and_leftovers():
    observed = {"bridge": seen(br="x"), "container": seen(c="y")}
    plan = diff("t", [], observed, recorded=[("host", "half")])
    assert [(a.op, a.kind, a.name) for a in plan.actions] == [
        ("delete", "container", "c"), ("delete", "host", "half"), ("delete", "bridge", "br")]
    assert "interrupted" in plan.actions[1].reason


def test_destroy_plan_and_html():
    plan = destroy_plan("t", {"vm": seen(v="f")})
    assert plan.count("delete") == 1 and "destroy" in plan.to_text()
    html = plan._repr_html_()
    assert "<table" in html and "vm" in html


def test_fingerprint_is_stable_and_order_independent():
    assert res("x" if False else "host", "a", b=1, c=2).fingerprint == \
        Resource("host", "a", {"c": 2, "b": 1}).fingerprint
