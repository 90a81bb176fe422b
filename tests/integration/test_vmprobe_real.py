"""VM-sourced probes at wire speed (issue 18): the test VM's resident helper, real engines.

One module-scoped lab in the session sandbox: two containers and a test VM on one bridge.
The VM's ICMP probes go through ``hnb-probe`` on its virtio-serial port (the results say so),
and a VM->container RTT median is within 2x of the container->VM median of the same pair —
both measured with kernel timestamps, one in the guest, one on the lab host — for the pair
alone and in a whole matrix (echoes towards the VM paced, both engines).  The guest-agent
script path (forced with ``HYBRIDNB_VM_PROBE=script``) agrees with the helper in meaning: the
same verdict for every pair, the same number of echoes, RTTs of the same pairs.
"""

from __future__ import annotations

from statistics import median

import pytest

from hybridnb.lab import Lab
from hybridnb.services.probe import probe_matrix
from hybridnb.services.probe.vmhelper import MODE_ENV, VIA_HELPER, VIA_SCRIPT
from tests.realengines import SANDBOX_NAME

pytestmark = [pytest.mark.real, pytest.mark.vm]
COUNT = 10
RUNS = 25


@pytest.fixture(scope="module")
def pair(sandbox, tmp_path_factory):
    state = tmp_path_factory.mktemp("vmprobe-state")
    lab = Lab("vmprobe", backend="sandbox", sandbox=SANDBOX_NAME, state_dir=state)
    lab.add_container("c1")
    lab.add_container("c2")
    lab.add_vm("v1", memory=128)
    try:
        assert lab.apply().ok
        yield lab
    finally:
        lab.destroy()


def icmp(lab: Lab, monkeypatch, mode: str):
    monkeypatch.setenv(MODE_ENV, mode)
    lab.test(("icmp",), timeout=2.0, count=3)            # warm: neighbours, the helper's port
    return lab.test(("icmp",), timeout=2.0, count=COUNT)


def test_vm_sourced_icmp_goes_through_the_helper(pair, monkeypatch):
    m = icmp(pair, monkeypatch, "auto")
    rows = [r for r in m.results if r.source == "v1"]
    assert {r.target for r in rows} >= {"c1", "c2", "gateway"}
    for r in rows:
        assert r.ok and r.detail == VIA_HELPER, r
        assert (r.sent, r.received, len(r.rtts)) == (COUNT, COUNT, COUNT), r
    assert m.get("icmp", "c1", "v1").ok


def test_vm_sourced_rtt_within_2x_of_the_container_side_of_the_same_pair(pair, monkeypatch):
    """The pair alone (one echo each way per run, RUNS runs, medians of the samples); the
    whole matrix: the next test."""
    monkeypatch.setenv(MODE_ENV, "auto")
    eps, _ = pair.probe_endpoints()
    two = [e for e in eps if e.name in ("c1", "v1")]
    seen = []
    # A TCG guest's timing is noisy: in ~1 benchmark run of 12 on a quiet machine the ratio
    # read 2.2-2.3x.  A second, independent measurement is taken when the first is out of
    # range; both out of range fails.
    for _ in range(2):
        vm_rtts: list[float] = []
        ct_rtts: list[float] = []
        for _ in range(RUNS):
            m = probe_matrix(two, ("icmp",), timeout=2.0, count=1)
            vm_side, ct_side = m.get("icmp", "v1", "c1"), m.get("icmp", "c1", "v1")
            assert vm_side.ok and ct_side.ok, m.to_text()
            assert vm_side.detail == VIA_HELPER
            vm_rtts += vm_side.rtts
            ct_rtts += ct_side.rtts
        vm_med, ct_med = median(vm_rtts), median(ct_rtts)
        ratio = vm_med / ct_med
        print(f"v1 -> c1 median {vm_med * 1e3:.3f} ms (helper), "
              f"c1 -> v1 median {ct_med * 1e3:.3f} ms: ratio {ratio:.2f}")
        seen.append(ratio)
        if 0.5 <= ratio <= 2.0:
            break
    assert 0.5 <= seen[-1] <= 2.0, seen


