"""Benchmark: hybridnb's DNS server against dnsmasq on the same zone, query log on.

Both servers run side by side on loopback inside a private network namespace (no route out);
dnsperf drives them one at a time, alternating the order every round.  Per run we read
dnsperf's sent/completed/lost counts and qps, and the server's CPU time from
``/proc/<pid>/stat`` (utime+stime, all threads) before and after, giving CPU microseconds per
query.  Every configuration (query set x dnsperf clients) prints its medians over the rounds,
the ratios hybridnb/dnsmasq, and a verdict against the goal: hybridnb with its query log on
at >= 1.0x dnsmasq's qps and <= 1.0x its CPU per query, nothing lost.

    sudo .venv/bin/python benchmarks/dns_vs_dnsmasq.py [--rounds 5] [--seconds 5]
        [--clients 1,4] [--mix a,mixed] [--servers dnsmasq,hybridnb,hybridnb+log]

Query sets (the zone: ``--hosts`` hosts with A and PTR records, the first ``--services`` of
them with an ``_http._tcp`` SRV record):

* ``a``: an A query for every host, as dnsperf writes them (RD, no EDNS);
* ``mixed``: per host an A and a PTR query as above, an A and an SRV query (one of the
  services, in turn) as dig sends them (RD and AD set, EDNS0 with a 1232-byte payload and an
  8-byte client cookie), and an A query for a name that does not exist (NXDOMAIN) — written
  as wire-format messages (dnsperf -B).

Servers: ``dnsmasq``; ``hybridnb`` (no query log); ``hybridnb+log`` (the goal's subject);
``hybridnb+log/portable`` (its recvfrom/sendto fallback instead of recvmmsg/sendmmsg).  The
hybridnb servers are started through :mod:`hybridnb.daemons.dns.control`, as the lab driver
starts them, so run this with the Python hybridnb is installed in.  Needs root (a network
namespace), dnsmasq (dnsmasq-base) and dnsperf.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    from hybridnb.core.dnszone import Service, Zone
    from hybridnb.daemons.dns import control, wire
except ImportError as exc:  # pragma: no cover - run from a checkout without the package
    sys.exit(f"{exc}: run this with the Python hybridnb is installed in (.venv/bin/python)")

HZ = os.sysconf("SC_CLK_TCK")
DOMAIN = "hybrid.local"
SERVERS = ("dnsmasq", "hybridnb", "hybridnb+log", "hybridnb+log/portable")
GOAL = "hybridnb+log"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def wait_port(ns: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "dig", "+short", "+tries=1",
                            "+time=1", "@127.0.0.1", "-p", str(port), f"h0.{DOMAIN}"],
                           capture_output=True, text=True, check=False)
        if r.stdout.strip():
            return
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not answer")


def dnsperf(ns: str, port: int, queries: Path, binary: bool, seconds: int,
            clients: int) -> dict[str, float]:
    out = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "dnsperf", "-s", "127.0.0.1",
                          "-p", str(port), "-d", str(queries), "-l", str(seconds),
                          "-c", str(clients), "-Q", "1000000", *(["-B"] if binary else [])],
                         capture_output=True, text=True, check=True).stdout

    def grab(label: str) -> float:
        m = re.search(rf"{label}:\s+([\d.]+)", out)
        if not m:
            raise RuntimeError(f"dnsperf output lacks {label!r}:\n{out}")
        return float(m.group(1))

    return {"sent": grab("Queries sent"), "completed": grab("Queries completed"),
            "lost": grab("Queries lost"), "qps": grab("Queries per second")}


# ------------------------------------------------------------------------ the lab
def lab_zone(hosts: int, services: int) -> tuple[Zone, dict[str, str]]:
    records = {f"h{i}": f"10.0.{1 + i // 250}.{10 + i % 250}" for i in range(hosts)}
    srv = [Service("http", "tcp", name, 80) for name in list(records)[:services]]
    return Zone(DOMAIN, records, "10.0.1.1", services=srv, subnet="10.0.0.0/16"), records


def _message(name: str, qtype: int, *, dig: bool, rng: random.Random) -> bytes:
    """A query as dnsperf's text input would make it (RD), or as dig sends it."""
    qn = wire.name_to_wire(name)
    if not dig:
        return struct.pack(">HHHHHH", 0, 0x0100, 1, 0, 0, 0) + qn + struct.pack(">HH", qtype, 1)
    cookie = struct.pack(">HH", 10, 8) + rng.randbytes(8)
    opt = b"\x00\x00\x29" + struct.pack(">HBBHH", 1232, 0, 0, 0, len(cookie)) + cookie
    return struct.pack(">HHHHHH", 0, 0x0120, 1, 0, 0, 1) + qn + struct.pack(">HH", qtype, 1) \
        + opt


