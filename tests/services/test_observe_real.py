"""Watching a lab of namespace hosts for real (issue 14), through the public surface: the CLI,
``Lab``, the widgets.

One module-scoped lab in the session sandbox: three namespace hosts and the lab DNS.

* a paced UDP flow from ``a`` to ``b`` (a bounded socket loop inside the hosts' namespaces):
  ``hybridnb monitor --json`` names ``a`` and ``b`` as the top talkers and measures the bytes
  and the rate within 10 % of what was sent;
* ``hybridnb capture LAB a`` (its own process, ended by Ctrl-C) while ``hybridnb test`` runs:
  the pcap, read back with dpkt, holds ``a``'s ICMP echoes, TCP handshakes and DNS exchanges,
  and the printed summary says so; ``Lab.capture`` on the bridge with a BPF filter and a packet
  count stops by itself, and one with a stop event when told;
* the interactive topology widget driven without a browser (picker, details, rates on the
  edges, capture/logs/test buttons, a refused stop on a host) and the live monitor's display
  updated in place.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hybridnb.cli import main
from hybridnb.lab import Lab
from hybridnb.services.labview import LabView
from tests.realengines import SANDBOX_NAME

pytestmark = pytest.mark.real
PAYLOAD = 1000
WIRE = PAYLOAD + 8 + 20 + 14                  # UDP + IPv4 + Ethernet headers


@pytest.fixture(scope="module")
def watched(sandbox, tmp_path_factory):
    state = tmp_path_factory.mktemp("observe-state")
    lab = Lab("owmon", backend="sandbox", sandbox=SANDBOX_NAME, state_dir=state,
              subnet="10.61.1.0/24", bridge="hnbow1")
    for name in ("a", "b", "c"):
        lab.add_host(name)
    try:
        assert lab.apply().ok
        yield lab, LabView.of(lab)
    finally:
        lab.destroy()


def _udp_flow(view: LabView, src: str, dst: str, seconds: float, pps: int) -> dict:
    """Send ``pps`` datagrams of PAYLOAD bytes per second from ``src`` to ``dst`` (a host
    namespace each) for ``seconds``; a bound socket at ``dst`` takes them (no ICMP back)."""
    from hybridnb.drivers.nsutil import socket_in_netns

    s, d = view.endpoint(src).spec, view.endpoint(dst).spec
    sink = socket_in_netns(s["netns"].replace(src, dst), socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((d["address"], 9999))
    out = socket_in_netns(s["netns"], socket.AF_INET, socket.SOCK_DGRAM)
    data = b"x" * PAYLOAD
    sent, burst = 0, max(1, pps // 100)
    first = time.time()
    start = time.monotonic()
    try:
        while time.monotonic() - start < seconds:
            for _ in range(burst):
                out.sendto(data, (d["address"], 9999))
                sent += 1
            time.sleep(max(0.0, start + sent / pps - time.monotonic()))
        last = time.time()
    finally:
        out.close()
        sink.close()
    return {"sent": sent, "first": first, "last": last}


def cli(*argv: str, lab: Lab) -> list[str]:
    """``hybridnb ARGV... --backend sandbox --sandbox S --state-dir D`` as the shell runs it."""
    return [sys.executable, "-m", "hybridnb.cli", *argv, "--backend", "sandbox", "--sandbox",
            SANDBOX_NAME, "--state-dir", str(lab.store.dir)]


def test_monitor_names_the_talkers_and_measures_the_flow(watched, capsys):
    """``hybridnb monitor --json`` during a paced flow a -> b: a and b on top, bytes and the
    per-sample rate within 10 % of what was sent."""
    lab, view = watched
    flow: dict = {}
    sender = threading.Timer(0.6, lambda: flow.update(_udp_flow(view, "a", "b", 3.0, 1000)))
    sender.start()
    code = main(["monitor", "owmon", "--interval", "0.5", "--duration", "4.5", "--json",
                 "--backend", "sandbox", "--sandbox", SANDBOX_NAME,
                 "--state-dir", str(lab.store.dir)])
    sender.join()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    samples, summary = lines[:-1], lines[-1]
    assert len(samples) == 9 and "summary" in summary and "samples" not in summary
    assert {p["endpoint"] for p in samples[0]["ports"]} == {"a", "b", "c"}
    assert not samples[0]["missing"]
    wire = flow["sent"] * WIRE
    rows = {r["endpoint"]: r for r in summary["summary"]}
    assert summary["top"][:2] in (["a", "b"], ["b", "a"]), summary["top"]
    assert abs(rows["a"]["tx_bytes"] - wire) <= 0.1 * wire, (rows["a"], wire)
    assert abs(rows["b"]["rx_bytes"] - wire) <= 0.1 * wire, (rows["b"], wire)
    rate = wire / (flow["last"] - flow["first"])
    inside = [s for s in samples if s["time"] - s["interval"] >= flow["first"] + 0.1
              and s["time"] <= flow["last"] - 0.1]
    assert inside, "no sample fell inside the flow"
    for s in inside:
        a = next(p for p in s["ports"] if p["endpoint"] == "a")
        assert abs(a["tx_bytes_s"] - rate) <= 0.1 * rate, (a, rate)
        assert s["top"][0] in ("a", "b")


def test_capture_during_hybridnb_test_holds_the_endpoints_exchanges(watched, tmp_path,
                                                                     capsys):
    """``hybridnb capture LAB a -w FILE`` (its own process) while ``hybridnb test`` runs,
    ended with Ctrl-C: the pcap, read back with dpkt, holds a's ICMP echoes, TCP handshakes
    and DNS exchanges, and the printed summary decodes them."""
    import dpkt

    lab, view = watched
    a = view.endpoint("a").spec["address"]
    pcap = tmp_path / "a.pcap"
    proc = subprocess.Popen(cli("capture", "owmon", "a", "-w", str(pcap), lab=lab),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = proc.stderr.readline()                  # printed once tcpdump listens
        assert ready.startswith(f"capturing on {view.endpoint('a').spec['veth']} into "
                                f"{pcap}; Ctrl-C stops"), ready + proc.stderr.read()
        code = main(["test", "owmon", "--checks", "icmp,tcp,dns", "--count", "1",
                     "--backend", "sandbox", "--sandbox", SANDBOX_NAME,
                     "--state-dir", str(lab.store.dir)])
        assert code == 0, capsys.readouterr().out
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    # read back with the packet library: echo both ways, handshakes both ways, DNS
    seen = set()
    with open(pcap, "rb") as fh:
        frames = list(dpkt.pcap.Reader(fh))
    assert frames and f"{len(frames)} packets in" in out
    for _, frame in frames:
        ip = dpkt.ethernet.Ethernet(frame).data
        if not isinstance(ip, dpkt.ip.IP):
            continue
        src, dst, l4 = socket.inet_ntoa(ip.src), socket.inet_ntoa(ip.dst), ip.data
        if isinstance(l4, dpkt.icmp.ICMP) and l4.type in (0, 8):
            seen.add(("icmp", l4.type, src == a))
        elif isinstance(l4, dpkt.tcp.TCP) and l4.flags & dpkt.tcp.TH_SYN:
            seen.add(("syn", bool(l4.flags & dpkt.tcp.TH_ACK), src == a))
        elif isinstance(l4, dpkt.udp.UDP) and 53 in (l4.sport, l4.dport):
            msg = dpkt.dns.DNS(bytes(l4.data))
            seen.add(("dns", msg.qr, src == a))
            assert a in (src, dst)
    assert {("icmp", 8, True), ("icmp", 0, False), ("icmp", 8, False), ("icmp", 0, True),
            ("syn", False, True), ("syn", True, False), ("syn", False, False),
            ("syn", True, True), ("dns", 0, True), ("dns", 1, False)} <= seen, seen
    # the decoded summary (dpkt): the same exchanges in readable lines
    assert "echo request" in out and "[SYN, ACK]" in out and "query A " in out
    assert f"pcap: {pcap}" in out
    from hybridnb.services.packets import decode_pcap

    table = decode_pcap(str(pcap)).involving(a)
    assert {"ICMP", "TCP", "DNS"} <= table.protocols()
    assert any(p.info.startswith("answer A ") for p in table.of("DNS"))


def test_bridge_capture_with_a_filter_stops_after_count(watched):
    """``Lab.capture`` on the bridge with a BPF filter ends by itself after ``count``; the pcap
    goes beside the lab state by default; a bad filter is tcpdump's own words."""
    lab, view = watched
    runner = threading.Timer(0.3, lambda: lab.test(("icmp",), count=3))
    runner.start()
    result = lab.capture("bridge", bpf="icmp", count=4, duration=20)
    runner.join()
    assert result.interface == "hnbow1" and result.captured == 4 and result.dropped == 0
    assert Path(result.path).parent == view.files("captures")
    assert [p.protocol for p in result.packets()] == ["ICMP"] * 4
    assert len(result.records()) == 4 and result.records()[0]["protocol"] == "ICMP"
    with pytest.raises(Exception, match="did not start"):
        lab.capture("a", bpf="not a filter ((", duration=1)
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    stopped = lab.capture("a", stop=stop, duration=None)   # ends when told
    assert time.monotonic() - started < 3 and Path(stopped.path).exists()


