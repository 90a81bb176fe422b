"""The VM driver: lab VMs as libvirt domains on the lab bridge (libvirt-python).

Handles resources of kind ``vm`` (spec fields: see :mod:`hybridnb.core.compile`).  A VM is a
persistent libvirt domain named ``hnb-<lab>-<name>`` whose XML comes from
:func:`hybridnb.core.vmxml.domain_xml`; its ``<metadata>`` element names the lab, the endpoint
and the resource fingerprint, which is how :meth:`LibvirtDriver.observe` recognizes this lab's
domains (and nothing else) without any local state.

* template ``test``: direct boot of the small test image (:mod:`hybridnb.images.testvm`, or
  the spec's own ``kernel``/``initrd``), identity on the kernel command line;
* templates ``base``/``docker``: a qcow2 overlay on the spec's cloud ``image`` plus a NoCloud
  seed ISO built from :mod:`hybridnb.core.cloudinit` (``genisoimage``);
* image recipes (spec ``boot: disk`` with the ``kernel``, ``initrd`` and base ``disk`` that
  :func:`hybridnb.images.vmdisk.VMImage.spec` gives): direct boot of the kernel bundle with a
  qcow2 overlay on the recipe's read-only ext4 disk (one image, many VMs), identity on the
  kernel command line — or a NoCloud seed too, when the image has ``cloud_init``.

A VM counts as *up* when its ready marker (``HYBRIDNB-READY``) has appeared on the serial
console and the QEMU guest agent answers a ping; a recipe VM prints the marker once every
service of its image accepts connections, and ``HYBRIDNB-FAILED service=... reason=...``
when one does not (a BootError at once, naming the service).  A spec's ``boot_timeout``
replaces the driver's for that VM.  Boot progress is reported through
``progress(event, fraction)``: ``event`` is ``"<endpoint>: <stage>"`` (stages: ``defining``,
``starting``, ``kernel booting``, ``init running``, ``ready marker seen``, ``agent up``) and
``fraction`` runs from 0.0 to 1.0 for that VM.  A boot that fails (QEMU refuses the kernel,
the guest panics, the timeout passes) raises :class:`~hybridnb.errors.BootError` carrying the
console tail, after removing the domain and its files — a failed create leaves nothing.

``check`` (the preflight, before anything of the lab is deleted or changed) refuses a VM that
cannot be made: a kernel, initrd, cloud image or recipe disk that is not there (or no built
test image), a domain name held by another lab, guest memory the machine does not have
available.

Per-VM files (serial console log, seed ISO, disk overlay, the test VM's probe helper socket)
live in ``<files_dir>/<domain name>/``.  :meth:`LibvirtDriver.guest_exec` runs a command in the guest
through the agent (``guest-exec`` / ``guest-exec-status``), so a guest whose network is
broken can still be diagnosed.  One libvirt connection is shared by all threads (libvirt's
client is thread-safe), so creates of different VMs may run concurrently.

**Remote mode** (``remote="host b"``, given by the backend of a host reached only through its
engines' URLs): nothing in the domain XML is a path of this machine.  Boot files become
content-keyed volumes of hybridnb's storage pool on that libvirt, the overlay is made there
and the seed uploaded (:mod:`hybridnb.drivers.vmpool`); the serial console is a pty read
through libvirt into the local ``console.log`` (:mod:`hybridnb.drivers.vmconsole`); no probe
helper socket; memory is checked against that host's.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

from hybridnb.core import cloudinit, naming, vmxml
from hybridnb.core.resource import Observation, Resource
from hybridnb.drivers.vmconsole import ConsoleMirror
from hybridnb.drivers.vmpool import VolumePool
from hybridnb.errors import (BootError, ConflictError, EngineError, EngineUnavailable,
                             NotFoundError)
from hybridnb.target import Target

Progress = Callable[[str, float], None]

READY_MARKER = "HYBRIDNB-READY"
FAILED_MARKER = "HYBRIDNB-FAILED"
#: The host-side socket of a test VM's probe helper port, in its files directory.
PROBE_SOCKET = "probe.sock"
#: What QEMU itself needs beside the guest's memory, MiB (measured: 200-240 MB RSS under TCG
#: for a 128 MiB test VM).
QEMU_OVERHEAD_MIB = 128

#: Console text → (stage, fraction) for progress reports, in boot order.
_STAGES = (("Linux version", "kernel booting", 0.3), ("hybridnb-boot:", "initramfs running", 0.4),
           ("Run /init", "init running", 0.5), ("Cloud-init", "cloud-init running", 0.5),
           ("hybridnb-init:", "init running", 0.6),
           ("hybridnb-init: running cloud-init", "cloud-init running", 0.65),
           ("hybridnb-init: started", "services starting", 0.7))


class ExecResult(NamedTuple):
    """What a command run in the guest returned (unpacks as ``code, out, err``)."""

    exit_code: int
    stdout: str
    stderr: str


def default_files_dir(target: Target) -> Path:
    """``/var/lib/hybridnb/targets/<target>/vms`` for root, else under ``$XDG_STATE_HOME``."""
    if os.geteuid() == 0:
        base = Path("/var/lib/hybridnb")
    else:
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") \
            / "hybridnb"
    return base / "targets" / target.name / "vms"


def _libvirt():
    try:
        import libvirt  # noqa: PLC0415  (heavy: imported on first use)
    except ImportError as exc:
        raise EngineUnavailable("libvirt-python is not installed", engine="libvirt",
                                hint="pip install 'hybridnb[libvirt]' (needs libvirt-dev "
                                     "and pkg-config to build)") from exc
    if not getattr(_libvirt, "_quiet", False):
        # libvirt's default handler prints every error on stderr; we raise them instead.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        _libvirt._quiet = True  # type: ignore[attr-defined]
    return libvirt


class LibvirtDriver:
    """Driver for kind ``vm`` on the libvirt daemon at ``target.libvirt_uri``."""

    kind = "vm"
    concurrent = True
    #: libvirtd finishes a define/start whose client died; seconds it may still take to land
    settle = 2.0

    def __init__(self, target: Target, *, files_dir: Path | None = None,
                 image_dir: Path | None = None, boot_timeout: float = 60.0,
                 progress: Progress | None = None, ssh_keys: Sequence[str] | None = None,
                 state_dir: Path | None = None, remote: str | None = None) -> None:
        files_dir = files_dir or state_dir          # ``state_dir``: the backends' spelling
        if not target.libvirt_uri:
            raise EngineUnavailable(f"target {target.name!r} has no libvirt URI",
                                    engine="libvirt")
        self.target = target
        self.uri = target.libvirt_uri
        self.files_dir = Path(files_dir) if files_dir else default_files_dir(target)
        self.image_dir = image_dir
        self.boot_timeout = boot_timeout
        self.progress = progress
        self.ssh_keys = ssh_keys
        self._conn: Any = None
        self._lock = threading.Lock()
        #: ``remote``: this libvirt is on another host (named so in errors, e.g. ``host b
        #: (libvirt qemu+ssh://…)``): boot files go into its storage pool, the console is
        #: read through libvirt (:mod:`hybridnb.drivers.vmpool`, :mod:`~.vmconsole`)
        self.remote = remote
        self.pool: VolumePool | None = VolumePool(self.connection, remote) if remote else None
        self._consoles: dict[str, ConsoleMirror] = {}
        self._placed: dict[str, set[str]] = {}     # domain → volumes placed, not yet named

    # ------------------------------------------------------------------ connection

    def connection(self) -> Any:
        """The shared libvirt connection (opened on first use, reopened if it died)."""
        libvirt = _libvirt()
        with self._lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                self._conn = None
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise EngineUnavailable(f"cannot connect to libvirt at {self.uri}: "
                                        f"{exc.get_error_message()}", engine="libvirt",
                                        hint=self.target.start_hint("libvirtd")) from exc
            return self._conn

    def engine_version(self) -> dict[str, str]:
        """libvirt's and the hypervisor's (QEMU's) versions (for reports and diagnostics)."""
        def dotted(n: int) -> str:
            return f"{n // 1000000}.{n // 1000 % 1000}.{n % 1000}"

        conn = self.connection()
        with self._errors("ask libvirt for its versions"):
            return {"libvirt": dotted(conn.getLibVersion()),
                    conn.getType().lower(): dotted(conn.getVersion())}

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:  # noqa: BLE001  (closing a dead connection)
                    pass
                self._conn = None

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        libvirt = _libvirt()
        try:
            yield
        except libvirt.libvirtError as exc:
            raise EngineError(f"{what}: {exc.get_error_message()}", engine="libvirt") from exc

    def _lookup(self, domain_name: str) -> Any | None:
        libvirt = _libvirt()
        try:
            return self.connection().lookupByName(domain_name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise EngineError(f"looking up domain {domain_name}: {exc.get_error_message()}",
                              engine="libvirt") from exc

    @staticmethod
    def _metadata(dom: Any) -> dict[str, str] | None:
        libvirt = _libvirt()
        try:
            text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, vmxml.METADATA_NS, 0)
        except libvirt.libvirtError:
            return None          # no metadata (not ours) or the domain vanished meanwhile
        return vmxml.parse_metadata(text)

    # ------------------------------------------------------------------ protocol

    def labs(self) -> set[str]:
        """Every lab that has a domain defined in this libvirt."""
        with self._errors("listing domains"):
            domains = self.connection().listAllDomains(0)
        metas = (self._metadata(dom) for dom in domains)
        return {m["name"] for m in metas if m and m.get("name") and m.get("endpoint")}

    def observe(self, lab: str) -> dict[str, Observation]:
        """This lab's domains: the fingerprint in their metadata, and whether they run (a
        domain that does not is observed with its libvirt state as the reason)."""
        libvirt = _libvirt()
        out: dict[str, Observation] = {}
        with self._errors("listing domains"):
            domains = self.connection().listAllDomains(0)
        for dom in domains:
            meta = self._metadata(dom)
            if not meta or meta["name"] != lab or not meta["endpoint"]:
                continue
            try:
                running = bool(dom.isActive())
                code = dom.state()[0]
            except libvirt.libvirtError:
                continue
            state = _STATE_NAMES.get(code, f"state {code}")
            out[meta["endpoint"]] = Observation(meta["fingerprint"], running=running,
                                                reason="" if running else state, detail=state)
        return dict(sorted(out.items()))

    def check(self, lab: str, resource: Resource) -> None:
        """Before anything changes: the files the VM boots from exist, its domain name is
        free or this lab's, and the machine has the memory it asks for available."""
        spec = resource.spec
        endpoint = spec["endpoint"]
        if spec.get("boot") == "disk":                 # an image recipe's, bound in by apply
            for key in ("kernel", "initrd", "disk"):
                if not spec.get(key) or not Path(spec[key]).is_file():
                    raise NotFoundError(f"{key} {spec.get(key)!r} of VM {endpoint} (image "
                                        f"{(spec.get('recipe') or {}).get('name')}) not found",
                                        hint="hybridnb images build LAB.yaml makes it (apply "
                                             "does too)")
        elif spec.get("template", "test") == "test":
            if not spec.get("kernel") or not spec.get("initrd"):
                from hybridnb.images import testvm  # noqa: PLC0415

                testvm.find(self.image_dir)
            for key in ("kernel", "initrd"):
                if spec.get(key) and not Path(spec[key]).is_file():
                    raise NotFoundError(f"{key} {spec[key]} of VM {endpoint} does not exist",
                                        hint=f"give the path of a {key} file, or leave {key} "
                                             "out to boot the built test image")
        else:
            image = spec.get("image")
            if not image or not Path(image).is_file():
                raise NotFoundError(f"cloud image {image!r} of VM {endpoint} not found",
                                    hint="set image: to a downloaded cloud image (qcow2), e.g. "
                                         "debian-12-genericcloud-amd64.qcow2")
        dom = self._lookup(spec["domain_name"])
        meta = self._metadata(dom) if dom is not None else None
        if dom is not None and (not meta or meta["name"] != lab):
            owner = f"lab {meta['name']!r}" if meta else "someone else"
            raise ConflictError(f"domain {spec['domain_name']} exists and belongs to {owner}",
                                hint="remove it, or rename the endpoint")
        want = int(spec.get("memory") or 0) + QEMU_OVERHEAD_MIB
        have = self._available_mib()
        if have is not None and want > have:
            raise EngineError(f"VM {endpoint} needs about {want} MiB ({spec.get('memory')} MiB "
                              f"guest + QEMU) but {self.remote or 'the machine'} has {have} MiB "
                              "available",
                              engine="libvirt", hint="give it less memory, or stop something")

    def create(self, lab: str, resource: Resource, progress: Progress | None = None) -> None:
        """Define and start the VM, wait until it is up; BootError (nothing left) if not."""
        libvirt = _libvirt()
        spec = dict(resource.spec)
        endpoint, dname = spec["endpoint"], spec["domain_name"]
        report = self._reporter(endpoint, progress)
        report("defining", 0.0)
        self._remove(lab, dname, keep_keyed=True)
        vmdir = self.files_dir / dname
        vmdir.mkdir(parents=True, exist_ok=True)
        console = vmdir / "console.log"
        self._placed[dname] = set()
        try:
            xml = self._domain_xml(lab, spec, resource.fingerprint, vmdir, console)
        except BaseException as exc:
            shutil.rmtree(vmdir, ignore_errors=True)
            self._forget(dname)
            if self.remote and isinstance(exc, (EngineError, EngineUnavailable)) \
                    and not exc.message.startswith(f"VM {endpoint}"):
                exc.message = f"VM {endpoint}: {exc.message}"    # the pool's errors name no VM
            raise
        conn = self.connection()
        try:
            dom = conn.defineXML(xml)
        except libvirt.libvirtError as exc:
            shutil.rmtree(vmdir, ignore_errors=True)
            self._forget(dname)
            raise EngineError(f"libvirt refused the domain of {endpoint}: "
                              f"{exc.get_error_message()}", engine="libvirt") from exc
        self._placed.pop(dname, None)            # the domain names them now
        report("starting", 0.1)
        try:
            self._boot(dom, dname, console)
        except libvirt.libvirtError as exc:
            tail = _tail(console)
            self._remove(lab, dname)
            raise BootError(f"VM {endpoint} did not start: {exc.get_error_message()}",
                            console=tail or exc.get_error_message(),
                            hint="check the kernel/initrd or image path and the memory size"
                            ) from exc
        try:
            self._wait_ready(dom, endpoint, console, report,
                             float(spec.get("boot_timeout") or self.boot_timeout))
        except BootError:
            self._remove(lab, dname)
            raise

    def delete(self, lab: str, name: str) -> None:
        """Destroy and undefine the VM and remove its files; already gone is fine."""
        self._remove(lab, naming.object_name(lab, name))

    # ------------------------------------------------------------------ extras

    def guest_exec(self, lab: str, endpoint: str, argv: Sequence[str], timeout: float = 10.0,
                   input: bytes | str | None = None) -> ExecResult:
        """Run ``argv`` in the guest through the QEMU guest agent; return its exit code and
        output.  EngineError when the agent does not answer or the command outlives
        ``timeout`` seconds."""
        if not argv:
            raise ValueError("argv is empty")
        dom = self._owned(lab, endpoint)
        args: dict[str, Any] = {"path": argv[0], "arg": list(argv[1:]), "capture-output": True}
        if input is not None:
            data = input.encode() if isinstance(input, str) else input
            args["input-data"] = base64.b64encode(data).decode()
        started = self._agent(dom, endpoint, "guest-exec", args, timeout=max(5, int(timeout)))
        pid = started["pid"]
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            st = self._agent(dom, endpoint, "guest-exec-status", {"pid": pid}, timeout=5)
            if st.get("exited"):
                break
            if time.monotonic() > deadline:
                raise EngineError(f"{' '.join(argv)} in {endpoint} still running after "
                                  f"{timeout} s", engine="libvirt")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        code = st.get("exitcode")
        if code is None:
            code = -int(st.get("signal", 0))
        out = base64.b64decode(st.get("out-data", "")).decode(errors="replace")
        err = base64.b64decode(st.get("err-data", "")).decode(errors="replace")
        return ExecResult(int(code), out, err)

    def probe_channel(self, lab: str, endpoint: str) -> str | None:
        """The host side of the VM's probe helper port (a unix socket QEMU listens on; test
        VMs get one, see :func:`_probe_socket`), or None when it has none."""
        if self.remote:
            return None                      # a socket on another host: the agent only
        path = self.files_dir / naming.object_name(lab, endpoint) / PROBE_SOCKET
        return str(path) if path.is_socket() else None

    def agent_ping(self, lab: str, endpoint: str, timeout: int = 2) -> bool:
        """True when the guest agent of the VM answers."""
        try:
            self._agent(self._owned(lab, endpoint), endpoint, "guest-ping", None, timeout)
            return True
        except EngineError:
            return False

    def state(self, lab: str, endpoint: str) -> str | None:
        """``running``, ``shut off``, ``paused``, ... or None when the domain does not exist."""
        dom = self._lookup(naming.object_name(lab, endpoint))
        if dom is None:
            return None
        with self._errors(f"reading the state of {endpoint}"):
            code = dom.state()[0]
        return _STATE_NAMES.get(code, f"state {code}")

    def console(self, lab: str, endpoint: str, lines: int = 40) -> str:
        """The last ``lines`` lines of the VM's serial console."""
        return _tail(self.console_path(lab, endpoint), lines)

    # -- for the watching services (monitor, capture, doctor, logs) ------------------------

    def console_path(self, lab: str, endpoint: str) -> Path:
        """The file the VM's serial console is written to."""
        return self.files_dir / naming.object_name(lab, endpoint) / "console.log"

    def interfaces(self, lab: str, endpoint: str) -> list[dict[str, str]]:
        """The VM's NICs as the running domain's XML has them: ``{"mac", "tap", "bridge"}``
        (``tap`` is the ``<target dev>`` libvirt made on the lab host; empty when stopped)."""
        import xml.etree.ElementTree as ET

        dom = self._owned(lab, endpoint)
        with self._errors(f"reading the domain XML of {endpoint}"):
            root = ET.fromstring(dom.XMLDesc(0))
        out = []
        for nic in root.iter("interface"):
            mac, tgt, src = nic.find("mac"), nic.find("target"), nic.find("source")
            out.append({"mac": mac.get("address", "") if mac is not None else "",
                        "tap": tgt.get("dev", "") if tgt is not None else "",
                        "bridge": src.get("bridge", "") if src is not None else ""})
        return out

    def start(self, lab: str, endpoint: str) -> None:
        """Start a stopped VM of the lab (and wait until it is up); running is fine."""
        dom = self._owned(lab, endpoint)
        with self._errors(f"starting {endpoint}"):
            if not dom.isActive():
                console = self.console_path(lab, endpoint)
                console.parent.mkdir(parents=True, exist_ok=True)
                self._boot(dom, naming.object_name(lab, endpoint), console)
        self._wait_ready(dom, endpoint, self.console_path(lab, endpoint),
                         self._reporter(endpoint, None))

    def stop(self, lab: str, endpoint: str) -> None:
        """Power a VM of the lab off (its definition stays: ``start`` brings it back)."""
        libvirt = _libvirt()
        dom = self._owned(lab, endpoint)
        try:
            if dom.isActive():
                dom.destroy()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                raise EngineError(f"stopping {endpoint}: {exc.get_error_message()}",
                                  engine="libvirt") from exc

    def versions(self) -> dict[str, str]:
        """libvirt's and the hypervisor's (QEMU's) versions, and the domain types this host
        offers (``qemu`` is TCG, ``kvm`` hardware virtualization)."""
        import xml.etree.ElementTree as ET

        conn = self.connection()
        with self._errors("reading libvirt versions"):
            lib, hyp = conn.getLibVersion(), conn.getVersion()
            caps = ET.fromstring(conn.getCapabilities())
        types = sorted({d.get("type", "") for d in caps.iter("domain")} - {""})

        def dotted(v: int) -> str:
            return f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}"
        return {"libvirt": dotted(lib), "qemu": dotted(hyp), "domain_types": ",".join(types)}

    # ------------------------------------------------------------------ internals

    def _reporter(self, endpoint: str, progress: Progress | None) -> Callable[[str, float], None]:
        sink = progress or self.progress

        def report(stage: str, fraction: float) -> None:
            if sink is not None:
                sink(f"{endpoint}: {stage}", fraction)
        return report

    def _owned(self, lab: str, endpoint: str) -> Any:
        dname = naming.object_name(lab, endpoint)
        dom = self._lookup(dname)
        meta = self._metadata(dom) if dom is not None else None
        if dom is None or not meta or meta["name"] != lab:
            raise NotFoundError(f"no VM {endpoint} in lab {lab}")
        return dom

    def _agent(self, dom: Any, endpoint: str, command: str, arguments: Mapping[str, Any] | None,
               timeout: int) -> Any:
        libvirt = _libvirt()
        import libvirt_qemu  # noqa: PLC0415

        msg: dict[str, Any] = {"execute": command}
        if arguments is not None:
            msg["arguments"] = dict(arguments)
        try:
            reply = libvirt_qemu.qemuAgentCommand(dom, json.dumps(msg), int(timeout), 0)
        except libvirt.libvirtError as exc:
            raise EngineError(f"guest agent of {endpoint} ({command}): "
                              f"{exc.get_error_message()}", engine="libvirt",
                              hint="the guest agent runs once the VM is up") from exc
        data = json.loads(reply)
        if "error" in data:
            raise EngineError(f"guest agent of {endpoint} ({command}): "
                              f"{data['error'].get('desc', data['error'])}", engine="libvirt")
        return data.get("return")

    def _domain_xml(self, lab: str, spec: dict[str, Any], fingerprint: str, vmdir: Path,
                    console: Path) -> str:
        template = spec.get("template", "test")
        if spec.get("boot") == "disk":
            return self._recipe_xml(lab, spec, fingerprint, vmdir, console)
        if template == "test":
            kernel, initrd = spec.get("kernel"), spec.get("initrd")
            if not kernel or not initrd:
                from hybridnb.images import testvm  # noqa: PLC0415

                img = testvm.find(self.image_dir)
                kernel = kernel or str(img.kernel)
                initrd = initrd or str(img.initrd)
            return vmxml.domain_xml(lab, spec, kernel=self._file(kernel, vmdir),
                                    initrd=self._file(initrd, vmdir),
                                    console_log=self._log(console),
                                    fingerprint=fingerprint,
                                    probe_socket=None if self.remote else _probe_socket(vmdir))
        image = spec.get("image")
        if not image or not Path(image).is_file():
            raise NotFoundError(f"cloud image {image!r} of VM {spec['endpoint']} not found",
                                hint="set image: to a downloaded cloud image (qcow2), e.g. "
                                     "debian-12-genericcloud-amd64.qcow2")
        disk = self._overlay(Path(image), vmdir)
        seed = self._seed(lab, spec, vmdir)
        return vmxml.domain_xml(lab, spec, kernel=None, initrd=None,
                                console_log=self._log(console), seed_iso=seed, disk=disk,
                                fingerprint=fingerprint)

    def _recipe_xml(self, lab: str, spec: dict[str, Any], fingerprint: str, vmdir: Path,
                    console: Path) -> str:
        """A recipe VM: a qcow2 overlay on the image's disk (+ a NoCloud seed)."""
        for key in ("kernel", "initrd", "disk"):
            if not spec.get(key) or not Path(spec[key]).is_file():
                raise NotFoundError(f"{key} {spec.get(key)!r} of VM {spec['endpoint']} not "
                                    "found", hint="build the image first (hybridnb images "
                                                  "build LAB.yaml)")
        disk = self._overlay(Path(spec["disk"]), vmdir)
        seed = self._seed(lab, spec, vmdir) if spec.get("cloud_init") else None
        return vmxml.domain_xml(lab, spec, kernel=self._file(spec["kernel"], vmdir),
                                initrd=self._file(spec["initrd"], vmdir),
                                console_log=self._log(console), seed_iso=seed, disk=disk,
                                fingerprint=fingerprint)

    # -- where a VM's files are: here, or in the storage pool of a remote libvirt ----------

    def _file(self, path: str | Path, vmdir: Path) -> str:
        """A boot file as the libvirt host sees it (uploaded there when it is remote)."""
        if self.pool is None:
            return str(path)
        return self._place(vmdir, self.pool.upload(Path(path)))

    def _place(self, vmdir: Path, path: str) -> str:
        """``path`` (a volume) placed for domain ``vmdir.name``: forgotten again if its
        create fails before the domain names it."""
        self._placed.setdefault(vmdir.name, set()).add(path)
        return path

    def _forget(self, dname: str) -> None:
        """A create failed before its domain was defined: the volumes it placed that no
        domain uses go (best effort: the create's own error is the one to report)."""
        placed = self._placed.pop(dname, set())
        if self.pool is None:
            return
        try:
            self.pool.release(dname, placed, self._other_xmls())
        except (EngineError, OSError):
            pass

    def _log(self, console: Path) -> str | None:
        """The serial console's file for the domain XML (None, a pty, when remote)."""
        return None if self.remote else str(console)

    def _overlay(self, base: Path, vmdir: Path) -> str:
        """A VM's qcow2 overlay on ``base`` (made on the libvirt host when remote)."""
        if self.pool is None:
            disk = vmdir / "disk.qcow2"
            _make_overlay(base, disk)
            return str(disk)
        info = _image_info(base)
        backing = self._place(vmdir, self.pool.upload(base))
        return self._place(vmdir, self.pool.overlay(
            f"{vmdir.name}-disk.qcow2", backing, info.get("format", "raw"),
            int(info.get("virtual-size") or base.stat().st_size)))

    def _seed(self, lab: str, spec: dict[str, Any], vmdir: Path) -> str:
        """A VM's NoCloud seed ISO (built here, uploaded when the libvirt is remote)."""
        keys = self.ssh_keys if self.ssh_keys is not None else _default_ssh_keys()
        files = cloudinit.seed_files(lab, spec, ssh_keys=keys)
        if self.pool is None:
            seed = vmdir / "seed.iso"
            _make_seed_iso(files, seed)
            return str(seed)
        with tempfile.TemporaryDirectory(prefix="hnb-seed-") as tmp:
            iso = Path(tmp) / "seed.iso"
            _make_seed_iso(files, iso)
            return self._place(vmdir, self.pool.upload(iso, name=f"{vmdir.name}-seed.iso"))

    def _boot(self, dom: Any, dname: str, console: Path) -> None:
        """Start the domain; a remote one paused first, its console opened, then resumed
        (nothing it prints is lost)."""
        if not self.remote:
            dom.create()
            return
        libvirt = _libvirt()
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        old = self._consoles.pop(dname, None)
        if old is not None:
            old.stop()
        try:
            self._consoles[dname] = ConsoleMirror(self.uri, dom.UUIDString(), console)
            dom.resume()
        except libvirt.libvirtError:
            try:
                dom.destroy()                     # not left paused
            except libvirt.libvirtError:
                pass
            raise

    def _available_mib(self) -> int | None:
        """MiB the VM host has available (this machine's ``MemAvailable``, or libvirt's
        node memory stats — free + buffers + cached — of a remote one)."""
        if not self.remote:
            return _available_mib()
        libvirt = _libvirt()
        try:
            stats = self.connection().getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
        except libvirt.libvirtError:
            return None
        return sum(int(stats.get(k, 0)) for k in ("free", "buffers", "cached")) // 1024

    def _wait_ready(self, dom: Any, endpoint: str, console: Path,
                    report: Callable[[str, float], None], timeout: float | None = None
                    ) -> None:
        libvirt = _libvirt()
        timeout = timeout or self.boot_timeout
        deadline = time.monotonic() + timeout
        seen = 0.1
        marker = False
        while True:
            text = _read(console)
            if not marker:
                for needle, stage, fraction in _STAGES:
                    if fraction > seen and needle in text:
                        seen = fraction
                        report(stage, fraction)
                if READY_MARKER in text:
                    marker = True
                    seen = 0.8
                    report("ready marker seen", 0.8)
                elif FAILED_MARKER in text:
                    _raise_failed(endpoint, text, console)
            try:
                active = dom.isActive()
            except libvirt.libvirtError:
                active = False
            if not active:
                text = _read(console)
                panic = next((line.split("] ", 1)[-1] for line in text.splitlines()
                              if "Kernel panic" in line), None)
                why = f": {panic.strip()}" if panic else (
                    " before printing anything (too little memory?)" if not text.strip() else "")
                raise BootError(f"VM {endpoint} stopped while booting{why}",
                                console=_tail(console),
                                hint="the console tail shows why; the test VM needs at least "
                                     "96 MiB")
            if marker:
                try:
                    self._agent(dom, endpoint, "guest-ping", None, 1)
                    report("agent up", 1.0)
                    return
                except EngineError:
                    pass
            if time.monotonic() > deadline:
                what = "its guest agent did not answer" if marker else "no ready marker"
                raise BootError(f"VM {endpoint} not up after {timeout:.0f} s "
                                f"({what})", console=_tail(console))
            time.sleep(0.05)

    def _remove(self, lab: str, dname: str, *, keep_keyed: bool = False) -> None:
        """Destroy + undefine domain ``dname`` if it is this lab's, then remove its files (on
        a remote libvirt: its volumes, and the boot files' volumes it used that no other
        domain uses — those stay with ``keep_keyed``, when it is made again at once)."""
        if self.pool is None:
            self._remove_domain(lab, dname, keep_keyed)
            return
        # one removal at a time: each sees every other domain either there or gone, so a
        # boot file two VMs shared is released by whichever goes last
        with self.pool.lock:
            self._remove_domain(lab, dname, keep_keyed)

    def _remove_domain(self, lab: str, dname: str, keep_keyed: bool) -> None:
        libvirt = _libvirt()
        dom = self._lookup(dname)
        used: set[str] = set()
        if dom is not None:
            meta = self._metadata(dom)
            if not meta or meta["name"] != lab:
                owner = f"lab {meta['name']!r}" if meta else "someone else"
                raise ConflictError(f"domain {dname} exists and belongs to {owner}",
                                    hint="remove it, or rename the endpoint")
            if self.pool is not None and not keep_keyed:
                with self._errors(f"reading the domain XML of {dname}"):
                    used = self.pool.in_use([dom.XMLDesc(0)])
            try:
                if dom.isActive():
                    dom.destroy()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() not in (libvirt.VIR_ERR_NO_DOMAIN,
                                                libvirt.VIR_ERR_OPERATION_INVALID):
                    raise EngineError(f"destroying {dname}: {exc.get_error_message()}",
                                      engine="libvirt") from exc
            try:
                flags = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                         | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                         | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
                dom.undefineFlags(flags)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise EngineError(f"undefining {dname}: {exc.get_error_message()}",
                                      engine="libvirt") from exc
        mirror = self._consoles.pop(dname, None)
        if mirror is not None:
            mirror.stop()
        if self.pool is not None:
            self.pool.release(dname, used, self._other_xmls())
        shutil.rmtree(self.files_dir / dname, ignore_errors=True)

    def _other_xmls(self) -> list[str]:
        """The XML of every domain of this libvirt (whose files must stay)."""
        libvirt = _libvirt()
        out = []
        with self._errors("listing domains"):
            domains = self.connection().listAllDomains(0)
        for dom in domains:
            try:
                out.append(dom.XMLDesc(0))
            except libvirt.libvirtError:
                continue                           # vanished meanwhile
        return out


