"""Lab reports on the dry-run backend: sections, formats, schema, determinism, self-containment.

The connectivity matrix and the expectation report are built from the real result classes
(``tests/render/reportlab.py``): the dry-run backend sends no packets.
"""

from __future__ import annotations

import difflib
import json
import re

import pytest

pytest.importorskip("jinja2")
pytest.importorskip("matplotlib")

from hybridnb.render.report import (LabReport, Section, collect_report, register,  # noqa: E402
                                    registered, render_html, render_json, render_markdown,
                                    report_of, schema, table_section, write_report)
from hybridnb.render.report.sections import unregister  # noqa: E402
from tests.render.reportlab import (ObservedLab, dry_lab, results_for,  # noqa: E402
                                    sample_doctor, sample_traffic)

BUILTIN = ["overview", "environment", "lab", "topology", "endpoints", "connectivity", "dns",
           "expectations", "timeline"]
#: every section a Lab's report has: the built-in ones, then the watching services'
ALL = BUILTIN + ["traffic", "doctor"]


@pytest.fixture
def lab(tmp_path):
    return dry_lab(tmp_path / "state")


@pytest.fixture
def data(lab):
    return collect_report(lab, generated="2026-01-01T00:00:00+00:00", **results_for(lab))


def validator():
    jsonschema = pytest.importorskip("jsonschema")
    cls = jsonschema.Draft202012Validator
    cls.check_schema(schema())
    return cls(schema(), format_checker=jsonschema.FormatChecker())


def test_every_builtin_section_is_collected_in_order(data):
    assert data.keys == ALL
    # the hosts section (after the topology) and the policy section (between DNS and
    # expectations) are registered too: a lab without hosts, policies or links leaves them out
    assert [s.key for s in registered()][:len(ALL) + 2] == (
        BUILTIN[:4] + ["hosts"] + BUILTIN[4:7] + ["policy"] + BUILTIN[7:] + ["traffic", "doctor"])
    notes = {s.key: s.note for s in data.sections if s.note}
    # what the dry-run backend cannot show (no DNS server, no lab host to diagnose), and the
    # traffic no one asked to record
    assert list(notes) == ["dns", "traffic", "doctor"], notes
    assert "dry-run backend cannot read the DNS query log" in notes["dns"]
    assert "dry-run backend cannot diagnose the lab" in notes["doctor"]
    assert "--monitor SECONDS" in notes["traffic"]


def test_sections_carry_what_the_result_objects_say(lab, data):
    status, plan = lab.status(), lab.plan()
    extra = results_for(lab)
    assert data.section("overview").data["headline"] == status.headline()
    assert data.section("overview").data["verdict"] == "ok"        # the failure is expected
    rows = data.section("endpoints").data["endpoints"]
    assert [{k: r[k] for k in ("name", "kind", "address", "fqdn", "state", "detail")}
            for r in rows] == status.records()
    macs = {r["name"]: r["mac"] for r in rows}
    assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", macs["db"])    # VM and host: ours
    assert macs["web"] is None                                       # Docker's, none on dry-run
    assert data.section("lab").data["plan"]["headline"] == plan.headline()
    conn = data.section("connectivity").data
    assert conn["summary"] == extra["matrix"].summary()
    assert conn["grids"] == [extra["matrix"].grid(c) for c in extra["matrix"].checks]
    assert conn["results"] == extra["matrix"].records()
    assert data.section("expectations").data["results"] == extra["validation"].records()
    assert data.section("dns").data["records"] == lab.dns().records_list()
    timeline = data.section("timeline").data
    assert timeline["headline"].startswith("Plan for lab rpt: 7 to create")
    assert [a["name"] for a in timeline["actions"]][:2] == ["hnbrpt0", "hnbrpt0"]
    assert {f["name"] for f in data.section("environment").data["facts"]} >= {
        "hybridnb", "python", "kernel", "backend", "VM acceleration"}


