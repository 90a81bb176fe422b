"""Watching a lab from the fronts, without root (issue 14, phase 2): ``Lab.monitor/capture/
doctor/logs``, ``hybridnb monitor|capture|doctor|logs`` and ``%hybrid monitor|capture|doctor|
logs|graph --live`` on the dry-run backend, and the result objects' data for reports.

* the dry-run backend's target has no namespace: monitor, capture and doctor (with or without
  a lab) are refused with one clear error (exit 5, the backend's hint) before anything looks at
  this machine's own network; the magics turn that into a UsageError;
* logs work there: hybridnb's journal, the sources the backend cannot read listed;
* ``Lab.doctor(fix=True)`` applies a fixable finding's fix under the lab's lock, records it in
  the lab's journal, and ``logs`` shows it; check selection by id and group, unknown names;
* ``records()``/``headline()`` of the doctor, traffic and log results keep their shape;
* ``doctor --help`` says what ``--fix`` does and how leftovers of other state directories are
  treated; the interactive topology on dry-run draws states without rates and says why.
"""

from __future__ import annotations

import json

import pytest

from hybridnb.cli import main
from hybridnb.lab import Lab

LABFILE = """\
name: wf
network: {subnet: 10.0.7.0/24}
endpoints:
  web: {kind: container}
  v1: {kind: vm}
  h1: {kind: host}
"""


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def applied(tmp_path):
    path = tmp_path / "wf.yaml"
    path.write_text(LABFILE)
    state = tmp_path / "state"
    lab = Lab.load(path, backend="dry-run", state_dir=state)
    lab.apply()
    return lab, path, ["--dry-run", "--state-dir", str(state)]


def test_the_cli_refuses_to_watch_a_dry_run_lab(capsys, applied):
    lab, path, common = applied
    for argv in (["monitor", str(path), "--duration", "1"], ["capture", str(path), "web"],
                 ["doctor", str(path)], ["doctor"]):
        code, out, err = run(capsys, *argv, *common)
        assert code == 5, (argv, err)
        assert out == "" and "Traceback" not in err, argv
        assert "the dry-run backend cannot" in err and "this machine's own network" in err
        assert "hint: the dry-run backend sends no packets" in err
    code, _, err = run(capsys, "doctor", str(path), "--only", "nosuch", *common)
    assert code == 2 and "no doctor check named 'nosuch'" in err and "forward-drop" in err


def test_the_lab_refuses_too_and_never_reaches_a_service(applied, monkeypatch):
    from hybridnb.errors import Unsupported

    lab, _, _ = applied
    import hybridnb.services.ports as ports       # the monitor's link dumper comes from here

    monkeypatch.setattr(ports, "LinkDumper", lambda *a: pytest.fail("looked at the host"))
    for call in (lambda: lab.monitor(0.1, 0.2), lambda: lab.capture("web", duration=1),
                 lambda: lab.capturing("bridge"), lambda: lab.doctor(),
                 lambda: lab.view().netns):
        with pytest.raises(Unsupported) as err:
            call()
        assert err.value.capability == "NamespaceSource" and err.value.exit_code == 5


def test_logs_on_dry_run_show_the_journal_and_what_is_unavailable(capsys, applied):
    lab, path, common = applied
    code, out, _ = run(capsys, "logs", str(path), *common)
    assert code == 0
    assert "logs of lab wf: 7 lines from 1 sources (hybridnb)" in out
    assert "create container web" in out and "create vm v1" in out
    for source, what in (("dns", "query log"), ("container:web", "container output"),
                         ("vm:v1", "console files")):
        assert f"({source}: the dry-run backend has no {what})" in out
    code, out, _ = run(capsys, "logs", str(path), "web", "--json", *common)
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["text"].split(" (")[0] for r in rows] == ["create container web"]
    assert set(rows[0]) == {"time", "source", "endpoint", "tag", "text"}
    code, out, _ = run(capsys, "logs", str(path), "-n", "2", *common)
    assert len(out.splitlines()) == 1 + 2 + 3               # headline, 2 lines, 3 notes
    code, out, _ = run(capsys, "logs", str(path), "--since", "2099-01-01T00:00:00", *common)
    assert "0 lines" in out
    code, _, err = run(capsys, "logs", str(path), "nosuch", *common)
    assert code == 2 and "has no endpoint 'nosuch'" in err and "web" in err
    code, _, err = run(capsys, "logs", str(path), "--since", "yesterday-ish", *common)
    assert code == 1 and "cannot read the time" in err
    view = lab.logs("h1", since="1h")
    assert view.sources == ("hybridnb",) and len(view.lines) == 1
    assert view.records() == [ln.to_dict() for ln in view.lines]
    assert view.headline().startswith("logs of lab wf: 1 lines")


