"""``make demo``: the seed's proof of concept, end to end, on real engines.

Starts the isolated sandbox (private dockerd + libvirtd in a namespace with no default
route), builds the small test VM image, creates the seed's lab — bridge ``hybr0`` on
10.0.1.0/24, container ``web`` at 10.0.1.100 serving HTTP, VM ``vm1`` at 10.0.1.200 — and
shows ping, HTTP and names resolving both ways with latencies, then tears everything down
(``--keep`` leaves it running).  It prints what it does as it goes: it is a front end, like
the CLI.  Without root (or with ``--dry-run``) it walks the same lab on the dry-run backend.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from hybridnb.errors import HybridError

SEED_LAB = {
    "name": "seed",
    "network": {"bridge": "hybr0", "subnet": "10.0.1.0/24", "gateway": "10.0.1.1",
                "domain": "hybrid.local"},
    "endpoints": {
        "web": {"kind": "container", "image": "busybox", "address": "10.0.1.100",
                "command": ["httpd", "-f", "-p", "80", "-h", "/www"]},
        "vm1": {"kind": "vm", "template": "test", "address": "10.0.1.200", "memory": 128},
    },
}


def say(text: str = "") -> None:
    print(text, flush=True)


def step(text: str) -> None:
    say(f"\n== {text}")


def latency_table(matrix: Any) -> str:
    """Ping and HTTP both ways with latencies, one line per direction."""
    from hybridnb.core.tables import text_table

    rows = []
    pairs = [("gateway", "web"), ("gateway", "vm1"), ("web", "vm1"), ("vm1", "web")]
    for src, dst in pairs:
        row = [f"{src} -> {dst}"]
        for check in ("icmp", "http", "dns"):
            r = matrix.get(check, src, dst)
            if r is None:
                row.append("-")
            elif r.ok:
                med = r.rtt_median
                row.append("ok" + (f" {med * 1000:.2f} ms" if med is not None else ""))
            else:
                row.append(f"{'FAIL' if r.ok is False else 'skip'}: {r.reason}")
        rows.append(row)
    return text_table(["direction", "ping", "http", "dns"], rows)


def run(keep: bool, dry_run: bool, sandbox_name: str) -> int:
    from hybridnb.lab import Lab

    t_start = time.perf_counter()
    if dry_run:
        step("dry-run: no root or --dry-run given, walking the lab on the in-memory backend")
        lab = Lab.from_dict(SEED_LAB, backend="dry-run")
        say(lab.plan().to_text())
        say(lab.apply().to_text())
        say(lab.status().to_text())
        lab.destroy()
        return 0

    from hybridnb.images import testvm
    from hybridnb.sandbox import Sandbox

    step(f"starting the sandbox {sandbox_name!r}: an isolated namespace with private dockerd "
         "and libvirtd")
    box = Sandbox(sandbox_name)
    box.up(progress=lambda event, *_: say(f"   {event}"))
    step("building the small test VM (Debian kernel + busybox initramfs + qemu-guest-agent)")
    image = testvm.build(progress=lambda event, *_: say(f"   {event}"))
    say(f"   kernel {image.kernel}\n   initrd {image.initrd}")

    lab = Lab.from_dict(SEED_LAB, backend="sandbox", sandbox=sandbox_name)
    ok = False
    try:
        step("the lab: bridge hybr0 10.0.1.0/24, container web (.100), VM vm1 (.200)")
        say(lab.plan().to_text())
        step("applying")
        result = lab.apply(progress=lambda ev: say(f"   {ev}") if ev.phase != "start" else None)
        say(f"   done in {result.seconds:.1f} s")
        step("status")
        say(lab.status().to_text())
        step("testing every endpoint against every other (ICMP, TCP, UDP, HTTP, DNS)")
        matrix = lab.test(timeout=2.0, count=3)
        say(matrix.summary())
        step("the seed's proof: ping, HTTP and names both ways")
        say(latency_table(matrix))
        must = [("icmp", "web", "vm1"), ("icmp", "vm1", "web"), ("http", "web", "vm1"),
                ("http", "vm1", "web"), ("icmp", "gateway", "web"), ("icmp", "gateway", "vm1"),
                ("dns", "web", "vm1"), ("dns", "vm1", "web")]
        ok = all((r := matrix.get(*m)) is not None and r.ok for m in must)
        say("\nRESULT: " + ("VM and container reach each other both ways, by address and by "
                            "name" if ok else "some checks FAILED (see above)"))
        say(f"(whole demo so far: {time.perf_counter() - t_start:.1f} s)")
    finally:
        if keep:
            step("KEEP=1: leaving the lab and the sandbox running")
            say(f"   hybridnb status seed --sandbox {sandbox_name}    # look at it")
            say(f"   hybridnb destroy seed --sandbox {sandbox_name} && "
                f"hybridnb sandbox down --sandbox {sandbox_name}")
        else:
            step("tearing down")
            say(lab.destroy().plan.headline())
            box.down()
            say(f"   sandbox {sandbox_name} stopped")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hybridnb.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="leave the lab and sandbox running")
    ap.add_argument("--dry-run", action="store_true", help="use the in-memory backend")
    ap.add_argument("--sandbox", default="demo", help="sandbox name (default: demo)")
    args = ap.parse_args(argv)
    dry = args.dry_run or os.geteuid() != 0
    try:
        return run(args.keep, dry, args.sandbox)
    except HybridError as exc:
        print(f"hybridnb demo: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