def test_grid_text_is_built_from_grid(lab):
    m = results_for(lab)["matrix"]
    grid = m.grid("tcp")
    text = m.grid_text("tcp")
    assert "FAIL" in text
    cell = next(c for row in grid["rows"] if row["source"] == "probe" for c in row["cells"]
                if c["target"] == "db")
    assert cell == {"target": "db", "status": "fail", "text": "FAIL",
                    "title": "tcp probe → db: refused"}


def test_json_validates_against_the_schema(data):
    doc = json.loads(render_json(data))
    errors = sorted(validator().iter_errors(doc), key=lambda e: e.json_path)
    assert not errors, [f"{e.json_path}: {e.message}" for e in errors[:5]]
    assert doc["schema_version"] == 1 and doc["order"] == ALL


def test_schema_describes_every_builtin_section():
    defs = schema()["$defs"]
    props = schema()["properties"]["sections"]["properties"]
    for key in ALL:
        assert key in defs and props[key] == {"$ref": f"#/$defs/{key}"}


def test_a_bad_document_is_refused(data):
    doc = json.loads(render_json(data))
    doc["sections"]["endpoints"]["data"]["endpoints"][0]["state"] = "sideways"
    del doc["sections"]["overview"]["title"]
    assert len(list(validator().iter_errors(doc))) == 2


def test_html_is_self_contained(data):
    html = render_html(data)
    assert html.lstrip().startswith("<!DOCTYPE html>")
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert "@import" not in html and "url(http" not in html
    for attr, value in re.findall(r'\b(src|href|xlink:href)="([^"]*)"', html):
        assert value.startswith(("#", "data:")), (attr, value)
    for key in ALL:
        assert f'<section id="sec-{key}"' in html
    assert html.count("<svg") == 1 + 3 + 1          # topology, 3 heatmaps, 1 distribution
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "ids repeat across inline pictures"


def test_markdown_has_the_same_sections_and_pictures_beside_it(data, tmp_path):
    written = write_report(data, tmp_path / "out" / "lab.md")
    text = (tmp_path / "out" / "lab.md").read_text()
    titles = re.findall(r"^## (.+)$", text, re.M)
    assert titles == [s.title for s in data.sections]
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(pictures) == 5 and all(p.startswith("lab_files/") for p in pictures)
    for p in pictures:
        svg = (tmp_path / "out" / p).read_text()
        assert svg.startswith("<svg") and (tmp_path / "out" / p) in written
    # tables are well formed: every row of a table has its header's number of cells
    for block in re.findall(r"((?:^\|.*\|\n)+)", text, re.M):
        widths = {len(re.findall(r"(?<!\\)\|", line)) for line in block.splitlines()}
        assert len(widths) == 1, block


def test_two_reports_of_an_unchanged_lab_differ_only_in_timestamps(lab, tmp_path):
    extra = results_for(lab)
    first = report_of(lab, generated="2026-01-01T00:00:00+00:00", **extra)
    second = report_of(lab, generated="2026-01-02T11:22:33+00:00", **extra)
    for suffix in (".html", ".md", ".json"):
        a, b = (r.save(tmp_path / n / f"lab{suffix}") for n, r in (("a", first), ("b", second)))
        (doc_a, *pics_a), (doc_b, *pics_b) = a, b
        la, lb = doc_a.read_text().splitlines(), doc_b.read_text().splitlines()
        changed = [line for line in difflib.unified_diff(la, lb, lineterm="", n=0)
                   if line[:1] in "+-" and line[:3] not in ("+++", "---")]
        assert changed and all(("2026-01-01T00:00:00" in c) or ("2026-01-02T11:22:33" in c)
                               for c in changed), changed
        assert len(changed) == 2 * len([c for c in changed if c.startswith("-")])
        assert [p.read_bytes() for p in pics_a] == [p.read_bytes() for p in pics_b]
        assert len(pics_a) == (5 if suffix == ".md" else 0)


