"""One lab over two sandboxes probed as one matrix whose host b share runs in another process.

The two sandboxes of :mod:`tests.integration.test_multihost_real` (``<test sandbox>a`` and
``...b``, joined by a veth underlay) hold a lab with a container on a (the primary: gateway
and DNS) and a container and a test VM on b.  ``Lab.test`` runs it

(a) as before, one process entering every host's namespaces, and
(b) with ``lab.probe_runners = {"b": LocalRunner()}``: host b's share — the responders of
    b's targets, the probes from c2 and from the VM (its guest agent reconnected in the other
    process from the libvirt URI) — in a subprocess (``python -m
    hybridnb.services.probe.share``), a stand-in for a remote host; a's share in this process.

Both are green for ICMP, TCP, UDP, HTTP and DNS with the same pairs and verdicts.  Then c2's
interface goes down: its rows and columns fail, and the whole run still costs about one
timeout, with b's share in the subprocess as in one process.

Every packet goes to an address this test made, inside those namespaces.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest

from hybridnb.lab import Lab
from hybridnb.drivers.runner import LocalRunner
from tests.integration.test_multihost_real import BOXES, two  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.real, pytest.mark.vm]

CHECKS = ("icmp", "tcp", "udp", "http", "dns")
LAB: dict[str, Any] = {
    "name": "probeshare",
    "hosts": {"a": {"sandbox": BOXES["a"], "underlay": "192.168.251.1"},
              "b": {"sandbox": BOXES["b"], "underlay": "192.168.251.2"}},
    "endpoints": {
        "c1": {"kind": "container", "services": ["http/80"]},
        "c2": {"kind": "container", "host": "b"},
        "v1": {"kind": "vm", "template": "test", "memory": 128, "host": "b"},
    },
}


class Counted(LocalRunner):
    """A local runner that keeps the share processes it started."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[Any] = []

    def run_module(self, module, args=()):
        proc = super().run_module(module, args)
        self.started.append(proc)
        return proc


def verdicts(m) -> dict[tuple[str, str, str], tuple[str, Any, str]]:
    return {(r.check, r.source, r.target): (r.status, r.port, r.address) for r in m.results}


def test_a_share_in_another_process_gives_the_same_matrix(two) -> None:  # noqa: F811
    lab = Lab.from_dict(LAB, backend="sandbox", sandbox=BOXES["a"], state_dir=two["state"])
    try:
        t0 = time.monotonic()
        assert lab.apply().ok
        print(f"\napply: {time.monotonic() - t0:.1f}s")
        one = lab.test(CHECKS, timeout=1.0, count=2)
        print(f"(a) one process: {one.summary()}")
        runner = Counted()
        lab.probe_runners = {"b": runner}
        t0 = time.monotonic()
        shared = lab.test(CHECKS, timeout=1.0, count=2)
        took = time.monotonic() - t0
        # one share process for b, gone with exit code 0 once the matrix was merged
        assert [p.proc.args[1:3] for p in runner.started] == [["-m", "hybridnb.services.probe.share"]]
        assert runner.started[0].wait(timeout=5) == 0
        print(f"(b) b's share in a subprocess, {took:.2f}s: {shared.summary()}")
        for m in (one, shared):
            assert m.ok, m.to_text()
            for check in CHECKS:
                assert m.counts(check)["fail"] == 0 and m.counts(check)["skip"] == 0, check
        assert verdicts(shared) == verdicts(one)
        assert (shared.sources, shared.targets, shared.checks) == (one.sources, one.targets,
                                                                   one.checks)
        assert shared.hosts == one.hosts and shared.hosts["c2"] == "b"
        assert shared.across_hosts() == one.across_hosts()
        assert shared.to_text().splitlines()[1:] != []       # renders as any matrix
        # the subprocess's sources really probed: the VM (guest agent) and c2, across hosts
        for src, dst in (("v1", "c1"), ("v1", "gateway"), ("c2", "c1"), ("c1", "v1"),
                         ("gateway", "c2")):
            for check in ("icmp", "tcp", "udp", "http"):
                assert shared.get(check, src, dst).ok, (check, src, dst)
        assert shared.get("dns", "v1", "c1").detail == str(lab.addresses()["c1"])

        # c2 dead (its interface down): its rows and columns fail, in about one timeout
        eps, _ = lab.probe_endpoints()
        c2 = next(e for e in eps if e.name == "c2")
        subprocess.run(["nsenter", f"--net={c2.netns}", "ip", "link", "set", "eth0", "down"],
                       check=True)
        times = {}
        for mode, runners in (("one process", None), ("subprocess", {"b": LocalRunner()})):
            lab.probe_runners = runners
            t0 = time.monotonic()
            m = lab.test(("icmp", "tcp", "udp", "http"), timeout=1.0, count=2)
            times[mode] = time.monotonic() - t0
            bad = {(r.source, r.target) for r in m.failures()}
            others = ("c1", "v1", "gateway")
            assert bad == {(s, "c2") for s in others} | {("c2", d) for d in others}, \
                (mode, m.to_text())
        print("c2 down: " + ", ".join(f"{k} {v:.2f}s" for k, v in times.items()))
        assert 1.0 <= times["subprocess"] < times["one process"] + 2.0, times
        assert times["subprocess"] < 1.0 + 4.0, times
    finally:
        lab.probe_runners = None
        done = lab.destroy()
        print(f"destroy: {done.seconds:.2f}s")
