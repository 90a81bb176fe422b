"""Benchmark: cross-host vs same-host RTT and throughput over the VXLAN fabric (issue 17).

Two private namespaces stand in for two machines (each a lab host with its own lab bridge),
joined by a veth underlay (192.168.250.0/30, MTU 1500) and the lab's VXLAN device on each
(:class:`hybridnb.drivers.vxlan.VxlanDriver`, VNI 4242, lab MTU 1450).  Three namespace hosts
(:class:`hybridnb.drivers.netns.NetnsHostDriver`): ``h1`` and ``h3`` on host A, ``h2`` on
host B.  Measured:

* RTT: ``--pings`` ICMP echoes h1 → h3 (same host: one bridge) and h1 → h2 (cross host:
  bridge, VXLAN encapsulation, underlay, decapsulation, bridge), median and p90;
* throughput: iperf3 (TCP, ``--seconds``) h1 → h3 and h1 → h2.

Prints both and the ratios cross/same, and removes everything.  Every packet goes to an
address this benchmark made, inside namespaces it made.

    sudo python3 benchmarks/vxlan.py [--pings 200] [--seconds 3]

Needs root, ``ip`` and ``iperf3``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hybridnb.core import naming  # noqa: E402
from hybridnb.core.multihost import vxlan_resource  # noqa: E402
from hybridnb.core.resource import Resource  # noqa: E402
from hybridnb.core.spec import parse_lab  # noqa: E402
from hybridnb.drivers import nsutil  # noqa: E402
from hybridnb.drivers.bridge import BridgeDriver  # noqa: E402
from hybridnb.drivers.netns import NetnsHostDriver  # noqa: E402
from hybridnb.drivers.vxlan import VxlanDriver, link_underlay, unlink_underlay  # noqa: E402
from hybridnb.target import Target  # noqa: E402
from tests.helpers.privnet import icmp_ping  # noqa: E402

NS = {"a": "hnb-mhbench-a", "b": "hnb-mhbench-b"}
GW = {"a": "10.0.1.1", "b": "10.0.1.254"}
HOSTS = {"h1": ("a", "10.0.1.10"), "h3": ("a", "10.0.1.12"), "h2": ("b", "10.0.1.11")}
SPEC = parse_lab({"name": "mhbench", "hosts": {
    "a": {"sandbox": "mhbench-a", "underlay": "192.168.250.1"},
    "b": {"sandbox": "mhbench-b", "underlay": "192.168.250.2"}},
    "network": {"vxlan": {"vni": 4242}}})


def lab_of(host: str) -> str:
    """Each machine's part is its own lab (its bridge gets its own MAC)."""
    return f"mhbench{host}"


def host_resource(name: str) -> Resource:
    host, address = HOSTS[name]
    lab = lab_of(host)
    veth, peer = naming.veth_pair(lab, name)
    return Resource("host", name, {
        "endpoint": name, "hostname": name, "address": address, "prefix": 24,
        "gateway": GW[host], "bridge": "hybr0", "mtu": SPEC.network.mtu, "dns": [],
        "domain": "hybrid.local", "netns": naming.object_name(lab, name), "veth": veth,
        "peer": peer, "mac": naming.mac_address(lab, name)})


def up() -> None:
    for ns in NS.values():
        nsutil.create_netns(ns)
    link_underlay(NS["a"], NS["b"], "192.168.250.0/30", names=("hnbul0", "hnbul1"))
    for host, ns in NS.items():
        target = Target(name=f"bench:{host}", netns=ns)
        BridgeDriver(target).create(lab_of(host), Resource("bridge", "hybr0", {
            "bridge": "hybr0", "address": f"{GW[host]}/24", "subnet": "10.0.1.0/24",
            "mtu": SPEC.network.mtu, "adopt": False}))
        VxlanDriver(target).create(lab_of(host), vxlan_resource(SPEC, host))
    for name, (host, _) in HOSTS.items():
        NetnsHostDriver(Target(name=f"bench:{host}", netns=NS[host])).create(
            lab_of(host), host_resource(name))


def down() -> None:
    """The hosts, the underlay, the two namespaces (their bridges and VXLAN devices go with
    them)."""
    for name, (host, _) in HOSTS.items():
        NetnsHostDriver(Target(name=f"bench:{host}", netns=NS[host])).delete(lab_of(host), name)
    if nsutil.netns_exists(NS["a"]):
        unlink_underlay(NS["a"], "hnbul0")
    for ns in NS.values():
        if nsutil.netns_exists(ns):
            nsutil.delete_netns(ns)


def rtts(src: str, dst: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        rtt = icmp_ping(src, dst, timeout=1.0, attempts=1)
        if rtt is not None:
            out.append(rtt * 1e6)
    return sorted(out)


def iperf(src: str, dst_ns: str, dst: str, seconds: int) -> float:
    server = subprocess.Popen(["ip", "netns", "exec", dst_ns, "iperf3", "-s", "-1", "-B", dst],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = subprocess.run(["ip", "netns", "exec", src, "iperf3", "-c", dst, "-t",
                              str(seconds), "-J"], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        server.wait(timeout=10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pings", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=3)
    args = ap.parse_args()
    ns = {n: naming.object_name(lab_of(h), n) for n, (h, _) in HOSTS.items()}
    try:
        up()
        for dst in ("10.0.1.12", "10.0.1.11"):             # warm ARP and the FDB
            icmp_ping(ns["h1"], dst)
        same, cross = rtts(ns["h1"], "10.0.1.12", args.pings), rtts(ns["h1"], "10.0.1.11",
                                                                    args.pings)
        bw_same = iperf(ns["h1"], ns["h3"], "10.0.1.12", args.seconds)
        bw_cross = iperf(ns["h1"], ns["h2"], "10.0.1.11", args.seconds)
    finally:
        down()

    def p90(xs: list[float]) -> float:
        return xs[int(len(xs) * 0.9) - 1]

    print(f"lab MTU {SPEC.network.mtu} over a 1500-byte veth underlay, VNI 4242")
    print(f"{'path':<22}{'rtt median us':>14}{'p90 us':>9}{'lost':>6}{'iperf3 Gbit/s':>15}")
    print(f"{'same host h1->h3':<22}{statistics.median(same):>14.1f}{p90(same):>9.1f}"
          f"{args.pings - len(same):>6}{bw_same:>15.2f}")
    print(f"{'cross host h1->h2':<22}{statistics.median(cross):>14.1f}{p90(cross):>9.1f}"
          f"{args.pings - len(cross):>6}{bw_cross:>15.2f}")
    print(f"cross/same: RTT x{statistics.median(cross) / statistics.median(same):.2f}, "
          f"throughput x{bw_cross / bw_same:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