def test_a_fresh_collect_is_equal_too(lab):
    extra = results_for(lab)
    a = collect_report(lab, generated="x", **extra)
    b = collect_report(lab, generated="x", **extra)
    assert render_html(a) == render_html(b) and render_json(a) == render_json(b)


def test_missing_results_become_notes(tmp_path):
    lab = dry_lab(tmp_path / "state", applied=False)
    data = collect_report(lab)
    notes = {s.key: s.note for s in data.sections}
    assert "nothing to probe" in notes["connectivity"]
    assert "no apply of this lab is on record" in notes["timeline"]
    assert data.section("overview").data["verdict"] == "attention"
    applied = dry_lab(tmp_path / "state2")
    notes = {s.key: s.note for s in collect_report(applied).sections}
    assert "dry-run backend sends no packets" in notes["connectivity"]
    assert "dry-run backend sends no packets" in notes["expectations"]
    html = render_html(collect_report(applied))
    assert "dry-run backend sends no packets" in html
    assert not list(validator().iter_errors(json.loads(render_json(collect_report(lab)))))


def test_probe_false_runs_no_probe(lab, monkeypatch):
    monkeypatch.setattr(type(lab), "test", lambda self, *a, **k: pytest.fail("probed"))
    data = collect_report(lab, probe=False)
    assert "no probe run" in data.section("connectivity").note


def test_sections_can_be_chosen(lab):
    data = collect_report(lab, sections=["endpoints", "dns"])
    assert data.keys == ["endpoints", "dns"]


class _Findings:
    """What a later feature's result object looks like: records() and summary()."""

    def records(self):
        return [{"check": "forward-policy", "status": "ok", "found": "DOCKER-USER accepts"},
                {"check": "mtu", "status": "warn", "found": "veth 1450 < bridge 1500"}]

    def summary(self):
        return "1 warning"


def test_a_feature_adds_its_section_in_a_few_lines(lab, tmp_path):
    register(Section("audit", "Audit findings", 120, layout="table",
                     collect=lambda ctx: table_section("audit", "Audit findings",
                                                       ctx.ask("audit", _Findings))))
    try:
        rep = report_of(lab, **results_for(lab))
        assert rep.data.keys[-1] == "audit"
        html = rep.to_html()
        assert '<section id="sec-audit"' in html and "veth 1450 &lt; bridge 1500" in html
        md, _ = rep.to_markdown()
        assert "## Audit findings" in md and "| mtu | warn | veth 1450 < bridge 1500 |" in md
        doc = json.loads(rep.to_json())
        assert doc["sections"]["audit"]["data"]["columns"] == ["check", "status", "found"]
        assert not list(validator().iter_errors(doc))
    finally:
        unregister("audit")
    assert "audit" not in report_of(lab).data.keys


def test_a_stopped_endpoint_shows_the_engines_words(lab):
    lab.backend.extras["engine"].stop("rpt", "container", "web")
    data = collect_report(lab, probe=False)
    rows = {r["name"]: r for r in data.section("endpoints").data["endpoints"]}
    assert (rows["web"]["state"], rows["web"]["detail"]) == ("stopped", "stopped (dry-run)")
    assert rows["db"]["detail"] == ""
    html = render_html(data)
    assert "<th>detail</th>" in html and "stopped (dry-run)" in html
    md, _ = render_markdown(data)
    assert "| name | kind | address | MAC | fqdn | state | detail | what |" in md
    assert not list(validator().iter_errors(json.loads(render_json(data))))
    # nobody stopped: no detail column
    assert "<th>detail</th>" not in render_html(collect_report(dry_lab(lab.store.dir / "x"),
                                                               probe=False))


def _observed(lab, doctor=None, traffic=None):
    names = sorted(e.name for e in lab.spec.endpoints)
    return ObservedLab(lab, sample_doctor() if doctor is None else doctor,
                       sample_traffic(names) if traffic is None else traffic)


