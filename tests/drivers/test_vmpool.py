"""A remote libvirt's VM files (hybridnb.drivers.vmpool): the pure parts, and which volumes a
release deletes (against a stand-in pool; the real one: tests/integration/test_remotevm_real.py),
what the driver in its remote mode puts into the domain XML (qemu-img and genisoimage make the
local inputs, as for a local VM)."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hybridnb.core import vmxml
from hybridnb.drivers import vmpool
from tests.core.vmlabs import vm_specs


def test_volume_names_are_keyed_by_content(tmp_path: Path) -> None:
    a, b = tmp_path / "vmlinux", tmp_path / "other" / "vmlinux"
    b.parent.mkdir()
    a.write_bytes(b"kernel")
    b.write_bytes(b"kernel")
    name = vmpool.volume_name(a)
    assert name == vmpool.volume_name(b) and name.endswith("-vmlinux")
    assert name == hashlib.sha256(b"kernel").hexdigest()[:16] + "-vmlinux"
    b.write_bytes(b"kernel 2")
    assert vmpool.volume_name(b) != name
    assert vmpool.is_keyed(name) and not vmpool.is_keyed(name + ".part")
    assert not vmpool.is_keyed("hnb-lab-vm1-disk.qcow2") and not vmpool.is_keyed("x")


def test_pool_and_volume_xml() -> None:
    pool = ET.fromstring(vmpool.pool_xml())
    assert pool.get("type") == "dir" and pool.findtext("name") == "hybridnb"
    assert pool.findtext("target/path") == vmpool.POOL_PATH
    vol = ET.fromstring(vmpool.volume_xml("a&b", 42))
    assert vol.findtext("name") == "a&b" and vol.findtext("capacity") == "42"
    assert vol.find("target/format").get("type") == "raw" and vol.find("backingStore") is None
    over = vmpool.volume_xml("d.qcow2", 10, "qcow2", backing=("/p/base.img", "raw"))
    assert vmpool.backing_path(over) == "/p/base.img"
    assert ET.fromstring(over).find("backingStore/format").get("type") == "raw"
    assert vmpool.backing_path(vmpool.volume_xml("x", 1)) is None


def test_domain_paths_and_a_pty_console() -> None:
    spec = vm_specs("seed")["vm1"]
    xml = vmxml.domain_xml("seed", spec, kernel="/pool/k", initrd="/pool/i", console_log=None)
    assert vmpool.domain_paths(xml) == {"/pool/k", "/pool/i"}
    serial = ET.fromstring(xml).find("devices/serial")
    assert serial.get("type") == "pty" and serial.find("source") is None
    cloud = vm_specs("cloud")["db"]
    xml = vmxml.domain_xml("cloud", cloud, kernel=None, initrd=None, console_log="/f/c.log",
                           seed_iso="/pool/s.iso", disk="/pool/d.qcow2")
    assert vmpool.domain_paths(xml) == {"/pool/s.iso", "/pool/d.qcow2"}


class _Vol:
    def __init__(self, pool: "_Pool", name: str, backing: str | None = None) -> None:
        self.pool, self._name, self.backing = pool, name, backing

    def name(self) -> str:
        return self._name

    def path(self) -> str:
        return f"{self.pool.dir}/{self._name}"

    def XMLDesc(self, _flags: int) -> str:
        back = (f"<backingStore><path>{self.backing}</path></backingStore>"
                if self.backing else "")
        return f"<volume><name>{self._name}</name>{back}</volume>"

    def delete(self, _flags: int) -> None:
        del self.pool.vols[self._name]


class _Pool:
    """A running dir pool holding ``names`` (what the release logic calls of one)."""

    dir = "/var/lib/libvirt/hybridnb"

    def __init__(self, names: dict[str, str | None]) -> None:
        self.vols = {n: _Vol(self, n, back) for n, back in names.items()}
        self.removed: list[str] = []

    def isActive(self) -> bool:
        return True

    def refresh(self, _flags: int) -> None:
        pass

    def listAllVolumes(self, _flags: int) -> list[_Vol]:
        return list(self.vols.values())

    def storageVolLookupByName(self, name: str) -> _Vol:
        return self.vols[name]

    def numOfVolumes(self) -> int:
        return len(self.vols)

    def destroy(self) -> None:
        self.removed.append("destroy")

    def delete(self, _flags: int) -> None:
        self.removed.append("delete")

    def undefine(self) -> None:
        self.removed.append("undefine")


class _Conn:
    def __init__(self, pool: _Pool) -> None:
        self.pool = pool

    def storagePoolLookupByName(self, _name: str) -> _Pool:
        return self.pool

    def storageVolLookupByPath(self, path: str) -> _Vol:
        return self.pool.vols[path.rsplit("/", 1)[1]]


KERNEL, INITRD, BASE = "0123456789abcdef-vmlinux", "fedcba9876543210-initrd", \
    "00112233445566ff-base.img"


def _domain(*paths: str) -> str:
    files = "".join(f"<disk><source file='{_Pool.dir}/{p}'/></disk>" for p in paths)
    return f"<domain><os><kernel>{_Pool.dir}/{KERNEL}</kernel></os><devices>{files}" \
           "</devices></domain>"


def test_a_release_keeps_what_other_domains_use_and_removes_an_emptied_pool() -> None:
    pool = _Pool({KERNEL: None, INITRD: None, BASE: None,
                  "hnb-l-v1-disk.qcow2": f"{_Pool.dir}/{BASE}", "hnb-l-v1-seed.iso": None,
                  "hnb-l-v2-disk.qcow2": f"{_Pool.dir}/{BASE}"})
    vp = vmpool.VolumePool(lambda: _Conn(pool), "host b")
    v1 = _domain("hnb-l-v1-disk.qcow2", "hnb-l-v1-seed.iso")
    used = vp.in_use([v1])
    assert used == {f"{_Pool.dir}/{n}" for n in
                    (KERNEL, BASE, "hnb-l-v1-disk.qcow2", "hnb-l-v1-seed.iso")}
    # v2 (another lab's, say) still uses the kernel and, through its overlay, the base image
    gone = vp.release("hnb-l-v1", used, [_domain("hnb-l-v2-disk.qcow2")])
    assert gone == ["hnb-l-v1-disk.qcow2", "hnb-l-v1-seed.iso"] and not pool.removed
    # the last domain goes: its volumes, the base and kernel nobody uses; INITRD was not
    # its (another lab's upload, say), so it stays — and so does the pool
    gone = vp.release("hnb-l-v2", vp.in_use([_domain("hnb-l-v2-disk.qcow2")]), [])
    assert gone == [BASE, KERNEL, "hnb-l-v2-disk.qcow2"] and sorted(pool.vols) == [INITRD]
    assert not pool.removed
    assert vp.release("hnb-l-v3", {f"{_Pool.dir}/{INITRD}"}, []) == [INITRD]
    assert pool.removed == ["destroy", "delete", "undefine"]


class _Uploads:
    """Stands in for a remote libvirt's pool: records what the driver places there."""

    path = "/remote/pool"

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def upload(self, local: Path, name: str | None = None, fmt: str = "raw") -> str:
        self.calls.append(("upload", local.name, name))
        return f"{self.path}/{name or vmpool.volume_name(local)}"

    def overlay(self, name: str, backing: str, fmt: str, capacity: int) -> str:
        self.calls.append(("overlay", name, backing, fmt, capacity))
        return f"{self.path}/{name}"


