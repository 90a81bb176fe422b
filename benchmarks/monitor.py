"""Benchmark: the traffic monitor's cost per sample, and the doctor's wall time.

Builds a lab of N namespace hosts (default 50) on a bridge inside a sandbox (its isolated
lab host; the sandbox is brought up if it is not running, and taken down again if this
script started it), then:

* one monitor sample = one netlink dump of the lab host + rates for every port; its CPU time
  (``thread_time``: user + system of the sampling thread, so the kernel's work building the
  dump counts) is the median of ``--samples`` samples;
* the baseline, measured in the same run on the same namespace: pyroute2's
  ``IPRoute.get_links()`` (what a straightforward monitor would call), CPU per call;
* ``doctor`` on the whole lab (every check, ARP sweep and DNS queries included): wall time,
  median of ``--runs``.

Prints the numbers and the ratio baseline/hybridnb, and removes everything it made.

    sudo python3 benchmarks/monitor.py [--hosts 50] [--samples 200] [--sandbox bench]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hybridnb.lab import Lab  # noqa: E402
from hybridnb.sandbox import Sandbox  # noqa: E402
from hybridnb.services.doctor import DoctorContext, diagnose  # noqa: E402
from hybridnb.services.labview import LabView  # noqa: E402
from hybridnb.services.monitor import TrafficMonitor  # noqa: E402


def cpu_per_call(fn, n: int) -> tuple[float, float]:
    """(median, min) CPU seconds of one call of ``fn`` over ``n`` calls."""
    fn()
    costs = []
    for _ in range(n):
        t = time.thread_time()
        fn()
        costs.append(time.thread_time() - t)
    return statistics.median(costs), min(costs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sandbox", default="bench")
    args = ap.parse_args()
    box = Sandbox(args.sandbox)
    started = not box.is_up()
    if started:
        box.up(libvirt=False)
    state = tempfile.mkdtemp(prefix="hnb-monbench-")
    lab = Lab("monbench", backend="sandbox", sandbox=args.sandbox, state_dir=state,
              subnet="10.123.0.0/24", bridge="hnbmon0")
    for i in range(args.hosts):
        lab.add_host(f"h{i:02d}")
    try:
        t0 = time.perf_counter()
        lab.apply()
        print(f"lab: {args.hosts} namespace hosts on {lab.spec.network.bridge} in sandbox "
              f"{args.sandbox}, applied in {time.perf_counter() - t0:.2f} s")
        view = LabView.of(lab)
        with TrafficMonitor(view) as mon:
            ports = len(mon.ports.ports)
            assert ports == args.hosts, mon.ports.missing
            med, low = cpu_per_call(mon.sample, args.samples)
            sample = mon.sample()
        print(f"hybridnb monitor sample ({ports} ports + bridge, one dump): "
              f"{med * 1e3:.3f} ms CPU median, {low * 1e3:.3f} ms min over {args.samples}")
        print(f"  last sample's own cost figure: {sample.cost * 1e3:.3f} ms; "
              f"{len(sample.ports)} rows")
        from hybridnb.drivers import nsutil

        with nsutil.iproute(view.netns) as ipr:
            n = len(ipr.get_links())
            bmed, blow = cpu_per_call(ipr.get_links, max(20, args.samples // 10))
        print(f"baseline pyroute2 IPRoute.get_links() ({n} links): {bmed * 1e3:.3f} ms CPU "
              f"median, {blow * 1e3:.3f} ms min")
        print(f"ratio baseline/hybridnb: {bmed / med:.1f}x; budget 5 ms: "
              f"{'met' if med < 0.005 else 'NOT met'}")
        owned = {name: lab.store.read(name) for name in lab.store.labs()}
        walls = []
        for _ in range(args.runs):
            ctx = DoctorContext.of(LabView.of(lab), owned)
            t = time.perf_counter()
            report = diagnose(ctx)
            walls.append(time.perf_counter() - t)
        print(f"doctor, {len(report.findings)} checks on the {args.hosts}-host lab: "
              f"{statistics.median(walls):.2f} s wall median of {args.runs} "
              f"(exit {report.exit_code}: {report.counts()})")
        for f in report.problems():
            print(f"  {f.status} {f.check}: {f.found}")
    finally:
        lab.destroy()
        if started:
            box.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
