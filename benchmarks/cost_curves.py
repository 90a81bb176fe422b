"""Benchmark: what a lab costs as it grows — 10, 50, 100, 200 endpoints.

One lab of namespace hosts and containers (half each) grows through the sizes in a sandbox
of its own (a private lab host namespace and dockerd, no route out).  At every size it
prints:

* apply       — ``Lab.apply()`` of the endpoints added since the last size (per added endpoint)
* re-apply    — ``Lab.apply()`` with nothing to do (per endpoint: should stay flat)
* status      — ``Lab.status()`` (per endpoint)
* probe endpoints — ``Lab.probe_endpoints()``: what ``Lab.test`` does before the probe
                engine runs (observing and building the endpoints; per endpoint)
* icmp x1     — ``Lab.test(("icmp",), count=1)``, warm (per probed pair)
* all checks  — ``Lab.test(count=1)``: ICMP, TCP, UDP, HTTP, DNS (per pair and check)
* dns reload  — a zone reload through the server's contract: zone file rewritten, SIGHUP,
                until the new zone serves (median of ``--runs``; per record served)
* dns rss     — the lab DNS server's resident memory after the reload (per record served)

and the growth order of every measure between consecutive sizes: k in cost ~ units^k, the
unit being what it is charged per (added endpoints, endpoints, pairs, records).  Linear in
endpoints for apply and status, linear in pairs for the matrix, constant per endpoint for
re-apply (k = 1) are the goals; k above 1.2 is flagged.  A least-squares line cost = a + b *
units over all sizes says how much of each measure is a fixed cost (a) — a measure dominated
by it shows k well below 1 and a per-unit cost that falls with size, which is not economy of
scale.  The CPU model, the number of CPUs and the load average are printed first and last.
Only the public Lab API drives the lab (``Lab.from_dict``, ``apply``, ``status``, ``test``,
``destroy``); the DNS server is found by its command line (its state directory) and
reloaded through its contract, :mod:`hybridnb.daemons.dns.control`.

    sudo .venv/bin/python benchmarks/cost_curves.py [--sizes 10,50,100,200]
        [--sandbox costs] [--keep]

Needs root and the sandbox's engines (``hybridnb sandbox up``'s requirements).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    from hybridnb.daemons import process
    from hybridnb.errors import HybridError
    from hybridnb.daemons.dns import control
    from hybridnb.lab import Lab
    from hybridnb.sandbox import Sandbox
except ImportError as exc:  # pragma: no cover - run from a checkout without the package
    sys.exit(f"{exc}: run this with the Python hybridnb is installed in (.venv/bin/python)")

SUBNET = "10.62.0.0/22"          # room for 400 hosts and 256 containers (pools scale)


def lab_doc(name: str, size: int) -> dict[str, Any]:
    endpoints: dict[str, Any] = {}
    for i in range(size):
        if i % 2:
            endpoints[f"c{i:03d}"] = {"kind": "container", "image": "busybox",
                                      "command": ["sleep", "86400"]}
        else:
            endpoints[f"h{i:03d}"] = {"kind": "host"}
    return {"name": name, "network": {"bridge": "costbr0", "subnet": SUBNET, "dns": True},
            "endpoints": endpoints}


def raise_open_files() -> int:
    """Raise this process's open-file limit as far as the kernel allows (the probe engine
    opens sockets per pair and check); returns the new limit."""
    import resource

    try:
        ceiling = int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        ceiling = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    for limit in (ceiling, resource.getrlimit(resource.RLIMIT_NOFILE)[1]):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            return limit
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def machine() -> str:
    """CPU model, number of CPUs and load: the benchmark's numbers mean little without them."""
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return f"CPU: {model}; nproc {os.cpu_count()}; load average {load}"


