"""Watching a lab, without root: the pieces of monitor, capture, doctor and logs that are pure.

* the netlink link parser reads a hand-built RTM_NEWLINK message;
* rates come out in the endpoint's direction (a port's rx is what the endpoint sent), a
  counter reset is not a negative rate, top talkers are ordered, samples render and export;
* dpkt-built frames (ARP, ICMP echo, TCP SYN, HTTP, DNS query and answer) decode to the lines a
  person reads;
* the FORWARD walk gives Docker's chain with and without the lab's accept rule the right
  verdict;
* the doctor runs checks, turns a crashing check into a failure, applies only fixable fixes and
  checks again; exit codes 0/1/2;
* logs merge sources in time order; console lines get wall-clock times from guest uptimes;
  apply journals each action (dry-run) and the journal source reads it.
"""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from hybridnb.drivers.linkstats import (IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER, IFLA_MTU,
                                        IFLA_STATS64, Counters, Link, _parse)
from hybridnb.services.monitor import PortRates, TrafficReport, TrafficSample, _rates


# -- linkstats ---------------------------------------------------------------------------

def _rta(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * ((4 - len(raw) % 4) % 4)


def test_link_parser_reads_name_mac_mtu_master_and_counters():
    stats = struct.pack("=8Q", 10, 20, 1000, 2000, 1, 2, 3, 4) + b"\0" * 8 * 15
    attrs = (_rta(IFLA_IFNAME, b"hv0123456789\0") + _rta(IFLA_MTU, struct.pack("=I", 1400))
             + _rta(IFLA_MASTER, struct.pack("=I", 7))
             + _rta(IFLA_ADDRESS, bytes.fromhex("525400aabbcc"))
             + _rta(99, b"ignored!") + _rta(IFLA_STATS64, stats))
    link = _parse(memoryview(attrs), 0, len(attrs), 42)
    assert link == Link(42, "hv0123456789", "52:54:00:aa:bb:cc", 1400, 7, 0, "unknown", "",
                        Counters(10, 20, 1000, 2000, 1, 2, 3, 4))


# -- monitor maths -------------------------------------------------------------------------

def _link(rx_b: int, tx_b: int, rx_p: int = 0, tx_p: int = 0, name: str = "p") -> Link:
    return Link(3, name, counters=Counters(rx_p, tx_p, rx_b, tx_b, 0, 0, 0, 0))


def test_port_rates_are_from_the_endpoint_point_of_view():
    r = _rates("a", "host", _link(0, 0), _link(5000, 1000, 5, 1), 0.5)
    assert (r.tx_bytes_s, r.rx_bytes_s, r.tx_packets_s, r.rx_packets_s) == (10000, 2000, 10, 2)
    gw = _rates("gateway", "gateway", _link(0, 0), _link(5000, 1000), 1.0, sent_is_rx=False)
    assert (gw.tx_bytes_s, gw.rx_bytes_s) == (1000, 5000)


def test_a_counter_reset_is_not_a_negative_rate():
    r = _rates("a", "host", _link(10_000, 10_000), _link(300, 200), 1.0)
    assert r.tx_bytes_s == 300 and r.rx_bytes_s == 200


def _sample(t: float, **rates: tuple[float, float]) -> TrafficSample:
    ports = tuple(PortRates(n, "host", f"hv{n}", tx, rx, tx_bytes=int(tx), rx_bytes=int(rx))
                  for n, (tx, rx) in sorted(rates.items()))
    return TrafficSample("lab", "br0", t, 1.0, ports,
                         PortRates("gateway", "gateway", "br0", 10, 10, tx_bytes=10,
                                   rx_bytes=10), (("vm1", "not running"),))


def test_top_talkers_sample_text_and_data():
    s = _sample(1000.0, a=(1e6, 10), b=(10, 1e6), c=(0, 0), d=(500, 500))
    assert [p.endpoint for p in s.top(3)] == ["a", "b", "d"]
    assert [p.endpoint for p in s.top()] == ["a", "b", "d"]        # idle c left out
    text = s.to_text()
    assert "top: a 8.0 Mbit/s, b 8.0 Mbit/s, d 8.0 kbit/s" in text
    assert "vm1: not watched (not running)" in text
    data = s.to_dict()
    assert data["top"] == ["a", "b", "d"] and data["missing"] == {"vm1": "not running"}
    assert s.rates()["gateway"] == 20 and s.rates()["a"] == 1e6 + 10
    assert "<table" in s._repr_html_()


def test_report_summary_plot_and_top_screen():
    from hybridnb.render.traffic import CLEAR, top_screen

    r = TrafficReport("lab", "br0", (_sample(1.0, a=(100, 0), b=(0, 100)),
                                     _sample(2.0, a=(300, 0), b=(0, 300))))
    rows = {row.endpoint: row for row in r.summary()}
    assert rows["a"].tx_bytes == 400 and rows["a"].peak_bytes_s == 300
    assert rows["a"].mean_bytes_s == 200
    assert r.top() == ["a", "b"]
    assert r.series("b") == [(1.0, 100), (2.0, 300)]
    assert r.figure() is not None and "<img" in r._repr_html_()
    assert top_screen(r.samples[-1], tty=True).startswith(CLEAR)
    plain = top_screen(r.samples[-1], tty=False)
    assert not plain.startswith("\x1b") and plain.endswith("\n\n")


# -- packets -------------------------------------------------------------------------------

def _eth(data, src="52:54:00:00:00:01", dst="52:54:00:00:00:02", etype=0x0800):
    import dpkt

    return bytes(dpkt.ethernet.Ethernet(src=bytes.fromhex(src.replace(":", "")),
                                        dst=bytes.fromhex(dst.replace(":", "")), type=etype,
                                        data=data))


def _ip(payload, proto, src="10.0.1.10", dst="10.0.1.20"):
    import dpkt

    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=proto,
                    data=payload)
    ip.len = len(bytes(ip))
    return ip


