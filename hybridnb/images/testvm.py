"""The small test VM: a Debian kernel and a busybox initramfs that boot in seconds under TCG.

What CI and the demo boot is not a cloud image (a minute or more without hardware
virtualization) but this: Debian's own kernel, uncompressed from its bzImage to the ELF
``vmlinux`` so QEMU boots it directly through the PVH entry point (TCG would otherwise spend
~3 s decompressing it), and an initramfs holding

* busybox (from Debian's ``busybox-static``) with its applets as symlinks;
* the virtio modules the kernel needs for a virtio-pci NIC and the guest agent channel, loaded
  in dependency order (read from each module's ``.modinfo``);
* Debian's ``qemu-ga`` with the shared libraries it links (resolved with ``ldd`` on the host,
  which runs the same distribution), so commands can be run in the guest out of band;
* iproute2's ``tc`` (with its libraries, in place of busybox's show-only applet) and the
  kernel's ``sch_netem`` module, so link impairments (delay, jitter) can be applied inside the
  guest when the host kernel has no netem (:mod:`hybridnb.drivers.impairments`);
* ``/bin/hnb-udp`` (``guest/hnb-udp.c`` beside this module, compiled with the host's ``gcc``
  while building and linked against the C library the image already carries for ``qemu-ga``):
  a UDP echo server and UDP probe client, because busybox has
  neither.  Without ``gcc`` the image is built without it (and UDP probes from and to the VM
  are skipped);
* ``/bin/hnb-probe`` (``guest/hnb-probe.c``, compiled the same way): the resident probe
  helper /init starts, answering ICMP and TCP probe batches on the virtio-serial port
  ``org.hybridnb.probe.0`` (:mod:`hybridnb.services.probe.vmhelper`), so VM-sourced RTTs are
  kernel-timestamped like every other source's.  Without ``gcc`` the VM probes through the
  guest agent's script only;
* ``/init`` (``testvm-init.sh`` beside this module), which takes the VM's address, gateway,
  DNS, search domain and name from the kernel command line (``hybrid.ip=10.0.1.200/24
  hybrid.gw=10.0.1.1 hybrid.dns=10.0.1.1 hybrid.domain=hybrid.local hybrid.name=vm1``), serves
  a page naming the VM over HTTP (busybox httpd), echoes UDP on port 7 (``hnb-udp echo 7``),
  starts the guest agent and prints :data:`READY_MARKER` on the serial console.

The initramfs is a gzip-compressed newc archive (~4.6 MB, ~9.6 MB unpacked; the guest needs at
least 96 MiB of RAM, of which the kernel keeps ~48 MiB, and holds the archive and its unpacked
files at once while booting: with both helpers linked statically, 5.1 MB and 11.7 MB, a 96 MiB
guest panicked "deadlocked on memory").  Everything comes from Debian packages fetched with ``apt-get download``; nothing is installed
on the host.  :func:`build` is idempotent (a second call returns the cached image at once) and
:func:`find` returns the built image or says how to build it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from hybridnb.errors import EngineError, EngineUnavailable, NotFoundError

#: What /init prints on ttyS0 once networking, httpd and the guest agent are up.
READY_MARKER = "HYBRIDNB-READY"
#: The virtio-serial port name the guest agent listens on.
AGENT_CHANNEL = "org.qemu.guest_agent.0"
#: Modules the guest needs; their dependencies are added and ordered automatically.
WANTED_MODULES = ("virtio_pci", "virtio_net", "virtio_console", "sch_netem")
KERNEL_META = "linux-image-amd64"

Progress = Callable[[str, float], None]

_INIT = Path(__file__).with_name("testvm-init.sh")
#: The guest's UDP echo server / probe client (C source, compiled statically at build time).
UDP_HELPER_SOURCE = Path(__file__).with_name("guest") / "hnb-udp.c"
#: Where the helper goes in the initramfs (what the probe script runs).
UDP_HELPER_PATH = "bin/hnb-udp"
#: The guest's resident probe helper (C source) and where it goes in the initramfs.
PROBE_HELPER_SOURCE = Path(__file__).with_name("guest") / "hnb-probe.c"
PROBE_HELPER_PATH = "bin/hnb-probe"
_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class TestVMImage:
    """A built test VM image: the ELF kernel, the initramfs and a version string."""

    kernel: Path
    initrd: Path
    version: str

    __test__ = False  # not a pytest test class


def cache_dir() -> Path:
    """Where images live: ``$HYBRIDNB_IMAGE_DIR``, else ``/var/cache/hybridnb/images`` for
    root, else ``$XDG_CACHE_HOME/hybridnb/images`` (``~/.cache/...``)."""
    env = os.environ.get("HYBRIDNB_IMAGE_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/hybridnb/images")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hybridnb" / "images"


def init_script() -> bytes:
    return _INIT.read_bytes()


#: Bump when the image layout changes, so cached images of the old layout are rebuilt.
_FORMAT = b"hybridnb-testvm-6\n"


def _init_hash() -> str:
    """The cache key: the layout version, /init and the guest helpers' sources."""
    return hashlib.sha256(_FORMAT + init_script() + b"\0" + UDP_HELPER_SOURCE.read_bytes()
                          + b"\0" + PROBE_HELPER_SOURCE.read_bytes()).hexdigest()[:8]


