"""A lab report of a real lab in the session sandbox: a container, a test VM and a namespace
host, probed for real; the report's JSON validates, every section has its data, the MACs and
engine versions are the engines' own, and the HTML passes the browser checks (no request, no
console error, every section visible, not blank).  Two reports of the unchanged lab without a
new probe run differ only in their timestamps.
"""

from __future__ import annotations

import difflib
import json
import re

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


def test_report_of_a_real_lab(real_lab, watched_page, tmp_path):  # noqa: F811
    from hybridnb.render.report import render_html, render_json, report_of, schema

    jsonschema = pytest.importorskip("jsonschema")
    rep = report_of(real_lab)
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
    assert len(paths) >= 3 + len(data.section("connectivity").figures) + 1

    check_report_in_browser(watched_page, tmp_path / "out" / "repreal.html", data.keys,
                            tmp_path)

    # the same lab, reported twice more without probing: only the timestamp differs
    a = report_of(real_lab, probe=False, generated="2026-01-01T00:00:00+00:00").data
    b = report_of(real_lab, probe=False, generated="2026-01-01T00:00:09+00:00").data
    for render in (render_html, render_json):
        diff = [line for line in difflib.unified_diff(render(a).splitlines(),
                                                      render(b).splitlines(), n=0,
                                                      lineterm="")
                if line[:1] in "+-" and line[:3] not in ("+++", "---")]
        assert diff and all("2026-01-01T00:00:0" in line for line in diff), diff[:6]
