"""Processes of the daemons we start: find them, check they are ours, stop them by pid.

A daemon is stopped *by pid*, never by name, and only after its command line proves that the
pid still belongs to the process we started (pids are reused): every daemon hybridnb starts
carries a path unique to its instance (its pidfile, exec-root or socket) on its command line,
and that path is the *marker* checked here.  Helpers also find the processes a daemon left
behind — containerd shims re-parented to init, processes in a cgroup — and unmount what a
daemon mounted under its own directories, so a stop leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from pathlib import Path
from typing import Iterable

_MNT_DETACH = 2


def cmdline(pid: int) -> list[str]:
    """The argv of ``pid`` ([] if it is gone or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def state(pid: int) -> str | None:
    """The one-letter process state (``R``, ``S``, ``Z`` ...) or None if there is no such pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split(" ", 1)[0]


def ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2:].split(" ")[1])


def alive(pid: int, marker: str | None = None) -> bool:
    """True when ``pid`` runs (not a zombie) and, with ``marker``, its command line holds it."""
    if pid <= 0:
        return False
    st = state(pid)
    if st is None or st in ("Z", "X"):
        return False
    if marker is None:
        return True
    return any(marker in arg for arg in cmdline(pid))


def pids() -> list[int]:
    return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())


def find(marker: str) -> list[int]:
    """Live pids whose command line contains ``marker`` (never our own process)."""
    me = os.getpid()
    return [p for p in pids() if p != me and alive(p, marker)]


def children(pid: int) -> list[int]:
    return [p for p in pids() if ppid(p) == pid]


def cgroup_pids(cgroup: str) -> list[int]:
    """Pids in cgroup ``cgroup`` (a path relative to the hierarchy root) or below it, in any
    mounted hierarchy (cgroup v1 controllers and v2)."""
    found: set[int] = set()
    for base in cgroup_dirs(cgroup):
        for dirpath, _dirs, files in os.walk(base):
            if "cgroup.procs" in files:
                try:
                    text = Path(dirpath, "cgroup.procs").read_text()
                except OSError:
                    continue
                found.update(int(x) for x in text.split())
    return sorted(found)


def cgroup_dirs(cgroup: str) -> list[Path]:
    """The directories of cgroup ``cgroup`` in every mounted hierarchy that has it."""
    out = []
    for mount in _cgroup_mounts():
        d = Path(mount) / cgroup.strip("/")
        if d.is_dir():
            out.append(d)
    return out


def remove_cgroup(cgroup: str) -> None:
    """Remove the (empty) cgroup directories of ``cgroup``, deepest first; busy ones stay."""
    for base in cgroup_dirs(cgroup):
        for dirpath, _dirs, _files in sorted(os.walk(base), key=lambda t: -len(t[0])):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


def _cgroup_mounts() -> list[str]:
    out = []
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and parts[2] in ("cgroup", "cgroup2"):
            out.append(parts[1])
    return out


def namespace(pid: int, kind: str) -> str | None:
    """The identity of ``pid``'s namespace of ``kind`` (``"net"``, ``"mnt"``), e.g.
    ``"net:[4026532281]"``; None if the process is gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def namespace_of_path(path: str, kind: str) -> str | None:
    """The identity of the namespace a bind mount such as ``/run/netns/NAME`` holds."""
    try:
        return f"{kind}:[{os.stat(path).st_ino}]"
    except OSError:
        return None


def namespace_members(kind: str, ns: str) -> list[int]:
    """Live pids (never our own) whose namespace of ``kind`` is ``ns``."""
    me = os.getpid()
    return [p for p in pids() if p != me and namespace(p, kind) == ns and alive(p)]


def signal_all(pids_: Iterable[int], sig: int) -> None:
    for pid in pids_:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def reap(pid: int) -> None:
    """Collect ``pid`` if it is our own child (avoids zombies in a long-running kernel)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def terminate(pids_: Iterable[int], *, marker: str | None = None, timeout: float = 10.0) -> bool:
    """SIGTERM the given pids (those still ours), wait up to ``timeout``, SIGKILL the rest.
    Returns True if everything ended before the SIGKILL."""
    todo = [p for p in pids_ if alive(p, marker)]
    if not todo:
        return True
    signal_all(todo, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while True:
        for p in todo:
            reap(p)
        todo = [p for p in todo if alive(p)]
        if not todo:
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    signal_all(todo, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while todo and time.monotonic() < deadline:
        for p in todo:
            reap(p)
        todo = [p for p in todo if alive(p)]
        time.sleep(0.02)
    return False


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root`` in our mount namespace, deepest first."""
    prefix = str(root).rstrip("/")
    out = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        point = line.split()[4].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            out.append(point)
    return sorted(set(out), key=lambda p: (-p.count("/"), p))


def unmount_under(root: Path) -> list[str]:
    """Lazily unmount everything mounted at or below ``root`` (deepest first); returns what
    was unmounted.  Needed before removing a daemon's directories after an unclean stop."""
    libc = ctypes.CDLL(None, use_errno=True)
    done = []
    for _ in range(3):                       # stacked mounts need more than one pass
        points = mounts_under(root)
        if not points:
            break
        for point in points:
            if libc.umount2(point.encode(), _MNT_DETACH) == 0:
                done.append(point)
    return done


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
