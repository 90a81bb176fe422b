"""VM-sourced probes at wire speed (issue 18): the test VM's resident helper, real engines.

One module-scoped lab in the session sandbox: a container and a test VM on one bridge.  The
VM's ICMP probes go through ``hnb-probe`` on its virtio-serial port (the results say so),
and a VM->container RTT median is within 2x of the container->VM median of the same pair —
both measured with kernel timestamps, one in the guest, one on the lab host.  The guest-agent
script path (forced with ``HYBRIDNB_VM_PROBE=script``) agrees with the helper in meaning: the
same verdict for every pair, the same number of echoes, RTTs of the same pairs.
"""

from __future__ import annotations

from statistics import median

import pytest

from hybridnb.lab import Lab
from hybridnb.services.probe.vmhelper import MODE_ENV, VIA_HELPER, VIA_SCRIPT
from tests.realengines import SANDBOX_NAME

pytestmark = [pytest.mark.real, pytest.mark.vm]
COUNT = 10
RUNS = 3


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


def test_vm_sourced_icmp_uses_the_helper_and_matches_the_container_side(pair, monkeypatch):
    """The medians of the pair's samples over RUNS matrix runs (the machine is shared: one
    run's median can be an outlier either way)."""
    vm_rtts: list[float] = []
    ct_rtts: list[float] = []
    for _ in range(RUNS):
        m = icmp(pair, monkeypatch, "auto")
        vm_side, ct_side = m.get("icmp", "v1", "c1"), m.get("icmp", "c1", "v1")
        assert vm_side is not None and vm_side.ok, m.to_text()
        assert ct_side is not None and ct_side.ok, m.to_text()
        assert vm_side.detail == VIA_HELPER
        assert vm_side.received == COUNT and vm_side.sent == COUNT
        for r in m.results:
            if r.source == "v1":
                assert r.ok and r.detail == VIA_HELPER, r
        vm_rtts += vm_side.rtts
        ct_rtts += ct_side.rtts
    vm_med, ct_med = median(vm_rtts), median(ct_rtts)
    ratio = vm_med / ct_med
    print(f"v1 -> c1 median {vm_med * 1e3:.3f} ms (helper), "
          f"c1 -> v1 median {ct_med * 1e3:.3f} ms: ratio {ratio:.2f}")
    assert 0.5 <= ratio <= 2.0, (vm_rtts, ct_rtts)


def test_helper_and_script_paths_agree_in_meaning(pair, monkeypatch):
    helper = icmp(pair, monkeypatch, "helper")
    script = icmp(pair, monkeypatch, "script")
    rows = {(r.source, r.target) for r in helper.results if r.source == "v1"}
    assert rows == {(r.source, r.target) for r in script.results if r.source == "v1"}
    assert rows >= {("v1", "c1"), ("v1", "c2"), ("v1", "gateway")}
    for src, dst in sorted(rows):
        h, s = helper.get("icmp", src, dst), script.get("icmp", src, dst)
        assert (h.ok, h.sent, h.received, h.address) == (s.ok, s.sent, s.received, s.address)
        assert h.detail == VIA_HELPER and s.detail == VIA_SCRIPT
        print(f"{src} -> {dst}: helper {h.rtt_median * 1e3:.3f} ms, "
              f"script {s.rtt_median * 1e3:.3f} ms")
        # the script's user-space RTT includes the guest's own overhead, never less
        assert s.rtt_median >= 0.5 * h.rtt_median
