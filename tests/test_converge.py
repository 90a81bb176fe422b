"""Issue 11: every change converges, every answer is true — the parts that need no engine.

State per target (#1), dependents first and putting back what a failed run changed (#3),
the record of an interrupted run finished by the next command (#12), a wait for another
process's lock said (#11), and the files a destroyed lab leaves (#12).  The dry-run backend
carries them; a "real" target is the same in-memory drivers under another target name, so
the state rules are tested without a sandbox (the sandbox tests are in
``tests/integration/test_converge_real.py``).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from hybridnb.apply import ProgressEvent, execute
from hybridnb.core.plan import Action, Plan, rollback_plan, stages
from hybridnb.core.resource import Observation, Resource
from hybridnb.drivers.base import Backend
from hybridnb.drivers.dryrun import DryRunDriver, DryRunEngine, dry_run_backend
from hybridnb.errors import ConflictError, EngineError
from hybridnb.lab import Lab
from hybridnb.state import IN_FLIGHT_STATUSES, StateStore
from hybridnb.target import Target


def fake_real(engine: DryRunEngine, target: str = "sandbox:a", cls=DryRunDriver) -> Backend:
    """The dry-run drivers under a real target's name (what the state rules see)."""
    from hybridnb.core.stages import kind_order

    return Backend(target.partition(":")[0], Target(target),
                   {k: cls(k, engine) for k in kind_order()}, {"engine": engine})


def web_lab(backend, state_dir, name="cv", **net):
    lab = Lab(name, backend=backend, state_dir=state_dir, **net)
    return lab.add_container("web", command="httpd -f -p 80").add_host("h1")


# ------------------------------------------------------------------- #3 dependents first

def res(kind, name, **spec):
    return Resource(kind, name, spec, f"{kind} {name}")


def test_stages_delete_dependents_before_what_they_hang_on():
    """A renumbered lab: the old containers and hosts go before the Docker network is
    re-made and the bridge renumbered; then everything is made again in kind order."""
    actions = [Action("update", "bridge", "br", res("bridge", "br")),
               Action("replace", "network", "net", res("network", "net")),
               Action("replace", "host", "h1", res("host", "h1")),
               Action("replace", "container", "c1", res("container", "c1")),
               Action("delete", "container", "old"),
               Action("update", "dns", "lab", res("dns", "lab"))]
    got = [[(s.part, s.kind, s.action.name) for s in stage] for stage in stages(actions)]
    assert got == [[("delete", "container", "c1"), ("delete", "container", "old")],
                   [("delete", "host", "h1")],
                   [("delete", "network", "net")],
                   [("update", "bridge", "br")],
                   [("create", "network", "net")],
                   [("create", "host", "h1")],
                   [("create", "container", "c1")],
                   [("update", "dns", "lab")]]


class DockerLikeDriver(DryRunDriver):
    """Like Docker: a network with containers attached cannot be deleted."""

    def delete(self, lab, name):
        if self.kind == "network" and self.engine.objects.get(lab, {}).get("container"):
            raise ConflictError(f"docker network {name} still has containers attached")
        super().delete(lab, name)


def test_a_changed_subnet_converges_in_one_apply(state_dir):
    """Regression (#3): on the first slice the network was replaced before its containers
    were deleted, which Docker refuses — and every later apply failed the same way."""
    engine = DryRunEngine()
    backend = fake_real(engine, cls=DockerLikeDriver)
    web_lab(backend, state_dir, subnet="10.0.61.0/24").apply()
    lab = web_lab(backend, state_dir, subnet="10.0.62.0/24")
    result = lab.apply()
    assert result.ok and lab.plan().empty and lab.status().up
    assert engine.specs["cv"]["container"]["web"]["address"] == "10.0.62.100"


# ------------------------------------------------------------ #3 no worse than before

def test_a_failed_replace_puts_the_old_endpoint_back(state_dir):
    backend = dry_run_backend()
    engine = backend.extras["engine"]
    web_lab(backend, state_dir).apply()
    old = dict(engine.objects["cv"]["container"])
    lab = web_lab(backend, state_dir)
    lab.add("container", "web", replace=True, command="sleep 3600")
    engine.fail_once.add("create container/web")
    with pytest.raises(EngineError) as info:
        lab.apply()
    assert "put back as it was before" in info.value.message
    assert info.value.result.rolled_back
    assert engine.objects["cv"]["container"] == old                # the working one again
    back = Lab.load("cv", backend=backend, state_dir=state_dir)
    assert back.spec.endpoint("web").command == ("httpd", "-f", "-p", "80")
    assert back.plan().empty and back.status().up                  # the record too
    assert lab.apply().ok and lab.plan().empty                     # and the change converges