def write_queries(path: Path, mix: str, records: dict[str, str], services: int) -> bool:
    """The query file of a query set; True when it is wire format (dnsperf -B).  SRV
    queries ask for the services there are, in turn."""
    if mix == "a":
        path.write_text("".join(f"{name}.{DOMAIN} A\n" for name in records))
        return False
    rng = random.Random(1)
    out = bytearray()
    for i, (name, ip) in enumerate(records.items()):
        ptr = ".".join(reversed(ip.split("."))) + ".in-addr.arpa."
        for msg in (_message(f"{name}.{DOMAIN}.", 1, dig=False, rng=rng),
                    _message(ptr, 12, dig=False, rng=rng),
                    _message(f"{name}.{DOMAIN}.", 1, dig=True, rng=rng),
                    _message(f"_http._tcp.h{i % max(services, 1)}.{DOMAIN}.", 33, dig=True,
                             rng=rng),
                    _message(f"nx{i}.{DOMAIN}.", 1, dig=False, rng=rng)):
            out += struct.pack(">H", len(msg)) + msg
    path.write_bytes(bytes(out))
    return True


def start_dnsmasq(netns: list[str], tmp: Path, zone: Zone, records: dict[str, str],
                  port: int) -> subprocess.Popen[bytes]:
    (tmp / "hosts").write_text("".join(f"{ip} {n}.{DOMAIN}\n" for n, ip in records.items()))
    srv = [f"--srv-host=_{s.service}._{s.proto}.{s.endpoint}.{DOMAIN},{s.endpoint}.{DOMAIN},"
           f"{s.port}" for s in zone.services]
    return subprocess.Popen(netns + [
        "dnsmasq", "-k", "-C", "/dev/null", "--no-resolv", "--no-hosts",
        f"--addn-hosts={tmp / 'hosts'}", f"--local=/{DOMAIN}/", "--local=/10.in-addr.arpa/",
        "--listen-address=127.0.0.1", "--bind-interfaces", f"--port={port}",
        f"--pid-file={tmp / 'dnsmasq.pid'}", *srv], stderr=subprocess.DEVNULL)


def start_hybridnb(name: str, ns: str, tmp: Path, zone: Zone,
                   port: int) -> subprocess.Popen[bytes]:
    layout = control.Layout(tmp / name.replace("/", "-"))
    layout.directory.mkdir(parents=True)
    control.write_zone(layout, zone, zone.fingerprint)
    spec = control.LaunchSpec(name, "127.0.0.1", port, "127.0.0.0/8", ns)
    extra = ["--io", "portable"] if name.endswith("/portable") else []
    return control.launch(layout, spec, sys.executable, extra, log="+log" in name)


# ------------------------------------------------------------------------ reports
def verdict(med: dict[str, tuple[float, float, float]]) -> str:
    base, ours = med["dnsmasq"], med[GOAL]
    qr, cr = ours[0] / base[0], ours[1] / base[1]
    short = []
    if qr < 1.0:
        short.append(f"qps {100 * (1 - qr):.0f}% short")
    if cr > 1.0:
        short.append(f"CPU/query {100 * (cr - 1):.0f}% over")
    if ours[2]:
        short.append(f"{ours[2]:.0f} lost")
    head = f"verdict: {GOAL} qps x{qr:.2f}, CPU/query x{cr:.2f}, lost {ours[2]:.0f}: "
    return head + ("goal MET" if not short else "goal NOT met (" + ", ".join(short) + ")")