def test_doctor_help_says_what_fix_does_and_how_leftovers_are_treated(capsys):
    with pytest.raises(SystemExit):
        main(["doctor", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "[LAB]" in text and "0 all ok, 1 warnings, 2 failures" in text
    assert "--fix applies the targeted fixes it printed" in text and "and nothing else" in text
    assert "A lab applied with another --state-dir (or $HYBRIDNB_STATE_DIR) counts as a " \
           "leftover here, and --fix deletes it" in text
    assert "--skip leftovers" in text


class _Fake:
    """A doctor check group with one fixable failure (monkeypatched into GROUPS)."""

    def __init__(self):
        from hybridnb.services.doctor.base import FAIL, OK, Check

        fixed = {"done": False}

        class Broken(Check):
            id, title, group, why = "fake-broken", "a fake", "fake", "for the test"

            def run(self, ctx):
                if fixed["done"]:
                    return self.finding(OK, "mended")
                return self.finding(FAIL, "broken", fix_command="mend it", fixable=True)

            def fix(self, ctx):
                fixed["done"] = True

        class Fine(Check):
            id, title, group = "fake-fine", "another fake", "fake"

            def run(self, ctx):
                return self.finding(OK, "fine")
        self.CHECKS = [Broken(), Fine()]


@pytest.fixture
def watchable(tmp_path, monkeypatch):
    """A dry-run lab whose bridge driver says where its lab host is (so the doctor runs),
    with only the fake checks registered."""
    import sys
    import types

    from hybridnb.drivers.dryrun import DryRunDriver, dry_run_backend
    from hybridnb.services import doctor

    class HostedBridge(DryRunDriver):
        def netns_paths(self, lab):
            return {}
    backend = dry_run_backend(tmp_path / "engine.json")
    backend.drivers["bridge"] = HostedBridge("bridge", backend.extras["engine"])
    module = types.ModuleType("hnb_fake_checks")
    module.CHECKS = _Fake().CHECKS
    monkeypatch.setitem(sys.modules, "hnb_fake_checks", module)
    monkeypatch.setattr(doctor, "GROUPS", ["hnb_fake_checks"])
    lab = Lab("wfd", backend=backend, state_dir=tmp_path / "state").add_host("h1")
    lab.apply()
    return lab


def test_lab_doctor_fixes_under_the_lock_and_journals_the_fix(watchable):
    lab = watchable
    report = lab.doctor()
    assert report.exit_code == 2 and not report.fixes
    assert report.records() == [
        {"check": "fake-broken", "group": "fake", "status": "fail", "found": "broken",
         "fix_command": "mend it", "fixable": True},
        {"check": "fake-fine", "group": "fake", "status": "ok", "found": "fine",
         "fix_command": "", "fixable": False}]
    assert report.headline().startswith("doctor for lab wfd on dry-run: 1 failure(s)")
    assert [f.check for f in lab.doctor(checks=["fake-fine"]).findings] == ["fake-fine"]
    assert [f.check for f in lab.doctor(skip=["fake-broken"]).findings] == ["fake-fine"]
    assert lab.doctor(checks=["fake"], skip=["fake"]).findings == ()
    fixed = lab.doctor(fix=True)
    assert fixed.exit_code == 0 and [(o.check, o.ok) for o in fixed.fixes] == [
        ("fake-broken", True)]
    assert set(fixed.to_dict()["fixes"][0]) == {"check", "ok", "message", "at", "seconds"}
    text = fixed.to_text()
    assert "first run:" in text and "FAIL   fake-broken: broken" in text
    assert "fixed  fake-broken: mend it" in text and "second run:" in text
    html = fixed._repr_html_()
    assert "fixed <b>fake-broken</b>: <code>mend it</code>" in html
    journal = lab.store.read("wfd")["journal"]
    assert journal[-1]["op"] == "doctor --fix" and journal[-1]["name"] == "fake-broken"
    logs = lab.logs(kinds=["hybridnb"])
    assert logs.lines[-1].text.startswith("doctor --fix fake-broken (") and \
        logs.lines[-1].text.endswith(") ok")


def test_records_of_traffic_results_keep_their_shape():
    from hybridnb.services.monitor import PortRates, TrafficReport, TrafficSample

    ports = (PortRates("a", "host", "hva", 1000.0, 10.0, 5, 1, tx_bytes=1000, rx_bytes=10),
             PortRates("b", "host", "hvb", 10.0, 1000.0, 1, 5, tx_bytes=10, rx_bytes=1000))
    gw = PortRates("gateway", "gateway", "br0")
    sample = TrafficSample("lab", "br0", 100.0, 1.0, ports, gw)
    assert [r["endpoint"] for r in sample.records()] == ["gateway", "a", "b"]
    report = TrafficReport("lab", "br0", (sample,))
    rows = report.records()
    assert [r["endpoint"] for r in rows] == ["a", "b", "gateway"]
    assert set(rows[0]) == {"endpoint", "kind", "port", "tx_bytes", "rx_bytes",
                            "mean_bytes_s", "peak_bytes_s", "errors", "drops"}
    assert report.headline() == ("traffic of lab lab on br0: 1 samples over 1.0s; top "
                                 "talkers: a, b")
