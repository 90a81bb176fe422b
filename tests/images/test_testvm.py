"""The test VM image: pure parts (cpio, module order, vmlinux extraction) and the real build."""

from __future__ import annotations

import gzip
import io
import lzma
import os
import stat
import time
from pathlib import Path

import pytest

from hybridnb.errors import EngineError, NotFoundError
from hybridnb.images import testvm
from tests.gating import require_real


def test_module_order_puts_dependencies_first() -> None:
    mods = {
        "virtio_ring": b"\0depends=\0",
        "virtio": b"x\0depends=virtio_ring\0",
        "virtio_pci": b"\0depends=virtio_ring,virtio\0",
        "failover": b"\0depends=\0",
        "net_failover": b"\0depends=failover\0",
        "virtio_net": b"\0depends=virtio_ring,virtio,net_failover\0",
    }
    order = testvm.module_order(["virtio_pci", "virtio_net"], mods)
    assert order == ["virtio_ring", "virtio", "virtio_pci", "failover", "net_failover",
                     "virtio_net"]
    with pytest.raises(EngineError):
        testvm.module_order(["virtio_console"], mods)


def test_extract_vmlinux_finds_the_xz_stream() -> None:
    elf = b"\x7fELF" + bytes(range(256)) * 64
    blob = b"MZ setup code \xfd7zXZ\x00 false start" + lzma.compress(elf, format=lzma.FORMAT_XZ) \
        + b"trailer"
    assert testvm.extract_vmlinux(blob) == elf
    with pytest.raises(EngineError):
        testvm.extract_vmlinux(b"no kernel here")


def test_cpio_is_newc_and_deterministic() -> None:
    entries = [testvm._Entry("bin", stat.S_IFDIR | 0o755),
               testvm._Entry("bin/sh", stat.S_IFLNK | 0o777, b"/bin/busybox"),
               testvm._Entry("init", stat.S_IFREG | 0o755, b"#!/bin/sh\n")]
    a, b = io.BytesIO(), io.BytesIO()
    testvm.write_cpio(a, entries)
    testvm.write_cpio(b, entries)
    data = a.getvalue()
    assert data == b.getvalue()
    assert data.startswith(b"070701") and b"TRAILER!!!" in data and len(data) % 4 == 0
    assert b"bin/sh\0" in data and b"#!/bin/sh\n" in data


def test_find_without_image_says_how_to_build(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as err:
        testvm.find(tmp_path)
    assert "hybridnb images build" in str(err.value)


def test_cache_dir_override(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HYBRIDNB_IMAGE_DIR", str(tmp_path))
    assert testvm.cache_dir() == tmp_path


@pytest.mark.real
def test_build_real(tmp_path: Path) -> None:
    """Build from Debian packages into a fresh cache; the second build is instant."""
    require_real(tools=("apt-get", "dpkg-deb", "ldd"))
    events: list[tuple[str, float]] = []
    t0 = time.monotonic()
    img = testvm.build(tmp_path, progress=lambda e, f: events.append((e, f)))
    first = time.monotonic() - t0
    assert events[-1] == ("built", 1.0)
    assert img.kernel.read_bytes()[:4] == b"\x7fELF"
    cpio = gzip.decompress(img.initrd.read_bytes())
    for member in (b"init\0", b"bin/busybox\0", b"usr/sbin/qemu-ga\0", b"bin/hnb-udp\0",
                   b"lib/modules/virtio_net.ko\0", b"lib/modules/virtio_console.ko\0",
                   b"etc/modules-order\0", b"sbin/tc\0", b"lib/modules/sch_netem.ko\0"):
        assert member in cpio, member
    assert testvm.READY_MARKER.encode() in cpio
    t0 = time.monotonic()
    again = testvm.build(tmp_path)
    assert again == img and time.monotonic() - t0 < 0.5
    assert testvm.find(tmp_path) == img
    print(f"\nbuild {first:.1f} s, kernel {os.path.getsize(img.kernel) >> 20} MiB, "
          f"initrd {os.path.getsize(img.initrd) >> 10} KiB")