def _remote_driver(tmp_path: Path):
    from hybridnb.drivers.libvirt import LibvirtDriver
    from hybridnb.target import Target

    drv = LibvirtDriver(Target(name="remote:b", libvirt_uri="qemu+ssh://lab@b/system"),
                        remote="host b", files_dir=tmp_path / "vms", ssh_keys=[])
    drv.pool = _Uploads()                       # type: ignore[assignment]
    return drv


def test_a_remote_test_vm_names_no_path_of_this_machine(tmp_path: Path) -> None:
    drv = _remote_driver(tmp_path)
    (tmp_path / "k").write_bytes(b"k")
    (tmp_path / "i").write_bytes(b"i")
    spec = {**vm_specs("seed")["vm1"], "kernel": str(tmp_path / "k"),
            "initrd": str(tmp_path / "i")}
    vmdir = tmp_path / "vms" / spec["domain_name"]
    root = ET.fromstring(drv._domain_xml("seed", spec, "fp", vmdir, vmdir / "console.log"))
    assert all(p.startswith("/remote/pool/") for p in vmpool.domain_paths(ET.tostring(
        root, encoding="unicode"))), ET.tostring(root)
    assert root.find("devices/serial").get("type") == "pty"
    assert [c.find("target").get("name") for c in root.iter("channel")] == [
        vmxml.AGENT_CHANNEL]                                  # no probe socket here
    assert drv.probe_channel("seed", "vm1") is None