def compile_udp_helper(work: Path, *, static: bool = True) -> bytes:
    """``hnb-udp`` for the guest (``gcc -Os``, stripped): ``static`` for a guest whose C
    library may differ from the host's (recipe VMs); dynamic for the test VM, which carries the
    host's own ``libc.so.6`` and loader (for ``qemu-ga``) — 20 KB instead of 690 KB.

    EngineUnavailable when there is no ``gcc``; EngineError when it does not compile (for a
    static link ``libc6-dev`` must be installed)."""
    return _compile(work, UDP_HELPER_SOURCE, "hnb-udp", "UDP helper", static=static)


def compile_probe_helper(work: Path, *, static: bool = True) -> bytes:
    """``hnb-probe``, the resident probe helper, compiled like :func:`compile_udp_helper`."""
    return _compile(work, PROBE_HELPER_SOURCE, "hnb-probe", "probe helper", static=static)


def _compile(work: Path, source: Path, name: str, what: str, *, static: bool) -> bytes:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise EngineUnavailable(f"gcc not found: cannot compile the guest's {what}",
                                engine="images", hint="apt-get install gcc libc6-dev")
    out = work / name
    _run([gcc, *(["-static"] if static else []), "-Os", "-s", "-Wall", "-Wextra", "-o",
          str(out), str(source)])
    return out.read_bytes()


def find(cache: Path | None = None) -> TestVMImage:
    """The newest built test image whose /init matches this hybridnb; NotFoundError if none."""
    root = Path(cache) if cache is not None else cache_dir()
    want = _init_hash()
    best: tuple[float, TestVMImage] | None = None
    for manifest in sorted(root.glob(f"testvm-*/{_MANIFEST}")):
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        if data.get("init") != want:
            continue
        img = TestVMImage(manifest.parent / "vmlinux", manifest.parent / "initrd.img",
                          data.get("version", ""))
        if data.get("udp_helper") is False and shutil.which("gcc"):
            continue                     # built without gcc, which is here now: rebuild
        if img.kernel.is_file() and img.initrd.is_file():
            built = float(data.get("built", 0))
            if best is None or built > best[0]:
                best = (built, img)
    if best is None:
        raise NotFoundError(f"no test VM image in {root}",
                            hint="run `hybridnb images build` (needs apt-get and network "
                                 "access to a Debian mirror)")
    return best[1]