def timed(fn: Any, *args: Any, **kw: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - t0, out


def dns_server_rss(state_dir: Path) -> tuple[int | None, float]:
    """(pid, resident MiB) of the lab's DNS server: the server process whose command line
    holds our state directory."""
    for pid in process.find(str(state_dir)):
        if control.MODULE in " ".join(process.cmdline(pid)):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return pid, int(line.split()[1]) / 1024
    return None, 0.0


def dns_seconds(result: Any) -> float:
    return sum(o.seconds for o in result.outcomes if o.action.kind == "dns")


def dns_reloads(pid: int | None, runs: int) -> float:
    """Median time of a zone reload of the running server through its contract (rewrite
    the zone file, signal, wait until the new zone serves), the zone unchanged but for its
    fingerprint; the lab's own fingerprint is put back afterwards."""
    from hybridnb.core.dnszone import Zone

    if pid is None:
        return float("nan")
    argv = process.cmdline(pid)
    layout = control.Layout(Path(argv[argv.index("--zone") + 1]).parent)
    data = control.read_json(layout.zone) or {}
    fingerprint, zone = str(data.get("fingerprint")), Zone.from_dict(data)
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        control.reload(layout, zone, f"{fingerprint}-bench{i}")
        if not control.wait_loaded(layout, f"{fingerprint}-bench{i}"):
            raise SystemExit(f"the DNS server did not reload: {control.server_error(layout)}")
        times.append(time.perf_counter() - t0)
    control.reload(layout, zone, fingerprint)
    control.wait_loaded(layout, fingerprint)
    return statistics.median(times)


#: the lab host's network namespace (the sandbox's), for its connection-tracking counters
LAB_NETNS: list[str] = []


def ct_max() -> str:
    try:
        return Path("/proc/sys/net/netfilter/nf_conntrack_max").read_text().strip()
    except OSError:
        return "?"


def conntrack() -> tuple[int, int]:
    """(entries, packets dropped since boot because the table was full) of connection
    tracking in the lab host's namespace: bridged frames pass iptables there
    (br_netfilter) and every probe flow gets an entry, at most ``nf_conntrack_max`` (a
    machine-wide value, read-only inside a namespace)."""
    if not LAB_NETNS:
        return -1, -1
    out = subprocess.run(["ip", "netns", "exec", LAB_NETNS[0], "sh", "-c",
                          "cat /proc/sys/net/netfilter/nf_conntrack_count; "
                          "cat /proc/net/stat/nf_conntrack"],
                         capture_output=True, text=True).stdout.split("\n")
    try:
        head = out[1].split()
        col = head.index("drop")
        drops = sum(int(line.split()[col], 16) for line in out[2:] if line.strip())
        return int(out[0]), drops
    except (IndexError, ValueError):
        return -1, -1


def measure(lab: Lab, size: int, added: int, state_dir: Path, runs: int) -> dict[str, Any]:
    m: dict[str, Any] = {"size": size, "added": added}
    m["apply"], result = timed(lab.apply)
    if not result.ok:
        raise SystemExit(result.to_text())
    m["dns_apply"] = dns_seconds(result)        # the apply's DNS action (create or update)
    reapply = []
    for _ in range(runs):
        t, again = timed(lab.apply)
        assert again.plan.empty, again.to_text()
        reapply.append(t)
    m["reapply"] = statistics.median(reapply)
    m["status"] = statistics.median(timed(lab.status)[0] for _ in range(runs))
    # what Lab.test does before the probe engine runs: observe and build the endpoints
    m["endpoints"] = statistics.median(timed(lab.probe_endpoints)[0] for _ in range(runs))
    lab.test(("icmp",), count=1)                                  # warm-up (neighbours)
    icmp = []
    for _ in range(runs):
        t, matrix = timed(lab.test, ("icmp",), count=1)
        icmp.append(t)
    counts = matrix.counts()
    m["icmp"], m["icmp_pairs"], m["icmp_ok"] = statistics.median(icmp), len(matrix.results), \
        counts["ok"]
    ct0 = conntrack()
    try:
        t, full = timed(lab.test, count=1)
    except HybridError as exc:            # e.g. more sockets than the open-file limit
        m["all"], m["all_probes"], m["all_counts"] = float("nan"), 1, str(exc).splitlines()[0]
        m["all_checks"] = "default"
    else:
        m["all"], m["all_probes"], m["all_counts"] = t, len(full.results), full.counts()
        m["all_checks"] = ",".join(full.checks)
        ct1 = conntrack()
        m["conntrack"] = (f"connection tracking in the lab host: {ct0[0]} entries before, "
                          f"{ct1[0]} after (nf_conntrack_max {ct_max()}); "
                          f"{ct1[1] - ct0[1]} packets dropped for a full table during it")
        failed = {}
        for r in full.results:
            if r.ok is False:
                key = f"{r.check}: {r.reason}"
                failed[key] = failed.get(key, 0) + 1
        if failed:                       # which checks failed, and why (the commonest)
            m["all_counts"] = dict(m["all_counts"], failed=dict(
                sorted(failed.items(), key=lambda kv: -kv[1])[:4]))
    m["dns_pid"], m["dns_rss"] = dns_server_rss(state_dir)
    m["dns_reload"] = dns_reloads(m["dns_pid"], runs)
    m["names"] = len(lab.dns().records)                          # records served
    return m


def _order(r0: dict[str, Any], r1: dict[str, Any], key: str, unit: str) -> float:
    """k in ``cost ~ units^k`` between two sizes (nan when it cannot be told: no cost, the
    DNS server started rather than reloaded, no growth in units)."""
    import math

    c0, c1, u0, u1 = r0[key], r1[key], r0[unit], r1[unit]
    if not (c0 > 0 and c1 > 0 and u1 > u0 > 0):
        return float("nan")
    return math.log(c1 / c0) / math.log(u1 / u0)


#: (measure, label, unit, scale of b to its printed unit, that unit) of the fit lines
_FITS = (("apply", "apply", "added", 1e3, "ms"),
         ("reapply", "re-apply", "size", 1e3, "ms"),
         ("status", "status", "size", 1e3, "ms"),
         ("endpoints", "probe endpoints", "size", 1e3, "ms"),
         ("icmp", "icmp x1", "icmp_pairs", 1e6, "us"),
         ("all", "all checks x1", "all_probes", 1e6, "us"),
         ("dns_reload", "dns reload", "names", 1e3, "ms"))


def unit_name(unit: str) -> str:
    return {"added": "added ep", "size": "ep", "icmp_pairs": "pair", "all_probes": "probe",
            "names": "record"}[unit]


def _fit(rows: list[dict[str, Any]], key: str, unit: str) -> tuple[float, float]:
    """(a, b) of the least-squares line cost = a + b * units over the sizes measured (nan
    when a measure is missing)."""
    xs = [float(r[unit]) for r in rows]
    ys = [float(r[key]) for r in rows]
    if any(y != y for y in ys) or len(set(xs)) < 2:
        return float("nan"), float("nan")
    b, a = statistics.linear_regression(xs, ys)
    return a, b


def _overall(rows: list[dict[str, Any]], key: str, unit: str) -> float:
    """k of the least-squares line through (log units, log cost) over all sizes."""
    import math

    points = [(math.log(r[unit]), math.log(r[key])) for r in rows
              if r[key] == r[key] and r[key] > 0 and r[unit] > 0]
    if len({x for x, _ in points}) < 2:
        return float("nan")
    return statistics.linear_regression([x for x, _ in points], [y for _, y in points])[0]


def report(rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"{'size':>5} {'apply':>15} {'re-apply':>15} {'status':>15} {'icmp x1':>19} "
             f"{'all checks x1':>20} {'dns reload':>15} {'dns rss':>16}",
             f"{'':>5} {'s (ms/added)':>15} {'ms (ms/ep)':>15} {'ms (ms/ep)':>15} "
             f"{'s (us/pair)':>19} {'s (us/probe)':>20} {'ms (us/rec)':>15} "
             f"{'MiB (KiB/rec)':>16}"]
    for r in rows:
        n = r["size"]
        lines.append(
            f"{n:>5} {r['apply']:>7.2f} ({r['apply'] / max(r['added'], 1) * 1e3:>5.0f}) "
            f"{r['reapply'] * 1e3:>7.0f} ({r['reapply'] / n * 1e3:>5.2f}) "
            f"{r['status'] * 1e3:>7.0f} ({r['status'] / n * 1e3:>5.2f}) "
            f"{r['icmp']:>7.3f} ({r['icmp'] / r['icmp_pairs'] * 1e6:>9.1f}) "
            f"{r['all']:>7.3f} ({r['all'] / r['all_probes'] * 1e6:>10.1f}) "
            f"{r['dns_reload'] * 1e3:>7.0f} ({r['dns_reload'] / r['names'] * 1e6:>5.0f}) "
            f"{r['dns_rss']:>6.1f} ({r['dns_rss'] * 1024 / r['names']:>7.1f})")
    for r in rows:
        lines.append(f"size {r['size']}: icmp {r['icmp_ok']}/{r['icmp_pairs']} ok; all checks "
                     f"({r['all_checks']}): {r['all_counts']}")
        if r.get("conntrack"):
            lines.append(f"  {r['conntrack']}")
    lines.append("")
    lines.append(f"{'size':>5} {'probe endpoints':>17}   (Lab.probe_endpoints: observing and "
                 "building the endpoints, the part of Lab.test before the probe engine)")
    lines.append(f"{'':>5} {'ms (ms/ep)':>17}")
    for r in rows:
        lines.append(f"{r['size']:>5} {r['endpoints'] * 1e3:>9.0f} "
                     f"({r['endpoints'] / r['size'] * 1e3:>5.2f})")
    if len(rows) >= 3:
        lines.append("")
        lines.append("fixed and per-unit cost, least squares over all sizes: cost = a + b * "
                     "units; 'fixed' is a's share of the cost at the smallest and largest size")
        for key, label, unit, scale, name in _FITS:
            a, b = _fit(rows, key, unit)
            if a != a:
                continue
            first, last = rows[0], rows[-1]
            shares = [a / r[key] * 100 if r[key] > 0 else float("nan") for r in (first, last)]
            verdict = "no fixed cost seen (a <= 0)" if a <= 0 else \
                "dominated by fixed costs" if shares[1] >= 50 else \
                "per-unit cost dominates" if shares[1] < 25 else "fixed and per-unit costs"
            lines.append(f"  {label:<26} a {a * 1e3:>8.1f} ms  b {b * scale:>8.3f} "
                         f"{name}/{unit_name(unit)}; fixed {shares[0]:>3.0f}% at "
                         f"{first['size']}, {shares[1]:>3.0f}% at {last['size']}: {verdict}")
    if len(rows) >= 2:
        lines.append("")
        lines.append("growth order between consecutive sizes: k in cost ~ units^k (1: linear "
                     "in its unit; fixed costs make k < 1 at small sizes)")
        head = "  ".join(f"{a['size']}->{b['size']}" for a, b in zip(rows, rows[1:]))
        lines.append(f"  {'measure (unit)':<34} {head}  overall   (overall: log-log least "
                     "squares over all sizes; the verdict takes it and the largest step)")
        for key, label, unit in (("apply", "apply (added endpoints)", "added"),
                                 ("reapply", "re-apply (endpoints)", "size"),
                                 ("status", "status (endpoints)", "size"),
                                 ("endpoints", "probe endpoints (endpoints)", "size"),
                                 ("icmp", "icmp x1 (pairs)", "icmp_pairs"),
                                 ("all", "all checks x1 (probes)", "all_probes"),
                                 ("dns_reload", "dns reload (records)", "names"),
                                 ("dns_rss", "dns rss (records)", "names")):
            ks = [_order(r0, r1, key, unit) for r0, r1 in zip(rows, rows[1:])]
            overall = _overall(rows, key, unit)
            worst = max((k for k in (ks[-1], overall) if k == k), default=float("nan"))
            verdict = "n/a" if worst != worst else "linear or better" if worst <= 1.2 \
                else "GROWS FASTER"
            cells = "  ".join(f"{k:>{len(c)}.2f}" for k, c in zip(ks, head.split("  ")))
            lines.append(f"  {label:<34} {cells}  {overall:>7.2f}   {verdict}")
    return lines


def per_kind(result: Any) -> str:
    """Per resource kind of an apply/destroy result: actions, median and longest seconds."""
    seconds: dict[str, list[float]] = {}
    for o in result.outcomes:
        seconds.setdefault(o.action.kind, []).append(o.seconds)
    return "; ".join(f"{kind} x{len(s)} median {statistics.median(s):.2f} s, max {max(s):.2f} s"
                     for kind, s in sorted(seconds.items(), key=lambda kv: -sum(kv[1])))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,50,100,200")
    ap.add_argument("--sandbox", default=os.environ.get("HYBRIDNB_BENCH_SANDBOX", "costs"))
    ap.add_argument("--lab", default="costs", help="lab name (host namespaces are "
                    "machine-wide: hnb-<lab>-<host>)")
    ap.add_argument("--runs", type=int, default=5, help="repeats of the quick measures (median)")
    ap.add_argument("--keep", action="store_true", help="leave the sandbox up")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if os.geteuid() != 0:
        print("needs root (sandbox)", file=sys.stderr)
        return 2
    files = raise_open_files()
    print(machine())
    t0 = time.perf_counter()
    box = Sandbox(args.sandbox)
    box.up(libvirt=False)
    LAB_NETNS.append(box.netns)
    print(f"sandbox {args.sandbox} up in {time.perf_counter() - t0:.1f} s; lab {args.lab}: "
          f"half namespace hosts, half busybox containers, DNS on; sizes {sizes}; "
          f"open-file limit {files}")
    state_dir = Path(tempfile.mkdtemp(prefix="hnb-costs-"))
    lab = None
    rows = []
    try:
        prev = 0
        for size in sizes:
            lab = Lab.from_dict(lab_doc(args.lab, size), backend="sandbox",
                                sandbox=args.sandbox, state_dir=state_dir)
            rows.append(measure(lab, size, size - prev, state_dir, args.runs))
            prev = size
            print(f"  size {size} measured ({time.perf_counter() - t0:.0f} s since start)",
                  flush=True)
        print()
        print("\n".join(report(rows)))
    finally:
        if lab is not None:
            t, gone = timed(lab.destroy)
            print(f"\ndestroy of {prev} endpoints: {t:.1f} s ({t / max(prev, 1) * 1e3:.0f} ms "
                  f"per endpoint); {per_kind(gone)}")
        shutil.rmtree(state_dir, ignore_errors=True)
        if not args.keep:
            box.down()
    print(f"total {time.perf_counter() - t0:.0f} s; {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
