"""One matrix run as two hosts' shares, against real namespaces (root, kernel only).

A private bridge with four namespace hosts (:class:`NetLab`): h00 and h01 are "host a",
h02, h03 and the gateway "host b".  The matrix run as shares — both in this process, or b's
in a subprocess started by :class:`~hybridnb.drivers.runner.LocalRunner` (a stand-in
for a remote host: nothing shared but the pipes) — gives the same pairs and the same verdicts
as one :func:`probe_matrix`; a dead endpoint of b still costs one timeout.  Both engines.
"""

from __future__ import annotations

import time

import pytest

from hybridnb.services.probe import probe_matrix
from hybridnb.services.probe.coordinate import probe_shares
from hybridnb.drivers.runner import LocalRunner
from tests.gating import require_real
from tests.services.probe.netlab import NetLab, TinyDNS

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("probe_engine")]

CHECKS = ("icmp", "tcp", "udp", "http", "dns")
DOMAIN = "probe.test"
PLACEMENT = {"h00": "a", "h01": "a", "h02": "b", "h03": "b", "gateway": "b"}


@pytest.fixture(scope="module")
def lab():
    require_real(tools=("ip", "nsenter", "busybox"))
    with NetLab(4) as lab:
        dns = TinyDNS(lab.lab, lab.gateway, {ep.name: ep.address for ep in lab.endpoints()})
        try:
            yield lab
        finally:
            dns.close()


def kw(lab, **more):
    return {"gateway": lab.gateway_endpoint(), "domain": DOMAIN, "timeout": 0.5, "count": 2,
            **more}


def verdicts(m):
    return {(r.check, r.source, r.target): (r.status, r.port, r.address) for r in m.results}


@pytest.mark.parametrize("b_runs", ["in-process", "subprocess"])
def test_shares_give_the_one_process_matrix(lab, b_runs):
    one = probe_matrix(lab.endpoints(), CHECKS, **kw(lab))
    runners = {"b": LocalRunner()} if b_runs == "subprocess" else {}
    t0 = time.perf_counter()
    shared = probe_shares(lab.endpoints(), CHECKS, placement=PLACEMENT, runners=runners,
                          **kw(lab))
    took = time.perf_counter() - t0
    assert one.ok and shared.ok, shared.to_text()
    assert verdicts(shared) == verdicts(one)
    assert [(r.check, r.source, r.target) for r in shared.results] == \
        [(r.check, r.source, r.target) for r in one.results]
    assert (shared.sources, shared.targets, shared.checks) == (one.sources, one.targets,
                                                               one.checks)
    assert shared.counts() == one.counts() == {"ok": 4 * 4 * 4 + 4 * 3, "fail": 0, "skip": 0}
    # cross-share pairs really went both ways, answered by the other share's responders
    assert shared.get("tcp", "h00", "h02").ok and shared.get("udp", "h03", "h01").ok
    assert shared.get("http", "h01", "gateway").detail == "HTTP 200"
    assert shared.get("dns", "h00", "h03").detail == lab.address(3)
    print(f"\nshares ({b_runs}): {took:.2f}s, one process: {one.duration:.2f}s")
    assert took < 10


def test_a_dead_endpoint_of_the_subprocess_share_costs_one_timeout(lab):
    lab.link(3, False)
    try:
        t0 = time.perf_counter()
        m = probe_shares(lab.endpoints(), ("icmp", "tcp", "udp", "http"), placement=PLACEMENT,
                         runners={"b": LocalRunner()}, **kw(lab))
        took = time.perf_counter() - t0
    finally:
        lab.link(3, True)
        for _ in range(20):
            if probe_matrix(lab.endpoints(), ("icmp",), gateway=lab.gateway_endpoint(),
                            timeout=0.1, count=1).ok:
                break
    failed = {(r.check, r.source, r.target) for r in m.failures()}
    expected = set()
    for check in ("icmp", "tcp", "udp", "http"):
        for other in ("h00", "h01", "h02"):
            expected |= {(check, "h03", other), (check, other, "h03")}
        expected.add((check, "h03", "gateway"))
    assert failed == expected, (sorted(failed - expected), sorted(expected - failed),
                                [r for r in m.failures() if r.source == 'h03'][:3])
    # the subprocess's start (an interpreter, the import) costs ~0.5 s here; the 40 failed
    # pairs share one 0.5 s timeout
    print(f"\ndead h03: {took:.2f}s, {len(failed)} failed")
    assert 0.5 <= took < 0.5 + 2.5, took
