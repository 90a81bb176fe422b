"""Watching a remote host through its agent (issue 17): the pure and local parts.

The links the agent reads travel as JSON and come back as the same ``Link`` objects; a view
whose bridge driver reads links *there* (``LinksThere``) is monitored and its ports resolved
without one socket of this machine; the doctor's remote findings; the sniffer's pcap and the
filter compiled here.  The real thing (two sandboxes, b by its Docker URL) is
``tests/integration/test_remotewatch_real.py``.
"""

from __future__ import annotations

import io
import json
from types import SimpleNamespace
from typing import Any

import pytest

from hybridnb.core.resource import Resource
from hybridnb.drivers.base import LinksThere
from hybridnb.drivers.linkstats import Counters, Link
from hybridnb.errors import HybridError
from hybridnb.remote import wire
from hybridnb.remote.agentbox import links_from
from hybridnb.services.labview import LabView

C2_NS = "/proc/4242/ns/net"


def test_the_agents_links_travel_as_json_and_come_back_as_links():
    from hybridnb.drivers.linkstats import dump_links
    from hybridnb.remote.agent import Agent

    answer = wire.answer(1, Agent().call("links", "dump", []))      # this namespace, read only
    back = links_from(wire.decode(json.loads(answer)["value"]))
    here = dump_links(None)
    assert {i: lk.name for i, lk in back.items()} == {i: lk.name for i, lk in here.items()}
    assert all(isinstance(lk.counters, Counters) for lk in back.values())
    lo = next(lk for lk in back.values() if lk.name == "lo")
    assert lo == Link(**{**vars(lo)})                 # every field a Link field


class _RemoteBridge:
    """A bridge driver reading links on another machine: counters grow per dump."""

    def __init__(self) -> None:
        self.dumps = 0

    def links_there(self, netns: str | None = None) -> dict[int, Link]:
        if netns == C2_NS:                           # c2's own namespace there: its eth0
            return {2: Link(2, "eth0", "02:00:00:00:00:02", 1450, 0, 7)}
        assert netns is None, netns
        self.dumps += 1
        n = self.dumps
        return {5: Link(5, "hybr0", "02:aa:00:00:00:01", 1450, flags=1, operstate="up",
                        kind="bridge"),
                7: Link(7, "vethc2", None, 1450, master=5, operstate="up", kind="veth",
                        counters=Counters(rx_bytes=1000 * n, tx_bytes=2000 * n,
                                          rx_packets=n, tx_packets=2 * n)),
                9: Link(9, "hx1", None, 1450, master=5, operstate="unknown", flags=1,
                        kind="vxlan")}


class _RemoteContainers:
    def netns_paths_there(self, lab: str) -> dict[str, str]:
        return {"c2": C2_NS}

    def version(self) -> dict[str, str]:
        return {"version": "24.0", "api": "1.43"}


def remote_view() -> LabView:
    bridge = Resource("bridge", "hybr0", {"bridge": "hybr0", "subnet": "10.0.1.0/24",
                                          "address": None, "mtu": 1450})
    vxlan = Resource("vxlan", "hx1", {"device": "hx1", "bridge": "hybr0", "vni": 42,
                                      "port": 4789, "local": "192.168.251.2",
                                      "remotes": ["192.168.251.1"], "mtu": 1450})
    c2 = Resource("container", "c2", {"endpoint": "c2", "address": "10.0.1.101"})
    drivers = {"bridge": _RemoteBridge(), "container": _RemoteContainers(),
               "vxlan": SimpleNamespace(flood_list=lambda device: ["192.168.251.1"])}
    backend = SimpleNamespace(name="remote", drivers=drivers,
                              target=SimpleNamespace(name="remote:b", netns=None,
                                                     docker_url="unix:///b.sock"))
    return LabView("rw", (bridge, vxlan, c2), backend, hosts={"c2": "b", "gateway": "a"},
                   host="b")


@pytest.fixture
def no_local_netlink(monkeypatch):
    """Nothing may open a netlink socket or enter a namespace of this machine."""
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a namespace of this machine was opened: {args}")

    monkeypatch.setattr("hybridnb.services.ports.LinkDumper", refuse)
    monkeypatch.setattr("hybridnb.services.ports.dump_links", refuse)