@pytest.mark.parametrize("engine", ["fast", "portable"])
def test_in_a_whole_matrix_too_because_echoes_towards_the_vm_are_paced(pair, monkeypatch,
                                                                        engine):
    """Every pair, COUNT echoes each: an emulated guest answers a burst only once it has
    processed all of it, so unpaced the container -> VM RTTs measured the burst (0.11-0.33x);
    both engines send echoes towards a VM one at a time (schedule.Pacer)."""
    monkeypatch.setenv("HYBRIDNB_PROBE_ENGINE", engine)
    seen = []
    for _ in range(2):                   # noisy guest timing: a second measurement, as above
        m = icmp(pair, monkeypatch, "auto")
        vm_med = median(m.get("icmp", "v1", c).rtt_median for c in ("c1", "c2"))
        ct_med = median(m.get("icmp", c, "v1").rtt_median for c in ("c1", "c2"))
        seen.append(vm_med / ct_med)
        print(f"{engine}: v1 -> containers {vm_med * 1e3:.3f} ms, containers -> v1 "
              f"{ct_med * 1e3:.3f} ms: ratio {seen[-1]:.2f}")
        if 0.5 <= seen[-1] <= 2.0:
            break
    assert 0.5 <= seen[-1] <= 2.0, seen


def test_helper_and_script_paths_agree_in_meaning(pair, monkeypatch):
    """ICMP and TCP from the VM, every pair, both paths: the same verdicts and counts; ICMP
    RTTs of the same order (the script's user-space ping adds the guest's own overhead, so
    its fastest echo is no faster than half the helper's)."""
    runs = {}
    for mode in ("helper", "script"):
        monkeypatch.setenv(MODE_ENV, mode)
        runs[mode] = pair.test(("icmp", "tcp"), timeout=2.0, count=COUNT)
    helper, script = runs["helper"], runs["script"]
    rows = {(r.check, r.target) for r in helper.results if r.source == "v1"}
    assert rows == {(r.check, r.target) for r in script.results if r.source == "v1"}
    assert rows >= {(c, t) for c in ("icmp", "tcp") for t in ("c1", "c2", "gateway")}
    for check, dst in sorted(rows):
        h, s = helper.get(check, "v1", dst), script.get(check, "v1", dst)
        assert (h.ok, h.sent, h.received, h.address, h.port) == (
            s.ok, s.sent, s.received, s.address, s.port), (h, s)
        assert h.detail == VIA_HELPER and s.detail == VIA_SCRIPT
        if check == "icmp":
            print(f"v1 -> {dst}: helper median {h.rtt_median * 1e3:.3f} ms, min "
                  f"{h.rtt_min * 1e3:.3f} ms; script median {s.rtt_median * 1e3:.3f} ms, "
                  f"min {s.rtt_min * 1e3:.3f} ms")
            # the fastest echo of each path: a helper that timed anything but the echo (its
            # batch, a process start) is slow on every echo, so its minimum shows it; medians
            # also carry the emulated guest's busy spells (TCP connects to its httpd forking
            # at the run's start: a helper median of 5.2 ms over first echoes of 28, 16, 3 ms
            # and then 0.25 ms was seen once on a loaded machine)
            assert s.rtt_min >= 0.5 * h.rtt_min


def test_every_check_from_the_vm_icmp_tcp_by_the_helper_the_rest_by_the_script(pair,
                                                                                monkeypatch):
    monkeypatch.setenv(MODE_ENV, "auto")
    checks = ("icmp", "tcp", "udp", "http")
    m = pair.test(checks, timeout=2.0, count=3)
    for check in checks:
        for dst in ("c1", "c2", "gateway"):
            r = m.get(check, "v1", dst)
            assert r is not None and r.ok, m.to_text()
            assert (r.detail == VIA_HELPER) == (check in ("icmp", "tcp")), r
            if check == "tcp":
                assert len(r.rtts) == 1 and 0 < r.rtts[0] < 2.0, r      # the handshake RTT