def test_frames_decode_to_readable_lines():
    import dpkt

    from hybridnb.services.packets import decode_frames

    arp = dpkt.arp.ARP(op=dpkt.arp.ARP_OP_REQUEST, sha=b"\x52\x54\0\0\0\1",
                       spa=socket.inet_aton("10.0.1.1"), tha=b"\0" * 6,
                       tpa=socket.inet_aton("10.0.1.10"))
    echo = dpkt.icmp.ICMP(type=8, data=dpkt.icmp.ICMP.Echo(id=7, seq=1, data=b"x"))
    syn = dpkt.tcp.TCP(sport=40000, dport=80, flags=dpkt.tcp.TH_SYN)
    get = dpkt.tcp.TCP(sport=40000, dport=80, flags=dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH,
                       data=b"GET /index.html HTTP/1.1\r\nHost: web\r\n\r\n")
    q = dpkt.dns.DNS(id=1, qd=[dpkt.dns.DNS.Q(name="web.hybrid.local", type=1)])
    a = dpkt.dns.DNS(id=1, qr=dpkt.dns.DNS_R, qd=q.qd,
                     an=[dpkt.dns.DNS.RR(name="web.hybrid.local", type=1,
                                         rdata=socket.inet_aton("10.0.1.100"))])
    frames = [(1.0, _eth(arp, dst="ff:ff:ff:ff:ff:ff", etype=0x0806)),
              (1.1, _eth(_ip(echo, 1))),
              (1.2, _eth(_ip(syn, 6))),
              (1.3, _eth(_ip(get, 6))),
              (1.4, _eth(_ip(dpkt.udp.UDP(sport=5353, dport=53, data=bytes(q)), 17,
                             dst="10.0.1.1"))),
              (1.5, _eth(_ip(dpkt.udp.UDP(sport=53, dport=5353, data=bytes(a)), 17,
                             src="10.0.1.1"))),
              (1.6, b"\x01\x02")]
    t = decode_frames(frames, title="t")
    infos = [(p.protocol, p.info) for p in t.packets]
    assert infos[:6] == [("ARP", "who-has 10.0.1.10 tell 10.0.1.1"),
                         ("ICMP", "echo request id=7 seq=1"),
                         ("TCP", "40000 → 80 [SYN]"),
                         ("HTTP", "GET /index.html HTTP/1.1"),
                         ("DNS", "query A web.hybrid.local"),
                         ("DNS", "answer A web.hybrid.local -> 10.0.1.100")]
    assert t.packets[6].protocol == "malformed"
    assert t.protocols() >= {"ARP", "ICMP", "TCP", "HTTP", "DNS"}
    assert len(t.involving("10.0.1.1")) == 3
    assert "echo request" in t.to_text() and "<img" in t._repr_html_()
    assert t.figure() is not None