#: The name the backends use for this driver.
VMDriver = LibvirtDriver

_STATE_NAMES = {0: "no state", 1: "running", 2: "blocked", 3: "paused", 4: "shutting down",
                5: "shut off", 6: "crashed", 7: "suspended"}


def _raise_failed(endpoint: str, text: str, console: Path) -> None:
    """BootError from the init's ``HYBRIDNB-FAILED name=.. service=.. reason=..`` line."""
    line = next(ln for ln in text.splitlines() if FAILED_MARKER in ln)
    fields = dict(part.split("=", 1) for part in line.split(FAILED_MARKER, 1)[1].split(" reason=")[0]
                  .split() if "=" in part)
    reason = line.split(" reason=", 1)[1].strip() if " reason=" in line else "unknown"
    service = fields.get("service", "?")
    what = "did not boot" if service == "boot" else f"service {service} did not come up"
    raise BootError(f"VM {endpoint}: {what}: {reason}", console=_tail(console),
                    hint="the console tail holds the service's log; "
                         "its full log is /var/log/hybridnb/ in the guest")


def _probe_socket(vmdir: Path) -> str | None:
    """Where a test VM's probe helper port is reached (None when the path is too long for
    a unix socket: the VM then probes through the guest agent only)."""
    path = str(vmdir / PROBE_SOCKET)
    return path if len(path.encode()) < 108 else None