def test_topology_widget_driven_without_a_browser(watched):
    from hybridnb.notebook.topology_widget import TopologyWidget
    from hybridnb.render.topology import topology_graph

    lab, view = watched
    tw = TopologyWidget(lab, capture_seconds=1.5)
    try:
        tw.refresh()
        assert list(tw.picker.options) == ["a", "b", "c"] and tw.picker.value == "a"
        tw.picker.value = "b"
        b = view.endpoint("b").spec
        assert b["mac"] in tw.details.value and b["address"] in tw.details.value
        assert b["veth"] in tw.details.value
        flow = threading.Thread(target=_udp_flow, args=(view, "a", "b", 1.2, 500))
        flow.start()
        time.sleep(0.5)
        tw.refresh()                                     # one sample across the flow
        graph = topology_graph(tw.status, rates=tw.sample.rates())
        rates = {d.get("rate", 0) for _, _, d in graph.edges(data=True)}
        assert max(rates) > 0 and tw.sample.get("b").rx_bytes_s > 0
        tw.buttons["capture"].click()                    # still flowing: b's port sees it
        flow.join()
        assert tw.last.endpoint == "b" and tw.last.captured > 0, tw.errors
        assert "UDP" in tw.last.packets().protocols()
        tw.buttons["logs"].click()
        assert tw.last.lab == "owmon" and "hybridnb" in tw.last.sources
        tw.buttons["test"].click()
        assert set(tw.last.sources) == {"b"} and tw.last.ok
        assert "<table" in tw.result.value
        tw.buttons["stop"].click()                       # a host cannot be stopped
        assert "cannot be stopped" in tw.result.value and tw.errors
        assert bytes(tw.image.value).startswith(b"\x89PNG")
    finally:
        tw.close()


def test_live_monitor_updates_one_display_in_place(watched):
    from hybridnb.notebook.monitor import LiveMonitor

    lab, view = watched
    shown = []

    class Handle:
        updates = 0

        def update(self, obj):
            Handle.updates += 1
            shown.append(obj)

    def display(obj, display_id=None):
        return Handle() if display_id else None

    live = LiveMonitor(lab, interval=0.2, duration=1.0, display=display)
    live.show()
    report = live.wait(10)
    assert len(report.samples) == 5 and Handle.updates == 5 and live.updates == 5
    assert "<img" in shown[-1].data and not live.running
    assert live.button.disabled
    live2 = LiveMonitor(view, interval=0.2, duration=None, display=display).show()
    time.sleep(0.5)
    assert len(live2.stop().samples) >= 1 and not live2.running
