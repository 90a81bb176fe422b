"""Benchmark: the traffic monitor's cost per sample, and the doctor's wall time.

Builds a lab of N namespace hosts (default 50) on a bridge inside a sandbox (its isolated
lab host; the sandbox is brought up if it is not running, and taken down again if this
script started it), then:

* one monitor sample = one netlink dump of the lab host + rates for every port; its CPU time
  (``thread_time``: user + system of the sampling thread, so the kernel's work building the
  dump counts) is the median of ``--samples`` samples — taken through ``Lab.monitor`` (each
  sample's own cost figure, what ``hybridnb monitor`` pays per interval) and by calling the
  sampler back to back;
* the baseline, measured in the same run on the same namespace: pyroute2's
  ``IPRoute.get_links()`` (what a straightforward monitor would call), CPU per call;
* ``doctor`` on the whole lab (every check, ARP sweep and DNS queries included): wall time,
  median of ``--runs``, of ``Lab.doctor()`` and of the command ``hybridnb doctor LAB`` (a new
  process: Python start-up and imports included).

Prints the numbers and the ratio baseline/hybridnb, and removes everything it made.

    sudo python3 benchmarks/monitor.py [--hosts 50] [--samples 200] [--sandbox bench]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hybridnb.lab import Lab  # noqa: E402
from hybridnb.sandbox import Sandbox  # noqa: E402
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
        costs: list[float] = []
        report = lab.monitor(0.01, args.samples * 0.01, on_sample=lambda s: costs.append(s.cost))
        print(f"Lab.monitor: {len(report.samples)} samples every 10 ms; a sample's own cost: "
              f"{statistics.median(costs) * 1e3:.3f} ms CPU median, {min(costs) * 1e3:.3f} ms "
              f"min, {max(costs) * 1e3:.3f} ms max")
        view = lab.view()
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
        walls = []
        for _ in range(args.runs):
            t = time.perf_counter()
            doc = lab.doctor()
            walls.append(time.perf_counter() - t)
        print(f"Lab.doctor(), {len(doc.findings)} checks on the {args.hosts}-host lab: "
              f"{statistics.median(walls):.2f} s wall median of {args.runs} "
              f"(exit {doc.exit_code}: {doc.counts()})")
        for f in doc.problems():
            print(f"  {f.status} {f.check}: {f.found}")
        cli = [sys.executable, "-m", "hybridnb.cli", "doctor", lab.name, "--backend",
               "sandbox", "--sandbox", args.sandbox, "--state-dir", state]
        walls, code = [], None
        for _ in range(args.runs):
            t = time.perf_counter()
            code = subprocess.run(cli, capture_output=True).returncode
            walls.append(time.perf_counter() - t)
        print(f"hybridnb doctor {lab.name} (a new process each): "
              f"{statistics.median(walls):.2f} s wall median of {args.runs} (exit {code})")
    finally:
        lab.destroy()
        if started:
            box.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
