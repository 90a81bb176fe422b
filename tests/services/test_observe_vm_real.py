"""Watching a lab with a container and a VM for real (issue 14): ports, capture, logs.

One module-scoped lab in the session sandbox: a container that says hello on its stdout, a
test VM (QEMU/TCG), a namespace host and the lab DNS.

* each endpoint's bridge port is found the way its kind allows: the host's veth by name, the
  container's as the peer of its ``eth0``, the VM's tap from the domain XML;
* captures on the VM's tap and the container's veth during one probe run hold each one's
  ICMP, TCP and DNS exchanges;
* ``hybridnb logs`` merges at least four sources — hybridnb's journal, the DNS query log, the
  container's output, the VM's console — in time order, each line where it belongs in time
  (the VM's ready line inside its create action, the container's hello inside its own);
  ``hybridnb logs --follow`` prints a new DNS query as it happens and ends on Ctrl-C;
* the topology widget stops and starts the container.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from hybridnb.cli import main
from hybridnb.lab import Lab
from hybridnb.services.capture import Capture
from hybridnb.services.labview import LabView
from hybridnb.services.ports import resolve_ports
from tests.realengines import SANDBOX_NAME

pytestmark = [pytest.mark.real, pytest.mark.vm]
HELLO = "c1 says hello"


@pytest.fixture(scope="module")
def hybrid(sandbox, tmp_path_factory):
    state = tmp_path_factory.mktemp("observe-vm-state")
    lab = Lab("owvm", backend="sandbox", sandbox=SANDBOX_NAME, state_dir=state,
              subnet="10.61.2.0/24", bridge="hnbow2")
    lab.add_container("c1", command=["sh", "-c", f"echo {HELLO}; exec sleep 3600"])
    lab.add_vm("v1", memory=128)
    lab.add_host("h1")
    try:
        assert lab.apply().ok
        yield lab, LabView.of(lab)
    finally:
        lab.destroy()


def test_ports_of_every_kind(hybrid):
    lab, view = hybrid
    pm = resolve_ports(view)
    assert not pm.missing and set(pm.ports) == {"c1", "v1", "h1"}
    assert pm.ports["h1"].how == "veth name" and pm.ports["h1"].ifname == \
        view.endpoint("h1").spec["veth"]
    assert pm.ports["c1"].how == "peer of eth0" and pm.ports["c1"].ifname.startswith("veth")
    assert pm.ports["v1"].how == "domain XML" and pm.ports["v1"].ifname.startswith("vnet")
    assert pm.ports["v1"].mac == view.endpoint("v1").spec["mac"]


def test_capture_on_a_vm_tap_and_a_container_veth_during_a_probe_run(hybrid):
    lab, view = hybrid
    with Capture(view, "v1") as cv, Capture(view, "c1") as cc:
        matrix = lab.test(("icmp", "tcp", "dns"), count=1, timeout=2.0)
    assert matrix.ok, matrix.to_text()
    for result, name in ((cv.result, "v1"), (cc.result, "c1")):
        addr = view.endpoint(name).spec["address"]
        table = result.packets().involving(addr)
        assert {"ICMP", "TCP", "DNS"} <= table.protocols(), (name, table.to_text())
        assert any(p.src == addr and p.info.startswith("query A") for p in table.of("DNS"))
        assert any(p.dst == addr and p.info.startswith("echo request") for p in table.of("ICMP"))
        assert result.dropped == 0


def cli(lab: Lab, *argv: str) -> list[str]:
    return ["logs", lab.name, *argv, "--backend", "sandbox", "--sandbox", SANDBOX_NAME,
            "--state-dir", str(lab.store.dir)]


def test_logs_merge_four_sources_in_time_order(hybrid, capsys):
    """``hybridnb logs LAB --json``: the journal, the DNS query log, the container's output and
    the VM's console, in time order, each line where it belongs in time."""
    lab, view = hybrid
    lab.test(("dns",), count=1, timeout=2.0)             # fresh DNS queries
    assert main(cli(lab, "--json")) == 0
    lines = [json.loads(row) for row in capsys.readouterr().out.splitlines()]
    print("\n".join(f"{r['time']:.3f} {r['tag']:<14} {r['text']}" for r in lines))
    assert {r["tag"] for r in lines} >= {"hybridnb", "dns", "container:c1", "vm:v1"}
    assert {r["source"] for r in lines} == {"hybridnb", "dns", "container", "vm"}
    times = [r["time"] for r in lines]
    assert times == sorted(times)
    journal = {r["text"].split(" (")[0]: r for r in lines if r["source"] == "hybridnb"}
    create_vm = journal["create vm v1"]
    vm_secs = float(create_vm["text"].split("(")[1].split("s)")[0])
    ready = next(r for r in lines if r["tag"] == "vm:v1" and "HYBRIDNB-READY" in r["text"])
    assert create_vm["time"] - 0.5 <= ready["time"] <= create_vm["time"] + vm_secs + 0.5, (
        create_vm, ready)
    create_c1 = journal["create container c1"]
    hello = next(r for r in lines if r["tag"] == "container:c1" and r["text"] == HELLO)
    assert create_c1["time"] - 0.5 <= hello["time"] <= create_c1["time"] + 5.0
    assert any("asked A" in r["text"] for r in lines if r["source"] == "dns")
    assert main(cli(lab, "c1")) == 0                     # one endpoint, as text
    text = capsys.readouterr().out
    assert "from 3 sources (hybridnb, dns, container:c1)" in text and HELLO in text
    logs = lab.logs()
    assert set(logs.sources) == {"hybridnb", "dns", "container:c1", "vm:v1"} and not logs.errors
    assert len(lab.logs(since=time.time() + 3600).lines) == 0
    assert logs.to_json().count("\n") == len(logs.lines) - 1 and "<table" in logs._repr_html_()


def test_follow_yields_new_lines_as_they_come(hybrid):
    """``hybridnb logs LAB --follow`` (its own process) prints a DNS query made after it
    started, then ends cleanly on Ctrl-C."""
    from hybridnb.services.doctor.dns import query_all

    lab, view = hybrid
    since = f"{time.time():.3f}"
    proc = subprocess.Popen([sys.executable, "-m", "hybridnb.cli",
                             *cli(lab, "--follow", "--since", since)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.extend(iter(proc.stdout.readline, "")))
    reader.start()
    try:
        time.sleep(1.5)                                  # it started and read the history
        query_all(view.netns, view.gateway, 53, [f"h1.{view.domain}"])
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and not any("h1.hybrid.local" in ln for ln in got):
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
        reader.join(5)
    assert proc.returncode == 0, err
    assert any("dns" in ln and "gateway asked A h1.hybrid.local" in ln for ln in got), got


def test_widget_stops_and_starts_the_container(hybrid):
    from hybridnb.notebook.topology_widget import TopologyWidget

    lab, view = hybrid
    tw = TopologyWidget(lab)
    try:
        tw.refresh()
        tw.picker.value = "c1"
        tw.buttons["stop"].click()
        assert {e.name: e.state for e in tw.status.endpoints}["c1"] == "stopped", tw.errors
        assert "stopped" in tw.details.value
        tw.buttons["start"].click()
        assert {e.name: e.state for e in tw.status.endpoints}["c1"] == "up", tw.errors
        assert tw.endpoint_details("c1")["port"].startswith("veth")
    finally:
        tw.close()
