"""A private Docker engine inside a network namespace (the sandbox's container engine).

``start(netns, root, run)`` runs ``dockerd`` inside the namespace with every path of its own:
data-root (images, containers) under ``root``; exec-root, API socket, pidfile, log and daemon
config under ``run``.  It is entered with ``nsenter --net=/run/netns/NS`` — not ``ip netns
exec``, which remounts ``/sys`` and hides the cgroup mounts dockerd needs — in a new session,
so it outlives the Python process that started it.  What keeps it self-contained:

* ``--config-file`` points at our own ``daemon.json`` (the host's ``/etc/docker/daemon.json``
  is never read) which also moves the engine's key file out of ``/etc/docker``;
* ``--bridge=none``: no ``docker0``; labs bring their own bridge and Docker network;
* ``--ip6tables=false``; iptables rules land in the namespace's own tables;
* ``--cgroup-parent hybridnb-<netns>`` keeps its containers' cgroups apart from any other
  engine on the machine and lets :func:`stop` find stray container processes;
* dockerd starts its own ``containerd`` under the exec-root (socket
  ``<exec-root>/containerd/containerd.sock``): private too, and it stops with dockerd.

``stop(daemon)`` works from the :class:`~hybridnb.daemons.Daemon` record alone (another
process may call it): SIGTERM to dockerd (it stops its containers, then containerd), wait,
SIGKILL; then it sweeps up whatever survived — containerd, shims (re-parented to init, found by
their ``-address <exec-root>/...`` argument), container processes (found by cgroup) — unmounts
what remains under the engine's directories and removes the exec-root and empty cgroups.
The data-root (image cache) is kept; removing it is the caller's decision.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from hybridnb.daemons import Daemon
from hybridnb.daemons import process as proc
from hybridnb.errors import ConflictError, EngineUnavailable

Progress = Callable[[str], None] | None

#: Host directories a dockerd creates outside its own paths (empty; removed on stop if we made them).
_HOST_DIRS = ("/run/docker/plugins", "/run/docker", "/run/containerd/s", "/run/containerd")
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def layout(netns: str, root: Path, run: Path) -> dict[str, str]:
    """Every path a private dockerd for (netns, root, run) uses."""
    root, run = Path(root), Path(run)
    return {
        "netns": netns,
        "data_root": str(root / "docker"),
        "exec_root": str(run / "docker"),
        "socket": str(run / "docker.sock"),
        "pidfile": str(run / "dockerd.pid"),
        "log": str(run / "dockerd.log"),
        "config": str(run / "dockerd.json"),
        "cgroup_parent": f"hybridnb-{netns}",
    }


def record(netns: str, root: Path, run: Path) -> Daemon:
    """A :class:`Daemon` record rebuilt from the layout alone (pid from the pidfile, 0 if none):
    lets :func:`stop` clean up after a start whose record was never saved."""
    paths = layout(netns, root, run)
    try:
        pid = int(Path(paths["pidfile"]).read_text().strip() or 0)
    except (OSError, ValueError):
        pid = 0
    return Daemon("dockerd", pid, "unix://" + paths["socket"], paths["pidfile"], dict(paths))


def alive(daemon: Daemon) -> bool:
    """True while the recorded dockerd still runs (and is still ours: pid reuse is checked)."""
    return proc.alive(daemon.pid, daemon.extra.get("exec_root"))


def ping(socket_path: str, timeout: float = 1.0) -> bool:
    """True when the Docker API on ``socket_path`` answers ``GET /_ping`` with OK."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(socket_path)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return False
    return data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n", 1)[0] \
        and data.endswith(b"OK")