def test_a_failed_subnet_change_puts_the_whole_lab_back(state_dir):
    engine = DryRunEngine()
    backend = fake_real(engine, cls=DockerLikeDriver)
    web_lab(backend, state_dir, subnet="10.0.61.0/24").apply()
    before = json.loads(json.dumps(engine.objects))
    lab = web_lab(backend, state_dir, subnet="10.0.62.0/24")
    engine.fail_once.add("create container/web")
    with pytest.raises(EngineError) as info:
        lab.apply()
    assert info.value.result.rolled_back, info.value.result.to_text()
    assert engine.objects == before
    assert web_lab(backend, state_dir, subnet="10.0.61.0/24").plan().empty
    assert lab.apply().ok and lab.plan().empty


def test_only_additions_are_not_rolled_back(state_dir):
    """A run that only adds keeps what it made (nothing that worked was lost)."""
    backend = dry_run_backend()
    engine = backend.extras["engine"]
    web_lab(backend, state_dir).apply()
    lab = web_lab(backend, state_dir).add_host("h2").add_container("c2", command="sleep 9")
    engine.fail_once.add("create container/c2")
    with pytest.raises(EngineError) as info:
        lab.apply()
    assert info.value.result.rollback is None and "h2" in engine.objects["cv"]["host"]


def test_rollback_plan_leaves_what_was_broken_before_alone():
    good, broken = res("container", "a", image="x"), res("container", "b", image="y")
    new_a, new_b, extra = (res("container", "a", image="x2"), res("container", "b", image="y2"),
                           res("host", "n"))
    before = {"container": {"a": Observation(good.fingerprint),
                            "b": Observation(broken.fingerprint, running=False)}}
    recorded = {("container", "a"): dict(good.spec), ("container", "b"): dict(broken.spec)}
    plan = Plan("t", (Action("replace", "container", "a", new_a),
                      Action("replace", "container", "b", new_b),
                      Action("create", "host", "n", extra)))
    now = {"container": {}, "host": {"n": Observation(extra.fingerprint)}}
    back = rollback_plan(plan, before, recorded, now)
    assert [(a.op, a.kind, a.name) for a in back.actions] == [
        ("delete", "host", "n"), ("create", "container", "a")]
    assert back.actions[1].resource.spec == good.spec


# -------------------------------------------------------------- #1 state per target

def test_a_dry_run_never_reads_or_writes_a_real_labs_state(state_dir):
    """Regression (#1): a --dry-run destroy of a lab up on the sandbox deleted its state."""
    engine = DryRunEngine()
    real = web_lab(fake_real(engine), state_dir)
    real.apply()
    saved = (Path(state_dir) / "cv.json").read_text()
    preview = web_lab("dry-run", state_dir)
    assert preview.plan().count("create") == 6                   # its own, empty world
    preview.apply()
    preview.destroy()
    assert (Path(state_dir) / "cv.json").read_text() == saved
    assert real.plan().empty and real.status().up
    assert not (Path(state_dir) / "dry-run" / "cv.json").exists()


def test_the_same_name_on_another_target_is_a_clear_conflict(state_dir):
    engine = DryRunEngine()
    web_lab(fake_real(engine, "sandbox:a"), state_dir).apply()
    other = web_lab(fake_real(engine, "sandbox:b"), state_dir)
    for op in (other.plan, other.apply, other.destroy, other.status):
        with pytest.raises(ConflictError) as info:
            op()
        assert "lives on sandbox 'a', not on sandbox 'b'" in info.value.message
        assert "--sandbox a" in info.value.hint and info.value.exit_code == 3
    assert web_lab(fake_real(engine, "sandbox:a"), state_dir).plan().empty


def test_an_applied_lab_is_found_on_the_sandbox_its_state_records(state_dir, monkeypatch):
    monkeypatch.delenv("HYBRIDNB_SANDBOX", raising=False)
    monkeypatch.delenv("HYBRIDNB_BACKEND", raising=False)
    web_lab(fake_real(DryRunEngine(), "sandbox:lab-box"), state_dir).apply()
    for kw in ({}, {"backend": "sandbox"}):
        lab = Lab.load("cv", state_dir=state_dir, **kw)
        assert (lab.sandbox, lab.target) == ("lab-box", "sandbox:lab-box")
    named = Lab.load("cv", state_dir=state_dir, sandbox="other")     # named: no guessing
    assert named.target == "sandbox:other"
    with pytest.raises(ConflictError):
        named.plan()
    with pytest.raises(Exception) as info:                   # not up here: says which one
        Lab.load("cv", state_dir=state_dir).plan()
    assert "lab-box" in str(info.value)