def test_a_remote_cloud_vm_gets_its_overlay_and_seed_made_there(tmp_path: Path) -> None:
    drv = _remote_driver(tmp_path)
    image = tmp_path / "cloud.img"
    image.write_bytes(b"\0" * 65536)
    spec = {**vm_specs("cloud")["db"], "image": str(image)}
    vmdir = tmp_path / "vms" / spec["domain_name"]
    vmdir.mkdir(parents=True)
    xml = drv._domain_xml("cloud", spec, "fp", vmdir, vmdir / "console.log")
    base = f"/remote/pool/{vmpool.volume_name(image)}"
    dname = spec["domain_name"]
    assert drv.pool.calls == [("upload", "cloud.img", None),
                              ("overlay", f"{dname}-disk.qcow2", base, "raw", 65536),
                              ("upload", "seed.iso", f"{dname}-seed.iso")]
    assert vmpool.domain_paths(xml) == {f"/remote/pool/{dname}-disk.qcow2",
                                        f"/remote/pool/{dname}-seed.iso"}
    assert list(vmdir.iterdir()) == []                 # nothing of it kept here


def test_a_failed_upload_names_the_vm_and_forgets_what_it_placed(tmp_path: Path) -> None:
    import threading

    from hybridnb.core.resource import Resource
    from hybridnb.errors import EngineError

    class _Failing(_Uploads):
        lock = threading.RLock()

        def __init__(self) -> None:
            super().__init__()
            self.released: list[tuple] = []

        def upload(self, local: Path, name: str | None = None, fmt: str = "raw") -> str:
            if local.name == "i":
                raise EngineError("uploading i as volume x in storage pool hybridnb of host "
                                  "b: no space left", engine="libvirt")
            return super().upload(local, name, fmt)

        def release(self, prefix: str, used: set[str], others: list[str]) -> list[str]:
            self.released.append((prefix, used))
            return []

    drv = _remote_driver(tmp_path)
    drv.pool = pool = _Failing()                              # type: ignore[assignment]
    drv._lookup = lambda name: None                           # type: ignore[method-assign]
    drv._other_xmls = lambda: []                              # type: ignore[method-assign]
    (tmp_path / "k").write_bytes(b"k")
    (tmp_path / "i").write_bytes(b"i")
    spec = {**vm_specs("seed")["vm1"], "kernel": str(tmp_path / "k"),
            "initrd": str(tmp_path / "i")}
    with pytest.raises(EngineError) as info:
        drv.create("seed", Resource("vm", "vm1", spec))
    assert str(info.value).startswith("VM vm1: uploading i as volume x"), info.value
    dname = spec["domain_name"]
    kernel = f"/remote/pool/{vmpool.volume_name(tmp_path / 'k')}"
    # made again at once: its own volumes only; failed: the kernel it had uploaded too
    assert pool.released == [(dname, set()), (dname, {kernel})]
    assert not (tmp_path / "vms" / dname).exists()
