"""A lab spread over hosts, through ``Lab`` (dry-run: every host simulated by a dry-run engine
of its own): the plan is per host and says which MTU and why; apply makes each host's share
(the bridge everywhere — the gateway address only on the primary, its own MAC elsewhere — the
VXLAN device, DNS on the primary, each endpoint on its host), one IPAM over the whole lab; a
failing host is named and leaves the others made; destroy cleans every host."""

from __future__ import annotations

import pytest

from hybridnb import multihost_apply
from hybridnb.core import naming
from hybridnb.errors import EngineError, Unsupported
from hybridnb.lab import Lab

TWO = {"a": {"sandbox": "mha", "underlay": "192.168.250.1"},
       "b": {"sandbox": "mhb", "underlay": "192.168.250.2"}}


def spread(tmp_path, **extra):
    return Lab.from_dict({"name": "mhs", "hosts": TWO, "endpoints": {
        "h1": {"kind": "host"}, "c1": {"kind": "container", "image": "busybox"},
        "c2": {"kind": "container", "image": "busybox", "host": "b"},
        "h2": {"kind": "host", "host": "b"}, **extra}},
        backend="dry-run", state_dir=tmp_path)


def shares(plan):
    return {host: {(a.kind, a.name): a.resource for a in p.actions} for host, p in plan.hosts}


def test_the_plan_is_per_host_with_each_hosts_share(tmp_path):
    lab = spread(tmp_path)
    plan = lab.plan()
    notes = {w.path: w.message for w in plan.warnings}
    assert notes["network.mtu"].startswith("lab MTU 1450: VXLAN adds 50 bytes")
    assert "hosts" not in notes
    by = shares(plan)
    assert {k for k in by["a"]} == {("bridge", "hybr0"), ("firewall", "hybr0"),
                                     ("network", "hnb-mhs"), ("host", "h1"),
                                     ("container", "c1"), ("dns", "mhs"),
                                     ("vxlan", naming.vxlan_device("mhs"))}
    assert {k for k in by["b"]} == {("bridge", "hybr0"), ("firewall", "hybr0"),
                                     ("network", "hnb-mhs"), ("host", "h2"),
                                     ("container", "c2"),
                                     ("vxlan", naming.vxlan_device("mhs"))}
    # the gateway address on the primary only; the other bridge has a MAC of its own
    a_br, b_br = by["a"][("bridge", "hybr0")].spec, by["b"][("bridge", "hybr0")].spec
    assert a_br["address"] == "10.0.1.1/24" and "mac" not in a_br
    assert b_br["address"] is None
    assert b_br["mac"] == naming.bridge_mac("mhs", "hybr0", "b") != \
        naming.bridge_mac("mhs", "hybr0")
    assert by["b"][("network", "hnb-mhs")].spec["inhibit_ipv4"] is True
    assert "inhibit_ipv4" not in by["a"][("network", "hnb-mhs")].spec
    # the VXLAN device of each host points at the other one
    vx = naming.vxlan_device("mhs")
    assert by["a"][("vxlan", vx)].spec["remotes"] == ["192.168.250.2"]
    assert by["b"][("vxlan", vx)].spec["local"] == "192.168.250.2"
    # one IPAM: no address twice, and the DNS on a knows every name of both hosts
    addrs = [r.spec["address"] for h in by for (k, _), r in by[h].items()
             if k in ("host", "container")]
    assert len(addrs) == len(set(addrs)) == 4
    assert set(by["a"][("dns", "mhs")].spec["records"]) == {"h1", "h2", "c1", "c2"}
    text = plan.to_text()
    assert "Plan for lab mhs over 2 hosts: 13 to create" in text
    assert "  host a (sandbox mha): 7 to create" in text
    assert "  host b (sandbox mhb): 6 to create" in text
    assert {r["host"] for r in plan.records()} == {"a", "b"}
    assert "<td>b</td>" in plan._repr_html_()


