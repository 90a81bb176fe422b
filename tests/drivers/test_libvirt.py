"""The libvirt VM driver against a private libvirtd, booting the small test VM under TCG.

Everything happens in a private network namespace (``hnb-vt-<pid>``: lo, a bridge ``hvt0``
with the gateway 10.0.1.1/24, no default route) with its own libvirtd; traffic goes only to the
VM addresses assigned here.  VM boots cost seconds each, so they are few: vm1 (96 MiB, the
minimum) serves most checks, two more join it to show concurrent creates, one panics for lack
of memory, and a bad kernel fails before any boot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hybridnb.core import naming, vmxml
from hybridnb.core.resource import Resource
from hybridnb.errors import BootError, ConflictError, NotFoundError
from hybridnb.target import Target
from tests.gating import require_real

pytestmark = [pytest.mark.real, pytest.mark.vm]

LAB = "vt"
BRIDGE = "hvt0"
GATEWAY = "10.0.1.1"
HOST_LIBVIRT = ("/etc/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt",
                "/run/libvirt")


def vm(name: str, address: str, memory: int = 96, **extra) -> Resource:
    spec = {"endpoint": name, "hostname": name, "address": address, "prefix": 24,
            "gateway": GATEWAY, "bridge": BRIDGE, "mtu": 1500, "dns": [GATEWAY],
            "domain": "hybrid.local", "domain_name": naming.object_name(LAB, name),
            "template": "test", "memory": memory, "vcpus": 1,
            "mac": naming.mac_address(LAB, name), "image": None, "kernel": None,
            "initrd": None}
    spec.update(extra)
    return Resource("vm", name, spec, f"{address} test VM")


def host_tree() -> dict[str, tuple[int, int]]:
    """Files under the host's libvirt paths with (size, mtime): must not change."""
    out = {}
    for top in HOST_LIBVIRT:
        for dirpath, _dirs, files in os.walk(top):
            for f in [dirpath, *(os.path.join(dirpath, n) for n in files)]:
                try:
                    st = os.lstat(f)
                except OSError:
                    continue
                out[f] = (st.st_size, int(st.st_mtime))
    return out


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture(scope="module")
def env():
    require_real(tools=("libvirtd", "virtlogd", "qemu-system-x86_64", "nsenter", "unshare",
                        "apt-get", "dpkg-deb", "genisoimage"))
    try:
        import libvirt  # noqa: F401
    except ImportError:
        require_real("libvirt-python is not installed")
        pytest.skip("libvirt-python is not installed")
    from hybridnb.daemons import libvirtd
    from hybridnb.drivers.libvirt import LibvirtDriver
    from hybridnb.images import testvm

    testvm.build()                               # idempotent; ~8 s the first time
    ns = f"hnb-vt-{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="hnb-vt-"))
    before = host_tree()
    sh("ip", "netns", "add", ns)
    daemon = None
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "-n", ns, "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
        sh("ip", "-n", ns, "link", "set", BRIDGE, "up")
        t0 = time.monotonic()
        daemon = libvirtd.start(ns, work / "root", work / "run")
        print(f"\nprivate libvirtd up in {time.monotonic() - t0:.1f} s")
        target = Target("vt", netns=ns, libvirt_uri=daemon.endpoint)
        driver = LibvirtDriver(target, files_dir=work / "vms", boot_timeout=90)
        yield {"ns": ns, "driver": driver, "daemon": daemon, "work": work, "before": before}
        driver.close()
    finally:
        if daemon is not None:
            libvirtd.stop(daemon)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def vm1(env):
    """vm1 at 10.0.1.200 with 96 MiB (the minimum), booted once for the module."""
    events: list[tuple[str, float]] = []
    t0 = time.monotonic()
    env["driver"].create(LAB, vm("vm1", "10.0.1.200"), progress=lambda e, f: events.append((e, f)))
    print(f"\nvm1 up in {time.monotonic() - t0:.1f} s: {events}")
    return {"events": events, "resource": vm("vm1", "10.0.1.200")}


def icmp(ns: str, dst: str) -> float | None:
    from tests.helpers.privnet import icmp_ping
    return icmp_ping(ns, dst, timeout=2.0)


