"""VMs and containers on one bridge, by address and by name (issues 4 and 5, real engines).

One module-scoped lab in the session sandbox: three containers, three test VMs (QEMU/TCG
through the private libvirtd), a namespace host and the lab DNS service.  It reproduces the
seed's Phase 2 — VM→container and container→VM ping and HTTP, the lab host to both, RTTs
reported — and UDP between every pair, VMs included in both directions, then checks names
with the clients inside the endpoints (busybox nslookup and ping inside a container and
inside a VM), that a new endpoint resolves within a second and a
removed one is NXDOMAIN, and that destroy leaves no domain, no container and the sandbox
exactly as before.  A VM that cannot boot gives a clear error with its console, and leaves
nothing behind.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from hybridnb.errors import BootError
from hybridnb.lab import Lab
from tests.helpers import hostsnap
from tests.realengines import SANDBOX_NAME

pytestmark = [pytest.mark.real, pytest.mark.vm]
CONTAINERS = ("c1", "c2", "c3")
VMS = ("v1", "v2", "v3")


def ours(name: str) -> bool:
    return name.startswith("hnb-hy")


def docker_api(box):
    import docker

    return docker.APIClient(base_url=box.target().docker_url, version="auto")


def domains(box) -> list[str]:
    import libvirt

    conn = libvirt.open(box.target().libvirt_uri)
    try:
        return sorted(d.name() for d in conn.listAllDomains())
    finally:
        conn.close()


def docker_exec(api, container: str, argv: list[str]) -> tuple[int, str]:
    ex = api.exec_create(container, argv)
    out = api.exec_start(ex["Id"]).decode(errors="replace")
    return api.exec_inspect(ex["Id"])["ExitCode"], out


def dig(box, name: str, rtype: str = "A") -> str:
    """``dig +short`` from the lab host (the sandbox namespace) at the lab's DNS server."""
    out = subprocess.run(["nsenter", f"--net=/run/netns/{box.netns}", "dig", "+short",
                          "+tries=1", "+time=1", "@10.0.1.1", name, rtype],
                         capture_output=True, text=True, timeout=10)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def hybrid(sandbox, tmp_path_factory):
    api = docker_api(sandbox)
    net = api.create_network("hnb-prime", driver="bridge",        # dockerd's own chains first
                             options={"com.docker.network.bridge.name": "hnbprime0"})
    api.remove_network(net["Id"])
    before = hostsnap.snapshot(sandbox.netns, netns_filter=ours)
    state = tmp_path_factory.mktemp("hybrid-state")
    lab = Lab("hy", backend="sandbox", sandbox=SANDBOX_NAME, state_dir=state)
    lab.add_container("c1", services=["http/80"])           # the image's default: httpd on 80
    for name in CONTAINERS[1:]:
        lab.add_container(name)
    for name in VMS:
        lab.add_vm(name, memory=128)
    lab.add_host("h1")
    try:
        result = lab.apply()
        assert result.ok
        yield lab, sandbox, before
    finally:
        lab.destroy()


def test_seed_phase2_vm_and_container_both_ways(hybrid):
    lab, _, _ = hybrid
    m = lab.test(("icmp", "http"), timeout=2.0, count=3)
    for src, dst in (("v1", "c1"), ("c1", "v1"), ("gateway", "v1"), ("gateway", "c1")):
        for check in ("icmp", "http"):
            r = m.get(check, src, dst)
            assert r is not None and r.ok, m.to_text()
        rtt = m.get("icmp", src, dst).rtt_median
        assert rtt is not None and rtt > 0
        print(f"{src} -> {dst}: icmp median {rtt * 1000:.3f} ms")


def test_three_vms_three_containers_all_reach_each_other(hybrid):
    lab, _, _ = hybrid
    m = lab.test(("icmp", "tcp", "http", "dns"), timeout=2.0, count=2)
    assert m.ok, m.to_text()
    for check in ("icmp", "tcp", "http", "dns"):
        counts = m.counts(check)
        assert counts["fail"] == 0 and counts["skip"] == 0, (check, m.to_text())
    names = set(CONTAINERS + VMS + ("h1",))
    pairs = {(r.source, r.target) for r in m.of("icmp") if r.ok}
    assert {(a, b) for a in names for b in names if a != b} <= pairs


