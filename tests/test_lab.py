"""The Lab API on the dry-run backend: editing, plan/apply/destroy, convergence after faults."""

from __future__ import annotations

import pytest

from hybridnb.drivers.dryrun import dry_run_backend
from hybridnb.errors import EngineError, NotFoundError, ValidationError
from hybridnb.lab import Lab


@pytest.fixture
def backend():
    return dry_run_backend()


def make(backend, state_dir, name="t"):
    return (Lab(name, backend=backend, state_dir=state_dir)
            .add_container("web", address="10.0.1.100").add_vm("vm1").add_host("h1"))


def test_edit_validates_and_rolls_back(backend, state_dir):
    lab = make(backend, state_dir)
    with pytest.raises(ValidationError):
        lab.add_host("h2", address="10.0.1.100")          # taken by web
    assert [e.name for e in lab.spec.endpoints] == ["h1", "vm1", "web"]
    with pytest.raises(ValidationError):
        lab.add_host("h1")
    with pytest.raises(NotFoundError):
        lab.remove("nope")
    assert "web" in lab.to_yaml()


def test_apply_then_reapply_is_a_noop(backend, state_dir):
    lab = make(backend, state_dir)
    events = []
    result = lab.apply(progress=events.append)
    assert result.ok and result.plan.count("create") == 7
    assert sum(1 for e in events if e.phase == "done") == 7
    engine = backend.extras["engine"]
    n = len(engine.log)
    again = lab.apply()
    assert again.plan.empty and len(engine.log) == n       # nothing written to the engines
    status = lab.status()
    assert status.up and {e.state for e in status.endpoints} == {"up"}
    assert "web.hybrid.local" in status.to_text() and "<table" in status._repr_html_()


def test_removed_behind_our_back_is_recreated(backend, state_dir):
    lab = make(backend, state_dir)
    lab.apply()
    backend.extras["engine"].tamper("t", "container", "web", None)
    assert lab.status().endpoints[2].state == "missing"
    plan = lab.plan()
    assert [(a.op, a.name) for a in plan.actions] == [("create", "web")]
    lab.apply()
    assert lab.plan().empty


def test_addresses_stick_across_edits(backend, state_dir):
    lab = make(backend, state_dir)
    lab.apply()
    before = lab.addresses()
    lab.add_host("h0")                 # sorts before h1 but must not take h1's address
    lab.apply()
    after = lab.addresses()
    assert after["h1"] == before["h1"] and after["h0"] != before["h1"]


def test_failure_then_reapply_converges(backend, state_dir):
    lab = make(backend, state_dir)
    engine = backend.extras["engine"]
    engine.fail_on.add("create container/web")
    with pytest.raises(EngineError) as info:
        lab.apply()
    assert info.value.result.outcomes                         # partial result attached
    engine.fail_on.clear()
    result = lab.apply()
    assert [(a.op, a.kind) for a in result.plan.actions] == [
        ("create", "container"), ("create", "vm"), ("create", "dns")]
    assert lab.plan().empty


def test_destroy_removes_everything_including_leftovers(backend, state_dir):
    lab = make(backend, state_dir)
    lab.apply()
    # a resource recorded as "creating" but never observed (a crash mid-create)
    with lab.store.transaction("t") as st:
        st.mark("host", "ghost", "creating", "abc")
    result = lab.destroy()
    names = {(a.kind, a.name) for a in result.plan.actions}
    assert ("host", "ghost") in names and ("bridge", "hybr0") in names
    assert backend.extras["engine"].objects["t"] == {k: {} for k in backend.extras["engine"].objects["t"]}
    assert not lab.store.path("t").exists()
    assert lab.destroy().plan.empty


def test_removing_an_endpoint_updates_dns_and_deletes_it(backend, state_dir):
    lab = make(backend, state_dir)
    lab.apply()
    lab.remove("h1")
    plan = lab.plan()
    assert [(a.op, a.kind, a.name) for a in plan.actions] == [
        ("delete", "host", "h1"), ("update", "dns", "t")]


def test_load_by_path_or_applied_name(tmp_path, state_dir):
    path = tmp_path / "lab.yaml"
    path.write_text("name: y\nendpoints:\n  a: {kind: host}\n")
    lab = Lab.load(str(path), backend="dry-run", state_dir=state_dir)
    lab.apply()
    again = Lab.load("y", backend="dry-run", state_dir=state_dir)   # by name, from the state
    assert again.spec == lab.spec and again.plan().empty
    with pytest.raises(NotFoundError):
        Lab.load("nothing-here", backend="dry-run", state_dir=state_dir)


