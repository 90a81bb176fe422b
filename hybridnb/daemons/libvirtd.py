"""A private libvirtd (and its virtlogd) for one network namespace.

The sandbox runs VMs through a libvirtd of its own, inside the isolated lab host, so that the
domains' tap devices land next to the lab bridge and a libvirtd the user runs is never touched.
A root libvirtd hard-codes its QEMU driver paths (``/run/libvirt``, ``/var/lib/libvirt``,
``/var/cache/libvirt``, ``/var/log/libvirt``, ``/etc/libvirt``), so the daemons are started in
a private *mount* namespace (``nsenter --net=/run/netns/NS unshare --mount --propagation
private``) in which private directories are bind-mounted over those paths:

* ``root/libvirt`` (persistent: configuration, domain definitions, the QEMU capability cache —
  keep it between runs to skip the ~7 s capability probe) holds ``etc/ lib/ cache/ log/``;
* ``run`` (runtime) holds ``libvirt/`` (bound over ``/run/libvirt``), the pidfiles and the
  client socket ``libvirt-sock``, reachable from outside because ``unix_sock_dir`` points here.

Clients connect with ``qemu:///system?socket=<run>/libvirt-sock``.  The private ``qemu.conf``
runs QEMU as root without relabelling files, cgroups or per-VM mount namespaces, so every
process the daemon starts stays in its mount namespace; :func:`stop` ends exactly the
processes in that namespace (QEMU first, then libvirtd, then virtlogd), by pid.

The only host path this may create is an empty ``/run/libvirt`` used as a mount point when
no libvirt ever ran on the machine (it is on tmpfs and holds nothing).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Callable

from hybridnb.daemons import Daemon, process
from hybridnb.errors import EngineError, EngineUnavailable

Progress = Callable[[str, float], None]

#: Host paths the QEMU driver of a root libvirtd uses → our private subdirectory.
_BINDS = (("etc", "/etc/libvirt"), ("lib", "/var/lib/libvirt"), ("cache", "/var/cache/libvirt"),
          ("log", "/var/log/libvirt"))

_QEMU_CONF = """\
# hybridnb private libvirtd: QEMU runs as root, no relabelling, no cgroups, no per-VM
# mount namespaces (every process stays in this daemon's mount namespace).
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "logd"
"""


def uri(run: Path) -> str:
    """The libvirt URI of the private daemon whose runtime directory is ``run``."""
    return f"qemu:///system?socket={Path(run) / 'libvirt-sock'}"


def _write_config(base: Path, run: Path) -> None:
    etc = base / "etc"
    (etc / "qemu").mkdir(parents=True, exist_ok=True)
    (etc / "libvirtd.conf").write_text(
        "# hybridnb private libvirtd\n"
        f'unix_sock_dir = "{run}"\n'
        'unix_sock_rw_perms = "0700"\n'
        'unix_sock_ro_perms = "0700"\n'
        'unix_sock_admin_perms = "0700"\n'
        f'log_outputs = "3:file:{base / "log" / "libvirtd.log"}"\n')
    (etc / "virtlogd.conf").write_text(
        f'log_outputs = "3:file:{base / "log" / "virtlogd.log"}"\n')
    (etc / "qemu.conf").write_text(_QEMU_CONF)


def start(netns: str, root: Path, run: Path, progress: Progress | None = None, *,
          timeout: float = 60.0, connect: bool = True) -> Daemon:
    """Start virtlogd + libvirtd in network namespace ``netns`` with private paths.

    Returns when the daemon accepts connections; with ``connect`` (default) also after a first
    connection has succeeded, which includes QEMU's capability probe (~7.5 s the first time
    for a fresh ``root``, ~0.1 s afterwards).  ``progress(event, fraction)`` reports steps.
    """
    report = progress or (lambda event, fraction: None)
    root, run = Path(root).absolute(), Path(run).absolute()
    nspath = Path("/run/netns") / netns
    if not nspath.exists():
        raise EngineUnavailable(f"network namespace {netns} does not exist", engine="libvirt")
    for tool in ("libvirtd", "virtlogd"):
        if not any((Path(d) / tool).exists() for d in ("/usr/sbin", "/usr/bin", "/sbin")):
            raise EngineUnavailable(f"{tool} is not installed", engine="libvirt",
                                    hint="apt-get install libvirt-daemon-system qemu-system-x86")
    base = root / "libvirt"
    for sub, _ in _BINDS:
        (base / sub).mkdir(parents=True, exist_ok=True)
    (run / "libvirt").mkdir(parents=True, exist_ok=True)
    _write_config(base, run)
    sock = run / "libvirt-sock"
    lpid, vpid = run / "libvirtd.pid", run / "virtlogd.pid"
    for stale in (sock, lpid, vpid):
        stale.unlink(missing_ok=True)
    made = []
    for path in ["/run/libvirt"] + [host for _, host in _BINDS]:
        if not Path(path).exists():
            os.makedirs(path, exist_ok=True)
            made.append(path)
    q = shlex.quote
    script = ["set -e"]
    script += [f"mount --bind {q(str(base / sub))} {q(host)}" for sub, host in _BINDS]
    script += [f"mount --bind {q(str(run / 'libvirt'))} /run/libvirt",
               f"virtlogd -d --pid-file {q(str(vpid))}",
               f"exec libvirtd -d --pid-file {q(str(lpid))}"]
    argv = ["nsenter", f"--net={nspath}", "--", "unshare", "--mount", "--propagation",
            "private", "--", "/bin/sh", "-c", "\n".join(script)]
    report("starting virtlogd and libvirtd", 0.1)
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        _kill_pidfiles(lpid, vpid)
        raise EngineError(f"libvirtd did not start in {netns}: "
                          f"{(proc.stderr or proc.stdout).strip()[-800:]}", engine="libvirt",
                          hint=f"see {base / 'log'}")
    pid = _wait_pidfile(lpid, t0 + timeout)
    vlog = _wait_pidfile(vpid, t0 + timeout)
    daemon = Daemon(name="libvirtd", pid=pid, endpoint=uri(run), pidfile=str(lpid), extra={
        "virtlogd_pid": vlog, "virtlogd_pidfile": str(vpid), "netns": netns,
        "root": str(root), "run": str(run), "mntns": process.namespace(pid, "mnt"),
        "created_mountpoints": made})
    while not sock.exists():
        if time.monotonic() > t0 + timeout or not process.alive(pid):
            stop(daemon)
            raise EngineError(f"libvirtd in {netns} did not open {sock}", engine="libvirt",
                              hint=f"see {base / 'log' / 'libvirtd.log'}")
        time.sleep(0.02)
    report("libvirtd listening", 0.3)
    if connect:
        report("first connection (QEMU capability probe)", 0.4)
        try:
            import libvirt  # noqa: PLC0415  (heavy, optional)
        except ImportError:
            report("libvirtd ready", 1.0)
            return daemon
        try:
            conn = libvirt.open(daemon.endpoint)
            conn.getCapabilities()
            conn.close()
        except libvirt.libvirtError as exc:
            stop(daemon)
            raise EngineError(f"cannot talk to the private libvirtd: {exc}",
                              engine="libvirt") from exc
    report("libvirtd ready", 1.0)
    return daemon


def alive(daemon: Daemon) -> bool:
    """True while the recorded libvirtd runs (same pid, same private mount namespace)."""
    mntns = daemon.extra.get("mntns")
    return process.alive(daemon.pid) and (
        not mntns or process.namespace(daemon.pid, "mnt") == mntns)


def record(netns: str, root: Path, run: Path) -> Daemon:
    """A :class:`Daemon` rebuilt from the pidfiles under ``run`` (pid 0 when none): lets
    :func:`stop` clean up after a start whose record was never saved."""
    run = Path(run).absolute()
    lpid, vpid = run / "libvirtd.pid", run / "virtlogd.pid"

    def read(path: Path) -> int:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return 0

    pid = read(lpid)
    mntns = process.namespace(pid, "mnt") if pid and process.alive(pid) else None
    if mntns == process.namespace(os.getpid(), "mnt"):
        mntns = None                      # a reused pid outside any private namespace
    return Daemon(name="libvirtd", pid=pid if mntns else 0, endpoint=uri(run),
                  pidfile=str(lpid), extra={
                      "virtlogd_pid": read(vpid) if mntns else 0,
                      "virtlogd_pidfile": str(vpid), "netns": netns,
                      "root": str(Path(root).absolute()), "run": str(run), "mntns": mntns,
                      "created_mountpoints": []})


def stop(daemon: Daemon, timeout: float = 10.0) -> None:
    """Stop the daemons and every QEMU they started (the processes of their mount
    namespace), by pid.  Stopping an already stopped daemon is not an error."""
    mntns = daemon.extra.get("mntns")
    pids = process.namespace_members("mnt", mntns) if mntns else []
    vlog = daemon.extra.get("virtlogd_pid")
    daemons = {daemon.pid, vlog}
    guests = [p for p in pids if p not in daemons]
    # QEMU first (so nothing is left running), then libvirtd, then virtlogd.
    for group in (guests, [daemon.pid], [vlog]):
        group = [p for p in group if p and process.alive(p)
                 and (not mntns or process.namespace(p, "mnt") == mntns)]
        process.terminate(group, timeout=timeout)
    for path in (daemon.pidfile, daemon.extra.get("virtlogd_pidfile")):
        if path:
            Path(path).unlink(missing_ok=True)
    run = daemon.extra.get("run")
    if run:
        for name in ("libvirt-sock", "libvirt-sock-ro", "libvirt-admin-sock"):
            (Path(run) / name).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- processes

def _wait_pidfile(path: Path, deadline: float) -> int:
    while True:
        try:
            text = path.read_text().strip()
            if text:
                return int(text)
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise EngineError(f"no pid in {path}", engine="libvirt")
        time.sleep(0.02)


def _kill_pidfiles(*paths: Path) -> None:
    for path in paths:
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            continue
        process.terminate([pid], timeout=5.0)
        path.unlink(missing_ok=True)
