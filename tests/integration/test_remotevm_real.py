"""A VM on a host reached only through its engines' URLs (issue 17): libvirt's remote protocol.

Two sandboxes stand in for two machines, joined by a veth underlay (192.168.249.0/30).  Host
``a`` is ``sandbox: <test sandbox>va`` (a container, the gateway, the DNS server); host ``b``
is given **only** by the Docker socket URL and the libvirt URI of sandbox
``<test sandbox>vb`` (``docker: unix://…``, ``libvirt: qemu:///system?socket=…``), and holds
the test VM.  Everything shares one filesystem here, but b's libvirtd runs in a mount
namespace of its own with a private ``/var/lib/libvirt`` (:mod:`hybridnb.daemons.libvirtd`),
so a path under it is *not* a path of this process.  Checked:

* the remote path was taken: the domain's kernel and initramfs are volumes of b's
  ``hybridnb`` storage pool (listed through libvirt's API), under the pool's directory as
  b's libvirtd sees it — a path that does not exist for this process — and with the same
  bytes as the local test image (read through ``/proc/<libvirtd>/root``); the serial
  console is a pty, read through libvirt (the ready marker is in the local copy);
* the VM answers pings and name lookups from the container on a across the VXLAN, and
  reaches the container (``lab.exec`` in the VM runs through the guest agent over libvirt);
* a second VM on b boots from the same two volumes (uploaded once);
* a VM stopped and started again boots with its console read anew;
* watching the VM on b works as for a container there: the report's traffic section (a
  ``monitor`` recording) has a row for v1 on host b with the pings' bytes, read from its tap
  in the agent's link dump, and a capture on v1's port is made by b's agent;
* a second apply is a no-op and uploads nothing; an upload of the same kernel again is a
  lookup (content-keyed);
* destroy removes the volumes and the pool it made (b's storage pools as before) and leaves
  both sandboxes' namespace snapshots as before.

Every packet goes to an address this test made, inside those namespaces.
"""

from __future__ import annotations

import hashlib
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Iterator

import pytest

from hybridnb import multihost_apply
from hybridnb.lab import Lab
from tests.gating import require_real
from tests.helpers import hostsnap
from tests.helpers.twohosts import snapshots, two_sandboxes
from tests.realengines import ENGINE_TOOLS, SANDBOX_NAME

pytestmark = [pytest.mark.real, pytest.mark.vm]

UNDERLAY = "192.168.249.0/30"
ULINK = ("hnbrv0", "hnbrv1")
BOXES = {"a": f"{SANDBOX_NAME}va", "b": f"{SANDBOX_NAME}vb"}


def ours(name: str) -> bool:
    return name.startswith("hnb-rvl")


def lab_dict(b: dict[str, str]) -> dict[str, Any]:
    return {"name": "rvl",
            "hosts": {"a": {"sandbox": BOXES["a"], "underlay": "192.168.249.1"},
                      "b": {"docker": b["docker"], "libvirt": b["libvirt"],
                            "underlay": "192.168.249.2"}},
            "endpoints": {"c1": {"kind": "container"},
                          "v1": {"kind": "vm", "template": "test", "memory": 128,
                                 "host": "b"},
                          "v2": {"kind": "vm", "template": "test", "memory": 128,
                                 "host": "b"}}}


def pools(uri: str) -> list[str]:
    import libvirt

    conn = libvirt.open(uri)
    try:
        return sorted(p.name() for p in conn.listAllStoragePools(0))
    finally:
        conn.close()


def scrub_pool(uri: str) -> None:
    """Remove a ``hybridnb`` pool an earlier, failed run left in this test's sandbox (its
    libvirt configuration persists between runs)."""
    import libvirt

    from hybridnb.drivers.vmpool import VolumePool

    conn = libvirt.open(uri)
    try:
        pool = VolumePool(lambda: conn, "sandbox b")
        if pool.lookup() is None:
            return
        pool.ensure()
        pool.release("hnb", set(pool.volumes().values()), [])    # every hnb-* volume too
    finally:
        conn.close()


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> Iterator[dict[str, Any]]:
    require_real(tools=ENGINE_TOOLS)
    with two_sandboxes(BOXES, UNDERLAY, ULINK, ours, libvirt=("b",),
                       prepare=lambda boxes: scrub_pool(boxes["b"].target().libvirt_uri)
                       ) as (boxes, before):
        target = boxes["b"].target()
        b = {"docker": target.docker_url, "libvirt": target.libvirt_uri}
        yield {"boxes": boxes, "before": before, "b": b, "pools": pools(b["libvirt"]),
               "state": tmp_path_factory.mktemp("remotevm-state")}


