"""Benchmark: hybridnb's DNS server against dnsmasq on the same 200-host zone.

Both servers run side by side on loopback inside a private network namespace (no route out);
dnsperf drives them one at a time, alternating the order every round.  Per run we read
dnsperf's sent/completed/lost counts and qps, and the server's CPU time from
``/proc/<pid>/stat`` (utime+stime) before and after, giving CPU microseconds per query.
The medians over the rounds and the ratios hybridnb/dnsmasq are printed at the end.

    sudo python3 benchmarks/dns_vs_dnsmasq.py [--rounds 5] [--seconds 5] [--mix a|mixed]

Needs root, dnsmasq (dnsmasq-base) and dnsperf.  ``hybridnb+log`` is the same server with
its query log written to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hybridnb.core.dnszone import Zone  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")
DOMAIN = "hybrid.local"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def wait_port(ns: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "dig", "+short", "+tries=1",
                            "+time=1", "@127.0.0.1", "-p", str(port), f"h0.{DOMAIN}"],
                           capture_output=True, text=True)
        if r.stdout.strip():
            return
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not answer")


def dnsperf(ns: str, port: int, queries: Path, seconds: int, clients: int) -> dict[str, float]:
    out = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "dnsperf", "-s", "127.0.0.1",
                          "-p", str(port), "-d", str(queries), "-l", str(seconds),
                          "-c", str(clients), "-Q", "1000000"],
                         capture_output=True, text=True, check=True).stdout

    def grab(label: str) -> float:
        m = re.search(rf"{label}:\s+([\d.]+)", out)
        if not m:
            raise RuntimeError(f"dnsperf output lacks {label!r}:\n{out}")
        return float(m.group(1))

    return {"sent": grab("Queries sent"), "completed": grab("Queries completed"),
            "lost": grab("Queries lost"), "qps": grab("Queries per second")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--mix", choices=("a", "mixed"), default="a",
                    help="a: A queries for every host; mixed: A, PTR and AAAA (NODATA)")
    ap.add_argument("--no-log-variant", action="store_true",
                    help="skip the run with hybridnb's query log on")
    args = ap.parse_args()
    for tool in ("dnsmasq", "dnsperf", "dig", "nsenter", "ip"):
        if shutil.which(tool) is None:
            print(f"missing tool: {tool}", file=sys.stderr)
            return 2
    if os.geteuid() != 0:
        print("needs root (network namespace)", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="hnb-dnsbench-"))
    tmp.chmod(0o755)                       # dnsmasq reads its hosts file as user nobody
    ns = f"hnb-bench-{os.getpid()}"
    records = {f"h{i}": f"10.0.{1 + i // 250}.{10 + i % 250}" for i in range(args.hosts)}
    zone = Zone(DOMAIN, records, "10.0.1.1", subnet="10.0.0.0/16")
    (tmp / "zone.json").write_text(json.dumps(zone.to_dict()))
    (tmp / "hosts").write_text("".join(f"{ip} {n}.{DOMAIN}\n" for n, ip in records.items()))
    lines = []
    for name, ip in records.items():
        lines.append(f"{name}.{DOMAIN} A")
        if args.mix == "mixed":
            lines.append(f"{'.'.join(reversed(ip.split('.')))}.in-addr.arpa PTR")
            lines.append(f"{name}.{DOMAIN} AAAA")
    (tmp / "queries").write_text("\n".join(lines) + "\n")

    procs: dict[str, subprocess.Popen[bytes]] = {}
    ports = {"dnsmasq": 5301, "hybridnb": 5302, "hybridnb+log": 5303}
    if args.no_log_variant:
        del ports["hybridnb+log"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    netns = ["nsenter", f"--net=/run/netns/{ns}"]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        procs["dnsmasq"] = subprocess.Popen(netns + [
            "dnsmasq", "-k", "-C", "/dev/null", "--no-resolv", "--no-hosts",
            f"--addn-hosts={tmp / 'hosts'}", "--listen-address=127.0.0.1", "--bind-interfaces",
            f"--port={ports['dnsmasq']}", f"--pid-file={tmp / 'dnsmasq.pid'}",
            ], stderr=subprocess.DEVNULL)
        for name in [n for n in ports if n.startswith("hybridnb")]:
            cmd = netns + [sys.executable, "-m", "hybridnb.services.dns.server",
                           "--zone", str(tmp / "zone.json"), "--listen", "127.0.0.1",
                           "--port", str(ports[name])]
            if name.endswith("+log"):
                cmd += ["--log", str(tmp / "query.log")]
            procs[name] = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
        for name, port in ports.items():
            wait_port(ns, port)
        # nsenter execs the server, so Popen's pid is the server's pid
        results: dict[str, list[dict[str, float]]] = {n: [] for n in ports}
        print(f"zone: {args.hosts} hosts, queries: {args.mix}, dnsperf -c {args.clients} "
              f"-l {args.seconds}, {args.rounds} rounds, CPU from /proc/<pid>/stat")
        print(f"{'round':>5} {'server':<13} {'qps':>9} {'cpu us/q':>9} {'sent':>8} "
              f"{'lost':>5}")
        order = list(ports)
        for rnd in range(args.rounds):
            seq = order if rnd % 2 == 0 else list(reversed(order))
            for name in seq:
                pid = procs[name].pid
                c0 = cpu_seconds(pid)
                r = dnsperf(ns, ports[name], tmp / "queries", args.seconds, args.clients)
                r["cpu_us"] = (cpu_seconds(pid) - c0) / max(r["completed"], 1) * 1e6
                results[name].append(r)
                print(f"{rnd + 1:>5} {name:<13} {r['qps']:>9.0f} {r['cpu_us']:>9.2f} "
                      f"{r['sent']:>8.0f} {r['lost']:>5.0f}")
        print()
        print(f"{'median':<19} {'qps':>9} {'cpu us/q':>9} {'lost(total)':>12}")
        med = {}
        for name, rs in results.items():
            med[name] = (statistics.median(r["qps"] for r in rs),
                         statistics.median(r["cpu_us"] for r in rs),
                         sum(r["lost"] for r in rs))
            print(f"{name:<19} {med[name][0]:>9.0f} {med[name][1]:>9.2f} {med[name][2]:>12.0f}")
        print()
        base = med["dnsmasq"]
        for name in [n for n in ports if n != "dnsmasq"]:
            qr = med[name][0] / base[0]
            cr = med[name][1] / base[1]
            print(f"{name}/dnsmasq: qps x{qr:.2f} (goal >= 1.0), CPU/query x{cr:.2f} "
                  f"(goal <= 1.2), lost {med[name][2]:.0f} (goal 0)")
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
