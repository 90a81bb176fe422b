"""Policies and link impairments as part of the lab (issue 15), on the dry-run backend: the
``groups:``/``policies:``/``links:`` sections, their resources and plans (updates in place),
warnings, ``Lab.policy/explain/links``, status, topology, doctor, report, CLI and magics."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from hybridnb.core.compile import compile_lab
from hybridnb.core.ipam import assign_addresses
from hybridnb.core.resource import Observation
from hybridnb.core.spec import lab_to_dict, parse_lab
from hybridnb.core.stages import dependents, kind_order
from hybridnb.drivers.dryrun import dry_run_backend
from hybridnb.errors import EngineUnavailable, NotFoundError, ValidationError
from hybridnb.lab import Lab

DOC = {
    "name": "pl",
    "endpoints": {"web": {"kind": "container", "labels": {"tier": "web"}},
                  "api": {"kind": "host", "labels": {"tier": "web"}},
                  "db": {"kind": "vm", "labels": {"tier": "data"}},
                  "guest": {"kind": "host"}},
    "groups": {"frontend": {"labels": {"tier": "web"}}, "data": ["db"]},
    "policies": {"default": "deny", "rules": [
        {"from": "frontend", "to": "data", "allow": ["tcp/5432", "icmp"]},
        {"from": "any", "to": "data", "deny": "all"},
        {"from": "guest", "to": "frontend", "allow": ["http/80"]},
    ]},
    "links": {"db": {"delay": "20ms", "jitter": "5ms", "loss": "1%", "rate": "100mbit"},
              "api": {"mtu": 1400}},
}


def doc(**changes):
    out = copy.deepcopy(DOC)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


@pytest.fixture
def backend():
    return dry_run_backend()


def lab_of(backend, state_dir, **changes) -> Lab:
    return Lab.from_dict(doc(**changes), backend=backend, state_dir=state_dir)


def ops(plan):
    return [(a.op, a.kind, a.name) for a in plan.actions]


# ------------------------------------------------------------------------------ the lab file

def test_sections_parse_write_back_and_compile_in_order():
    spec = parse_lab(DOC)
    policy = spec.sections["policies"].policy
    assert policy.groups["frontend"] == {"web", "api"}            # labels of any kind
    assert parse_lab(lab_to_dict(spec)) == spec
    assert lab_to_dict(spec)["links"]["db"] == {"delay": "20ms", "jitter": "5ms",
                                                "loss": "1%", "rate": "100mbit"}
    order = kind_order()
    assert order.index("firewall") < order.index("policy") < order.index("network")
    assert order.index("vm") < order.index("link") < order.index("dns")
    assert set(dependents("container")) == {"link"} and "link" in dependents("host")
    kinds = [r.kind for r in compile_lab(spec, assign_addresses(spec))]
    assert kinds == ["bridge", "firewall", "policy", "network", "host", "host", "container",
                     "vm", "link", "link", "dns"]
    res = {(r.kind, r.name): r for r in compile_lab(spec, assign_addresses(spec))}
    assert res[("policy", "pl")].summary == "inet hnb-pl: 3 rules, default deny"
    assert res[("link", "db")].spec["guest_netem"] is True
    assert res[("link", "api")].spec["veth"] == res[("host", "api")].spec["veth"]
    body = json.dumps(res[("policy", "pl")].spec["body"])
    assert '"10.0.1.200"' in body                                 # allocated addresses


def test_every_problem_with_its_path_and_shadowing_is_a_warning():
    bad = doc(groups={"frontend": ["web", "apii"]},
              policies={"default": "maybe", "rules": [{"from": "frontnd", "to": "db",
                                                       "allow": ["tcp/99999"]}]},
              links={"db": {"delay": 20}, "nobody": {"loss": "1%"}})
    with pytest.raises(ValidationError) as info:
        parse_lab(bad)
    problems = {p.path: p for p in info.value.problems}
    assert set(problems) == {"groups.frontend[1]", "policies.default",
                             "policies.rules[0].from", "policies.rules[0].allow[0]",
                             "links.db.delay", "links.nobody"}
    assert problems["groups.frontend[1]"].hint == "did you mean 'api'?"
    assert problems["policies.rules[0].from"].hint == "did you mean 'frontend'?"
    assert problems["links.db.delay"].message == "20 has no unit (write e.g. 20ms)"
    # a rule that can never match is a warning (with the rule numbers), not an error
    rules = DOC["policies"]["rules"] + [{"from": "guest", "to": "db", "allow": "icmp"}]
    spec = parse_lab(doc(policies={"default": "deny", "rules": rules}))
    (warning,) = spec.sections["policies"].warnings
    assert warning.path == "policies.rules[3]"
    assert warning.message == ("rule 4 never matches: rule 2 decides every flow it covers, "
                               "the other way")


def test_the_example_lab_file_reads(state_dir):
    from pathlib import Path

    lab = Lab.load(Path(__file__).resolve().parent.parent / "examples" / "policy.yaml",
                   backend="dry-run", state_dir=state_dir)
    assert lab.warnings() == [] and len(lab.spec.sections["policies"].policy.rules) == 3
    assert not lab.explain("db", "web", "icmp").allowed


def test_builtin_selector_names_matter_only_with_policies():
    plain = {"endpoints": {"any": {"kind": "host"}}}
    assert parse_lab(plain).endpoint("any")
    with pytest.raises(ValidationError, match="endpoints.any: endpoint 'any' has the name of a "
                                              "built-in selector"):
        parse_lab({**plain, "policies": {"default": "allow"}})


# ------------------------------------------------------------------------------ plans

def test_apply_then_change_policy_and_links_in_place(backend, state_dir):
    lab = lab_of(backend, state_dir)
    result = lab.apply()
    assert ("create", "policy", "pl") in ops(result.plan)
    assert [a for a in ops(result.plan) if a[1] == "link"] == [("create", "link", "api"),
                                                              ("create", "link", "db")]
    assert lab.plan().empty
    engine = backend.extras["engine"]
    rules = DOC["policies"]["rules"] + [{"from": "guest", "to": "web", "allow": "icmp"}]
    changed = lab_of(backend, state_dir, policies={"default": "deny", "rules": rules})
    plan = changed.plan()
    assert ops(plan) == [("update", "policy", "pl")] and plan.actions[0].reason == \
        "changed: body"
    changed.apply()
    assert engine.log[-1] == "update policy/pl"
    links = copy.deepcopy(DOC["links"])
    links["db"]["delay"] = "50ms"
    changed = lab_of(backend, state_dir, policies={"default": "deny", "rules": rules},
                     links=links)
    assert ops(changed.plan()) == [("update", "link", "db")]   # the VM is not re-created
    changed.apply()
    gone = lab_of(backend, state_dir, policies=None, links=None)
    assert ops(gone.plan()) == [("delete", "link", "api"), ("delete", "link", "db"),
                                ("delete", "policy", "pl")]
    gone.apply()
    assert "policy" not in engine.objects["pl"] or not engine.objects["pl"]["policy"]


def test_a_recreated_endpoint_takes_its_impairments_along(backend, state_dir):
    lab = lab_of(backend, state_dir)
    lab.apply()
    backend.extras["engine"].stop("pl", "vm", "db")
    plan = lab.plan()
    assert ("replace", "vm", "db") in ops(plan)
    assert {("replace", "link", "db"), ("replace", "link", "api")} <= set(ops(plan))


def test_an_impairment_this_host_cannot_give_is_refused_before_anything(backend, state_dir):
    class Refusing:
        kind, concurrent = "link", False

        def __init__(self):
            self.made = []

        def observe(self, lab):
            return {n: Observation(fp) for n, fp in self.made}

        def create(self, lab, resource):
            self.made.append((resource.name, resource.fingerprint))

        update = create

        def delete(self, lab, name):
            self.made = [m for m in self.made if m[0] != name]

        def check(self, lab, resource):
            if "delay_us" in resource.spec and resource.spec["kind"] != "vm":
                raise EngineUnavailable(f"cannot impair {resource.name!r} here: no netem")

    backend.drivers["link"] = Refusing()
    lab = lab_of(backend, state_dir, links={"api": {"loss": "1%"}})
    lab.apply()
    engine = backend.extras["engine"]
    n = len(engine.log)
    worse = lab_of(backend, state_dir, links={"api": {"delay": "5ms"}},
                   endpoints={**DOC["endpoints"], "h9": {"kind": "host"}})
    assert ("update", "link", "api") in ops(worse.plan())
    with pytest.raises(EngineUnavailable, match="no netem"):
        worse.apply()
    assert len(engine.log) == n and "h9" not in engine.objects["pl"]["host"]


# ------------------------------------------------------------------------------ looking at it

def test_policy_explain_links_warnings_and_status(backend, state_dir):
    lab = lab_of(backend, state_dir)
    assert lab.policy().state == "not applied"
    lab.apply()
    table = lab.policy()
    assert table.state == "up" and table.counters is None
    assert table.headline() == ("Policy of lab pl: 3 rules, default deny in hnb-pl — up; the "
                                "dry-run backend counts no packets")
    decision = lab.explain("web", "db", "tcp/5432")
    assert decision.allowed and decision.rule == 1
    assert str(lab.explain("guest", "db", "http")) == \
        "guest -> db tcp/80: deny (decided by rule 2 (any -> data deny all))"
    with pytest.raises(ValidationError, match="did you mean 'web'"):
        lab.explain("wbe", "db")
    view = lab.links()
    assert [(r.endpoint, r.impairments, r.state) for r in view.rows] == [
        ("api", "mtu 1400", "up"), ("db", "delay 20ms jitter 5ms loss 1% rate 100mbit", "up")]
    assert lab.warnings() == []
    status = lab.status()
    assert status.policy == "inet hnb-pl: 3 rules, default deny — up"
    assert status.links == (("api", "mtu 1400", "up"),
                            ("db", "delay 20ms jitter 5ms loss 1% rate 100mbit", "up"))
    assert "policy: inet hnb-pl: 3 rules, default deny — up" in status.to_text()
    assert "link db: delay 20ms" in status._repr_html_()
    assert ("db", "guest") in status.denied and ("api", "db") not in status.denied
    bare = lab_of(backend, state_dir, policies=None)
    with pytest.raises(NotFoundError, match="has no policies"):
        bare.policy()
    rules = DOC["policies"]["rules"] + [{"from": "guest", "to": "db", "allow": "icmp"}]
    shadowed = lab_of(backend, state_dir, policies={"default": "deny", "rules": rules})
    assert [w.path for w in shadowed.warnings()] == ["policies.rules[3]"]
    text = shadowed.plan().to_text()
    assert text.splitlines()[-1].startswith("warning: policies.rules[3]: rule 4 never matches")


def test_topology_draws_denied_pairs(backend, state_dir):
    from hybridnb.render.topology import draw_topology, topology_graph

    lab = lab_of(backend, state_dir)
    lab.apply()
    status = lab.status()
    graph = topology_graph(status)
    denied = sorted(tuple(sorted((graph.nodes[u]["name"], graph.nodes[v]["name"])))
                    for u, v, d in graph.edges(data=True) if d["kind"] == "denied")
    assert denied == sorted(status.denied) and ("db", "guest") in denied
    drawing = draw_topology(status)
    assert drawing.denied == sorted(status.denied) and drawing.to_png()[:4] == b"\x89PNG"


def test_report_has_a_policy_section(backend, state_dir):
    from hybridnb.render.report import report_of

    lab = lab_of(backend, state_dir)
    lab.apply()
    rep = report_of(lab, probe=False)
    section = next(s for s in rep.data.sections if s.key == "policy")
    assert section.data["policy"]["rules"][0] == {
        "rule": "1", "from": "frontend", "to": "data", "verdict": "allow",
        "services": "tcp/5432, icmp", "comment": "", "packets": None, "bytes": None}
    assert [r["endpoint"] for r in section.data["links"]["rows"]] == ["api", "db"]
    assert "Policies and impairments" in rep.to_html()
    md, _ = rep.to_markdown()
    assert "| 2 | any | data | deny | all |" in md
    plain = Lab("plain", backend=backend, state_dir=state_dir).add_host("h1")
    assert "policy" not in [s.key for s in report_of(plain, probe=False).data.sections]


def test_doctor_checks_the_policy_is_enforced_and_explains_drops(backend, state_dir):
    from hybridnb.services.doctor import DoctorContext, diagnose
    from hybridnb.services.doctor.policy import PolicyDrops, PolicyEnforced
    from hybridnb.services.labview import LabView

    lab = lab_of(backend, state_dir)
    lab.apply()

    class Counting(type(backend.drivers["policy"])):
        def counters(self, lab):
            return {"rule 1": (40, 4000), "rule 2": (7, 420), "default": (3, 180)}

    backend.drivers["policy"] = Counting("policy", backend.extras["engine"])

    def context():
        # DoctorContext.of refuses the dry-run backend (its labs are on no host to look at);
        # these two checks only ask the policy driver, so the test builds the context itself
        view = LabView.of(lab)
        return DoctorContext(view.name, backend.target, dict(backend.drivers),
                             tuple(view.resources), dict(view.state), {}, view.state_dir,
                             backend.name)
    report = diagnose(context(), [PolicyEnforced(), PolicyDrops()])
    enforced, drops = report.findings
    assert enforced.ok and "table inet hnb-pl enforces the policy" in enforced.found
    assert drops.found == ("the policy dropped 10 packets since its last change — rule 2 "
                           "(any -> data deny all): 7; default: 3")
    assert drops.data["dropped"] == {"rule 2": 7, "default": 3}
    backend.extras["engine"].tamper("pl", "policy", "pl", None)
    report = diagnose(context(), [PolicyEnforced()], fix=True)
    assert report.before[0].status == "fail" and "is missing" in report.before[0].found
    assert report.findings[0].ok                                # fixed: the table is back


# ------------------------------------------------------------------------------ fronts

def test_cli_policy_explain_and_links(capsys, tmp_path, state_dir):
    from hybridnb.cli import main

    path = tmp_path / "pl.yaml"
    path.write_text(yaml.safe_dump(DOC))
    common = ["--dry-run", "--state-dir", str(state_dir), "-q"]
    assert main(["apply", str(path), *common]) == 0
    capsys.readouterr()
    assert main(["policy", str(path), *common]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Policy of lab pl: 3 rules, default deny in hnb-pl — up")
    assert main(["policy", "pl", "web", "db", "tcp/5432", *common]) == 0
    assert capsys.readouterr().out.startswith("web -> db tcp/5432: allow (decided by rule 1")
    assert main(["policy", "pl", "guest", "db", "icmp", *common, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["decided_by"] == "rule 2"
    assert main(["policy", "pl", "guest", *common]) == 1         # one HybridError, exit 1
    assert "name the target too" in capsys.readouterr().err
    assert main(["links", "pl", *common]) == 0
    assert "db        vm    delay 20ms jitter 5ms" in capsys.readouterr().out
    assert main(["status", "pl", *common, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["policy"] == "inet hnb-pl: 3 rules, default deny — up"
    assert data["links"][0] == {"endpoint": "api", "impairments": "mtu 1400", "state": "up"}


@pytest.mark.extra("notebook")
def test_magics_policy_and_links(tmp_path, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    from hybridnb.core.policy import Decision
    from hybridnb.notebook.magics import load_ipython_extension
    from hybridnb.services.policyview import LinksView, PolicyTable
    from tests.notebook.conftest import run

    monkeypatch.setenv("HYBRIDNB_STATE_DIR", str(tmp_path / "state"))
    ip = InteractiveShell.instance()
    load_ipython_extension(ip)
    ip.run_cell('%config HybridMagics.backend = "dry-run"')
    run(ip, "%%hybrid --apply -q\n" + yaml.safe_dump(DOC))
    assert isinstance(run(ip, "%hybrid policy"), PolicyTable)
    decision = run(ip, "%hybrid policy web db tcp/5432")
    assert isinstance(decision, Decision) and decision.allowed
    assert isinstance(run(ip, "%hybrid links"), LinksView)
    assert "policy [FROM] [TO] [PROTO/PORT]" in repr(run(ip, "%hybrid help"))
    ip.magics_manager.registry["HybridMagics"].current_lab = None


def test_a_report_with_blocked_probes_keeps_to_its_schema(backend, state_dir):
    jsonschema = pytest.importorskip("jsonschema")
    from hybridnb.render.report import report_of, schema
    from hybridnb.services.policyview import judge_matrix
    from hybridnb.services.probe.matrix import ConnectivityMatrix, ProbeResult

    lab = lab_of(backend, state_dir)
    lab.apply()
    m = ConnectivityMatrix.from_results(
        [ProbeResult("icmp", "web", "db", True, rtts=(0.001,), sent=1, received=1),
         ProbeResult("icmp", "guest", "db", False, "timeout", sent=1),
         ProbeResult("icmp", "db", "web", False, "timeout", sent=1)])
    judge_matrix(m, lab._policy())
    doc = json.loads(report_of(lab, matrix=m, probe=False).to_json())
    defs = schema()["$defs"]
    for key, ref in (("connectivity", "connectivity"), ("policy", "section")):
        errors = list(jsonschema.Draft202012Validator(
            {"$ref": f"#/$defs/{ref}", "$defs": defs}).iter_errors(doc["sections"][key]))
        assert errors == [], [e.message for e in errors]
    grid = doc["sections"]["connectivity"]["data"]["grids"][0]
    assert grid["counts"] == {"ok": 1, "fail": 0, "skip": 0, "blocked": 2}
    assert doc["sections"]["policy"]["data"]["judged"] == [
        {"check": "icmp", "source": "db", "target": "web", "status": "blocked",
         "rule": "default"},
        {"check": "icmp", "source": "guest", "target": "db", "status": "blocked",
         "rule": "rule 2"}]