def http_get(ns: str, address: str) -> str:
    from hybridnb.drivers import nsutil
    sock = nsutil.socket_in_netns(ns)
    sock.settimeout(5)
    try:
        sock.connect((address, 80))
        sock.sendall(f"GET / HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    finally:
        sock.close()
    return b"".join(chunks).decode(errors="replace")


def test_vm_boots_and_is_reachable(env, vm1) -> None:
    drv, ns = env["driver"], env["ns"]
    stages = [e.split(": ", 1)[1] for e, _ in vm1["events"]]
    assert stages[0] == "defining" and stages[-1] == "agent up"
    assert "ready marker seen" in stages
    fractions = [f for _, f in vm1["events"]]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert "HYBRIDNB-READY name=vm1 ip=10.0.1.200" in drv.console(LAB, "vm1")
    seen = drv.observe(LAB)
    assert set(seen) == {"vm1"} and seen["vm1"].running
    assert seen["vm1"].fingerprint == vm1["resource"].fingerprint
    assert drv.state(LAB, "vm1") == "running"
    rtt = icmp(ns, "10.0.1.200")
    assert rtt is not None, "vm1 does not answer ping on the bridge"
    page = http_get(ns, "10.0.1.200")
    assert " 200 " in page.splitlines()[0] and "vm1" in page
    print(f"\nping {rtt * 1000:.2f} ms")


def test_guest_exec(env, vm1) -> None:
    drv = env["driver"]
    code, out, err = drv.guest_exec(LAB, "vm1", ["ping", "-c1", "-W2", GATEWAY])
    assert code == 0, out + err
    assert "1 packets received" in out
    code, out, _ = drv.guest_exec(LAB, "vm1", ["cat", "/etc/resolv.conf"])
    assert code == 0
    assert f"nameserver {GATEWAY}" in out and "search hybrid.local" in out
    res = drv.guest_exec(LAB, "vm1", ["sh", "-c", "cat; echo oops >&2; exit 3"], input="hi")
    assert res == (3, "hi", "oops\n")
    assert drv.agent_ping(LAB, "vm1")
    with pytest.raises(NotFoundError):
        drv.guest_exec(LAB, "nosuchvm", ["true"])


def test_three_vms_in_parallel(env, vm1) -> None:
    """Two more VMs created concurrently; all three reach each other from inside."""
    drv, ns = env["driver"], env["ns"]
    more = [vm("vm2", "10.0.1.201"), vm("vm3", "10.0.1.202")]
    t0 = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda r: drv.create(LAB, r), more))
    print(f"\n2 VMs up concurrently in {time.monotonic() - t0:.1f} s")
    try:
        assert set(drv.observe(LAB)) == {"vm1", "vm2", "vm3"}
        addrs = {"vm1": "10.0.1.200", "vm2": "10.0.1.201", "vm3": "10.0.1.202"}
        for src in addrs:
            for dst, ip in addrs.items():
                if src != dst:
                    code, out, err = drv.guest_exec(LAB, src, ["ping", "-c1", "-W2", ip])
                    assert code == 0, f"{src} -> {dst}: {out}{err}"
        for ip in addrs.values():
            assert icmp(ns, ip) is not None
    finally:
        for r in more:
            drv.delete(LAB, r.name)
    assert set(drv.observe(LAB)) == {"vm1"}


def test_bad_kernel_path_leaves_nothing(env) -> None:
    drv = env["driver"]
    res = vm("badk", "10.0.1.210", kernel="/nonexistent/vmlinux", initrd="/nonexistent/initrd")
    with pytest.raises(BootError) as err:
        drv.create(LAB, res)
    assert "/nonexistent/vmlinux" in err.value.console
    assert "badk" in str(err.value)
    assert drv.state(LAB, "badk") is None
    assert not (drv.files_dir / res.spec["domain_name"]).exists()
    assert "badk" not in drv.observe(LAB)


def test_too_little_memory_panics_with_console_tail(env) -> None:
    drv = env["driver"]
    res = vm("tiny", "10.0.1.211", memory=80)
    with pytest.raises(BootError) as err:
        drv.create(LAB, res)
    assert "Kernel panic" in err.value.message
    assert err.value.console.strip()
    assert drv.state(LAB, "tiny") is None
    assert not (drv.files_dir / res.spec["domain_name"]).exists()


def test_foreign_domains_are_left_alone(env) -> None:
    """A domain of another lab (or without our metadata) is not observed, not replaced and
    not deleted."""
    import libvirt
    drv = env["driver"]
    other = dict(vm("vm9", "10.0.1.219").spec)
    xml = vmxml.domain_xml("otherlab", {**other, "domain_name": naming.object_name(LAB, "vm9")},
                           kernel="/k", initrd="/i", console_log="/dev/null")
    conn = libvirt.open(env["daemon"].endpoint)
    dom = conn.defineXML(xml)                     # defined only, never started
    try:
        assert "vm9" not in drv.observe(LAB)
        with pytest.raises(ConflictError):
            drv.delete(LAB, "vm9")
        with pytest.raises(ConflictError):
            drv.create(LAB, vm("vm9", "10.0.1.219"))
        assert dom.isActive() == 0 and conn.lookupByName(naming.object_name(LAB, "vm9"))
    finally:
        dom.undefine()
        conn.close()


def test_stopped_vm_differs_then_delete_removes_everything(env, vm1) -> None:
    import libvirt
    drv = env["driver"]
    fp = vm1["resource"].fingerprint
    conn = libvirt.open(env["daemon"].endpoint)
    try:
        conn.lookupByName(naming.object_name(LAB, "vm1")).destroy()
    finally:
        conn.close()
    seen = drv.observe(LAB)["vm1"]
    assert (seen.fingerprint, seen.running, seen.reason) == (fp, False, "shut off")
    assert drv.state(LAB, "vm1") == "shut off"
    drv.delete(LAB, "vm1")
    assert drv.observe(LAB) == {}
    assert drv.state(LAB, "vm1") is None
    assert not (drv.files_dir / naming.object_name(LAB, "vm1")).exists()
    drv.delete(LAB, "vm1")                       # already gone: fine


def test_host_libvirt_paths_untouched(env) -> None:
    """Everything above ran in the private libvirtd: the host's libvirt paths are as before
    (an empty /run/libvirt mount point may have been created)."""
    after = host_tree()
    changed = sorted(p for p in set(after) | set(env["before"])
                     if after.get(p) != env["before"].get(p) and p != "/run/libvirt")
    assert changed == []