def start(netns: str, root: Path, run: Path, progress: Progress = None, *,
          timeout: float = 30.0, debug: bool = False) -> Daemon:
    """Start a private dockerd in ``netns`` and wait until its API answers.

    Raises :class:`EngineUnavailable` (with the log tail) if dockerd/nsenter are missing, the
    namespace does not exist or the engine does not come up; :class:`ConflictError` if a
    dockerd with this layout already runs."""
    for tool in ("dockerd", "containerd", "nsenter"):
        if shutil.which(tool, path=_PATH) is None:
            raise EngineUnavailable(f"{tool} is not installed", engine="docker",
                                    hint="apt-get install -y --no-install-recommends docker.io "
                                         "iptables")
    ns_path = f"/run/netns/{netns}"
    if not os.path.exists(ns_path):
        raise EngineUnavailable(f"network namespace {netns} does not exist", engine="docker")
    paths = layout(netns, root, run)
    longest = paths["exec_root"] + "/containerd/containerd.sock.ttrpc"
    if len(longest.encode()) > 107:
        raise EngineUnavailable(f"the run directory {run} is too deep for unix sockets "
                                f"({longest} is longer than 107 bytes)", engine="docker",
                                hint="use a shorter run directory (HYBRIDNB_SANDBOX_RUN)")
    previous = record(netns, root, run)
    if alive(previous):
        raise ConflictError(f"a private dockerd for {netns} already runs (pid {previous.pid})",
                            hint="stop it first (hybridnb sandbox down)")
    stop(previous)                           # sweep leftovers of an earlier unclean run
    host_dirs_made = [d for d in _HOST_DIRS if not os.path.exists(d)]
    for key in ("data_root", "exec_root"):
        Path(paths[key]).mkdir(parents=True, exist_ok=True)
    Path(paths["data_root"]).chmod(0o710)
    Path(paths["exec_root"]).chmod(0o700)
    for key in ("socket", "pidfile"):
        Path(paths[key]).unlink(missing_ok=True)
    Path(paths["config"]).write_text(json.dumps({
        # the engine key would otherwise be written to /etc/docker/key.json
        "deprecated-key-path": str(Path(run) / "dockerd-key.json"),
    }, indent=2) + "\n")
    argv = [
        shutil.which("nsenter", path=_PATH) or "nsenter", f"--net={ns_path}",
        shutil.which("dockerd", path=_PATH) or "dockerd",
        "--config-file", paths["config"],
        "--data-root", paths["data_root"],
        "--exec-root", paths["exec_root"],
        "--pidfile", paths["pidfile"],
        "-H", "unix://" + paths["socket"],
        "--bridge=none", "--ip6tables=false",
        "--cgroup-parent", paths["cgroup_parent"],
        "--shutdown-timeout", "3",
        "--log-level", "debug" if debug else "info",
    ]
    env = {"PATH": _PATH, "HOME": str(run), "LANG": "C.UTF-8"}
    if progress:
        progress(f"starting dockerd in {netns} (data {paths['data_root']})")
    t0 = time.monotonic()
    with open(paths["log"], "ab") as log:
        # start_new_session: setsid, so the engine survives the kernel/CLI that started it;
        # nsenter only enters the network namespace and execs dockerd (same pid).
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 env=env, cwd=str(run), start_new_session=True, close_fds=True)
    daemon = Daemon("dockerd", child.pid, "unix://" + paths["socket"], paths["pidfile"],
                    dict(paths, host_dirs_made=host_dirs_made, argv=argv))
    deadline = t0 + timeout
    while True:
        if child.poll() is not None:
            tail = proc.log_tail(Path(paths["log"]))
            stop(daemon)
            raise EngineUnavailable(
                f"dockerd in {netns} exited with status {child.returncode} while starting",
                engine="docker", hint=f"its log ({paths['log']}) ends with:\n{tail}")
        if ping(paths["socket"], timeout=0.5):
            break
        if time.monotonic() > deadline:
            tail = proc.log_tail(Path(paths["log"]))
            stop(daemon)
            raise EngineUnavailable(
                f"dockerd in {netns} did not answer within {timeout:.0f} s", engine="docker",
                hint=f"its log ({paths['log']}) ends with:\n{tail}")
        time.sleep(0.02)
    ready = time.monotonic() - t0
    containerd = [p for p in proc.children(child.pid)
                  if any(paths["exec_root"] in a for a in proc.cmdline(p))]
    daemon.extra["containerd_pid"] = containerd[0] if containerd else 0
    daemon.extra["ready_seconds"] = round(ready, 3)
    _CHILDREN[child.pid] = child
    if progress:
        progress(f"dockerd ready in {ready:.2f} s (pid {child.pid}, {daemon.endpoint})")
    return daemon


#: Popen objects of engines started by this process, so a stop can reap them (no zombies).
_CHILDREN: dict[int, subprocess.Popen] = {}


def stop(daemon: Daemon, timeout: float = 15.0) -> None:
    """Stop the dockerd of ``daemon`` by pid and everything it left: containerd, shims,
    container processes, mounts under its directories, its exec-root, socket and pidfile.
    Safe to call when it already stopped (then it only sweeps)."""
    x = daemon.extra
    exec_root = x.get("exec_root")
    if not exec_root:
        raise ValueError("not a dockerd record (no exec_root)")
    if proc.alive(daemon.pid, exec_root):
        proc.terminate([daemon.pid], marker=exec_root, timeout=timeout)
    child = _CHILDREN.pop(daemon.pid, None)
    if child is not None:
        try:
            child.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
    _sweep_processes(exec_root, x.get("cgroup_parent"))
    _remove_paths(exec_root, x)


def _sweep_processes(exec_root: str, cgroup: str | None) -> None:
    """End what a stopped dockerd left running: container processes (by cgroup), containerd
    and shims (they carry the exec-root on their command line); remove the empty cgroups."""
    if cgroup:
        proc.signal_all(proc.cgroup_pids(cgroup), 9)
    strays = proc.find(exec_root)
    if strays:
        proc.terminate(strays, marker=exec_root, timeout=3.0)
    if cgroup:
        for _ in range(50):
            if not proc.cgroup_pids(cgroup):
                break
            time.sleep(0.02)
        proc.remove_cgroup(cgroup)


def _remove_paths(exec_root: str, x: dict[str, Any]) -> None:
    """Unmount and remove what a stopped dockerd left on disk (the data-root stays) and the
    host directories it created, once no engine uses them."""
    for key in ("exec_root", "data_root"):
        if x.get(key):
            proc.unmount_under(Path(x[key]))
    shutil.rmtree(exec_root, ignore_errors=True)
    for key in ("socket", "pidfile"):
        if x.get(key):
            Path(x[key]).unlink(missing_ok=True)
    for d in x.get("host_dirs_made", []):
        if not any(proc.find(m) for m in ("dockerd", "containerd")):
            try:
                os.rmdir(d)
            except OSError:
                pass