def report(results: dict[str, list[dict[str, float]]]) -> list[str]:
    lines = [f"{'median':<22} {'qps':>9} {'cpu us/q':>9} {'lost(total)':>12}"]
    med = {}
    for name, rs in results.items():
        med[name] = (statistics.median(r["qps"] for r in rs),
                     statistics.median(r["cpu_us"] for r in rs),
                     sum(r["lost"] for r in rs))
        lines.append(f"{name:<22} {med[name][0]:>9.0f} {med[name][1]:>9.2f} {med[name][2]:>12.0f}")
    base = med["dnsmasq"]
    for name in [n for n in results if n != "dnsmasq"]:
        lines.append(f"{name}/dnsmasq: qps x{med[name][0] / base[0]:.2f}, CPU/query "
                     f"x{med[name][1] / base[1]:.2f}, lost {med[name][2]:.0f}")
    if GOAL in med:
        lines.append(verdict(med))
    return lines


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--clients", default="1,4", help="dnsperf -c values, comma-separated")
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--services", type=int, default=20,
                    help="hosts with an SRV record (the first N; SRV queries ask every host)")
    ap.add_argument("--mix", default="a,mixed", help="query sets, comma-separated: a, mixed")
    ap.add_argument("--servers", default="dnsmasq,hybridnb,hybridnb+log",
                    help=f"comma-separated, from: {', '.join(SERVERS)}")
    args = ap.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    args.mix = args.mix.split(",")
    args.servers = args.servers.split(",")
    bad = [s for s in args.servers if s not in SERVERS] + \
        [m for m in args.mix if m not in ("a", "mixed")]
    if bad or "dnsmasq" not in args.servers:
        ap.error(f"unknown server or query set: {bad} (dnsmasq is the baseline, always run)")
    return args


def main() -> int:
    args = parse_args()
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
    zone, records = lab_zone(args.hosts, args.services)
    queries = {mix: (tmp / f"queries-{mix}", False) for mix in args.mix}
    for mix, (path, _) in queries.items():
        queries[mix] = (path, write_queries(path, mix, records, args.services))
    ports = {name: 5301 + i for i, name in enumerate(args.servers)}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    netns = ["nsenter", f"--net=/run/netns/{ns}"]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        for name, port in ports.items():
            procs[name] = start_dnsmasq(netns, tmp, zone, records, port) if name == "dnsmasq" \
                else start_hybridnb(name, ns, tmp, zone, port)
        for port in ports.values():
            wait_port(ns, port)
        cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo"],
                             capture_output=True, text=True, check=False).stdout.strip()
        print(f"{cpu}; {os.cpu_count()} CPUs; zone: {args.hosts} hosts (A, PTR, SRV); "
              f"dnsperf -l {args.seconds}; {args.rounds} rounds; CPU from /proc/<pid>/stat")
        verdicts = []
        # nsenter execs the servers, so each Popen's pid is the server's pid
        for mix in args.mix:
            for clients in args.clients:
                print(f"\n== query set {mix}, dnsperf -c {clients}")
                print(f"{'round':>5} {'server':<22} {'qps':>9} {'cpu us/q':>9} {'sent':>8} "
                      f"{'lost':>5}")
                results: dict[str, list[dict[str, float]]] = {n: [] for n in ports}
                for rnd in range(args.rounds):
                    order = list(ports) if rnd % 2 == 0 else list(reversed(ports))
                    for name in order:
                        pid = procs[name].pid
                        c0 = cpu_seconds(pid)
                        r = dnsperf(ns, ports[name], *queries[mix], args.seconds, clients)
                        r["cpu_us"] = (cpu_seconds(pid) - c0) / max(r["completed"], 1) * 1e6
                        results[name].append(r)
                        print(f"{rnd + 1:>5} {name:<22} {r['qps']:>9.0f} {r['cpu_us']:>9.2f} "
                              f"{r['sent']:>8.0f} {r['lost']:>5.0f}")
                lines = report(results)
                print("\n".join(lines))
                verdicts.append(f"{mix:>5} -c {clients}: {lines[-1]}")
        print("\n== summary")
        print("\n".join(verdicts))
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
