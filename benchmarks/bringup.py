"""Bring-up speed: 20 containers + 20 namespace hosts through ``Lab.apply`` vs raw calls.

Everything runs in a private sandbox (isolated namespace, private dockerd).  In one run,
alternating, several rounds:

* raw       — the docker SDK's low-level calls done one at a time (create + start per
              container, with the same static address, init and labels), and the same hosts
              made with iproute2 in batches (one ``ip -batch`` per namespace); the baseline;
* seq       — ``Lab.apply(workers=1)``: hybridnb, one action at a time;
* parallel  — ``Lab.apply()``: hybridnb's default (concurrent stages);
* re-apply  — ``Lab.apply()`` on the unchanged lab (must do nothing, goal < 200 ms).

Prints medians and the ratios seq/raw (goal ≤ 1.1) and parallel/raw (goal: a clear win).
Usage: ``python benchmarks/bringup.py [--rounds N] [--containers N] [--hosts N]`` (root).
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hybridnb.core import naming  # noqa: E402
from hybridnb.lab import Lab  # noqa: E402
from hybridnb.sandbox import Sandbox  # noqa: E402

SANDBOX = os.environ.get("HYBRIDNB_BENCH_SANDBOX", "bench")


def make_lab(n_cont: int, n_hosts: int, state_dir: str) -> Lab:
    lab = Lab("bench", backend="sandbox", sandbox=SANDBOX, state_dir=state_dir)
    lab._edit(lambda doc: doc["network"].update({"dns": False}))
    for i in range(n_cont):
        lab.add_container(f"c{i:02d}", command=["sleep", "3600"])
    for i in range(n_hosts):
        lab.add_host(f"h{i:02d}")
    return lab


def raw_round(lab: Lab, box: Sandbox) -> tuple[float, float]:
    """(containers seconds, hosts seconds) for raw sequential calls; cleans up after."""
    import docker

    api = docker.APIClient(base_url=box.target().docker_url, version="auto")
    addresses = lab.addresses()
    ns = box.target().netns
    # the shared pieces (bridge, docker network) are made first and are not timed
    subprocess.run(["ip", "-n", ns, "link", "add", "rawbr0", "type", "bridge"], check=True)
    subprocess.run(["ip", "-n", ns, "addr", "add", "10.0.1.1/24", "dev", "rawbr0"], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", "rawbr0", "up"], check=True)
    net = api.create_network("rawnet", driver="bridge", ipam=docker.types.IPAMConfig(
        pool_configs=[docker.types.IPAMPool(subnet="10.0.1.0/24", gateway="10.0.1.1",
                                            iprange="10.0.1.128/26")]),
        options={"com.docker.network.bridge.name": "rawbr0"})
    ids: list[str] = []
    hosts = lab.spec.of_kind("host")
    try:
        return _raw_timed(api, lab, addresses, ns, ids, hosts)
    finally:
        for cid in ids:
            api.remove_container(cid, force=True)
        api.remove_network(net["Id"])
        subprocess.run(["ip", "-batch", "-"], text=True, check=False, input="".join(
            f"netns del raw-{ep.name}\n" for ep in hosts))
        subprocess.run(["ip", "-n", ns, "link", "del", "rawbr0"], check=False)


def _raw_timed(api: Any, lab: Lab, addresses: dict, ns: str, ids: list[str],
               hosts: Any) -> tuple[float, float]:
    t0 = time.perf_counter()
    for ep in lab.spec.of_kind("container"):
        hc = api.create_host_config(network_mode="rawnet", init=True)
        nc = api.create_networking_config(
            {"rawnet": api.create_endpoint_config(ipv4_address=str(addresses[ep.name]))})
        c = api.create_container("busybox", command=["sleep", "3600"], name=f"raw-{ep.name}",
                                 labels={"bench": "raw"}, host_config=hc, networking_config=nc,
                                 detach=True)
        api.start(c["Id"])
        ids.append(c["Id"])
    t_cont = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run(["ip", "-batch", "-"], text=True, check=True,
                   input="".join(f"netns add raw-{ep.name}\n" for ep in hosts))
    side = []
    for ep in hosts:
        veth, _ = naming.veth_pair("raw", ep.name)
        side += [f"link add {veth} type veth peer name eth0 netns raw-{ep.name}",
                 f"link set {veth} master rawbr0 up"]
    subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(side) + "\n", text=True,
                   check=True)
    for ep in hosts:
        inner = [f"addr add {addresses[ep.name]}/24 dev eth0", "link set eth0 up",
                 "link set lo up", "route add default via 10.0.1.1"]
        subprocess.run(["ip", "-n", f"raw-{ep.name}", "-batch", "-"], text=True, check=True,
                       input="\n".join(inner) + "\n")
    t_hosts = time.perf_counter() - t0
    return t_cont, t_hosts


def lab_round(lab: Lab, workers: int | None) -> tuple[float, float, float]:
    """(total, containers stage, hosts stage) seconds of one apply; destroys after."""
    kw = {} if workers is None else {"workers": workers}
    result = lab.apply(**kw)
    stage = {"container": 0.0, "host": 0.0}
    for kind in stage:                       # wall time of the stage, first start to last end
        outs = [o for o in result.outcomes if o.action.kind == kind]
        if outs:
            stage[kind] = max(o.ended for o in outs) - min(o.started for o in outs)
    total = result.seconds
    return total, stage["container"], stage["host"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--containers", type=int, default=20)
    ap.add_argument("--hosts", type=int, default=20)
    args = ap.parse_args()
    box = Sandbox(SANDBOX)
    started = not box.is_up()
    if started:
        box.up(libvirt=False)
    state = tempfile.mkdtemp(prefix="hnb-bench-")
    try:
        lab = make_lab(args.containers, args.hosts, state)
        lab.apply()                             # warm-up: image cache, dockerd chains
        lab.destroy()
        raw_c, raw_h, seq, seq_c, seq_h, par, par_c, par_h, noop = ([] for _ in range(9))
        for _ in range(args.rounds):
            c, h = raw_round(lab, box)
            raw_c.append(c)
            raw_h.append(h)
            for workers, tot, cs, hs in ((1, seq, seq_c, seq_h), (None, par, par_c, par_h)):
                t, c, h = lab_round(lab, workers)
                tot.append(t)
                cs.append(c)
                hs.append(h)
                if workers is None:
                    t0 = time.perf_counter()
                    again = lab.apply()
                    noop.append(time.perf_counter() - t0)
                    assert again.plan.empty
                lab.destroy()
        med = statistics.median
        n_c, n_h = args.containers, args.hosts
        print(f"bring-up of {n_c} containers + {n_h} namespace hosts, median of {args.rounds} rounds")
        print(f"  raw docker SDK, sequential, containers: {med(raw_c):6.2f} s")
        print(f"  raw ip -batch, hosts:                   {med(raw_h):6.2f} s")
        print(f"  hybridnb one at a time: containers {med(seq_c):6.2f} s, hosts {med(seq_h):6.2f} s, "
              f"whole apply {med(seq):6.2f} s")
        print(f"  hybridnb parallel:      containers {med(par_c):6.2f} s, hosts {med(par_h):6.2f} s, "
              f"whole apply {med(par):6.2f} s")
        print(f"  re-apply of the unchanged lab: {med(noop) * 1000:.0f} ms (goal < 200 ms)")
        r_seq = med(seq_c) / med(raw_c)
        r_par = med(par_c) / med(raw_c)
        print(f"ratio containers one-at-a-time / raw: {r_seq:.2f}x (goal <= 1.10) "
              f"{'met' if r_seq <= 1.10 else 'NOT met'}")
        print(f"ratio containers parallel / raw:      {r_par:.2f}x (goal: a clear win, < 1)")
        print(f"ratio hosts one-at-a-time / raw ip:   {med(seq_h) / med(raw_h):.2f}x")
    finally:
        if started:
            box.down()


if __name__ == "__main__":
    main()