def _available_mib() -> int | None:
    """``MemAvailable`` of the machine in MiB (None when it cannot be read)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(_read(path).splitlines()[-lines:])


def _default_ssh_keys() -> list[str]:
    ssh = Path.home() / ".ssh"
    keys = []
    for name in ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"):
        try:
            keys.append((ssh / name).read_text().strip())
        except OSError:
            pass
    return keys


def _run(argv: list[str], what: str) -> str:
    try:
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    except FileNotFoundError as exc:
        raise EngineUnavailable(f"{argv[0]} is not installed ({what})", engine="libvirt",
                                hint="apt-get install qemu-utils genisoimage") from exc
    except subprocess.CalledProcessError as exc:
        raise EngineError(f"{what} failed: {exc.stderr.strip()[-500:]}",
                          engine="libvirt") from exc


def _image_info(image: Path) -> dict[str, Any]:
    """``qemu-img info`` of a disk image (its ``format``, ``virtual-size``)."""
    return json.loads(_run(["qemu-img", "info", "--output=json", str(image)],
                           "reading the cloud image"))


def _make_overlay(image: Path, disk: Path) -> None:
    info = _image_info(image)
    _run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", info.get("format", "qcow2"),
          "-b", str(image.absolute()), str(disk)], "creating the disk overlay")


def _make_seed_iso(files: Mapping[str, str], iso: Path) -> None:
    tool = next((t for t in ("genisoimage", "mkisofs", "xorrisofs") if shutil.which(t)), None)
    if tool is None:
        raise EngineUnavailable("no ISO tool (genisoimage/mkisofs/xorrisofs)", engine="libvirt",
                                hint="apt-get install genisoimage")
    with tempfile.TemporaryDirectory(prefix="hnb-seed-") as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text)
        _run([tool, "-quiet", "-output", str(iso), "-volid", cloudinit.SEED_LABEL, "-joliet",
              "-rock", *sorted(str(Path(tmp) / n) for n in files)], "building the seed ISO")