def test_dry_run_engine_persists_between_labs(state_dir):
    Lab("p", backend="dry-run", state_dir=state_dir).add_host("a").apply()
    assert Lab("p", backend="dry-run", state_dir=state_dir).add_host("a").plan().empty


def test_replace_redefines_atomically(backend, state_dir):
    lab = make(backend, state_dir)
    lab.add_container("web", image="nginx", replace=True)
    assert lab.spec.endpoint("web").image == "nginx"
    with pytest.raises(ValidationError):                 # invalid: the old definition stays
        lab.add_container("web", address="10.9.9.9", replace=True)
    assert lab.spec.endpoint("web").image == "nginx"


def test_add_takes_any_kind_and_field_and_refuses_unknown_ones(backend, state_dir):
    lab = Lab("k", backend=backend, state_dir=state_dir)
    lab.add("container", "web", image="nginx", env={"A": 1}, ports=("8080:80",))
    lab.add("vm", "db", memory=256, services=["postgresql/5432"]).add("host", "h")
    assert lab.spec.endpoint("web").env == {"A": "1"}
    assert lab.spec.endpoint("db").memory == 256
    with pytest.raises(ValidationError, match="did you mean 'memory'"):
        lab.add_vm("v2", memroy=512)
    with pytest.raises(ValidationError, match="unknown kind 'robot'"):
        lab.add("robot", "r")
    assert [e.name for e in lab.spec.endpoints] == ["db", "h", "web"]


def test_a_stopped_container_and_a_stopped_vm_read_the_same(backend, state_dir):
    lab = make(backend, state_dir)
    lab.apply()
    engine = backend.extras["engine"]
    engine.stop("t", "container", "web")
    engine.stop("t", "vm", "vm1")
    rows = {e.name: (e.state, e.detail) for e in lab.status().endpoints}
    assert rows["web"][0] == rows["vm1"][0] == "stopped" and rows["h1"] == ("up", "")
    assert "detail" in lab.status().to_text()
    plan = lab.plan()
    assert {(a.op, a.name, a.reason) for a in plan.actions} == {
        ("replace", "web", "not running"), ("replace", "vm1", "not running")}
    lab.apply()
    assert lab.status().up


def test_a_plan_names_what_changed_in_an_endpoint(backend, state_dir):
    lab = make(backend, state_dir)
    lab.apply()
    lab.add_container("web", address="10.0.1.100", image="nginx", command="nginx -g daemon",
                      replace=True)
    lab.add_vm("vm1", memory=256, replace=True)
    reasons = {a.name: a.reason for a in lab.plan().actions}
    assert reasons == {"web": "changed: command, image", "vm1": "changed: memory"}
    status = {e.name: (e.state, e.detail) for e in lab.status().endpoints}
    assert status["web"] == ("differs", "changed: command, image")
    # changed behind our back: the recorded spec is not what the engine holds
    backend.extras["engine"].tamper("t", "host", "h1", "0123456789ab")
    assert {a.name: a.reason for a in lab.plan().actions}["h1"] == "changed"


def test_capabilities_the_dry_run_backend_lacks_raise_one_typed_error(backend, state_dir):
    from hybridnb.errors import EngineUnavailable, Unsupported

    lab = make(backend, state_dir)
    lab.apply()
    with pytest.raises(Unsupported) as info:
        lab.dns_query_log()
    assert isinstance(info.value, EngineUnavailable) and info.value.exit_code == 5
    assert info.value.capability == "QueryLog" and "sends no packets" in str(info.value)
    with pytest.raises(Unsupported, match="cannot probe the lab"):
        lab.test()
    assert backend.updatable() == ["dns", "link", "policy"]       # changed in place, like the real ones


def test_probing_needs_a_way_into_every_kind(backend, state_dir):
    """A backend whose bridge driver gives the lab host's namespace but whose container driver
    neither opens namespaces nor runs commands cannot probe containers: Unsupported."""
    from hybridnb.drivers.dryrun import DryRunDriver
    from hybridnb.errors import Unsupported

    class LabHost(DryRunDriver):
        def netns_paths(self, lab):
            return {name: "/run/netns/nowhere" for name in self.observe(lab)}

    backend.drivers["bridge"] = LabHost("bridge", backend.extras["engine"])
    lab = Lab("w", backend=backend, state_dir=state_dir).add_container("web")
    lab.apply()
    with pytest.raises(Unsupported, match="cannot probe from container endpoints") as info:
        lab.probe_endpoints()
    assert info.value.kind == "container" and "sends no packets" in str(info.value)