def test_a_remote_hosts_ports_and_counters_are_read_there(no_local_netlink):
    from hybridnb.errors import Unsupported
    from hybridnb.services.monitor import TrafficMonitor
    from hybridnb.services.ports import resolve_ports

    view = remote_view()
    assert isinstance(view.driver("bridge"), LinksThere)
    ports = resolve_ports(view)
    assert ports.netns is None and ports.bridge_index == 5 and not ports.missing
    assert (ports.ports["c2"].ifname, ports.ports["c2"].mac) == ("vethc2", "02:00:00:00:00:02")
    ticks = iter([0.0, 1.0, 2.0, 3.0, 4.0])
    mon = TrafficMonitor(view, clock=lambda: next(ticks))
    assert mon.sample() is None
    sample = mon.sample()
    assert sample is not None
    row = sample.get("c2")
    assert row is not None and row.port == "vethc2"
    # the endpoint sent what its port received: 1000 B per dump; got 2000 B
    assert (row.tx_bytes, row.rx_bytes) == (1000, 2000)
    assert sample.records()[-1]["host"] == "b"
    with pytest.raises(Unsupported, match="host b: its lab host is on another machine"):
        view.netns                               # nothing may take None for "here"


def test_a_spread_view_checks_only_its_local_parts():
    view = remote_view()
    local = LabView("rw", view.resources, SimpleNamespace(
        name="sandbox", drivers={"bridge": SimpleNamespace(netns_paths=lambda lab: {})},
        target=SimpleNamespace(netns="hnb-sbx-a")), host="a")
    whole = LabView("rw", view.resources, local.backend, hosts=view.hosts,
                    parts=(local, view))
    assert whole.lab_host("monitor the lab") == "hnb-sbx-a"


def test_the_doctor_on_a_remote_host_reads_there_and_names_what_it_did_not_check():
    from hybridnb.services.doctor import select_checks
    from hybridnb.services.doctor.remote import diagnose_there

    report = diagnose_there(remote_view(), select_checks(only=["engines", "network"]),
                            where="docker unix:///b.sock")
    got = {f.check: f for f in report.findings}
    assert got["bridge"].status == "ok" and "no address" in got["bridge"].found
    assert got["mtu"].status == "ok" and got["vxlan"].status == "ok", got
    assert got["docker"].status == "ok" and "unix:///b.sock" in got["docker"].found
    # the rest of the network group runs through the agent's host reads (this stand-in has
    # none: each says it could not check, never a silent skip)
    assert "'_RemoteBridge' object has no attribute 'read_there'" in got["route-overlap"].found
    assert "not-checked" not in got          # (what cannot run there: test_remotedoctor.py)
    assert "endpoint-state" not in {f.check for f in report.findings}      # skipped by asking


def test_remote_findings_say_what_is_wrong():
    from hybridnb.services.doctor.remote import vxlan_finding

    links = _RemoteBridge().links_there()
    spec = {"device": "hx1", "bridge": "hybr0", "mtu": 1450}
    cut = vxlan_finding("b", spec, links, [], ["192.168.251.1"])
    assert cut.status == "fail" and "floods to nobody, not 192.168.251.1" in cut.found
    gone = vxlan_finding("b", {**spec, "device": "hx2"}, links, None, [])
    assert gone.status == "fail" and "does not exist on host b" in gone.found
    assert vxlan_finding("b", None, links, None, []).status == "ok"
    # the bridge and MTU are the ordinary checks, judging the links read there
    from hybridnb.services.doctor import select_checks
    from hybridnb.services.doctor.remote import diagnose_there

    view = remote_view()
    view.driver("bridge").links_there = lambda netns=None: (           # type: ignore
        {2: Link(2, "eth0", "02:00:00:00:00:02", 1450, 0, 7)} if netns == C2_NS else
        {**links, 5: Link(5, "hybr0", None, 1450, flags=0, operstate="down"),
         7: Link(7, "vethc2", None, 1500, master=5, operstate="up", kind="veth")})
    got = {f.check: f for f in diagnose_there(view, select_checks(only=["bridge", "mtu"]))
           .findings}
    assert got["bridge"].status == "fail" and "it is down" in got["bridge"].found
    assert got["mtu"].status == "fail" and "port vethc2 (c2) has MTU 1500" in got["mtu"].found
    assert got["mtu"].fix_command == "on host b: ip link set dev vethc2 mtu 1450"


def test_the_sniffers_pcap_reads_back():
    import dpkt

    from hybridnb.remote.sniff import pcap_header, pcap_record

    frame = bytes(range(60))
    blob = pcap_header(65535) + pcap_record(100, 250000, frame, 60) + \
        pcap_record(101, 5, frame[:20], 60)
    got = list(dpkt.pcap.Reader(io.BytesIO(blob)))
    assert [ts for ts, _ in got] == [100.25, 101.000005]
    assert got[0][1] == frame and got[1][1] == frame[:20]


def test_a_filter_is_compiled_here_for_the_agent():
    from hybridnb.services.capture import compile_bpf

    program = compile_bpf("icmp")
    assert program[0] == [40, 0, 0, 12] and all(len(ins) == 4 for ins in program)
    assert program[-1][0] == 6                                    # ends with a return
    with pytest.raises(HybridError, match="cannot compile the filter"):
        compile_bpf("icmp and and")
