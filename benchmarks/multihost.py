"""Benchmark: same-host vs cross-host RTT and throughput of one lab spread over two sandboxes.

Unlike ``benchmarks/vxlan.py`` (the fabric's drivers by hand), this goes through ``Lab``: two
sandboxes (``<sandbox>a`` and ``<sandbox>b``: their own namespaces and dockerd) stand in for
two machines, a veth pair between their namespaces (192.168.253.0/30, MTU 1500) for the
network between them, as ``tests/integration/test_multihost_real.py`` does.  One lab file
places namespace hosts (kind ``host``) on both: ``h1`` and ``h3`` on a (the primary), ``h2``
and ``h4`` on b; ``Lab.apply`` makes each host's share and the VXLAN devices that join the
two bridges (lab MTU 1450).  Measured, each same-host and cross-host:

* RTT, the lab's own probe engine: ``--tests`` runs of ``Lab.test(("icmp",),
  count=--count)``, the median of every sample of the same-host pairs (h1<->h3, h2<->h4) and
  of the cross-host pairs (h1, h3 <-> h2, h4) — kernel receive timestamps;
* RTT, one ping at a time: ``--pings`` ICMP echoes h1 -> h3 and h1 -> h2, median and p90;
* throughput: iperf3 TCP for ``--seconds`` h1 -> h3 and h1 -> h2 (Debian's iperf3, run in
  the endpoints' namespaces with ``nsenter --net=<netns path>``), ``--repeats`` times each,
  alternating, the median;

then the ratios cross/same.  The CPU model, ``nproc`` and the load (``uptime``) are printed
first and last.  Everything is torn down (``Lab.destroy``, the underlay, both sandboxes).
Every packet goes to an address of the lab, inside namespaces this run made.

    sudo .venv/bin/python benchmarks/multihost.py [--sandbox mhbench] [--lab mhbench]
        [--tests 50] [--count 2] [--pings 200] [--seconds 3] [--repeats 3]

Needs root, iperf3, nsenter and the sandbox's engines (``hybridnb sandbox up``'s
requirements).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

try:
    from hybridnb.drivers.vxlan import link_underlay, unlink_underlay
    from hybridnb.errors import HybridError
    from hybridnb.lab import Lab
    from hybridnb.sandbox import Sandbox
    from tests.helpers.privnet import icmp_ping

    from benchmarks.vm_probe import machine        # CPU model, nproc, uptime
    from benchmarks.vxlan import rtts as ping_rtts  # one ping at a time, microseconds
except ImportError as exc:  # pragma: no cover - run from a checkout without the package
    sys.exit(f"{exc}: run this with the Python hybridnb is installed in (.venv/bin/python)")

UNDERLAY = "192.168.253.0/30"
ULINK = ("hnbmb0", "hnbmb1")
PLACE = {"h1": "a", "h3": "a", "h2": "b", "h4": "b"}
SAME, CROSS = ("h1", "h3"), ("h1", "h2")          # the ping and iperf3 pairs


def lab_doc(name: str, boxes: dict[str, str]) -> dict[str, Any]:
    return {"name": name,
            "hosts": {"a": {"sandbox": boxes["a"], "underlay": "192.168.253.1"},
                      "b": {"sandbox": boxes["b"], "underlay": "192.168.253.2"}},
            "endpoints": {n: {"kind": "host", "host": h} for n, h in PLACE.items()}}


def p90(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[max(int(len(xs) * 0.9) - 1, 0)]


def engine_rtts(lab: Lab, runs: int, count: int) -> dict[str, list[float]]:
    """Every ICMP sample of the lab's probe engine (microseconds) over ``runs`` runs of
    ``Lab.test(("icmp",), count=count)``, same-host vs cross-host pairs among the endpoints
    (the gateway left out).  Many runs of a small count, not one of a large count: the
    engine sends all of a source's attempts back to back, so with a large count the later
    echoes queue behind the earlier ones and the samples measure the burst, not the path."""
    out: dict[str, list[float]] = {"same": [], "cross": []}
    for _ in range(runs):
        m = lab.test(("icmp",), timeout=1.0, count=count)
        assert m.ok, m.to_text()
        for r in m.results:
            if r.source in PLACE and r.target in PLACE:
                side = "same" if PLACE[r.source] == PLACE[r.target] else "cross"
                out[side] += [x * 1e6 for x in r.rtts]
    return out


def iperf(src_ns: str, dst_ns: str, dst: str, seconds: int) -> float:
    """Gbit/s received by an iperf3 server on ``dst`` (in ``dst_ns``) from a client in
    ``src_ns``; both processes are this run's and end with it."""
    server = subprocess.Popen(["nsenter", f"--net={dst_ns}", "iperf3", "-s", "-1", "-B", dst],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = subprocess.run(["nsenter", f"--net={src_ns}", "iperf3", "-c", dst, "-t",
                              str(seconds), "-J"], capture_output=True, text=True,
                             check=True, timeout=seconds + 30)
        return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def measure(lab: Lab, args: argparse.Namespace) -> dict[str, Any]:
    eps, _ = lab.probe_endpoints()
    ns = {e.name: e.netns for e in eps}
    addr = {n: str(a) for n, a in lab.addresses().items()}
    for src, dst in (SAME, CROSS):                      # warm ARP and the FDBs
        icmp_ping(ns[src], addr[dst])
    got: dict[str, Any] = {"engine": engine_rtts(lab, args.tests, args.count)}
    got["ping"] = {"same": ping_rtts(ns[SAME[0]], addr[SAME[1]], args.pings),
                   "cross": ping_rtts(ns[CROSS[0]], addr[CROSS[1]], args.pings)}
    bw: dict[str, list[float]] = {"same": [], "cross": []}
    for _ in range(args.repeats):                       # alternate: load drifts
        for side, (src, dst) in (("same", SAME), ("cross", CROSS)):
            bw[side].append(iperf(ns[src], ns[dst], addr[dst], args.seconds))
    got["iperf"] = bw
    return got


def report(got: dict[str, Any], args: argparse.Namespace) -> list[str]:
    med = statistics.median
    eng, png, bw = got["engine"], got["ping"], got["iperf"]
    lines = [f"{'':<34}{'same host':>12}{'cross host':>12}{'cross/same':>12}"]

    def row(label: str, same: float, cross: float, fmt: str) -> None:
        lines.append(f"{label:<34}{same:>12{fmt}}{cross:>12{fmt}}{cross / same:>11.2f}x")

    row(f"RTT us, Lab.test icmp median ({args.tests}x)", med(eng["same"]), med(eng["cross"]), ".1f")
    row("RTT us, Lab.test icmp p90", p90(eng["same"]), p90(eng["cross"]), ".1f")
    row(f"RTT us, ping median ({args.pings})", med(png["same"]), med(png["cross"]), ".1f")
    row("RTT us, ping p90", p90(png["same"]), p90(png["cross"]), ".1f")
    row(f"TCP Gbit/s, iperf3 median of {args.repeats}", med(bw["same"]), med(bw["cross"]),
        ".2f")
    lines.append(f"  samples: Lab.test same {len(eng['same'])} cross {len(eng['cross'])}; "
                 f"ping lost same {args.pings - len(png['same'])} cross "
                 f"{args.pings - len(png['cross'])}; iperf3 same "
                 f"{[round(x, 2) for x in bw['same']]} cross "
                 f"{[round(x, 2) for x in bw['cross']]}")
    lines.append(f"cross/same: RTT x{med(eng['cross']) / med(eng['same']):.2f} (probe engine), "
                 f"x{med(png['cross']) / med(png['same']):.2f} (ping); throughput "
                 f"x{med(bw['cross']) / med(bw['same']):.2f}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sandbox", default="mhbench", help="sandbox name prefix: PREFIXa, PREFIXb")
    ap.add_argument("--lab", default="mhbench", help="lab name (host namespaces are "
                    "machine-wide: hnb-<lab>-<endpoint>)")
    ap.add_argument("--tests", type=int, default=50, help="Lab.test runs")
    ap.add_argument("--count", type=int, default=2, help="ICMP attempts per pair and run")
    ap.add_argument("--pings", type=int, default=200, help="sequential pings per pair")
    ap.add_argument("--seconds", type=int, default=3, help="iperf3 seconds per run")
    ap.add_argument("--repeats", type=int, default=3, help="iperf3 runs per pair")
    args = ap.parse_args()
    print(time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime()))
    print(machine())
    names = {"a": f"{args.sandbox}a", "b": f"{args.sandbox}b"}
    boxes = {h: Sandbox(n) for h, n in names.items()}
    linked = False
    with tempfile.TemporaryDirectory(prefix="hnb-mhbench-") as state:
        lab = Lab.from_dict(lab_doc(args.lab, names), backend="sandbox",
                            sandbox=names["a"], state_dir=state)
        try:
            t0 = time.monotonic()
            for box in boxes.values():
                box.up(libvirt=False)
            link_underlay(boxes["a"].netns, boxes["b"].netns, UNDERLAY, names=ULINK)
            linked = True
            print(f"sandboxes {names['a']}, {names['b']} up and linked in "
                  f"{time.monotonic() - t0:.1f}s")
            result = lab.apply()
            print(f"lab {args.lab}: {', '.join(f'{n}@{h}' for n, h in PLACE.items())}; apply "
                  f"{result.seconds:.2f}s; MTU {lab.spec.network.mtu} over a 1500-byte veth "
                  f"underlay")
            got = measure(lab, args)
        finally:
            with contextlib.suppress(HybridError):
                done = lab.destroy()
                print(f"destroy {done.seconds:.2f}s")
            if linked:
                unlink_underlay(boxes["a"].netns, ULINK[0])
            for box in boxes.values():
                box.down()
    print("\n".join(report(got, args)))
    print(machine())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