def test_apply_makes_every_hosts_share_and_reapplying_does_nothing(tmp_path):
    lab = spread(tmp_path)
    result = lab.apply()
    assert result.ok and set(result.hosts) == {"a", "b"}
    assert "host b:" in result.to_text()
    again = Lab.from_dict(lab.to_dict(), backend="dry-run", state_dir=tmp_path)
    assert again.plan().empty and again.apply().plan.empty
    engine_b = multihost_apply.host_backend(again, "b").extras["engine"]
    assert set(engine_b.objects["mhs"]["container"]) == {"c2"}
    # a changed endpoint on b changes only b
    moved = Lab.from_dict({**lab.to_dict(), "endpoints": {
        **lab.to_dict()["endpoints"], "c2": {"kind": "container", "image": "busybox:1",
                                             "host": "b"}}},
        backend="dry-run", state_dir=tmp_path)
    plan = moved.plan()
    assert dict(plan.hosts)["a"].empty and not dict(plan.hosts)["b"].empty
    assert moved.apply().ok
    result = moved.destroy()
    assert result.ok
    for host in ("a", "b"):
        engine = multihost_apply.host_backend(moved, host).extras["engine"]
        assert not any(engine.objects.get("mhs", {}).values()), (host, engine.objects)
        assert not multihost_apply.host_store(moved, host).labs()
    assert not moved.store.labs()


def test_a_failing_host_is_named_and_the_other_stays_made(tmp_path, monkeypatch):
    lab = spread(tmp_path)
    backend_b = multihost_apply.host_backend(lab, "b")
    drv = backend_b.drivers["container"]
    real = drv.create

    def broken(name, resource):
        raise EngineError("cannot connect to the Docker daemon")
    monkeypatch.setattr(drv, "create", broken)
    with pytest.raises(EngineError) as info:
        lab.apply()
    assert str(info.value).startswith("host b (sandbox mhb): cannot connect to the Docker")
    partial = info.value.result
    assert partial.hosts["a"].ok and set(partial.hosts) == {"a"}
    # a is done, b is where it stopped: the plan is only b's rest
    plan = lab.plan()
    assert dict(plan.hosts)["a"].empty
    assert [(a.kind, a.name) for a in dict(plan.hosts)["b"].actions] == [("container", "c2")]
    monkeypatch.setattr(drv, "create", real)
    assert lab.apply().ok and lab.plan().empty
    assert lab.destroy().ok


def test_one_host_labs_are_unchanged(tmp_path):
    one = Lab.from_dict({"name": "mht", "hosts": {"a": {"engine": "local"}},
                         "endpoints": {"h1": {"kind": "host", "host": "a"}}},
                        backend="dry-run", state_dir=tmp_path)
    assert one.warnings() == [] and one.apply().ok
    assert not hasattr(one.plan(), "hosts")


def test_status_sees_every_hosts_share_as_one_lab(tmp_path):
    lab = spread(tmp_path)
    assert not lab.status().up
    lab.apply()
    status = lab.status()
    assert status.up and status.pending == 0, status
    assert {e.name: e.state for e in status.endpoints} == {
        "c1": "up", "c2": "up", "h1": "up", "h2": "up"}
    # c2 goes away on b (and b's bridge changes): status says so, the plan redoes b's share
    engine_b = multihost_apply.host_backend(lab, "b").extras["engine"]
    engine_b.drop("mhs", "container", "c2")
    engine_b.tamper("mhs", "bridge", "hybr0", "0000")
    status = lab.status()
    states = {e.name: e.state for e in status.endpoints}
    assert states["c2"] == "missing" and states["c1"] == "up", status
    assert ("bridge", "hybr0", "differs") in status.infra, status.infra
    assert [h for h, p in lab.plan().hosts if not p.empty] == ["b"]
    assert lab.apply().ok and lab.status().up