def test_doctor_findings_and_traffic_are_sections(lab, tmp_path):
    observed = _observed(lab)
    rep = report_of(observed, monitor=4, generated="2026-01-01T00:00:00+00:00",
                    **results_for(lab))
    assert rep.data.keys == BUILTIN + ["traffic", "doctor"]
    assert [c for c, _ in observed.calls] == ["monitor", "doctor"]
    assert observed.calls[0][1] == {"duration": 4}
    doctor = rep.data.section("doctor").data
    from hybridnb.services.doctor import all_checks

    assert doctor["exit_code"] == 2
    assert doctor["counts"] == {"fail": 1, "warn": 1, "ok": len(all_checks()) - 2}

    assert [f["check"] for f in doctor["findings"]] == [c.id for c in all_checks()]
    first = next(f for f in doctor["findings"] if f["check"] == "forward-drop")
    assert first["fixable"] and first["fix"].startswith("iptables -I DOCKER-USER")
    assert first["data"] == {"verdict": "DROP", "by": "policy"}
    traffic = rep.data.section("traffic")
    assert traffic.data["top"] == ["db", "probe", "web"][:len(traffic.data["top"])]
    assert [e["endpoint"] for e in traffic.data["endpoints"]][:2] == ["db", "probe"]
    assert traffic.data["not_watched"] == [{"endpoint": "db", "why": "not running"}]
    assert len(traffic.data["samples"]) == 4 and len(traffic.figures) == 1

    html = rep.to_html()
    # problems first: the failure's row comes before the warning's, both before the ok ones
    at = [html.index(f"<td>{c}</td>") for c in ("forward-drop", "mtu", "docker")]
    assert at == sorted(at) and "doctor --fix applies it" in html
    assert "4.0 Mbit/s" in html and "1.2 MB" in html and 'id="fig-traffic"' in html
    md, files = rep.to_markdown("pics")
    assert "| FAIL | `forward-drop` |" in md and "pics/traffic.svg" in files
    doc = json.loads(rep.to_json())
    errors = list(validator().iter_errors(doc))
    assert not errors, [f"{e.json_path}: {e.message}" for e in errors[:5]]
    assert doc["order"][-2:] == ["traffic", "doctor"]
    # the schema knows them: a finding with a status the doctor never gives is refused
    doc["sections"]["doctor"]["data"]["findings"][0]["status"] = "meh"
    doc["sections"]["traffic"]["data"]["endpoints"][0].pop("drops")
    assert len(list(validator().iter_errors(doc))) == 2


def test_doctor_and_traffic_say_why_they_are_missing(lab):
    from hybridnb.errors import Unsupported

    observed = _observed(lab, doctor=Unsupported("the dry-run backend has no host to examine",
                                                 hint="use the sandbox backend"))
    only = ["overview", "doctor", "traffic"]                    # (no pictures to draw: fast)
    data = collect_report(observed, sections=only)
    notes = {s.key: s.note for s in data.sections}
    assert "no host to examine (use the sandbox backend)" in notes["doctor"]
    assert "--monitor SECONDS" in notes["traffic"]
    assert [c for c, _ in observed.calls] == ["doctor"]          # no recording unless asked
    assert data.section("doctor").data == {} and data.section("traffic").data == {}
    assert not list(validator().iter_errors(json.loads(render_json(data))))
    # probe=False: the doctor (ARP and DNS queries in the lab) is not run
    quiet = _observed(lab)
    notes = {s.key: s.note for s in collect_report(quiet, probe=False,
                                                    sections=only).sections}
    assert "no probe run" in notes["doctor"] and quiet.calls == []
    # results handed in are shown and not asked again
    handed = _observed(lab)
    data = collect_report(handed, probe=False, doctor=sample_doctor(), sections=only,
                          traffic=sample_traffic(["probe", "web"]))
    assert handed.calls == [] and data.section("doctor").data["counts"]["fail"] == 1
    assert data.section("traffic").data["top"][:1] == ["probe"]
    # a lab without doctor() and monitor() (an older Lab): no such sections at all
    class OlderLab(ObservedLab):                # a Lab-shaped object with neither method
        doctor = monitor = None

    assert collect_report(OlderLab(lab, None, None), probe=False,
                          sections=only).keys == ["overview"]