def test_a_legacy_dry_run_state_moves_out_of_the_real_directory(state_dir):
    old = {"version": 1, "lab": "cv", "spec": {"name": "cv"}, "addresses": {}, "kinds": {},
           "resources": {"bridge/hybr0": {"status": "created"}}, "backend": "dry-run"}
    (Path(state_dir) / "cv.json").write_text(json.dumps(old))
    lab = web_lab(fake_real(DryRunEngine()), state_dir)
    assert not (Path(state_dir) / "cv.json").exists()
    assert (Path(state_dir) / "dry-run" / "cv.json").exists()
    assert lab.plan().count("create") == 6


def test_two_unnamed_files_with_one_stem_are_two_claims_not_one_lab(tmp_path, state_dir):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "web.yaml").write_text("endpoints:\n  x: {kind: host}\n")
    a = Lab.load(tmp_path / "a" / "web.yaml", backend="dry-run", state_dir=state_dir)
    b = Lab.load(tmp_path / "b" / "web.yaml", backend="dry-run", state_dir=state_dir)
    a.apply()
    with pytest.raises(ConflictError) as info:
        b.apply()
    assert str(tmp_path / "a" / "web.yaml") in info.value.message and "name:" in info.value.hint
    with pytest.raises(ConflictError):
        b.destroy()
    assert a.plan().empty                                      # the first one is untouched
    assert Lab.load("web", backend="dry-run", state_dir=state_dir).plan().empty  # by name
    named = tmp_path / "b" / "named.yaml"                      # naming it is explicit
    named.write_text("name: web\nendpoints:\n  x: {kind: host}\n")
    assert Lab.load(named, backend="dry-run", state_dir=state_dir).plan().empty


# ----------------------------------------------------- #12 interrupted runs are finished

class Interrupting(DryRunDriver):
    """Ctrl-C arrives (once) while this driver makes ``container/slow``."""

    hit: set[str] = set()

    def create(self, lab, resource):
        if resource.name == "slow" and id(self.engine) not in self.hit:
            self.hit.add(id(self.engine))
            raise KeyboardInterrupt
        super().create(lab, resource)


def in_flight(state_dir, lab="cv"):
    data = json.loads((Path(state_dir) / f"{lab}.json").read_text())
    return {k: r["status"] for k, r in data["resources"].items()
            if r["status"] in IN_FLIGHT_STATUSES}


@pytest.mark.parametrize("workers", [1, 8])
def test_an_interrupted_run_is_finished_by_the_next_command(state_dir, workers):
    """Regression (#12): after Ctrl-C the journal kept "creating" forever."""
    engine = DryRunEngine()
    backend = fake_real(engine, cls=Interrupting)
    lab = web_lab(backend, state_dir).add_container("slow", command="sleep 9")
    with pytest.raises(KeyboardInterrupt):
        lab.apply(workers=workers)
    assert set(in_flight(state_dir)) == {"container/slow"}      # only the call Ctrl-C cut
    lab.status()                                                # any next command settles
    assert in_flight(state_dir) == {}
    data = json.loads((Path(state_dir) / "cv.json").read_text())
    assert data["resources"]["container/slow"]["status"] == "interrupted"
    assert data["journal"][-1]["op"] == "interrupted"
    ops = [(a.op, a.name) for a in lab.plan().actions]
    assert ("create", "slow") in ops and {op for op, _ in ops} == {"create"}
    assert lab.apply().ok and lab.plan().empty


def test_a_run_in_progress_keeps_its_intents(state_dir):
    """plan/status settle only when no process holds the lab's lock."""
    lab = web_lab(dry_run_backend(), state_dir)
    store = lab.store
    store.write("cv", {"version": 1, "lab": "cv", "spec": None, "addresses": {}, "kinds": {},
                       "resources": {"host/h1": {"status": "creating", "fingerprint": "x",
                                                 "at": time.time() - 60}}})
    with store.lock("cv"):
        lab.plan()
        assert store.read("cv")["resources"]["host/h1"]["status"] == "creating"
    lab.plan()
    assert store.read("cv")["resources"]["host/h1"]["status"] == "interrupted"


# ---------------------------------------------- #11 long steps say what they do, #12 files