def test_pinned_neighbour_entries_carry_the_right_macs(hybrid):
    """Big labs get permanent neighbour entries for the probe run (the kernel's table is
    shared and capped): the MACs must be right for hosts, containers, the gateway and VMs
    (from the lab, since a VM's interface is out of reach), or those pairs go dark."""
    from hybridnb.services.probe.neighbours import pinned_neighbours

    lab, _, _ = hybrid
    eps, gateway = lab.probe_endpoints()
    for ep in eps + [gateway]:                     # forget what was learned: pin everything
        if ep.netns:
            dev = lab.spec.network.bridge if ep is gateway else "eth0"
            subprocess.run(["nsenter", f"--net={ep.netns}", "ip", "-4", "neigh", "flush",
                            "dev", dev], check=True)
    h1 = next(e for e in eps if e.name == "h1")
    v1_mac = next(r.spec["mac"] for r in lab.resources() if r.name == "v1")
    with pinned_neighbours(eps + [gateway], budget=0) as pinned:
        assert pinned > 0
        table = subprocess.run(["nsenter", f"--net={h1.netns}", "ip", "-4", "neigh", "show",
                                "nud", "permanent"], capture_output=True, text=True,
                               check=True).stdout
        v1 = next(e for e in eps if e.name == "v1")
        assert f"{v1.address} dev eth0 lladdr {v1_mac} PERMANENT" in table, table
        m = lab.test(("icmp", "tcp"), timeout=2.0, count=1, pin_neighbours=False)
        assert m.ok, m.to_text()


def test_udp_every_pair_both_ways_including_vms(hybrid):
    """Issue 6: UDP from and to VMs too (the test VM's hnb-udp probes and echoes on port 7)."""
    lab, _, _ = hybrid
    m = lab.test(("udp",), timeout=2.0, count=3)
    counts = m.counts("udp")
    assert counts["fail"] == 0 and counts["skip"] == 0, m.to_text()
    names = set(CONTAINERS + VMS + ("h1", "gateway"))
    pairs = {(r.source, r.target) for r in m.of("udp") if r.ok}
    assert {(a, b) for a in names for b in names if a != b} <= pairs
    for src, dst in (("v1", "c1"), ("c1", "v1"), ("v1", "v2"), ("gateway", "v1")):
        r = m.get("udp", src, dst)
        assert r.received == 3 and len(r.rtts) == 3 and r.port == 7, r
        print(f"{src} -> {dst}: udp median {r.rtt_median * 1000:.3f} ms")


def test_asserted_ports_get_the_same_answer_on_every_kind(hybrid):
    """Issue 11 #2: tcp/5432 and http/80 are probed against what really listens — nothing on
    5432 anywhere, httpd on 80 in the containers and the test VMs, nothing on 80 in the host
    or the lab host — from containers, hosts and VMs alike; no responder answers for them."""
    lab, _, _ = hybrid
    m = lab.test(("tcp/5432", "http/80"), timeout=2.0, count=1)
    for src in ("c1", "h1", "v1"):
        for dst in ("c2", "h1", "v2", "gateway"):
            if src != dst:
                r = m.get("tcp/5432", src, dst)
                assert r.ok is False and r.reason == "refused", r
        for dst in ("c2", "v2"):
            assert m.get("http/80", src, dst).ok, m.get("http/80", src, dst)
        for dst in ("h1", "gateway"):
            if src != dst:
                r = m.get("http/80", src, dst)
                assert r.ok is False and r.reason == "refused", r


def test_names_resolve_inside_container_and_vm(hybrid):
    lab, box, _ = hybrid
    api = docker_api(box)
    code, out = docker_exec(api, "hnb-hy-c1", ["nslookup", "v1.hybrid.local"])
    assert code == 0 and "10.0.1.200" in out, out
    code, out = docker_exec(api, "hnb-hy-c1", ["nslookup", "10.0.1.200"])
    assert code == 0 and "v1.hybrid.local" in out, out
    code, out = docker_exec(api, "hnb-hy-c1", ["ping", "-c1", "-W2", "v1.hybrid.local"])
    assert code == 0, out
    code, out = docker_exec(api, "hnb-hy-c1", ["ping", "-c1", "-W2", "v2"])   # search domain
    assert code == 0, out

    vm = lab.backend.driver("vm")
    rc, out, err = vm.guest_exec("hy", "v1", ["nslookup", "c1.hybrid.local"], timeout=10)
    assert rc == 0 and "10.0.1.100" in out, out + err
    rc, out, err = vm.guest_exec("hy", "v1", ["nslookup", "10.0.1.100"], timeout=10)
    assert rc == 0 and "c1.hybrid.local" in out, out + err
    rc, out, err = vm.guest_exec("hy", "v1", ["ping", "-c1", "-W2", "c2"], timeout=10)
    assert rc == 0, out + err


