"""What boots a recipe's VM disk: Debian's kernel, a small initramfs, modules and a guest agent.

One *kernel bundle* per kernel version serves every recipe VM; it is built once (~10 s) into
``vmkernel-<kernel version>-<format>/`` in the image cache from Debian packages fetched with
``apt-get download`` (as :mod:`hybridnb.images.testvm` does):

* ``vmlinux`` — the kernel uncompressed to ELF for direct (PVH) boot under TCG;
* ``initrd.img`` — busybox, the modules to reach the disk and the NIC (virtio pci/net/blk/
  console/rng, ext4 with crc32c, overlay, iso9660 for a cloud-init seed), loaded in
  dependency order, and ``/init`` (``guest/vmboot-init.sh``): configure eth0 from the kernel
  command line, mount the root disk, ``switch_root`` into the image's init;
* ``modules/<version>/`` — the modules a service may load at run time (all of
  ``kernel/net`` but radio stacks, overlay/iso9660/fat/fuse/9p file systems, veth, vxlan,
  macvlan, tun, bonding, wireguard, crypto and their dependencies) with ``depmod`` data; it
  goes into every VM disk as ``/usr/lib/modules/<version>``, so ``modprobe`` (and the
  kernel's own module requests: nftables, bridge netfilter for dockerd) work in the guest;
* ``qga/`` — Debian's ``qemu-ga`` with the shared libraries it links and their loader, run
  as ``ld.so --library-path qga/lib qga/qemu-ga`` so the commands it runs for
  ``guest-exec`` inherit no foreign library path; ``busybox`` for the init's fallbacks and
  the probes (its applets are what the probe engine's script runs in a guest);
* ``hnb-udp`` — the UDP probe client and echo server of the test VM
  (:func:`hybridnb.images.testvm.compile_udp_helper`; left out without ``gcc``).

:func:`ensure_bundle` returns the bundle, building it when missing (atomically, like builds).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hybridnb.errors import EngineError
from hybridnb.images import store, testvm
from hybridnb.images.builder import BuildEvent

BUNDLE_FORMAT = "hybridnb-vmkernel-2"
BOOT_INIT = Path(__file__).with_name("guest") / "vmboot-init.sh"
#: Modules of the initramfs (their dependencies are added and ordered automatically).
INITRAMFS_MODULES = ("virtio_pci", "virtio_net", "virtio_console", "virtio_blk", "virtio_rng",
                     "crc32c_generic", "ext4", "overlay", "isofs")
#: Module tree paths (under ``kernel/``) that go into VM disks.
DISK_MODULES = ("net/", "lib/", "crypto/", "arch/", "fs/overlayfs/", "fs/isofs/", "fs/nls/",
                "fs/fat/", "fs/fuse/", "fs/9p/", "fs/netfs/", "fs/fscache/",
                "drivers/net/veth.ko", "drivers/net/dummy.ko", "drivers/net/tun.ko",
                "drivers/net/macvlan.ko", "drivers/net/macvtap.ko", "drivers/net/ipvlan/",
                "drivers/net/vxlan/", "drivers/net/bonding/", "drivers/net/geneve.ko",
                "drivers/net/wireguard/", "drivers/net/ifb.ko", "drivers/net/team/",
                "drivers/net/nlmon.ko", "drivers/block/loop.ko", "drivers/block/nbd.ko")
_SKIP = ("net/wireless/", "net/mac80211/", "net/bluetooth/", "net/nfc/", "net/ieee802154/",
         "net/mac802154/", "net/6lowpan/", "net/rfkill/")
_MODULE_META = ("modules.order", "modules.builtin", "modules.builtin.modinfo")


@dataclass(frozen=True)
class KernelBundle:
    path: Path
    version: str               # kernel release, e.g. 6.1.0-57-amd64

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def kernel(self) -> Path:
        return self.path / "vmlinux"

    @property
    def initrd(self) -> Path:
        return self.path / "initrd.img"

    @property
    def modules(self) -> Path:
        return self.path / "modules" / self.version

    @property
    def qga(self) -> Path:
        return self.path / "qga"

    @property
    def busybox(self) -> Path:
        return self.path / "busybox"

    @property
    def udp_helper(self) -> Path | None:
        """``hnb-udp`` for the guest (None: built without gcc)."""
        path = self.path / "hnb-udp"
        return path if path.is_file() else None


def _format_key() -> str:
    h = hashlib.sha256(BUNDLE_FORMAT.encode() + b"\0" + BOOT_INIT.read_bytes() + b"\0"
                       + testvm.UDP_HELPER_SOURCE.read_bytes())
    h.update(json.dumps([INITRAMFS_MODULES, DISK_MODULES, _SKIP]).encode())
    return h.hexdigest()[:8]


def find_bundle(cache: Path | str | None = None) -> KernelBundle | None:
    root = store.cache_root(cache)
    best: tuple[float, KernelBundle] | None = None
    for d in root.glob(f"vmkernel-*-{_format_key()}"):
        data = store.read_manifest(d)
        if data and (d / "vmlinux").is_file() and (d / "initrd.img").is_file():
            b = KernelBundle(d, data["version"])
            if best is None or data.get("built", 0) > best[0]:
                best = (data.get("built", 0), b)
    return best[1] if best else None


def ensure_bundle(cache: Path | str | None = None,
                  progress: Callable[[BuildEvent], None] | None = None) -> KernelBundle:
    """The kernel bundle for recipe VMs, built first when missing."""
    root = store.cache_root(cache)
    found = find_bundle(root)
    if found is not None:
        return found
    with store.locked(root, "vmkernel"):
        found = find_bundle(root)
        if found is not None:
            return found
        store.clear_temps(root, "vmkernel")
        tmp = store.temp_dir(root, "vmkernel")
        try:
            return _build(root, tmp, progress)
        finally:
            store.remove_tree(tmp)


def _udp_helper(work: Path, dest: Path) -> bool:
    """The probes' UDP helper, compiled for the guests (False: no gcc here)."""
    from hybridnb.errors import EngineUnavailable

    try:
        dest.write_bytes(testvm.compile_udp_helper(work))
    except EngineUnavailable:
        return False
    dest.chmod(0o755)
    return True