def test_a_second_apply_says_it_waits_for_the_lock(state_dir):
    lab = web_lab(dry_run_backend(), state_dir)
    notes: list[str] = []
    release = threading.Event()

    def hold() -> None:
        with StateStore(lab.store.dir).lock("cv"):
            release.wait(5)
    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.1)
    threading.Timer(0.3, release.set).start()
    lab.apply(progress=lambda e: notes.append(str(e)) if e.phase == "note" else None)
    holder.join()
    assert notes and "is locked by another process (pid" in notes[0] and "waiting" in notes[0]


class Slow(DryRunDriver):
    def create(self, lab, resource):
        time.sleep(0.35 if resource.kind == "vm" else 0)
        super().create(lab, resource)


def test_long_calls_are_reported_while_they_run(state_dir):
    lab = Lab("cv", backend=fake_real(DryRunEngine(), cls=Slow), state_dir=state_dir)
    lab.add_vm("v1")
    resources = lab.resources()
    plan = Plan("cv", tuple(Action("create", r.kind, r.name, r) for r in resources))
    events: list[ProgressEvent] = []
    with lab.store.transaction("cv") as st:
        execute(plan, lab.backend, st, progress=events.append, heartbeat=0.1)
    phases = [(e.phase, e.action.name) for e in events if e.action and e.action.kind == "vm"]
    assert phases[0] == ("start", "v1") and phases[-1] == ("done", "v1")
    assert ("running", "v1") in phases
    running = next(e for e in events if e.phase == "running")
    assert "still running after" in str(running) and "create vm v1" in str(running)


def test_destroy_leaves_no_state_lock_or_empty_directory(state_dir, tmp_path):
    lab = web_lab(dry_run_backend(), state_dir)
    lab.apply()
    lab.destroy()
    assert list(lab.store.dir.iterdir()) == []
    from hybridnb.drivers.dns import DnsDriver

    dns = DnsDriver(Target("t"), state_dir=tmp_path / "dns")
    (dns.directory("cv") / "x").mkdir(parents=True)
    dns.delete("cv", "cv")
    assert list((tmp_path / "dns").iterdir()) == []


def test_a_waiter_on_the_lock_of_a_destroyed_lab_locks_afresh(state_dir):
    store = StateStore(state_dir)
    locked, release = threading.Event(), threading.Event()

    def wait_for_it() -> None:
        with store.lock("cv"):
            locked.set()
            release.wait(5)
    with store.lock("cv"):
        waiter = threading.Thread(target=wait_for_it)
        waiter.start()
        time.sleep(0.1)
        store.forget("cv")                                # removes the lock file it holds
    assert locked.wait(5) and store.lock_path("cv").exists()
    with store.try_lock("cv") as mine:                    # the waiter holds the new file
        assert mine is False
    release.set()
    waiter.join(5)


def test_ports_and_services_take_ascii_digits_only():
    """Found by the edit generator: ``\\d`` took any Unicode digit ('http/൨൩' was port 23)."""
    from hybridnb.core.spec import parse_lab
    from hybridnb.errors import ValidationError

    for entry in ({"kind": "host", "services": ["http/\u0d68\u0d69"]},
                  {"kind": "container", "ports": ["\u0d68\u0d69:80"]}):
        with pytest.raises(ValidationError):
            parse_lab({"name": "u", "endpoints": {"a": entry}})
    spec = parse_lab({"name": "u", "endpoints": {"a": {"kind": "container", "ports": ["8080:80"],
                                                       "services": ["http/80"]}}})
    assert str(spec.endpoint("a").services[0]) == "http/80"


def test_a_service_name_the_dns_zone_refuses_is_refused_in_validation():
    """Found by the edit property: 'z7-/45' passed validation and failed in the DNS server's
    zone at apply time (a trailing '-' is no DNS label), after the endpoints were made."""
    from hybridnb.core.compile import compile_lab
    from hybridnb.core.dnszone import zone_from_spec
    from hybridnb.core.ipam import assign_addresses
    from hybridnb.core.spec import parse_lab
    from hybridnb.errors import ValidationError

    with pytest.raises(ValidationError, match="z7-/45"):
        parse_lab({"name": "u", "endpoints": {"a": {"kind": "host", "services": ["z7-/45"]}}})
    spec = parse_lab({"name": "u", "endpoints": {"a": {"kind": "host", "services": [
        "z/1", "z7/45", "a-b/80/udp", "abcdefghijklmno/9"]}}})
    dns = next(r for r in compile_lab(spec, assign_addresses(spec)) if r.kind == "dns")
    assert len(zone_from_spec(dns.spec).all_records) > 4          # the zone takes them all
