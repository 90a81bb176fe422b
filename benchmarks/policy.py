"""Benchmark: applying a 1000-rule policy, and iperf3 throughput through a 100-rule policy.

Brings up N namespace hosts (default 40) on a bridge inside a private lab namespace (no route
out; bridged IPv4 passes the IPv4 hooks as in every lab host), then:

* **apply**: a 1000-rule policy over those hosts (groups, single endpoints, TCP/UDP ports and
  ranges, ICMP; default deny) — validated (with shadow analysis), compiled to libnftables JSON
  and applied as one transaction by :class:`hybridnb.drivers.nftables.PolicyDriver`, each step
  timed (median of ``--runs``).  Baseline: ``nft -f`` of the same ruleset written as nft text
  (the same add/delete/add table transaction), a process per run as a person would run it.
* **the lab file**: the same policy as a lab file's ``groups:``/``policies:`` sections over 40
  host endpoints — ``parse_lab`` (what every ``Lab`` edit and every command pays: validation,
  groups, shadow analysis) and ``compile_lab`` (every resource, the policy table's JSON body
  included), median of ``--runs``.
* **throughput**: iperf3 (Debian's) between two hosts for ``--seconds`` with no policy, then
  through a 100-rule default-deny policy whose only rule for that pair is the last one (every
  packet passes all 100 rules: rules match the conntrack original tuple, so replies are judged
  too).

Prints the times, the ratio hybridnb/baseline and the throughputs, and removes everything.

    sudo python3 benchmarks/policy.py [--hosts 40] [--rules 1000] [--runs 5] [--seconds 5]

Needs root, ``ip``, ``nft`` and ``iperf3``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hybridnb.core import nftables as nftjson  # noqa: E402
from hybridnb.core.nftables import policy_resource  # noqa: E402
from hybridnb.core.policy import Member, parse_policy  # noqa: E402
from hybridnb.drivers.nftables import PolicyDriver  # noqa: E402
from hybridnb.target import Target  # noqa: E402
from tests.services.probe.netlab import NetLab  # noqa: E402

LAB = "polbench"


def members(lab: NetLab) -> dict[str, Member]:
    return {lab.name(i): Member(lab.name(i), "host", lab.address(i),
                                {"rack": f"r{i % 4}"}) for i in range(lab.n)}


def random_rules(names: list[str], n: int, seed: int = 15) -> tuple[dict, list[dict]]:
    """``n`` rules over ``names``: groups of 5, single endpoints, labels, mixed services."""
    rnd = random.Random(seed)
    groups = {f"g{k}": names[k * 5:(k + 1) * 5] for k in range(len(names) // 5)}
    sides = list(groups) + names + ["label:rack=r1", "label:rack=r2"]
    rules = []
    for i in range(n):
        services = rnd.choice([[f"tcp/{1024 + i}"], [f"udp/{2000 + i}", "icmp"],
                               [f"tcp/{3000 + i}-{3010 + i}"], [f"http/{8000 + i}"]])
        verdict = "deny" if i % 5 == 4 else "allow"
        rules.append({"from": rnd.choice(sides), "to": rnd.choice(sides), verdict: services})
    return groups, rules


def time_hybridnb(driver: PolicyDriver, mem: dict[str, Member], groups: dict, rules: list[dict],
                  lab: NetLab, runs: int) -> tuple[dict[str, float], dict]:
    steps: dict[str, list[float]] = {"validate": [], "compile": [], "apply": []}
    batch = {}
    for run in range(runs):
        t0 = time.perf_counter()
        policy = parse_policy(groups, {"default": "deny", "rules": rules}, mem)
        t1 = time.perf_counter()
        body = nftjson.policy_body(policy, lab=LAB, bridge="br0", gateway=lab.gateway)
        res = policy_resource(LAB, body, bridge="br0", gateway=lab.gateway,
                              rules=len(policy.rules), default="deny")
        batch = driver._batch(LAB, res)
        t2 = time.perf_counter()
        driver.create(LAB, res)
        t3 = time.perf_counter()
        for key, dt in (("validate", t1 - t0), ("compile", t2 - t1), ("apply", t3 - t2)):
            steps[key].append(dt)
    return {k: statistics.median(v) for k, v in steps.items()}, batch


def time_lab_file(lab: NetLab, groups: dict, rules: list[dict], runs: int) -> dict[str, float]:
    """parse_lab and compile_lab of a lab file holding the policy (hosts at lab's addresses)."""
    from hybridnb.core.compile import compile_lab
    from hybridnb.core.ipam import assign_addresses
    from hybridnb.core.spec import parse_lab

    doc = {"name": LAB, "network": {"bridge": "br0", "subnet": f"{lab.subnet}.0/24",
                                    "gateway": lab.gateway},
           "endpoints": {lab.name(i): {"kind": "host", "address": lab.address(i),
                                       "labels": {"rack": f"r{i % 4}"}} for i in range(lab.n)},
           "groups": groups, "policies": {"default": "deny", "rules": rules}}
    steps: dict[str, list[float]] = {"parse": [], "compile": []}
    for _ in range(runs):
        t0 = time.perf_counter()
        spec = parse_lab(doc)
        t1 = time.perf_counter()
        resources = compile_lab(spec, assign_addresses(spec))
        t2 = time.perf_counter()
        assert any(r.kind == "policy" for r in resources)
        steps["parse"].append(t1 - t0)
        steps["compile"].append(t2 - t1)
    return {k: statistics.median(v) for k, v in steps.items()}


def time_nft_f(netns: str, text: str, runs: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".nft", delete=False) as f:
        f.write(text)
        path = f.name
    times = []
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", path], check=True)
            times.append(time.perf_counter() - t0)
    finally:
        Path(path).unlink()
    return statistics.median(times)


def iperf(lab: NetLab, seconds: int) -> float:
    srv = subprocess.Popen(["ip", "netns", "exec", lab.netns(1), "iperf3", "-s", "-1", "-B",
                            lab.address(1)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = subprocess.run(["ip", "netns", "exec", lab.netns(0), "iperf3", "-c",
                              lab.address(1), "-t", str(seconds), "-J"],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"]
    finally:
        srv.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=40)
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    args = ap.parse_args()
    lab = NetLab(args.hosts, subnet="10.76.0")
    driver = PolicyDriver(Target("bench", netns=lab.lab))
    try:
        mem = members(lab)
        names = sorted(mem)
        groups, rules = random_rules(names, args.rules)
        steps, batch = time_hybridnb(driver, mem, groups, rules, lab, args.runs)
        n_nft = sum(1 for c in batch["nftables"] if "rule" in c.get("add", {}))
        text = nftjson.to_text(batch)
        baseline = time_nft_f(lab.lab, text, args.runs)
        total = sum(steps.values())
        print(f"policy of {args.rules} rules over {args.hosts} hosts -> {n_nft} nftables "
              f"rules, {len(batch['nftables'])} commands in one transaction "
              f"(median of {args.runs})")
        print(f"  hybridnb validate (with shadow analysis) {steps['validate'] * 1000:8.1f} ms")
        print(f"  hybridnb compile to JSON                 {steps['compile'] * 1000:8.1f} ms")
        print(f"  hybridnb apply (libnftables, in-process) {steps['apply'] * 1000:8.1f} ms")
        print(f"  hybridnb total                           {total * 1000:8.1f} ms")
        print(f"  baseline: nft -f of the same ruleset     {baseline * 1000:8.1f} ms")
        print(f"  ratio apply / nft -f: {steps['apply'] / baseline:.2f}   "
              f"total / nft -f: {total / baseline:.2f}")
        driver.delete(LAB, LAB)
        labfile = time_lab_file(lab, groups, rules, args.runs)
        print(f"the same policy in a lab file with {args.hosts} host endpoints "
              f"(median of {args.runs})")
        print(f"  parse_lab (sections, groups, shadows)    {labfile['parse'] * 1000:8.1f} ms")
        print(f"  compile_lab (every resource)             {labfile['compile'] * 1000:8.1f} ms")

        plain = iperf(lab, args.seconds)
        mem2 = {k: v for k, v in mem.items()}
        hundred = [{"from": names[2 + i % (len(names) - 2)],
                    "to": names[2 + (i * 7 + 1) % (len(names) - 2)],
                    "allow": [f"tcp/{10000 + i}"]} for i in range(99)]
        hundred.append({"from": names[0], "to": names[1], "allow": ["tcp/5201"]})
        policy = parse_policy(None, {"default": "deny", "rules": hundred}, mem2)
        body = nftjson.policy_body(policy, lab=LAB, bridge="br0", gateway=lab.gateway)
        driver.create(LAB, policy_resource(LAB, body, bridge="br0", gateway=lab.gateway,
                                           rules=100, default="deny"))
        through = iperf(lab, args.seconds)
        hits = driver.counters(LAB).get("rule 100", (0, 0))
        driver.delete(LAB, LAB)
        print(f"iperf3 {lab.name(0)} -> {lab.name(1)}, {args.seconds} s each")
        print(f"  no policy              {plain / 1e9:7.2f} Gbit/s")
        print(f"  100-rule policy (last) {through / 1e9:7.2f} Gbit/s  "
              f"({through / plain:.2f} of no policy; rule 100 matched {hits[0]} packets)")
    finally:
        try:
            driver.delete(LAB, LAB)
        finally:
            lab.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