def _say(progress: Callable[[BuildEvent], None] | None, fraction: float, text: str) -> None:
    if progress is not None:
        progress(BuildEvent("vmkernel", "kernel", fraction, text))


def _build(root: Path, tmp: Path, progress: Callable[[BuildEvent], None] | None
           ) -> KernelBundle:
    t0 = time.monotonic()
    debs = tmp / "debs"
    debs.mkdir()
    kpkg = testvm._kernel_package()
    _say(progress, 0.1, f"downloading {kpkg}, qemu-guest-agent, busybox-static")
    testvm._apt_download([kpkg, "qemu-guest-agent", "busybox-static"], debs)
    kdeb = testvm._one(debs, kpkg)
    _say(progress, 0.3, "extracting the kernel and its modules")
    kver, vmlinuz, modules, meta = _kernel_files(kdeb)
    out = tmp / "bundle"
    out.mkdir()
    (out / "vmlinux").write_bytes(testvm.extract_vmlinux(vmlinuz))
    tree = out / "modules" / kver
    for rel, data in modules.items():
        dest = tree / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    for name, data in meta.items():
        (tree / name).write_bytes(data)
    _depmod(out, kver)
    _say(progress, 0.6, "assembling the initramfs")
    bb = next(iter(testvm._extract(testvm._one(debs, "busybox-static"),
                                   lambda n: n.endswith("/bin/busybox")).values()))
    (out / "busybox").write_bytes(bb)
    (out / "busybox").chmod(0o755)
    byname = {Path(rel).name[:-3]: data for rel, data in modules.items()}
    order = testvm.module_order(INITRAMFS_MODULES, byname)
    _write_initramfs(out / "initrd.img", bb, {m: byname[m] for m in order}, order, tmp)
    _say(progress, 0.8, "bundling the guest agent")
    _bundle_qga(testvm._one(debs, "qemu-guest-agent"), out / "qga", tmp)
    udp = _udp_helper(tmp, out / "hnb-udp")
    manifest = {"version": kver, "kernel_package": kpkg, "initramfs_modules": order,
                "udp_helper": udp,
                "format": _format_key(), "built": time.time(),
                "qemu_ga": testvm._deb_version(testvm._one(debs, "qemu-guest-agent"))}
    store.write_json_atomic(out / store.MANIFEST, manifest)
    final = root / f"vmkernel-{kver}-{_format_key()}"
    if final.exists():
        store.remove_tree(final)
    os.rename(out, final)
    _say(progress, 1.0, f"kernel bundle {final.name} in {time.monotonic() - t0:.1f} s")
    return KernelBundle(final, kver)


def _wanted(rel: str) -> bool:
    """``rel`` is a path under ``kernel/``."""
    return rel.endswith(".ko") and not rel.startswith(_SKIP) and any(
        rel.startswith(p) if p.endswith("/") else rel == p for p in DISK_MODULES)


def _initramfs_module(rel: str) -> bool:
    name = Path(rel).name[:-3].replace("-", "_")
    return rel.endswith(".ko") and (name.startswith(("virtio", "crc", "failover", "net_failover",
                                                     "jbd2", "mbcache", "ext4", "overlay",
                                                     "isofs", "libcrc")))