def open_lab(two: dict[str, Any]) -> Lab:
    return Lab.from_dict(lab_dict(two["b"]), backend="sandbox", sandbox=BOXES["a"],
                         state_dir=two["state"])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_vm_on_a_host_given_only_by_its_engine_urls(two) -> None:
    from hybridnb.images import testvm

    boxes, uri = two["boxes"], two["b"]["libvirt"]
    lab = open_lab(two)
    plan = lab.plan()
    assert ("vm", "v1") in {(a.kind, a.name) for a in dict(plan.hosts)["b"].actions}
    backend = multihost_apply.host_backend(lab, "b")
    vm = backend.drivers["vm"]
    assert backend.name == "remote" and vm.remote == "host b" and vm.pool is not None
    try:
        t0 = time.monotonic()
        result = lab.apply()
        print(f"apply (imports the agent image, uploads the test VM's files, boots v1 and v2 on b): "
              f"{time.monotonic() - t0:.2f}s")
        assert result.ok, result
        print(f"uploaded into b's pool: {vm.pool.uploaded}")
        assert len(vm.pool.uploaded) == 2, "two VMs, one kernel and one initramfs uploaded"
        check_remote_files(two, lab, vm)
        check_reach(lab)
        check_watch(lab)
        # a second apply: nothing to do, nothing uploaded
        again = open_lab(two)
        t0 = time.monotonic()
        second = again.apply()
        print(f"second apply: {time.monotonic() - t0:.2f}s, {second.plan.to_text().strip()}")
        assert second.ok and second.plan.empty, second
        vm2 = multihost_apply.host_backend(again, "b").drivers["vm"]
        assert vm2.pool.uploaded == []
        img = testvm.find(None)
        kernel = vm2.pool.upload(Path(img.kernel))           # there already: a lookup
        assert vm2.pool.uploaded == [] and kernel.startswith(vm2.pool.path + "/")
        check_disk_volumes(vm2, next(r.spec for r in plan.desired if r.kind == "vm"),
                           two["state"])
        # a VM stopped and started again: its console is opened anew (taken over from the
        # first apply's copy, which ended with the domain) and appended to the same copy
        t0 = time.monotonic()
        vm2.stop("rvl", "v2")
        vm2.start("rvl", "v2")
        print(f"v2 stopped and started again: {time.monotonic() - t0:.2f}s")
        assert vm2.console("rvl", "v2", lines=1000).count("HYBRIDNB-READY name=v2") == 2
        again.exec("v2", f"ping -c1 -W2 {again.addresses()['c1']}").check()
        status = again.status()
        print(status)
        assert {e.name: e.state for e in status.endpoints} == {"c1": "up", "v1": "up",
                                                               "v2": "up"}
    finally:
        t0 = time.monotonic()
        done = open_lab(two).destroy()
        print(f"destroy: {time.monotonic() - t0:.2f}s")
    assert done.ok, done
    assert pools(uri) == two["pools"], "the storage pool outlived the lab"
    lv = boxes["b"].daemon("libvirtd").pid
    assert not Path(f"/proc/{lv}/root{vm.pool.path}").exists(), "the pool's directory stayed"
    after = snapshots(boxes, ours)        # the underlay was linked before the snapshots
    for h in boxes:
        assert hostsnap.diff(two["before"][h], after[h]) == [], h
    print("after destroy: b's storage pools and both snapshots as before")


def check_remote_files(two: dict[str, Any], lab: Lab, vm: Any) -> None:
    """The domain boots from volumes of b's pool, at paths only b's libvirtd sees, with the
    local image's bytes; its console is a pty read through libvirt."""
    import libvirt

    from hybridnb.images import testvm

    conn = libvirt.open(two["b"]["libvirt"])
    try:
        root = ET.fromstring(conn.lookupByName("hnb-rvl-v1").XMLDesc(0))
        other = ET.fromstring(conn.lookupByName("hnb-rvl-v2").XMLDesc(0))
        pool = conn.storagePoolLookupByName("hybridnb")
        vols = {v.name(): v.path() for v in pool.listAllVolumes(0)}
        pool_dir = ET.fromstring(pool.XMLDesc(0)).findtext("./target/path")
    finally:
        conn.close()
    img = testvm.find(None)
    kernel, initrd = root.findtext("./os/kernel"), root.findtext("./os/initrd")
    print(f"b's pool {pool_dir}: {sorted(vols)}; kernel {kernel}; initrd {initrd}")
    assert set(vols.values()) == {kernel, initrd}, (vols, kernel, initrd)
    assert (other.findtext("./os/kernel"), other.findtext("./os/initrd")) == (kernel, initrd)
    lv = two["boxes"]["b"].daemon("libvirtd").pid
    for path, local in ((kernel, Path(img.kernel)), (initrd, Path(img.initrd))):
        assert path.startswith(pool_dir + "/") and path != str(local)
        assert not Path(path).exists(), f"{path} is a path of this process too"
        assert sha256(Path(f"/proc/{lv}/root{path}")) == sha256(local)
    serial = root.find("./devices/serial")
    assert serial is not None and serial.get("type") == "pty", ET.tostring(serial)
    assert vm.probe_channel("rvl", "v1") is None
    assert "HYBRIDNB-READY" in vm.console("rvl", "v1"), vm.console("rvl", "v1")