def test_pcaps_of_several_hosts_merge_in_time_order(tmp_path):
    """A whole-bridge capture over hosts merges each host's pcap into one, by time (equal
    times keep the hosts' order); a pcap cut before its header adds nothing.  The result
    names every host's own capture."""
    import dpkt

    from hybridnb.services.capture import CaptureResult, merge_pcaps

    echo = dpkt.icmp.ICMP(type=8, data=dpkt.icmp.ICMP.Echo(id=7, seq=1, data=b"x"))
    pcaps = {"a": [(1.0, "10.0.1.10"), (1.2, "10.0.1.12"), (1.4, "10.0.1.14")],
             "b": [(1.1, "10.0.1.11"), (1.2, "10.0.1.13"), (1.5, "10.0.1.15")]}
    paths = []
    for host, frames in pcaps.items():
        path = tmp_path / f"x-{host}.pcap"
        with path.open("wb") as fh:
            w = dpkt.pcap.Writer(fh, linktype=dpkt.pcap.DLT_EN10MB)
            for ts, src in frames:
                w.writepkt(_eth(_ip(echo, 1, src=src)), ts=ts)
        paths.append(str(path))
    (tmp_path / "x-c.pcap").write_bytes(b"\xd4\xc3")
    merged = tmp_path / "x.pcap"
    assert merge_pcaps(paths + [str(tmp_path / "x-c.pcap")], merged) == 6
    parts = tuple((h, CaptureResult("lab", "bridge", "hybr0", p, captured=3))
                  for h, p in zip(pcaps, paths))
    result = CaptureResult("lab", "bridge", "a:hybr0, b:hybr0", str(merged), captured=6,
                           hosts=parts)
    t = result.packets()
    assert [p.src for p in t.packets] == ["10.0.1.10", "10.0.1.11", "10.0.1.12", "10.0.1.13",
                                          "10.0.1.14", "10.0.1.15"]
    assert [round(p.time, 3) for p in t.packets] == [1.0, 1.1, 1.2, 1.2, 1.4, 1.5]
    assert "6 packets (a 3, b 3)" in result.headline()
    assert result.host("b").path == paths[1]
    assert f"host b: 3 packets on hybr0, pcap: {paths[1]}" in result.to_text()
    assert [h["host"] for h in result.to_dict()["hosts"]] == ["a", "b"]
    assert "host a: 3 packets" in result._repr_html_()


# -- doctor --------------------------------------------------------------------------------

def test_forward_walk_follows_docker_chains():
    from hybridnb.services.doctor.kernel import forward_verdict

    policies = {"FORWARD": "DROP", "DOCKER-USER": "-", "DOCKER": "-", "ISO": "-"}
    rules = {
        "FORWARD": [["-j", "DOCKER-USER"], ["-j", "ISO"],
                    ["-o", "br0", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j",
                     "ACCEPT"],
                    ["-i", "br0", "!", "-o", "br0", "-j", "ACCEPT"]],
        "ISO": [["-i", "br0", "!", "-o", "br0", "-j", "DROP"], ["-j", "RETURN"]],
        "DOCKER-USER": [["-j", "RETURN"]],
        "DOCKER": [],
    }
    assert forward_verdict(policies, rules, "br0") == ("drop", "FORWARD policy DROP")
    rules["DOCKER-USER"].insert(0, ["-i", "br0", "-o", "br0", "-m", "comment", "--comment",
                                    "hybridnb:lab 123", "-j", "ACCEPT"])
    verdict, by = forward_verdict(policies, rules, "br0")
    assert verdict == "accept" and by.startswith("-A DOCKER-USER -i br0 -o br0")
    assert forward_verdict(policies, rules, "other")[0] == "drop"
    assert forward_verdict({"FORWARD": "ACCEPT"}, {"FORWARD": []}, "br0")[0] == "accept"