def _kernel_files(deb: Path) -> tuple[str, bytes, dict[str, bytes], dict[str, bytes]]:
    """(release, bzImage, {path under lib/modules/<release>: module}, module metadata):
    the disk's modules and their dependencies, plus the initramfs candidates."""
    depends: dict[str, list[str]] = {}
    paths: dict[str, str] = {}
    kept: dict[str, bytes] = {}
    meta: dict[str, bytes] = {}
    vmlinuz = b""
    kver = ""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            parts = member.name.lstrip("./").split("/")
            if "/boot/vmlinuz-" in "/" + member.name.lstrip("."):
                vmlinuz = tar.extractfile(member).read()          # type: ignore[union-attr]
                kver = member.name.rsplit("vmlinuz-", 1)[1]
                continue
            if "modules" not in parts:
                continue
            i = parts.index("modules")
            rel = "/".join(parts[i + 2:])              # kernel/net/... or modules.order
            if rel in _MODULE_META:
                meta[rel] = tar.extractfile(member).read()      # type: ignore[union-attr]
                continue
            if not rel.startswith("kernel/") or not rel.endswith(".ko"):
                continue
            data = tar.extractfile(member).read()               # type: ignore[union-attr]
            name = Path(rel).name[:-3].replace("-", "_")
            depends[name] = testvm.module_depends(data)
            paths[name] = rel
            if _wanted(rel[len("kernel/"):]) or _initramfs_module(rel):
                kept[rel] = data
    if proc.wait() != 0 or not vmlinuz:
        raise EngineError(f"cannot read the kernel package {deb.name}", engine="images")
    missing = _closure(kept, depends, paths)
    if missing:
        kept.update(testvm._extract(deb, lambda n: any(n.endswith("/" + paths[m])
                                                        for m in missing)))
        kept = {_rel(k): v for k, v in kept.items()}
    return kver, vmlinuz, kept, meta


def _rel(path: str) -> str:
    parts = path.lstrip("./").split("/")
    if "modules" in parts and not path.startswith("kernel/"):
        i = parts.index("modules")
        return "/".join(parts[i + 2:])
    return path


def _closure(kept: dict[str, bytes], depends: dict[str, list[str]],
             paths: dict[str, str]) -> set[str]:
    have = {Path(rel).name[:-3].replace("-", "_") for rel in kept}
    todo = list(have)
    missing: set[str] = set()
    while todo:
        for dep in depends.get(todo.pop(), []):
            if dep not in have and dep not in missing and dep in paths:
                missing.add(dep)
                todo.append(dep)
    return missing


def _depmod(base: Path, kver: str) -> None:
    """depmod for a tree at ``base/modules/<kver>`` (depmod wants ``lib/modules``)."""
    link = base / "lib"
    (link / "modules").mkdir(parents=True)
    (link / "modules" / kver).symlink_to(base / "modules" / kver)
    try:
        subprocess.run(["depmod", "-b", str(base), kver], check=True, capture_output=True)
    except FileNotFoundError as exc:
        raise EngineError("depmod not found", engine="images", hint="apt-get install kmod"
                          ) from exc
    except subprocess.CalledProcessError as exc:
        raise EngineError(f"depmod failed: {exc.stderr.decode(errors='replace')[-300:]}",
                          engine="images") from exc
    finally:
        shutil.rmtree(link, ignore_errors=True)


def _write_initramfs(path: Path, busybox: bytes, modules: dict[str, bytes], order: list[str],
                     work: Path) -> None:
    import gzip
    import io

    d, f, ln = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o755, stat.S_IFLNK | 0o777
    entries: dict[str, testvm._Entry] = {}

    def add(e: testvm._Entry) -> None:
        parts = e.path.split("/")
        for i in range(1, len(parts)):
            entries.setdefault("/".join(parts[:i]), testvm._Entry("/".join(parts[:i]), d))
        entries[e.path] = e

    for top in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "run", "tmp",
                "newroot", "lib/modules"):
        add(testvm._Entry(top, d))
    add(testvm._Entry("bin/busybox", f, busybox))
    bb = work / "busybox"
    bb.write_bytes(busybox)
    bb.chmod(0o755)
    out = subprocess.run([str(bb), "--list-full"], check=True, capture_output=True, text=True)
    for applet in out.stdout.split():
        if applet != "bin/busybox" and applet.rsplit("/", 1)[-1] != "init":
            add(testvm._Entry(applet, ln, b"/bin/busybox"))
    add(testvm._Entry("init", f, BOOT_INIT.read_bytes()))
    for name in order:
        add(testvm._Entry(f"lib/modules/{name}.ko", stat.S_IFREG | 0o644, modules[name]))
    add(testvm._Entry("etc/modules-order", stat.S_IFREG | 0o644,
                      ("\n".join(order) + "\n").encode()))
    raw = io.BytesIO()
    testvm.write_cpio(raw, [entries[k] for k in sorted(entries)])
    path.write_bytes(gzip.compress(raw.getvalue(), 6, mtime=0))


def _bundle_qga(deb: Path, dest: Path, work: Path) -> None:
    """qemu-ga, its libraries (as the host's ldd resolves them) and the loader."""
    found = testvm._extract(deb, lambda n: n.endswith("/usr/sbin/qemu-ga"))
    if not found:
        raise EngineError("qemu-ga missing from its Debian package", engine="images")
    (dest / "lib").mkdir(parents=True)
    binary = dest / "qemu-ga"
    binary.write_bytes(next(iter(found.values())))
    binary.chmod(0o755)
    for lib in testvm._shared_libs(binary):
        real = Path(os.path.realpath(lib))
        if Path(lib).name.startswith("ld-linux"):
            shutil.copyfile(real, dest / "ld.so")
            (dest / "ld.so").chmod(0o755)
        else:
            shutil.copyfile(real, dest / "lib" / Path(lib).name)
