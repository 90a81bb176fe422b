"""A lab report of a real lab in the session sandbox: a container, a test VM and a namespace
host, probed for real, with the doctor's findings and the traffic of the probe run; the
report's JSON validates, every section has its data, the MACs and engine versions are the
engines' own, and the HTML passes the browser checks (no request, no console error, every
section visible, not blank).  Two reports of the unchanged lab without a new probe run differ
only in their timestamps.  ``hybridnb report`` on the demo lab (``examples/seed.yaml``) writes
HTML, Markdown and JSON that pass the same checks.
"""

from __future__ import annotations

import difflib
import json
import re
import threading
from pathlib import Path

import pytest

pytest.importorskip("jinja2")

from hybridnb.lab import Lab  # noqa: E402
from tests.browser.conftest import browser, watched_page  # noqa: E402,F401
from tests.browser.report_page import check_report_in_browser  # noqa: E402
from tests.realengines import SANDBOX_NAME  # noqa: E402

pytestmark = [pytest.mark.real, pytest.mark.vm, pytest.mark.browser]

LAB = {
    "name": "repreal",
    "network": {"bridge": "hnbrep0", "subnet": "10.0.66.0/24"},
    "endpoints": {
        "web": {"kind": "container", "services": ["http/80"]},   # busybox httpd on 80
        "vm1": {"kind": "vm", "template": "test", "memory": 128},
        "probe": {"kind": "host"},
    },
    "expect": ["web -> vm1 icmp ok", "probe -> web http ok", "vm1 -> web tcp/80 ok",
               "probe -> vm1 tcp/5432 blocked"],
}


@pytest.fixture
def real_lab(sandbox, tmp_path):
    lab = Lab.from_dict(LAB, backend="sandbox", sandbox=SANDBOX_NAME,
                        state_dir=tmp_path / "state")
    try:
        lab.apply()
        yield lab
    finally:
        lab.destroy()


def observe(lab):
    """The doctor's findings on ``lab`` and the traffic its probe run makes, from the
    watching services (what ``Lab.doctor()``/``Lab.monitor()`` return), and that matrix."""
    from hybridnb.services.doctor import DoctorContext, diagnose
    from hybridnb.services.labview import LabView
    from hybridnb.services.monitor import TrafficMonitor, TrafficReport

    view = LabView.of(lab)
    doctor = diagnose(DoctorContext.of(view, {lab.name: lab.store.read(lab.name)}))
    stop, got = threading.Event(), {}
    with TrafficMonitor(view) as mon:
        mon.sample()                                   # the counters before the probe run
        watcher = threading.Thread(target=lambda: got.update(
            traffic=mon.record(interval=0.25, duration=60, stop=stop)))
        watcher.start()
        try:
            matrix = lab.test()
        finally:
            stop.set()
            watcher.join()
        last = mon.sample()                            # up to the end of the run
    traffic = TrafficReport(lab.name, view.bridge, got["traffic"].samples + (last,))
    return doctor, traffic, matrix


