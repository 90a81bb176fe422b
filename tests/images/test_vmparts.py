"""Pure parts of the VM shape: which kernel modules go where, disk sizes, the failure marker."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridnb.drivers import libvirt
from hybridnb.errors import BootError
from hybridnb.images import vmdisk, vmkernel


def test_module_selection() -> None:
    assert vmkernel._wanted("net/netfilter/nf_tables.ko")
    assert vmkernel._wanted("net/bridge/br_netfilter.ko")
    assert vmkernel._wanted("fs/overlayfs/overlay.ko")
    assert vmkernel._wanted("drivers/net/veth.ko")
    assert not vmkernel._wanted("net/wireless/cfg80211.ko")
    assert not vmkernel._wanted("drivers/net/ethernet/intel/e1000e/e1000e.ko")
    assert not vmkernel._wanted("sound/core/snd.ko")
    assert vmkernel._initramfs_module("kernel/drivers/block/virtio_blk.ko")
    assert vmkernel._initramfs_module("kernel/fs/ext4/ext4.ko")
    assert not vmkernel._initramfs_module("kernel/fs/xfs/xfs.ko")


def test_module_closure_adds_what_is_missing() -> None:
    kept = {"kernel/net/a.ko": b"", "kernel/net/b.ko": b""}
    depends = {"a": ["c"], "b": ["a", "x_y"], "c": ["d"], "d": [], "x_y": []}
    paths = {"a": "kernel/net/a.ko", "b": "kernel/net/b.ko", "c": "kernel/lib/c.ko",
             "d": "kernel/lib/d.ko", "x_y": "kernel/drivers/x-y.ko"}
    assert vmkernel._closure(kept, depends, paths) == {"c", "d", "x_y"}
    assert vmkernel._rel("./lib/modules/6.1.0-57-amd64/kernel/lib/c.ko") == "kernel/lib/c.ko"
    assert vmkernel._rel("kernel/net/a.ko") == "kernel/net/a.ko"


def test_disk_sizes() -> None:
    mib = 1 << 20
    assert vmdisk.needed_mib(200 * mib) == 264
    assert vmdisk.auto_size_mib(200 * mib) == 512            # 200*1.25 + 256 → 64 MiB steps
    assert vmdisk.auto_size_mib(213 * mib) % 64 == 0


def test_failure_marker_becomes_a_boot_error(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    text = ("hybridnb-init: started broken (pid 150) at 4.62\n"
            "hybridnb-init: broken| oops\n"
            "HYBRIDNB-FAILED name=bad service=broken reason=exited with code 3\n")
    console.write_text(text)
    with pytest.raises(BootError) as err:
        libvirt._raise_failed("bad", text, console)
    assert str(err.value).startswith("VM bad: service broken did not come up: exited with "
                                     "code 3")
    assert "broken| oops" in err.value.console
    boot = "HYBRIDNB-FAILED name=vm service=boot reason=no root disk /dev/vda\n"
    with pytest.raises(BootError, match="VM x: did not boot: no root disk /dev/vda"):
        libvirt._raise_failed("x", boot, console)


def test_the_preflight_refuses_a_recipe_vm_whose_disk_is_missing(tmp_path) -> None:
    """Before anything of the lab changes: the kernel, initramfs and disk the images step
    bound in must be there (a pruned cache, a disk removed by hand)."""
    from hybridnb.core.resource import Resource
    from hybridnb.errors import NotFoundError
    from hybridnb.target import Target

    kernel, initrd = tmp_path / "vmlinux", tmp_path / "initrd.img"
    kernel.write_bytes(b"k")
    initrd.write_bytes(b"i")
    drv = libvirt.LibvirtDriver(Target("t", libvirt_uri="qemu:///nowhere"),
                                files_dir=tmp_path / "vms")
    spec = {"endpoint": "db", "domain_name": "hnb-l-db", "template": "pg", "boot": "disk",
            "recipe": {"name": "pg"}, "kernel": str(kernel), "initrd": str(initrd),
            "disk": str(tmp_path / "gone" / "disk.img"), "memory": 192}
    with pytest.raises(NotFoundError, match=r"disk '.*/gone/disk.img' of VM db \(image pg\) "
                                            "not found") as err:
        drv.check("l", Resource("vm", "db", spec, ""))
    assert "hybridnb images build" in (err.value.hint or "")