def test_the_dns_section_summarises_the_query_log(lab, monkeypatch):
    """The query log as the DNS server's reader returns it (QueryRecord objects): counts,
    answer codes, busiest names and the latency percentiles, valid under the schema."""
    from hybridnb.daemons.dns.querylog import QueryRecord
    from hybridnb.services.dns.results import QueryLogView

    entries = tuple(QueryRecord(1_767_225_600.0 + i, f"10.0.7.{10 + i % 2}",
                                "web.hybrid.local." if i % 3 else "nope.hybrid.local.", "A",
                                "NOERROR" if i % 3 else "NXDOMAIN", 20.0 + i)
                    for i in range(9))
    view = QueryLogView("rpt", entries)
    assert view.records()[0] == {"time": 1_767_225_600.0, "client": "10.0.7.10",
                                 "name": "nope.hybrid.local.", "type": "A",
                                 "rcode": "NXDOMAIN", "latency_us": 20.0}
    monkeypatch.setattr(type(lab), "dns_query_log", lambda self, limit=50: view)
    data = collect_report(lab, probe=False, sections=["dns"])
    log = data.section("dns").data["log"]
    assert not data.section("dns").note
    assert log["queries"] == 9 and log["rcodes"] == [{"value": "NOERROR", "count": 6},
                                                     {"value": "NXDOMAIN", "count": 3}]
    assert log["names"][0] == {"value": "web.hybrid.local.", "count": 6}
    assert log["latency_us"] == {"median": 24.0, "p90": 28.0, "p99": 28.0, "max": 28.0}
    assert (log["first"], log["last"]) == (1_767_225_600.0, 1_767_225_608.0)
    assert not list(validator().iter_errors(json.loads(render_json(data))))
    assert "NXDOMAIN" in render_html(data)


def test_a_custom_section_module_brings_its_schema(lab):
    """A feature's section with its own templates and schema: the report's schema grows a
    ``$defs`` entry for it (here the doctor section's, registered under another key)."""
    from hybridnb.render.report.sections import doctor as doctor_section

    assert schema()["$defs"]["doctor"]["allOf"][1]["properties"]["data"]["anyOf"][1] \
        == doctor_section.SCHEMA
    assert schema()["properties"]["sections"]["properties"]["doctor"] == {
        "$ref": "#/$defs/doctor"}
    assert "traffic" in schema()["$defs"]


def test_the_report_renders_itself(lab):
    rep = report_of(lab, **results_for(lab))
    assert isinstance(rep, LabReport)
    inline = rep._repr_html_()
    assert "<html" not in inline and inline.startswith("<style>")
    assert 'class="hnb-report"' in inline
    assert repr(rep).startswith("Report of lab rpt") and "Connectivity and latency" in repr(rep)


def test_unknown_format_is_a_clear_error(data, tmp_path):
    from hybridnb.errors import HybridError

    with pytest.raises(HybridError, match="cannot tell the report format"):
        write_report(data, tmp_path / "lab.pdf")
    _, files = render_markdown(data, "pics")
    assert set(files) == {f"pics/{f.name}.svg" for s in data.sections for f in s.figures}


def test_the_report_package_imports_no_lab_no_service_no_driver():
    import subprocess
    import sys

    code = ("import sys\n"
            "import hybridnb.render.report, hybridnb.render.report.collect, "
            "hybridnb.render.report.sections, hybridnb.render.report.render, "
            "hybridnb.render.report.environment\n"
            "print(','.join(sorted(m for m in sys.modules if m.startswith(("
            "'hybridnb.lab', 'hybridnb.services', 'hybridnb.drivers', 'hybridnb.notebook', "
            "'hybridnb.cli')))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""
