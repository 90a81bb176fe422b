"""The VM shape of a build: an ext4 disk made without loop mounts, booted by the kernel bundle.

``mkfs.ext4 -d`` copies a directory into a fresh file system image (sparse, ~1 s per few
hundred MB), so no loop device and no mount is needed.  The directory is a hard-link copy of
the build's rootfs (``cp -al``: instant, and the rootfs itself is never written) plus
hybridnb's guest files (init, services script) and what only a VM needs, from the kernel
bundle (:mod:`hybridnb.images.vmkernel`): the modules as ``/usr/lib/modules/<version>``, the
guest agent under ``/usr/lib/hybridnb/qga``, busybox as ``/usr/lib/hybridnb/bin/busybox``
with its applets under ``/usr/lib/hybridnb/probe`` and the UDP helper as ``/bin/hnb-udp`` —
what the probe engine's script runs inside a VM (:mod:`hybridnb.services.probe.script`),
so ``hybridnb test`` probes from a recipe VM as from the test VM.

The disk lands in the build's directory (``vm-<bundle>/disk.img``, renamed into place when
complete) and is never written again: each VM gets its own qcow2 overlay on it (the libvirt
driver makes one per VM, ~20 ms, deleted with the VM), so one image serves many VMs and
writes — PostgreSQL's data, pulled images in a docker VM — go to the VM's own file on the
host disk, not to guest RAM.  (The initramfs can also mount the disk read-only under a tmpfs
overlay, ``hybrid.rootmode=tmpfs``; the overlay file was chosen as the default because
dockerd's overlay2 storage does not work on an overlayfs root and a database's writes would
otherwise eat the guest's memory.)

The disk is sized for the rootfs plus a quarter and 256 MiB of room, rounded up to 64 MiB,
unless the recipe says ``disk:`` — too small a size is refused before mkfs runs, naming the
size needed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hybridnb.errors import BuildError, EngineUnavailable
from hybridnb.images import store
from hybridnb.core.recipe import Recipe
from hybridnb.images import builder
from hybridnb.images.builder import BuildEvent, layer_key, write_guest_files
from hybridnb.images.vmkernel import KernelBundle, ensure_bundle

DISK_FORMAT = "2"
MIB = 1 << 20
ROOM_MIB = 256


@dataclass(frozen=True)
class VMImage:
    """What a VM of a recipe boots: kernel, initramfs, the (read-only) base disk."""

    recipe: str
    build: str                 # the build id
    kernel: Path
    initrd: Path
    disk: Path                 # raw ext4; give each VM an overlay on it
    size_mib: int
    cloud_init: bool = False
    memory: int | None = None  # least RAM the recipe needs (MiB), if it says

    def spec(self) -> dict[str, object]:
        """The fields a VM resource spec takes from the image (see the libvirt driver)."""
        return {"boot": "disk", "kernel": str(self.kernel), "initrd": str(self.initrd),
                "disk": str(self.disk), "cloud_init": self.cloud_init,
                "image_build": self.build}


def needed_mib(used_bytes: int) -> int:
    """The least disk size for ``used_bytes`` of files (file system overhead included)."""
    return int(used_bytes * 1.08 / MIB) + 48


def auto_size_mib(used_bytes: int) -> int:
    raw = used_bytes * 1.25 / MIB + ROOM_MIB
    return int(-(-raw // 64) * 64)


def vm_image_dir(build: store.Build, recipe: Recipe, bundle: KernelBundle) -> Path:
    """Where the VM disk of ``build`` (of ``recipe``) for ``bundle`` is (or will be): its
    ``disk.img`` and manifest."""
    return build.path / f"vm-{bundle.id}-d{DISK_FORMAT}-{layer_key(recipe)}"


def ensure_vm_image(build: store.Build, recipe: Recipe, *, cache: Path | str | None = None,
                    progress: Callable[[BuildEvent], None] | None = None) -> VMImage:
    """The VM disk of ``build`` (of ``recipe``; made when missing) with the kernel bundle to
    boot it."""
    root = store.cache_root(cache)
    bundle = ensure_bundle(root, progress)
    out = vm_image_dir(build, recipe, bundle)
    if not (out / store.MANIFEST).exists():
        with store.locked(root, f"{build.id}-vm"):
            if not (out / store.MANIFEST).exists():
                store.clear_temps(root, f"{build.id}-vm")
                tmp = store.temp_dir(root, f"{build.id}-vm")
                try:
                    _make(build, recipe, bundle, tmp, out, progress)
                finally:
                    store.remove_tree(tmp)
    data = store.read_manifest(out) or {}
    return VMImage(build.name, build.id, bundle.kernel, bundle.initrd, out / "disk.img",
                   int(data.get("size_mib", 0)), recipe.cloud_init, recipe.memory)


def _make(build: store.Build, recipe: Recipe, bundle: KernelBundle, tmp: Path, out: Path,
          progress: Callable[[BuildEvent], None] | None) -> None:
    def say(fraction: float, text: str) -> None:
        if progress is not None:
            progress(BuildEvent(build.name, "disk", fraction, text))

    t0 = time.monotonic()
    say(0.1, "assembling the VM disk")
    stage = tmp / "stage"
    _cp(["cp", "-al", str(build.rootfs), str(stage)], build.name)
    for rel in builder.guest_files(recipe):             # new files, not the rootfs' links
        (stage / rel.lstrip("/")).unlink(missing_ok=True)
    write_guest_files(recipe, stage)
    lib = stage / "usr/lib"
    (lib / "modules").mkdir(exist_ok=True)
    _cp(["cp", "-al", str(bundle.modules), str(lib / "modules" / bundle.version)], build.name)
    hnb = lib / "hybridnb"
    hnb.mkdir(exist_ok=True)
    _cp(["cp", "-al", str(bundle.qga), str(hnb / "qga")], build.name)
    (hnb / "bin").mkdir(exist_ok=True)
    shutil.copy2(bundle.busybox, hnb / "bin" / "busybox")
    _probe_tools(stage, bundle, build.name)
    used = store.tree_size(stage)
    want = recipe.disk
    need = needed_mib(used)
    if want is not None and want < need:
        raise BuildError(f"disk: {want} MiB is too small for this image, which needs at least "
                         f"{need} MiB", recipe=build.name, step="disk",
                         hint=f"give disk: {-(-need // 64) * 64}M or more (or leave it out)")
    size = int(want) if want is not None else auto_size_mib(used)
    dest = tmp / "vm"
    dest.mkdir()
    say(0.5, f"mkfs.ext4 -d ({used / MIB:.0f} MiB of files, disk {size} MiB)")
    try:
        res = subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "hybridnb", "-m", "0",
                              "-E", "root_owner=0:0", "-d", str(stage),
                              str(dest / "disk.img"), f"{size}M"],
                             capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise EngineUnavailable("mkfs.ext4 not found", engine="images",
                                hint="apt-get install e2fsprogs (1.43 or newer for -d)") from exc
    if res.returncode != 0:
        err = (res.stderr or res.stdout).strip()
        full = any(s in err for s in ("Could not allocate", "No free space", "No space left"))
        raise BuildError("the files do not fit the disk" if full else "mkfs.ext4 failed",
                         recipe=build.name, step="disk", log=err[-2000:],
                         hint="give the recipe a larger disk:" if full else None)
    store.remove_tree(stage)
    store.write_json_atomic(dest / store.MANIFEST, {
        "build": build.id, "bundle": bundle.id, "kernel_version": bundle.version,
        "size_mib": size, "used": used, "built": time.time(),
        "seconds": round(time.monotonic() - t0, 1)})
    os.rename(dest, out)
    say(1.0, f"VM disk {size} MiB ready in {time.monotonic() - t0:.1f} s")


#: Where a VM disk has busybox's applets for the probe engine's script (which prefers them:
#: the same ``ping``, ``nc`` and ``nslookup`` as in the test VM, whatever the recipe has).
PROBE_TOOLS = "/usr/lib/hybridnb/probe"


def _probe_tools(stage: Path, bundle: KernelBundle, recipe: str) -> None:
    """Busybox applets under :data:`PROBE_TOOLS` and the UDP helper as ``/bin/hnb-udp``."""
    res = subprocess.run([str(bundle.busybox), "--list"], capture_output=True, text=True)
    if res.returncode != 0:
        raise BuildError(f"busybox --list failed: {res.stderr.strip()[-300:]}",
                         recipe=recipe, step="disk")
    tools = stage / PROBE_TOOLS.lstrip("/")
    tools.mkdir(parents=True, exist_ok=True)
    for applet in res.stdout.split():
        if "/" not in applet and applet not in ("busybox", "init", "linuxrc"):
            (tools / applet).symlink_to("../bin/busybox")
    if bundle.udp_helper is not None:
        bindir = stage / "usr/bin" if (stage / "bin").is_symlink() else stage / "bin"
        target = bindir / "hnb-udp"
        target.unlink(missing_ok=True)
        shutil.copy2(bundle.udp_helper, target)


def _cp(argv: list[str], recipe: str) -> None:
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0:
        raise BuildError(f"{' '.join(argv[:2])} failed: {res.stderr.strip()[-300:]}",
                         recipe=recipe, step="disk")