class _Fake:
    """A check whose state lives in a dict: failing until fixed (if fixable)."""

    def __init__(self, cid, status, fixable=False, crash=False):
        from hybridnb.services.doctor.base import Check

        class C(Check):
            id, title, group, why, needs_lab = cid, f"check {cid}", "fake", "because", False

            def run(s, ctx):
                if crash:
                    raise RuntimeError("boom")
                st = ctx.state.get(cid, status)
                return s.finding(st, f"{cid} is {st}", fix_command=f"fix {cid}",
                                 fixable=fixable)

            def fix(s, ctx):
                ctx.state[cid] = "ok"
        self.check = C()


def _ctx():
    from hybridnb.services.doctor import DoctorContext
    from hybridnb.target import Target

    return DoctorContext("lab", Target("t"), state={})


def test_doctor_exit_codes_fixes_and_rendering():
    from hybridnb.services.doctor import diagnose

    checks = [_Fake("a", "ok").check, _Fake("b", "warn").check,
              _Fake("c", "fail", fixable=True).check, _Fake("d", "ok", crash=True).check]
    report = diagnose(_ctx(), checks)
    assert report.exit_code == 2 and report.counts() == {"ok": 1, "warn": 1, "fail": 2}
    assert report.get("d").found.startswith("the check crashed: RuntimeError('boom')")
    assert [f.check for f in report.fixable()] == ["c"]
    text = report.to_text()
    assert text.splitlines()[1].startswith("FAIL") and "fix:   fix c   (doctor --fix" in text
    assert "fix:   fix b" in text and "fix:   fix b   (doctor" not in text
    assert report.to_dict()["exit_code"] == 2 and "<table" in report._repr_html_()

    ctx = _ctx()
    fixed = diagnose(ctx, checks[:3], fix=True)
    assert [o.check for o in fixed.fixes] == ["c"] and fixed.fixes[0].ok
    assert fixed.get("c").ok and fixed.exit_code == 1          # b is a warning, not fixable
    assert [f.check for f in fixed.before if not f.ok] == ["b", "c"]
    assert diagnose(_ctx(), checks[:1]).exit_code == 0


def test_arp_sweep_refuses_addresses_outside_the_lab():
    from hybridnb.services.doctor.arp import arp_sweep

    with pytest.raises(ValueError, match="outside 10.0.1.0/24"):
        arp_sweep(None, "br0", "10.0.1.1", "02:00:00:00:00:01", "10.0.1.0/24",
                  ["10.0.1.5", "192.168.1.1"])


# -- logs ----------------------------------------------------------------------------------

def test_log_helpers():
    from hybridnb.services.logs import _rfc3339, _uptime, parse_since

    assert _rfc3339("2026-11-30T12:00:01.123456789Z") == pytest.approx(1796040001.123456789)
    assert _uptime("[    1.500000] Linux version 6.1") == 1.5
    assert _uptime("hybridnb-init: eth0 up at 4.28") == 4.28
    assert _uptime("HYBRIDNB-READY name=v1 ip=10.0.1.200 uptime=4.70") == 4.70
    assert _uptime("no stamp here") is None
    assert parse_since("5m", now=1000.0) == 700.0
    assert parse_since("1700000000") == 1700000000.0
    with pytest.raises(Exception, match="cannot read the time"):
        parse_since("yesterday-ish")


