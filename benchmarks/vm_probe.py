"""Benchmark: VM-sourced probes through the resident helper vs the guest-agent script.

Brings up a lab in the sandbox (``--sandbox``, default ``vmprobe``): ``--containers``
containers (default 3) and one test VM on one bridge, then for ``--rounds`` rounds:

* each VM <-> container pair alone (one echo each way per run, 3 runs per pair) with the
  VM's probes through its resident helper (``HYBRIDNB_VM_PROBE=helper``) and through the
  guest-agent script (``script``): the RTT medians VM -> container and container -> VM of the
  same pairs, and their ratio (the issue's goal: VM-sourced within 2x of the container side);
* the full ICMP matrix (``count`` echoes per pair), the same medians and their ratio: the
  engines send echoes towards a VM one at a time (``schedule.Pacer``: an emulated guest
  answers a burst only after processing all of it, so unpaced the container -> VM side
  measured the burst, 0.11-0.33x);
* the VM source alone (:func:`hybridnb.services.probe.vmhelper.run_vm_source` on the VM's
  planned ICMP pairs), timed per path: the cost of one VM-sourced probe (the whole run divided
  by pairs x count), and script / helper as a ratio.

Prints the CPU model, ``nproc`` and ``uptime`` (the machine is shared: compare within one
run), the medians over rounds, and removes the lab.  Run under the machine's real-engine lock:

    flock /tmp/hnb-real.lock .venv/bin/python benchmarks/vm_probe.py [--rounds 5] [--count 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hybridnb.lab import Lab  # noqa: E402
from hybridnb.sandbox import Sandbox  # noqa: E402
from hybridnb.services.probe import plan_probes, probe_matrix  # noqa: E402
from hybridnb.services.probe.vmhelper import MODE_ENV, run_vm_source  # noqa: E402

MODES = ("helper", "script")


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return f"CPU: {cpu}; nproc {os.cpu_count()}; uptime: {up}"


def matrix_round(lab: Lab, vm: str, containers: list[str], count: int
                 ) -> dict[str, tuple[list[float], list[float]]]:
    """Per path: (VM -> container medians, container -> VM medians), seconds."""
    out = {}
    for mode in MODES:
        os.environ[MODE_ENV] = mode
        m = lab.test(("icmp",), timeout=2.0, count=count)
        from_vm, to_vm = [], []
        for c in containers:
            a, b = m.get("icmp", vm, c), m.get("icmp", c, vm)
            if a is None or b is None or not a.ok or not b.ok:
                raise SystemExit(f"{mode}: {vm} <-> {c} did not answer:\n{m.to_text()}")
            from_vm.append(a.rtt_median)
            to_vm.append(b.rtt_median)
        out[mode] = (from_vm, to_vm)
    return out


def pair_round(lab: Lab, vm: str, containers: list[str], runs: int
               ) -> dict[str, tuple[list[float], list[float]]]:
    """Per path: each VM <-> container pair alone, one echo each way per run, ``runs`` runs:
    (VM -> container RTTs, container -> VM RTTs), seconds."""
    eps, _ = lab.probe_endpoints()
    byname = {e.name: e for e in eps}
    out = {}
    for mode in MODES:
        os.environ[MODE_ENV] = mode
        from_vm, to_vm = [], []
        for c in containers:
            for _ in range(runs):
                m = probe_matrix([byname[c], byname[vm]], ("icmp",), timeout=2.0, count=1)
                a, b = m.get("icmp", vm, c), m.get("icmp", c, vm)
                if not a.ok or not b.ok:
                    raise SystemExit(f"{mode}: {vm} <-> {c} did not answer:\n{m.to_text()}")
                from_vm += a.rtts
                to_vm += b.rtts
        out[mode] = (from_vm, to_vm)
    return out


def source_round(lab: Lab, vm: str, count: int) -> dict[str, tuple[float, int]]:
    """Per path: (seconds for the VM source's ICMP pairs alone, probes sent)."""
    eps, gw = lab.probe_endpoints()
    plan = plan_probes(eps + [gw], ("icmp",), count=count, domain="hybrid.local")
    src = next(s for s in plan.scripts if s.src.name == vm)
    pairs = [plan.pairs[i] for i in src.pairs]
    out = {}
    for mode in MODES:
        os.environ[MODE_ENV] = mode
        t0 = time.perf_counter()
        res = run_vm_source(src.src, pairs, timeout=2.0, count=count, domain="hybrid.local")
        out[mode] = (time.perf_counter() - t0, sum(r.sent for r in res.values()))
        bad = [r for r in res.values() if not r.ok]
        if bad:
            raise SystemExit(f"{mode}: {bad}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--count", type=int, default=5, help="echoes per pair")
    ap.add_argument("--containers", type=int, default=3)
    ap.add_argument("--sandbox", default="vmprobe")
    args = ap.parse_args()
    print(machine())
    from hybridnb.services.probe import fast
    print(f"probe engine: {os.environ.get('HYBRIDNB_PROBE_ENGINE', 'auto')} "
          f"(fast built: {fast.available()})")
    box = Sandbox(args.sandbox)
    started = not box.is_up()
    if started:
        box.up()
    state = tempfile.mkdtemp(prefix="hnb-vmprobe-bench-")
    lab = Lab(f"{args.sandbox}b", backend="sandbox", sandbox=args.sandbox, state_dir=state)
    containers = [f"c{i}" for i in range(1, args.containers + 1)]
    for c in containers:
        lab.add_container(c)
    lab.add_vm("v1", memory=128)
    try:
        assert lab.apply().ok
        matrix_round(lab, "v1", containers, args.count)          # warm-up
        rtt = {mode: ([], []) for mode in MODES}
        alone = {mode: ([], []) for mode in MODES}
        cost = {mode: [] for mode in MODES}
        batch = {mode: [] for mode in MODES}
        for _ in range(args.rounds):
            for mode, (a, b) in matrix_round(lab, "v1", containers, args.count).items():
                rtt[mode][0].extend(a)
                rtt[mode][1].extend(b)
            for mode, (a, b) in pair_round(lab, "v1", containers, 3).items():
                alone[mode][0].extend(a)
                alone[mode][1].extend(b)
            for mode, (secs, sent) in source_round(lab, "v1", args.count).items():
                batch[mode].append(secs)
                cost[mode].append(secs / max(sent, 1))
        med = statistics.median
        n = args.containers + 1
        print(f"1 test VM, {args.containers} containers; ICMP x{args.count}; "
              f"median of {args.rounds} rounds (all pairs)")
        print("  each pair alone, one echo each way per run (the issue's comparison):")
        for mode in MODES:
            a, b = med(alone[mode][0]), med(alone[mode][1])
            print(f"  {mode:6} path: VM -> container {a * 1e3:7.3f} ms, container -> VM "
                  f"{b * 1e3:7.3f} ms, ratio VM-sourced / container-sourced {a / b:5.2f}x "
                  f"(goal 0.5-2.0x) {'met' if 0.5 <= a / b <= 2.0 else 'NOT met'}")
        print(f"  the whole matrix, {args.count} echoes per pair (echoes towards the VM "
              "paced: one at a time):")
        for mode in MODES:
            a, b = med(rtt[mode][0]), med(rtt[mode][1])
            verdict = ("(goal 0.5-2.0x) " + ("met" if 0.5 <= a / b <= 2.0 else "NOT met")
                       if mode == "helper" else "(user-space ping times in the guest)")
            print(f"  {mode:6} path: VM -> container {a * 1e3:7.3f} ms, container -> VM "
                  f"{b * 1e3:7.3f} ms, ratio {a / b:5.2f}x {verdict}")
        for mode in MODES:
            print(f"  {mode:6} path: the VM source alone ({n} targets x {args.count}) "
                  f"{med(batch[mode]) * 1e3:8.1f} ms, {med(cost[mode]) * 1e6:9.1f} µs per probe")
        print(f"  per-probe cost script / helper: "
              f"{med(cost['script']) / med(cost['helper']):.1f}x")
        print(machine())
    finally:
        os.environ.pop(MODE_ENV, None)
        lab.destroy()
        if started:
            box.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