def test_two_labs_on_one_vxlan_segment_are_refused(tmp_path):
    from hybridnb.errors import ConflictError

    first = spread(tmp_path)
    first.apply()
    vni = first.spec.network.vxlan.vni
    second = Lab.from_dict({"name": "mhz", "hosts": TWO, "network": {
        "subnet": "10.0.2.0/24", "vxlan": {"vni": vni}},
        "endpoints": {"h9": {"kind": "host", "host": "b"}}},
        backend="dry-run", state_dir=tmp_path)
    for attempt in (second.plan, second.apply):
        with pytest.raises(ConflictError) as info:
            attempt()
        assert f"both use VNI {vni} on UDP port 4789" in str(info.value)
    other = Lab.from_dict({**second.to_dict(), "network": {"subnet": "10.0.2.0/24",
                                                            "vxlan": {"vni": vni + 1}}},
                          backend="dry-run", state_dir=tmp_path)
    assert other.apply().ok


def test_watching_views_are_per_host_and_refusals_name_the_host(tmp_path):
    """Lab.view() of a spread lab has one share per host, each with its own backend; the
    dry-run engines have no lab host, so monitor/doctor refuse naming the host."""
    lab = spread(tmp_path)
    lab.apply()
    view = lab.view()
    assert [p.host for p in view.parts] == ["a", "b"]
    assert {p.host: sorted(r.name for r in p.endpoints()) for p in view.parts} == {
        "a": ["c1", "h1"], "b": ["c2", "h2"]}
    assert [r.name for r in view.endpoints()] == ["c1", "c2", "h1", "h2"]
    assert view.part("c2").host == "b" and view.part("gateway").host == "a"
    assert view.part("c2").backend is multihost_apply.host_backend(lab, "b")
    for watch in (lab.monitor, lab.doctor):
        with pytest.raises(Unsupported) as info:
            watch()
        assert str(info.value).startswith("host a: the dry-run backend cannot"), info.value
    logs = lab.logs()
    assert dict(logs.errors)["container:c2"].startswith("host b: the dry-run backend has no")


def test_logs_merge_every_hosts_journal_naming_the_host(tmp_path):
    """hybridnb's own lines of a spread lab come from every host's journal (each host's share
    is applied under its own state), in time order, each naming its host."""
    lab = spread(tmp_path)
    lab.apply()
    view = lab.view()
    assert [p.state_dir for p in view.parts] == [multihost_apply.host_store(lab, h).dir
                                                 for h in ("a", "b")]
    lines = lab.logs(kinds=["hybridnb"]).of("hybridnb")
    texts = [ln.text for ln in lines]
    assert [ln.time for ln in lines] == sorted(ln.time for ln in lines)
    for host, made in (("a", ("bridge hybr0", "vxlan", "container c1", "host h1", "dns")),
                       ("b", ("bridge hybr0", "vxlan", "container c2", "host h2"))):
        mine = [t for t in texts if t.startswith(f"host {host}: create ")]
        for what in made:
            assert any(what in t and t.endswith(" ok") for t in mine), (host, what, texts)
    assert not any("dns" in t for t in texts if t.startswith("host b: "))
    only = [ln.text for ln in lab.logs("c2", kinds=["hybridnb"]).of("hybridnb")]
    assert only and all(t.startswith("host b: ") and " c2 " in t for t in only), only


def test_hybridnb_logs_shows_every_hosts_journal(tmp_path, capsys):
    """``hybridnb logs`` of a spread lab: hybridnb's lines of both hosts, each naming it."""
    import yaml

    from hybridnb.cli import main

    path = tmp_path / "mhs.yaml"
    path.write_text(yaml.safe_dump({"name": "mhs", "hosts": TWO, "endpoints": {
        "c1": {"kind": "container", "image": "busybox"},
        "c2": {"kind": "container", "image": "busybox", "host": "b"}}}))
    state = tmp_path / "state"
    Lab.load(path, backend="dry-run", state_dir=state).apply()
    assert main(["logs", str(path), "--dry-run", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert "host a: create container c1 " in out and "host b: create container c2 " in out
    assert "host a: create vxlan " in out and "host b: create vxlan " in out, out