def test_new_endpoint_resolves_within_a_second_and_removed_is_nxdomain(hybrid):
    lab, box, _ = hybrid
    assert dig(box, "late.hybrid.local") == ""
    lab.add_host("late")
    plan = lab.plan()
    assert ("update", "dns") in {(a.op, a.kind) for a in plan.actions}
    lab.apply()
    t0 = time.monotonic()
    while dig(box, "late.hybrid.local") != str(lab.addresses()["late"]):
        assert time.monotonic() - t0 < 1.0, "new name not served within 1 s"
        time.sleep(0.05)
    lab.remove("late")
    lab.apply()
    out = subprocess.run(["nsenter", f"--net=/run/netns/{box.netns}", "dig", "+tries=1",
                          "+time=1", "@10.0.1.1", "late.hybrid.local"],
                         capture_output=True, text=True).stdout
    assert "status: NXDOMAIN" in out


def test_stopped_endpoint_turns_exactly_its_rows_and_columns_red(hybrid):
    lab, box, _ = hybrid
    api = docker_api(box)
    api.stop("hnb-hy-c3", timeout=1)
    try:
        t0 = time.monotonic()
        m = lab.test(("icmp",), timeout=1.0, count=1)
        elapsed = time.monotonic() - t0
        failed = {(r.source, r.target) for r in m.failures()}
        others = [n for n in CONTAINERS + VMS + ("h1", "gateway") if n != "c3"]
        assert failed == {(n, "c3") for n in others} | {("c3", n) for n in others}, m.to_text()
        assert all(r.reason for r in m.failures())
        assert {r.reason for r in m.results if r.source == "c3"} == {"c3 is not running"}
        assert elapsed < 6.0, f"a dead endpoint cost {elapsed:.1f} s, not one timeout"
        assert lab.status().endpoints[2].state == "stopped"
    finally:
        lab.apply()                                  # the stopped container is replaced
    assert lab.status().up


def test_a_stopped_vm_and_a_stopped_container_read_the_same(hybrid):
    """One state word in status and one plan reason, whatever the engine: docker's 'exited'
    and libvirt's 'shut off' are details, not states."""
    import libvirt

    lab, box, _ = hybrid
    docker_api(box).stop("hnb-hy-c2", timeout=1)
    conn = libvirt.open(box.target().libvirt_uri)
    try:
        conn.lookupByName("hnb-hy-v2").destroy()
    finally:
        conn.close()
    try:
        rows = {e.name: e for e in lab.status().endpoints}
        assert rows["c2"].state == rows["v2"].state == "stopped"
        assert rows["c2"].detail.startswith("Exited") and rows["v2"].detail == "shut off"
        reasons = {(a.op, a.kind, a.name, a.reason) for a in lab.plan().actions}
        assert reasons == {("replace", "container", "c2", "not running"),
                           ("replace", "vm", "v2", "not running")}
    finally:
        assert lab.apply().ok                        # both are replaced, and run again
    assert lab.status().up


def test_destroy_leaves_nothing(hybrid):
    lab, box, before = hybrid
    lab.destroy()
    assert [d for d in domains(box) if d.startswith("hnb-hy-")] == []
    assert docker_api(box).containers(all=True, filters={"label": "hybridnb.lab=hy"}) == []
    assert hostsnap.diff(before, hostsnap.snapshot(box.netns, netns_filter=ours)) == []


def test_vm_that_cannot_boot_is_a_clear_error_and_leaves_nothing(sandbox, state_dir,
                                                                   tmp_path):
    from hybridnb.errors import NotFoundError

    missing = Lab("hybad", backend="sandbox", sandbox=SANDBOX_NAME, state_dir=state_dir)
    missing.add_vm("broken", kernel="/nonexistent/vmlinux")
    with pytest.raises(NotFoundError, match="/nonexistent/vmlinux"):   # preflight: nothing made
        missing.apply()
    assert all(not v for v in missing._observe().values())
    not_a_kernel = tmp_path / "vmlinux"
    not_a_kernel.write_bytes(b"not a kernel\n" * 64)
    lab = Lab("hybad", backend="sandbox", sandbox=SANDBOX_NAME, state_dir=state_dir)
    lab.add_vm("broken", kernel=str(not_a_kernel))
    try:
        with pytest.raises(BootError) as info:
            lab.apply()
        text = str(info.value)
        assert "broken" in text
        assert lab._observe()["vm"] == {}
        assert [d for d in domains(sandbox) if d.startswith("hnb-hybad-")] == []
    finally:
        lab.destroy()
    assert not Path(state_dir / "hybad.json").exists()