class _VmDriver:
    def __init__(self, path):
        self.path = path

    def console_path(self, lab, endpoint):
        return self.path

    def guest_exec(self, lab, endpoint, argv, timeout=10.0):
        from hybridnb.errors import EngineError

        raise EngineError("no agent")


def test_console_lines_are_timed_from_the_guest_uptime(tmp_path):
    import os

    from hybridnb.services.logs import ConsoleSource

    console = tmp_path / "console.log"
    console.write_text("hybridnb-init: started at 3.00\nplain line\n"
                       "HYBRIDNB-READY name=v uptime=5.00\n")
    os.utime(console, (2000.0, 2000.0))               # last write = uptime 5.00
    view = _view({"vm": _VmDriver(console)})
    src = ConsoleSource(view, "v")
    lines = src.read()
    assert [(ln.time, ln.text[:14]) for ln in lines] == [
        (1998.0, "hybridnb-init:"), (1998.0, "plain line"), (2000.0, "HYBRIDNB-READY")]
    with console.open("a") as fh:
        fh.write("later line\npartial")
    new = src.poll()
    assert [ln.text for ln in new] == ["later line"] and new[0].time > 2000.0


def _view(drivers, resources=(), state=None, state_dir=None):
    from hybridnb.core.resource import Resource
    from hybridnb.drivers.base import Backend
    from hybridnb.services.labview import LabView
    from hybridnb.target import Target

    res = (Resource("bridge", "br0", {"bridge": "br0", "address": "10.0.1.1/24",
                                      "subnet": "10.0.1.0/24", "mtu": 1500}),
           Resource("vm", "v", {"endpoint": "v", "address": "10.0.1.200"})) + tuple(resources)
    return LabView("lab", res, Backend("fake", Target("t"), drivers), state or {}, state_dir)


def test_apply_journals_actions_and_logs_merge_them_in_time_order(tmp_path):
    from hybridnb.lab import Lab
    from hybridnb.services.labview import LabView
    from hybridnb.services.logs import LogLine, collect_logs, follow_logs

    lab = Lab("jr", backend="dry-run", state_dir=tmp_path)
    lab.add_container("web").add_host("h1")
    lab.apply()
    journal = lab.store.read("jr")["journal"]
    assert {(e["op"], e["kind"], e["name"]) for e in journal} >= {
        ("create", "container", "web"), ("create", "host", "h1"), ("create", "bridge", "hybr0")}
    assert all(e["ok"] and e["seconds"] >= 0 for e in journal)
    assert [e["at"] for e in journal] == sorted(e["at"] for e in journal)

    view = LabView.of(lab)
    logs = collect_logs(view, kinds=["hybridnb"])
    assert logs.sources == ("hybridnb",) and len(logs.lines) == len(journal)
    assert "create container web" in logs.to_text() and logs.to_json().count("\n") == \
        len(journal) - 1
    only = collect_logs(view, ["web"], kinds=["hybridnb"])
    assert [ln.text.split(" (")[0] for ln in only.lines] == ["create container web"]

    class Src:
        name = "fake"

        def __init__(self, times):
            self.times = list(times)

        def read(self, since=None):
            return [LogLine(t, "dns", "", f"at {t}") for t in self.times]

        def poll(self):
            return [LogLine(99.0, "dns", "", "new")]

    import hybridnb.services.logs as logs_mod

    srcs = [Src([3.0, 1.0]), Src([2.0])]
    orig = logs_mod.sources
    logs_mod.sources = lambda *a, **k: srcs
    try:
        merged = collect_logs(view)
        assert [ln.time for ln in merged.lines] == [1.0, 2.0, 3.0]
        stop = threading.Event()
        got = []
        for line in follow_logs(view, poll=0.01, stop=stop):
            got.append(line.time)
            if len(got) == 5:
                stop.set()
        assert got == [1.0, 2.0, 3.0, 99.0, 99.0]           # history, then both sources' news
    finally:
        logs_mod.sources = orig