def build(cache: Path | None = None, progress: Progress | None = None, *,
          force: bool = False) -> TestVMImage:
    """Build the test VM image into ``cache`` (default :func:`cache_dir`) and return it.

    Idempotent: when an image built from the current /init exists it is returned at once
    (``force=True`` rebuilds).  ``progress(event, fraction)`` is called as steps complete.
    """
    report = progress or (lambda event, fraction: None)
    root = Path(cache) if cache is not None else cache_dir()
    if not force:
        try:
            img = find(root)
            report("cached", 1.0)
            return img
        except NotFoundError:
            pass
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="testvm-build-", dir=root) as tmp:
        work = Path(tmp)
        debs = work / "debs"
        debs.mkdir()
        kernel_pkg = _kernel_package()
        report(f"downloading {kernel_pkg}, qemu-guest-agent, busybox-static, iproute2", 0.05)
        _apt_download([kernel_pkg, "qemu-guest-agent", "busybox-static", "iproute2"], debs)
        deb = {name: _one(debs, name) for name in (kernel_pkg, "qemu-guest-agent",
                                                     "busybox-static", "iproute2")}
        report("extracting kernel and modules", 0.35)
        kfiles = _extract(deb[kernel_pkg], _kernel_member)
        vmlinuz = [v for k, v in kfiles.items() if "/boot/vmlinuz-" in k]
        if len(vmlinuz) != 1:
            raise EngineError(f"{kernel_pkg} holds {len(vmlinuz)} kernels, expected one",
                              engine="images")
        kver = next(k for k in kfiles if "/boot/vmlinuz-" in k).rsplit("vmlinuz-", 1)[1]
        modules = {Path(k).name[:-3]: v for k, v in kfiles.items() if k.endswith(".ko")}
        order = module_order(WANTED_MODULES, modules)
        report("uncompressing the kernel to vmlinux", 0.5)
        vmlinux = extract_vmlinux(vmlinuz[0])
        report("assembling the initramfs", 0.7)
        bb = _extract(deb["busybox-static"], lambda n: n.endswith("/bin/busybox"))
        qga = _extract(deb["qemu-guest-agent"], lambda n: n.endswith("/usr/sbin/qemu-ga"))
        tc = _extract(deb["iproute2"], lambda n: n.endswith("/sbin/tc"))
        if not bb or not qga or not tc:
            raise EngineError("busybox, qemu-ga or tc missing from their Debian packages",
                              engine="images")
        busybox = next(iter(bb.values()))
        qemu_ga = next(iter(qga.values()))
        try:
            # linked against the libc.so.6 and loader bundled for qemu-ga (the host's)
            helper: bytes | None = compile_udp_helper(work, static=False)
            prober: bytes | None = compile_probe_helper(work, static=False)
            report("compiled the guest's UDP and probe helpers (hnb-udp, hnb-probe)", 0.75)
        except EngineUnavailable as exc:
            helper = prober = None
            report(f"{exc.message}; the image has no UDP or probe helper, so UDP probes from "
                   "and to the VM will be skipped and its probes go through the guest agent",
                   0.75)
        entries = _initramfs_entries(busybox, qemu_ga, work, modules, order, helper,
                                     tc=next(iter(tc.values())), probe_helper=prober)
        version = f"{kver}-{_deb_version(deb['qemu-guest-agent'])}-{_init_hash()}"
        out = root / f"testvm-{_safe(version)}"
        if out.exists():
            shutil.rmtree(out)
        stage = work / "out"
        stage.mkdir()
        (stage / "vmlinux").write_bytes(vmlinux)
        # gzip: the kernel holds the archive and its unpacked files at once; uncompressed
        # (8.7 MB) that no longer fits a 96 MiB guest, compressed (3.8 MB) it does.
        raw = io.BytesIO()
        write_cpio(raw, entries)
        (stage / "initrd.img").write_bytes(gzip.compress(raw.getvalue(), 6, mtime=0))
        (stage / _MANIFEST).write_text(json.dumps({
            "version": version, "init": _init_hash(), "kernel_package": kernel_pkg,
            "modules": order, "udp_helper": helper is not None,
            "probe_helper": prober is not None, "tc": True,
            "built": time.time()},
            indent=1, sort_keys=True))
        os.rename(stage, out)
    for old in root.glob("testvm-*"):
        if old != out and (old / _MANIFEST).exists():
            shutil.rmtree(old, ignore_errors=True)       # images of an older /init or kernel
    report("built", 1.0)
    return find(root)


