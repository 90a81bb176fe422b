"""Watching a host reached only through its Docker API (issue 17): monitor, capture, doctor.

Two sandboxes stand in for two machines, joined by a veth underlay (192.168.251.0/30).
Host ``a`` is ``sandbox: <test sandbox>wa``; host ``b`` is given **only by the Docker socket
URL of sandbox ``<test sandbox>wb``**, so b's bridge, ports and VXLAN device are read by
hybridnb's agent container there (:mod:`hybridnb.remote`).  One container on each host.
Checked:

* ``monitor`` (as the report's traffic section records it) gives a row per endpoint naming
  its host (c1 on a, c2 on b, the gateway on a), nothing unwatched, and the counters of both
  hosts' ports grow with the pings c1 sends c2 (and the replies);
* a whole-bridge capture holds the cross-host echo on **both** hosts' parts (b's captured
  by the agent there and streamed back), merged in time order; a capture on c2's port (on
  b) holds exactly the requested frames;
* ``doctor`` runs b's bridge, MTU and VXLAN checks and the rest of its checks (kernel,
  firewall, ARP sweep, leftovers) through the agent and its Docker and endpoint checks
  through b's Docker API (ok), names host b, and reports nothing wrong (exit 0);
* hybridnb never entered b's namespace itself (no namespace worker of this process was
  asked for it); destroy leaves both sandboxes' snapshots as they were.

Every packet goes to an address this test made, inside those namespaces.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import pytest

from hybridnb import multihost_apply
from hybridnb.drivers import nsutil
from hybridnb.lab import Lab
from tests.gating import require_real
from tests.helpers import hostsnap
from tests.helpers.twohosts import remote_pair, snapshots
from tests.integration.test_remote_real import namespaces_entered
from tests.realengines import ENGINE_TOOLS, SANDBOX_NAME

pytestmark = [pytest.mark.real]

UNDERLAY = "192.168.251.0/30"
ULINK = ("hnbrw0", "hnbrw1")
BOXES = {"a": f"{SANDBOX_NAME}wa", "b": f"{SANDBOX_NAME}wb"}


def ours(name: str) -> bool:
    return name.startswith("hnb-rwl")


def lab_dict(b_url: str) -> dict[str, Any]:
    return {"name": "rwl",
            "hosts": {"a": {"sandbox": BOXES["a"], "underlay": "192.168.251.1"},
                      "b": {"docker": b_url, "underlay": "192.168.251.2"}},
            "endpoints": {"c1": {"kind": "container"},
                          "c2": {"kind": "container", "host": "b"}}}


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> Iterator[dict[str, Any]]:
    require_real(tools=ENGINE_TOOLS)
    with remote_pair(BOXES, UNDERLAY, ULINK, ours,
                     tmp_path_factory.mktemp("remotewatch-state")) as two:
        yield two


def open_lab(two: dict[str, Any]) -> Lab:
    return Lab.from_dict(lab_dict(two["url"]), backend="sandbox", sandbox=BOXES["a"],
                         state_dir=two["state"])


def ping(lab: Lab, source: str, target: str, count: int, size: int = 1000,
         gap: float = 0.2) -> None:
    out = lab.exec(source, f"ping -c {count} -i {gap} -s {size} -W 2 {target}", timeout=30)
    assert out.exit_code == 0, out


def test_a_remote_host_is_monitored_captured_and_diagnosed(two) -> None:
    boxes = two["boxes"]
    b_ns = nsutil._ns_key(nsutil.netns_path(boxes["b"].netns))
    lab = open_lab(two)
    with namespaces_entered() as entered:
        try:
            t0 = time.monotonic()
            result = lab.apply()
            print(f"apply (agent image into b, agent started): {time.monotonic() - t0:.2f}s")
            assert result.ok, result
            c2 = str(lab.addresses()["c2"])
            ping(lab, "c1", c2, 1)                        # the fabric carries frames
            check_monitor(lab, c2)
            check_capture(lab, c2)
            check_doctor(lab, two)
        finally:
            done = open_lab(two).destroy()
            print(f"destroy: {done.seconds:.2f}s")
    assert b_ns not in entered, "hybridnb entered b's namespace by itself"
    after = snapshots(boxes, ours)
    for h in boxes:
        assert hostsnap.diff(two["before"][h], after[h]) == [], h


def check_monitor(lab: Lab, c2: str) -> None:
    """The report's traffic section is a ``monitor`` recording: one run checks both."""
    got: dict[str, Any] = {}

    def watch() -> None:
        got["report"] = lab.report(probe=False, monitor=3.0, sections=["traffic"])

    t0 = time.monotonic()
    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(0.7)                                  # the first reading is taken
    ping(lab, "c1", c2, 10, gap=0.15)
    watcher.join(30)
    report = got["report"]
    print(f"report with 3 s of monitor, 10 x 1000 B pings a -> b: {time.monotonic() - t0:.2f}s")
    traffic = report.data.section("traffic").data
    print(f"traffic: {traffic['headline']}; not watched: {traffic['not_watched']}")
    assert traffic["not_watched"] == [], traffic["not_watched"]
    rows = {r["endpoint"]: r for r in traffic["endpoints"]}
    assert {n: r.get("host") for n, r in rows.items()} == {
        "c1": "a", "c2": "b", "gateway": "a"}, rows
    for name in ("c1", "c2"):                        # 10 echo requests and replies, 1042 B
        print(f"  {name}@{rows[name]['host']}: tx {rows[name]['tx_bytes']} "
              f"rx {rows[name]['rx_bytes']} via {rows[name]['port']}")
        assert rows[name]["tx_bytes"] > 9000 and rows[name]["rx_bytes"] > 9000, rows[name]
    assert "Traffic" in report.to_text()
    # what one sample costs on b: one link dump by the agent, over b's Docker API
    bridge = multihost_apply.host_backend(lab, "b").drivers["bridge"]
    times = []
    for _ in range(9):
        t1 = time.perf_counter()
        links = bridge.links_there()                   # type: ignore[attr-defined]
        times.append(time.perf_counter() - t1)
    print(f"one link dump of b through its agent ({len(links)} links): median "
          f"{sorted(times)[4] * 1000:.1f} ms, min {min(times) * 1000:.1f} ms (9 runs)")