def test_report_of_a_real_lab(real_lab, watched_page, tmp_path):  # noqa: F811
    from hybridnb.render.report import render_html, render_json, report_of, schema

    jsonschema = pytest.importorskip("jsonschema")
    doctor, traffic, matrix = observe(real_lab)
    rep = report_of(real_lab, doctor=doctor, traffic=traffic, matrix=matrix)
    paths = [p for suffix in (".html", ".md", ".json")
             for p in rep.save(tmp_path / "out" / f"repreal{suffix}")]
    data = rep.data
    assert [s.key for s in data.sections if s.note] == [], [(s.key, s.note)
                                                           for s in data.sections]
    doc = json.loads((tmp_path / "out" / "repreal.json").read_text())
    errors = list(jsonschema.Draft202012Validator(
        schema(), format_checker=jsonschema.FormatChecker()).iter_errors(doc))
    assert not errors, [f"{e.json_path}: {e.message}" for e in errors[:5]]

    overview = data.section("overview").data
    assert overview["up"] and overview["expectations_ok"] and overview["verdict"] == "ok"
    conn = data.section("connectivity").data
    assert conn["ok"], conn["failures"]
    assert {"icmp", "tcp", "udp", "http", "dns"} <= set(conn["checks"])
    assert len(data.section("connectivity").figures) >= 3
    rows = {r["name"]: r for r in data.section("endpoints").data["endpoints"]}
    assert all(re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", r["mac"] or "")
               for r in rows.values()), rows
    assert rows["web"]["address"] == "10.0.66.100" and rows["vm1"]["state"] == "up"
    facts = {f["name"]: f["value"] for f in data.section("environment").data["facts"]}
    assert re.match(r"\d+\.\d+", facts["docker"]) and re.match(r"\d+\.\d+", facts["libvirt"])
    assert facts["VM acceleration"].startswith("TCG")
    log = data.section("dns").data["log"]
    assert log["queries"] > 0 and log["rcodes"]           # the dns probes asked the server
    assert all(e["holds"] for e in data.section("expectations").data["results"])
    timeline = data.section("timeline").data
    assert {(a["op"], a["kind"]) for a in timeline["actions"]} >= {("create", "vm"),
                                                                     ("create", "container")}
    assert len(paths) >= 3 + len(data.section("connectivity").figures) + 2
    findings = data.section("doctor").data["findings"]
    from hybridnb.services.doctor import all_checks

    # every check but the policy group's (they apply to labs with policies or links)
    assert {f["check"] for f in findings} == {c.id for c in all_checks() if c.group != "policy"}
    assert not [f for f in findings if "crashed" in f["found"]], findings
    assert {f["check"]: f["status"] for f in findings}["endpoint-state"] == "ok"
    assert data.section("doctor").data["exit_code"] == doctor.exit_code
    moved = {e["endpoint"]: e["tx_bytes"] + e["rx_bytes"]
             for e in data.section("traffic").data["endpoints"]}
    assert all(moved.get(n, 0) > 0 for n in ("web", "vm1", "probe")), moved   # the probes
    assert len(data.section("traffic").figures) == 1

    # the same lab, reported twice more without probing: only the timestamp differs — the
    # second made inside a running event loop, as a notebook cell makes it (Lab.report runs
    # off that loop: engine libraries cannot run their own under it)
    import asyncio

    a = report_of(real_lab, probe=False, generated="2026-01-01T00:00:00+00:00").data

    async def in_a_cell():
        return real_lab.report(probe=False)
    b = asyncio.run(in_a_cell()).data
    b = type(b)(b.lab, "2026-01-01T00:00:09+00:00", b.version, b.sections)
    for render in (render_html, render_json):
        diff = [line for line in difflib.unified_diff(render(a).splitlines(),
                                                      render(b).splitlines(), n=0,
                                                      lineterm="")
                if line[:1] in "+-" and line[:3] not in ("+++", "---")]
        assert diff and all("2026-01-01T00:00:0" in line for line in diff), diff[:6]

    check_report_in_browser(watched_page, tmp_path / "out" / "repreal.html", data.keys,
                            tmp_path)


SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"


def test_cli_report_of_the_demo_lab(sandbox, watched_page, tmp_path):  # noqa: F811
    """``hybridnb report`` on the demo lab: HTML, Markdown and JSON from one run; the HTML
    passes the browser checks, the JSON its schema; two reports without probing differ only
    in their timestamps."""
    from hybridnb.cli import main
    from hybridnb.render.report import schema

    jsonschema = pytest.importorskip("jsonschema")
    common = ["--sandbox", SANDBOX_NAME, "--state-dir", str(tmp_path / "state"), "-q"]
    out = tmp_path / "out"
    try:
        assert main(["apply", str(SEED), *common]) == 0
        assert main(["report", "seed", *common, "-o", str(out / "seed.html"),
                     "-o", str(out / "seed.md"), "-o", str(out / "seed.json")]) == 0
        doc = json.loads((out / "seed.json").read_text())
        errors = list(jsonschema.Draft202012Validator(
            schema(), format_checker=jsonschema.FormatChecker()).iter_errors(doc))
        assert not errors, [f"{e.json_path}: {e.message}" for e in errors[:5]]
        sections = doc["sections"]
        assert sections["overview"]["data"]["up"], sections["overview"]
        conn = sections["connectivity"]["data"]
        assert sections["connectivity"]["note"] == "" and conn["ok"], conn["failures"]
        assert {"web", "vm1"} <= {e["name"] for e in sections["endpoints"]["data"]["endpoints"]}
        # the report asked the lab's doctor itself: every check, none crashed, nothing failed
        from hybridnb.services.doctor import all_checks

        doctor = sections["doctor"]
        assert doctor["note"] == "", doctor["note"]
        assert {f["check"] for f in doctor["data"]["findings"]} == {
            c.id for c in all_checks() if c.group != "policy"}     # the seed has no policies
        assert doctor["data"]["counts"]["fail"] == 0, [
            f for f in doctor["data"]["findings"] if f["status"] == "fail"]
        md = (out / "seed.md").read_text()
        pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
        assert pictures and all((out / p).is_file() for p in pictures)
        check_report_in_browser(watched_page, out / "seed.html", doc["order"], tmp_path)
        # unchanged and not probed again: two reports differ only in the timestamp line(s)
        texts = []
        for n in (1, 2):
            assert main(["report", "seed", *common, "--no-probe",
                         "-o", str(out / f"again{n}.json")]) == 0
            texts.append(json.loads((out / f"again{n}.json").read_text()))
        a, b = texts
        assert a["generated"] <= b["generated"]
        a["generated"] = b["generated"] = ""
        assert a == b
    finally:
        main(["destroy", "seed", *common])