# ------------------------------------------------------------------------------ the kernel

_XZ_MAGIC = b"\xfd7zXZ\x00"


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF kernel inside an xz-compressed bzImage (what ``extract-vmlinux`` does)."""
    start = bzimage.find(_XZ_MAGIC)
    while start >= 0:
        try:
            dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
            out = dec.decompress(bzimage[start:])
            if out.startswith(b"\x7fELF"):
                return out
        except lzma.LZMAError:
            pass
        start = bzimage.find(_XZ_MAGIC, start + 1)
    raise EngineError("no xz-compressed ELF kernel found in the bzImage", engine="images",
                      hint="the kernel package must be built with CONFIG_KERNEL_XZ")


def _kernel_member(name: str) -> bool:
    """The bzImage and the modules that may be needed (virtio* and their failover deps)."""
    base = name.rsplit("/", 1)[-1]
    return "/boot/vmlinuz-" in name or (base.endswith(".ko") and (
        base.startswith("virtio") or "failover" in base or base == "sch_netem.ko"))


_DEPENDS = re.compile(rb"(?:^|\x00)depends=([^\x00]*)\x00")


def module_depends(ko: bytes) -> list[str]:
    m = _DEPENDS.search(ko)
    if not m or not m.group(1):
        return []
    return [d.decode().replace("-", "_") for d in m.group(1).split(b",") if d]


def module_order(wanted: Iterable[str], modules: dict[str, bytes]) -> list[str]:
    """The ``insmod`` order: every wanted module after all of its dependencies."""
    byname = {k.replace("-", "_"): k for k in modules}
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in path:
            raise EngineError(f"module dependency cycle at {name}", engine="images")
        if name not in byname:
            raise EngineError(f"kernel module {name} not in the kernel package (built in?)",
                              engine="images")
        for dep in module_depends(modules[byname[name]]):
            visit(dep, path + (name,))
        order.append(name)

    for w in wanted:
        visit(w, ())
    return [byname[n] for n in order]


# ------------------------------------------------------------------------------ packages

def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, check=True, capture_output=True, **kw)
    except FileNotFoundError as exc:
        raise EngineError(f"{argv[0]} not found", engine="images",
                          hint="building the test VM needs a Debian/Ubuntu host") from exc
    except subprocess.CalledProcessError as exc:
        err = exc.stderr.decode(errors="replace").strip() if exc.stderr else ""
        raise EngineError(f"{' '.join(argv[:3])} failed: {err[-500:]}", engine="images") \
            from exc


def _kernel_package() -> str:
    out = _run(["apt-cache", "depends", KERNEL_META]).stdout.decode()
    for line in out.splitlines():
        m = re.match(r"\s*Depends:\s*(linux-image-\S+)", line)
        if m:
            return m.group(1)
    raise EngineError(f"cannot resolve {KERNEL_META} to a kernel package", engine="images",
                      hint="run `apt-get update`")


def _apt_download(packages: list[str], dest: Path) -> None:
    _run(["apt-get", "download", *packages], cwd=dest)


def _one(debs: Path, package: str) -> Path:
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        raise EngineError(f"apt-get download did not fetch {package}", engine="images")
    return found[-1]


def _deb_version(deb: Path) -> str:
    return deb.name.split("_")[1].replace("%3a", ":")


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]", "_", text)


def _extract(deb: Path, want: Callable[[str], bool]) -> dict[str, bytes]:
    """Regular files of a .deb whose path matches ``want`` (streamed from dpkg-deb)."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    found: dict[str, bytes] = {}
    assert proc.stdout is not None
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for member in tar:
            if member.isfile() and want(member.name):
                fh = tar.extractfile(member)
                assert fh is not None
                found[member.name] = fh.read()
    err = proc.stderr.read() if proc.stderr else b""
    if proc.wait() != 0:
        raise EngineError(f"dpkg-deb failed on {deb.name}: {err.decode(errors='replace')}",
                          engine="images")
    return found


# ------------------------------------------------------------------------------ initramfs