def check_disk_volumes(vm: Any, spec: dict[str, Any], tmp: Path) -> None:
    """What a recipe or cloud VM needs beside its boot files, made on b without booting one:
    a qcow2 overlay made on b on the uploaded base image, the seed ISO uploaded; released
    again (with the base nobody else uses), the test VM's volumes untouched."""
    import libvirt

    from hybridnb.drivers.vmpool import backing_path

    base = tmp / "base.img"
    base.write_bytes(b"hybridnb" * 131072)                    # 1 MiB, raw
    before = vm.pool.volumes()
    vmdir = tmp / "hnb-rvl-x"                                  # only its name is used
    disk = vm._overlay(base, vmdir)
    seed = vm._seed("rvl", {**spec, "template": "base"}, vmdir)
    vols = vm.pool.volumes()
    base_path = vols[next(n for n in vm.pool.uploaded if n.endswith("-base.img"))]
    assert {disk, seed, base_path} == set(vols.values()) - set(before.values()), vols
    assert disk.endswith("/hnb-rvl-x-disk.qcow2") and seed.endswith("/hnb-rvl-x-seed.iso")
    conn = libvirt.open(vm.uri)
    try:
        vol = conn.storageVolLookupByPath(disk)
        assert backing_path(vol.XMLDesc(0)) == base_path
        assert ET.fromstring(vol.XMLDesc(0)).find("./target/format").get("type") == "qcow2"
    finally:
        conn.close()
    gone = vm.pool.release("hnb-rvl-x", {disk, base_path}, vm._other_xmls())
    print(f"overlay and seed made on b, then released: {gone}")
    assert sorted(gone) == sorted(n for n, p in vols.items() if p in {disk, seed, base_path})
    assert vm.pool.volumes() == before


def check_watch(lab: Lab) -> None:
    """v1's tap on b, named by b's libvirt, is monitored and captured through b's agent."""
    import threading

    v1 = str(lab.addresses()["v1"])
    got: dict[str, Any] = {}
    t0 = time.monotonic()
    watcher = threading.Thread(target=lambda: got.update(
        report=lab.report(probe=False, monitor=3.0, sections=["traffic"])))
    watcher.start()
    time.sleep(0.7)                                  # the first reading is taken
    lab.exec("c1", f"ping -c 8 -i 0.2 -s 1000 -W 2 {v1}", timeout=30).check()
    watcher.join(30)
    traffic = got["report"].data.section("traffic").data
    print(f"report with 3 s of monitor, 8 x 1000 B pings c1 -> v1: "
          f"{time.monotonic() - t0:.2f}s; {traffic['headline']}")
    assert traffic["not_watched"] == [], traffic["not_watched"]
    row = {r["endpoint"]: r for r in traffic["endpoints"]}["v1"]
    print(f"  v1@{row['host']}: tx {row['tx_bytes']} rx {row['rx_bytes']} via {row['port']}")
    assert row["host"] == "b" and row["tx_bytes"] > 7000 and row["rx_bytes"] > 7000, row
    t0 = time.monotonic()
    with lab.capturing("v1", bpf="icmp", count=4) as cap:
        lab.exec("c1", f"ping -c 2 -i 0.2 -W 2 {v1}", timeout=30).check()
        cap.wait(10)
    assert cap.result is not None
    print(f"capture on v1's port (host b): {time.monotonic() - t0:.2f}s: "
          f"{cap.result.headline()}")
    assert cap.result.captured == 4 and cap.result.address == v1, cap.result


def check_reach(lab: Lab) -> None:
    """Container on a → VM on b by address and by name; VM → container (guest agent)."""
    addr = {n: str(a) for n, a in lab.addresses().items()}
    lab.exec("c1", f"ping -c1 -W2 {addr['v1']}").check()
    out = lab.exec("c1", "nslookup v1.hybrid.local").check()
    assert addr["v1"] in out.stdout, out
    lab.exec("c1", "ping -c1 -W2 v1.hybrid.local").check()
    lab.exec("v1", f"ping -c1 -W2 {addr['c1']}").check()
    lab.exec("v1", "ping -c1 -W2 c1.hybrid.local").check()
    lab.exec("v2", f"ping -c1 -W2 {addr['v1']}").check()
    print(f"c1 ({addr['c1']}, a) <-> v1 ({addr['v1']}, b): by address and by name")