def check_capture(lab: Lab, c2: str) -> None:
    import dpkt

    c1 = str(lab.addresses()["c1"])
    t0 = time.monotonic()
    with lab.capturing("bridge", bpf="icmp") as cap:
        ping(lab, "c1", c2, 3, size=200, gap=0.1)
    result = cap.result
    assert result is not None
    print(f"whole-bridge capture over both hosts: {time.monotonic() - t0:.2f}s")
    print(result.headline())
    for line in result.to_text().splitlines()[-3:]:
        print(line)
    hosts = dict(result.hosts)
    assert set(hosts) == {"a", "b"}, hosts

    def echoes(path: str) -> list[tuple[float, str, str, int]]:
        out = []
        with open(path, "rb") as fh:
            for ts, buf in dpkt.pcap.Reader(fh):
                ip = dpkt.ethernet.Ethernet(buf).data
                if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.icmp.ICMP):
                    out.append((ts, dpkt.utils.inet_to_str(ip.src),
                                dpkt.utils.inet_to_str(ip.dst), ip.data.type))
        return out

    for h in ("a", "b"):                             # 3 requests c1 -> c2, 3 replies
        seen = echoes(hosts[h].path)
        assert sum(1 for _, s, d, t in seen if (s, d, t) == (c1, c2, 8)) == 3, (h, seen)
        assert sum(1 for _, s, d, t in seen if (s, d, t) == (c2, c1, 0)) == 3, (h, seen)
        assert hosts[h].captured == len(seen), (h, hosts[h].captured, len(seen))
    merged = echoes(result.path)
    assert len(merged) == result.captured == hosts["a"].captured + hosts["b"].captured
    assert [m[0] for m in merged] == sorted(m[0] for m in merged)
    # one request: on a's bridge before b's (same clock: both sandboxes are this machine)
    first_a = next(ts for ts, s, d, t in echoes(hosts["a"].path) if t == 8)
    first_b = next(ts for ts, s, d, t in echoes(hosts["b"].path) if t == 8)
    assert first_a <= first_b, (first_a, first_b)
    # c2's own port, on b: the agent captures there too; 4 frames then it ends by itself
    t0 = time.monotonic()
    with lab.capturing("c2", bpf="icmp", count=4) as one:
        ping(lab, "c1", c2, 2, size=100, gap=0.1)
        one.wait(10)
    assert one.result is not None
    print(f"capture on c2's port (host b): {time.monotonic() - t0:.2f}s: "
          f"{one.result.headline()}")
    assert one.result.captured == 4 and one.result.address == c2
    assert len(echoes(one.result.path)) == 4


def check_doctor(lab: Lab, two: dict[str, Any]) -> None:
    report = lab.doctor()
    print(report.headline())
    on_b = {f.check: f for f in report.findings if f.data.get("host") == "b"}
    for f in on_b.values():
        print(f"  {f.status:4} {f.title}: {f.found}")
    assert all(f.title.startswith("host b: ") for f in on_b.values())
    for check in ("docker", "bridge", "mtu", "vxlan", "endpoint-state"):
        assert on_b[check].status == "ok", on_b[check]
    assert "192.168.251.1" in on_b["vxlan"].found, on_b["vxlan"]
    # the rest runs there too, through the agent (test_remotedoctor_real.py: faults on b)
    for check in ("leftovers", "forward-drop", "duplicate-address"):
        assert on_b[check].status == "ok", on_b[check]
    assert "not-checked" not in on_b and "dns-server" not in on_b    # the DNS server is a's
    assert report.exit_code == 0, report.to_text()
    on_a = [f for f in report.findings if f.data.get("host") == "a"]
    assert on_a and all(f.status != "fail" for f in on_a), report.to_text()
    assert multihost_apply.is_remote(multihost_apply.host_backend(lab, "b"))