@dataclass(frozen=True)
class _Entry:
    path: str            # without leading slash
    mode: int            # full st_mode (type + permissions)
    data: bytes = b""    # file content or symlink target


def _shared_libs(binary: Path) -> list[str]:
    """Absolute paths of the libraries (and the loader) a dynamic binary needs, per ldd."""
    out = _run(["ldd", str(binary)]).stdout.decode()
    libs: list[str] = []
    for line in out.splitlines():
        if "not found" in line:
            raise EngineError(f"{binary.name} needs a library the host lacks: {line.strip()}",
                              engine="images",
                              hint="apt-get install qemu-guest-agent iproute2 (the host "
                                   "provides the libraries their binaries link)")
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            libs.append(m.group(1))
    return sorted(set(libs))


def _initramfs_entries(busybox: bytes, qemu_ga: bytes, work: Path, modules: dict[str, bytes],
                       order: list[str], udp_helper: bytes | None = None,
                       tc: bytes | None = None, probe_helper: bytes | None = None
                       ) -> list[_Entry]:
    d, f, ln = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o755, stat.S_IFLNK | 0o777
    entries: dict[str, _Entry] = {}

    def add(e: _Entry) -> None:
        parts = e.path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            entries.setdefault(parent, _Entry(parent, d))
        entries[e.path] = e

    for top in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "run",
                "tmp", "var", "lib/modules", "www", "root"):
        add(_Entry(top, d))
    add(_Entry("bin/busybox", f, busybox))
    bb = work / "busybox"
    bb.write_bytes(busybox)
    bb.chmod(0o755)
    applets = _run([str(bb), "--list-full"]).stdout.decode().split()
    for applet in applets:
        if applet != "bin/busybox" and applet.rsplit("/", 1)[-1] != "init":
            add(_Entry(applet, ln, b"/bin/busybox"))
    add(_Entry("init", f, init_script()))
    if udp_helper is not None:
        add(_Entry(UDP_HELPER_PATH, f, udp_helper))
    if probe_helper is not None:
        add(_Entry(PROBE_HELPER_PATH, f, probe_helper))
    qga = work / "qemu-ga"
    qga.write_bytes(qemu_ga)
    qga.chmod(0o755)
    add(_Entry("usr/sbin/qemu-ga", f, qemu_ga))
    binaries = [qga]
    if tc is not None:
        tc_path = work / "tc"
        tc_path.write_bytes(tc)
        tc_path.chmod(0o755)
        add(_Entry("sbin/tc", f, tc))            # replaces busybox's show-only tc applet
        binaries.append(tc_path)
    for lib in sorted({lib for b in binaries for lib in _shared_libs(b)}):
        add(_Entry(lib.lstrip("/"), f, Path(os.path.realpath(lib)).read_bytes()))
    for name in order:
        add(_Entry(f"lib/modules/{name}.ko", stat.S_IFREG | 0o644, modules[name]))
    add(_Entry("etc/modules-order", stat.S_IFREG | 0o644, ("\n".join(order) + "\n").encode()))
    add(_Entry("etc/passwd", stat.S_IFREG | 0o644, b"root:x:0:0:root:/root:/bin/sh\n"))
    add(_Entry("etc/group", stat.S_IFREG | 0o644, b"root:x:0:\n"))
    return [entries[k] for k in sorted(entries)]


def write_cpio(fh: io.RawIOBase | io.BufferedWriter, entries: Iterable[_Entry]) -> None:
    """Write a deterministic newc cpio archive (what the kernel unpacks as initramfs)."""

    def record(ino: int, path: str, mode: int, data: bytes) -> None:
        name = path.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(mode) else 1
        fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name), 0)
        head = b"070701" + b"".join(b"%08X" % v for v in fields)
        fh.write(head + name + b"\0" * ((4 - (len(head) + len(name)) % 4) % 4))
        fh.write(data + b"\0" * ((4 - len(data) % 4) % 4))

    ino = 1
    for e in entries:
        record(ino, e.path, e.mode, e.data)
        ino += 1
    record(0, "TRAILER!!!", 0, b"")
