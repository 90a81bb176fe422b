"""The private libvirtd: starts in a namespace with private paths, stops without residue."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from hybridnb.errors import EngineUnavailable
from tests.gating import require_real

pytestmark = pytest.mark.real


def _procs_in(mntns: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/mnt") == mntns:
                    out.append(int(entry))
            except OSError:
                pass
    return out


def test_start_stop_private_libvirtd() -> None:
    require_real(tools=("libvirtd", "virtlogd", "nsenter", "unshare"))
    from hybridnb.daemons import Daemon, libvirtd

    ns = f"hnb-vd-{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="hnb-vd-"))
    subprocess.run(["ip", "netns", "add", ns], check=True)
    d = None
    try:
        events = []
        d = libvirtd.start(ns, work / "root", work / "run", connect=False,
                           progress=lambda e, f: events.append(f))
        assert events[-1] == 1.0
        assert d.endpoint == f"qemu:///system?socket={work / 'run' / 'libvirt-sock'}"
        assert (work / "run" / "libvirt-sock").is_socket()
        # both daemons live in the lab namespace and a mount namespace of their own
        for pid in (d.pid, d.extra["virtlogd_pid"]):
            assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{ns}").st_ino
            assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        assert (work / "root" / "libvirt" / "etc" / "qemu.conf").exists()
        assert libvirtd.alive(d)
        rec = libvirtd.record(ns, work / "root", work / "run")
        assert (rec.pid, rec.extra["mntns"]) == (d.pid, d.extra["mntns"])
        # the record survives a round trip (stop from another process)
        again = Daemon.from_dict(d.to_dict())
        libvirtd.stop(again)
        assert not libvirtd.alive(d)
        assert libvirtd.record(ns, work / "root", work / "run").pid == 0
        assert _procs_in(d.extra["mntns"]) == []
        assert not (work / "run" / "libvirt-sock").exists()
        libvirtd.stop(again)                                  # already stopped: fine
    finally:
        if d is not None:
            libvirtd.stop(d)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def test_missing_namespace_is_reported(tmp_path: Path) -> None:
    require_real(tools=("libvirtd",))
    from hybridnb.daemons import libvirtd

    with pytest.raises(EngineUnavailable):
        libvirtd.start("hnb-no-such-ns", tmp_path / "r", tmp_path / "u")
