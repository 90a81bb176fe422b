"""Planning: ordering, replace cascades, updates, leftovers, emptiness, rendering."""

from __future__ import annotations

from hybridnb.core.plan import destroy_plan, diff
from hybridnb.core.resource import Resource


def res(kind, name, **spec):
    return Resource(kind, name, spec, f"{kind} {name}")


def test_empty_observed_creates_in_kind_order():
    desired = [res("container", "b"), res("bridge", "br"), res("host", "a"), res("dns", "d")]
    plan = diff("t", desired, {})
    assert [(a.op, a.kind) for a in plan.actions] == [
        ("create", "bridge"), ("create", "host"), ("create", "container"), ("create", "dns")]


def test_unchanged_is_empty():
    desired = [res("bridge", "br", mtu=1500), res("host", "a", x=1)]
    observed = {"bridge": {"br": desired[0].fingerprint}, "host": {"a": desired[1].fingerprint}}
    plan = diff("t", desired, observed)
    assert plan.empty and plan.unchanged == 2
    assert "no changes" in plan.to_text()


def test_stopped_is_replaced_even_if_updatable():
    d = res("container", "c", image="x")
    plan = diff("t", [d], {"container": {"c": d.fingerprint + ":stopped"}}, updatable=["container"])
    assert [(a.op, a.reason) for a in plan.actions] == [("replace", "not running")]


def test_bridge_replace_cascades():
    br, h, c = res("bridge", "br", mtu=9000), res("host", "h"), res("container", "c")
    observed = {"bridge": {"br": "old"}, "host": {"h": h.fingerprint},
                "container": {"c": c.fingerprint}}
    plan = diff("t", [br, h, c], observed)
    assert [(a.op, a.name) for a in plan.actions] == [
        ("replace", "br"), ("replace", "h"), ("replace", "c")]


def test_update_for_updatable_kinds():
    d = res("dns", "lab", records={"a": 1})
    plan = diff("t", [d], {"dns": {"lab": "old"}}, updatable=["dns"])
    assert [a.op for a in plan.actions] == ["update"]


def test_deletes_first_in_reverse_order_and_leftovers():
    observed = {"bridge": {"br": "x"}, "container": {"c": "y"}}
    plan = diff("t", [], observed, recorded=[("host", "half")])
    assert [(a.op, a.kind, a.name) for a in plan.actions] == [
        ("delete", "container", "c"), ("delete", "host", "half"), ("delete", "bridge", "br")]
    assert "interrupted" in plan.actions[1].reason


def test_destroy_plan_and_html():
    plan = destroy_plan("t", {"vm": {"v": "f"}})
    assert plan.count("delete") == 1 and "destroy" in plan.to_text()
    html = plan._repr_html_()
    assert "<table" in html and "vm" in html


def test_fingerprint_is_stable_and_order_independent():
    assert res("x" if False else "host", "a", b=1, c=2).fingerprint == \
        Resource("host", "a", {"c": 2, "b": 1}).fingerprint
