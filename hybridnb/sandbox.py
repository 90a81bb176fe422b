"""The sandbox: an isolated lab host with its own Docker engine (and libvirt) for labs.

A sandbox named NAME is

* a network namespace ``hnb-sbx-NAME`` holding only ``lo`` and **no default route**: whatever
  a lab in it sends can reach only the bridges and namespaces the lab made;
* a private ``dockerd`` started inside it (:mod:`hybridnb.daemons.dockerd`) with the busybox
  image imported (:mod:`hybridnb.images.busybox`), so ``image: busybox`` works offline;
* a private ``libvirtd`` (:mod:`hybridnb.daemons.libvirtd`) when that module and libvirt are
  available — otherwise the sandbox runs without VMs and says why in :meth:`Sandbox.status`.

What was started is recorded in ``sandbox.json`` in the run directory
(``$HYBRIDNB_SANDBOX_RUN/NAME``, default ``/run/hybridnb/sandbox/NAME``); engine data such as
the image cache lives in ``$HYBRIDNB_SANDBOX_DATA/NAME`` (default
``/var/lib/hybridnb/sandbox/NAME``).  So any process can stop a sandbox another one started:
``down()`` stops the daemons *by pid*, deletes the namespace and removes the run directory
(``purge=True`` also removes the data).  ``up()`` and ``down()`` hold a file lock, so two
processes bringing the same sandbox up never start two engines.  :meth:`Sandbox.target`
is the :class:`~hybridnb.target.Target` the drivers use to build labs inside it.

Labs live as long as the namespace: ``down()`` (or a reboot) ends them.  The engines remember
their containers, Docker networks and VM definitions in the data directory, so an ``up()``
that makes the namespace anew first removes what labs left there (dockerd would otherwise
re-create a lab's bridge by itself, unlabelled, and the lab could no longer claim it); a lab
applied again afterwards is rebuilt with the addresses it had.
"""

from __future__ import annotations

import contextlib
import fcntl
import html
import importlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from hybridnb.daemons import Daemon
from hybridnb.errors import ConflictError, EngineError, EngineUnavailable, StateError, \
    ValidationError, Problem
from hybridnb.target import Target

Progress = Callable[[str], None] | None

RUN_BASE = "/run/hybridnb/sandbox"
DATA_BASE = "/var/lib/hybridnb/sandbox"
NETNS_PREFIX = "hnb-sbx-"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,23}$")
#: Daemons in start order (stopped in reverse); each is a module in hybridnb.daemons.
DAEMONS = ("dockerd", "libvirtd")


def _run_base() -> Path:
    return Path(os.environ.get("HYBRIDNB_SANDBOX_RUN") or RUN_BASE)


def _data_base() -> Path:
    return Path(os.environ.get("HYBRIDNB_SANDBOX_DATA") or DATA_BASE)


def _daemon_module(name: str) -> Any:
    """The daemon module, imported lazily; ImportError if it does not exist (yet)."""
    return importlib.import_module(f"hybridnb.daemons.{name}")


@dataclass
class DaemonStatus:
    name: str
    pid: int = 0
    alive: bool = False
    endpoint: str = ""
    note: str = ""                       # why it is not running, when we know


@dataclass
class SandboxStatus:
    """What a sandbox consists of right now; renders as text and as an HTML table."""

    name: str
    netns: str
    netns_exists: bool
    daemons: list[DaemonStatus] = field(default_factory=list)
    run_dir: str = ""
    data_dir: str = ""

    @property
    def up(self) -> bool:
        docker = self.daemon("dockerd")
        return self.netns_exists and docker is not None and docker.alive

    def daemon(self, name: str) -> DaemonStatus | None:
        return next((d for d in self.daemons if d.name == name), None)

    def __repr__(self) -> str:
        head = (f"sandbox {self.name}: {'up' if self.up else 'down'} — netns {self.netns} "
                f"{'present' if self.netns_exists else 'absent'}")
        lines = [head]
        for d in self.daemons:
            state = f"pid {d.pid} alive" if d.alive else "not running"
            extra = f" {d.endpoint}" if d.alive and d.endpoint else ""
            note = f" ({d.note})" if d.note else ""
            lines.append(f"  {d.name:<9} {state}{extra}{note}")
        return "\n".join(lines)

    __str__ = __repr__

    def _repr_html_(self) -> str:
        esc = html.escape
        rows = "".join(
            f"<tr><td>{esc(d.name)}</td><td>{d.pid or ''}</td>"
            f"<td>{'✔ running' if d.alive else '✘ not running'}</td>"
            f"<td><code>{esc(d.endpoint if d.alive else '')}</code></td><td>{esc(d.note)}</td></tr>"
            for d in self.daemons)
        state = "up" if self.up else "down"
        return (f"<div><b>sandbox {esc(self.name)}</b>: {state}; network namespace "
                f"<code>{esc(self.netns)}</code> {'present' if self.netns_exists else 'absent'}"
                f"<table><thead><tr><th>daemon</th><th>pid</th><th>state</th><th>endpoint</th>"
                f"<th>note</th></tr></thead><tbody>{rows}</tbody></table></div>")


class Sandbox:
    """The isolated lab host ``hnb-sbx-<name>`` and the private engines running in it."""

    def __init__(self, name: str | None = None) -> None:
        """``name``: default ``$HYBRIDNB_SANDBOX``, else ``default``."""
        if name is None:
            from hybridnb.target import default_sandbox

            name = default_sandbox()
        if not _NAME_RE.match(name):
            raise ValidationError([Problem("sandbox.name", f"invalid sandbox name {name!r}",
                                           "1-24 characters: lowercase letters, digits, '-'")])
        self.name = name
        self.netns = NETNS_PREFIX + name
        self.run_dir = _run_base() / name
        self.data_dir = _data_base() / name

    def __repr__(self) -> str:
        return f"Sandbox({self.name!r})"

    # -- persisted record ------------------------------------------------------------------

    @property
    def _state_path(self) -> Path:
        return self.run_dir / "sandbox.json"

    def _load(self) -> dict[str, Any]:
        try:
            return json.loads(self._state_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StateError(f"cannot read {self._state_path}: {exc}",
                             hint="hybridnb sandbox down removes a broken sandbox") from exc

    def _save(self, state: dict[str, Any]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self._state_path)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Exclusive lock for up/down across processes (``<run base>/.NAME.lock``).

        ``down`` removes the lock file while holding it; a waiter that then gets the lock on
        the removed file notices (the inode changed) and locks the new file instead."""
        path = _run_base() / f".{self.name}.lock"
        while True:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            yield
        finally:
            os.close(fd)

    # -- lifecycle ---------------------------------------------------------------------------

    def up(self, progress: Progress = None, *, libvirt: bool = True) -> SandboxStatus:
        """Create the namespace and start the engines; what already runs is kept (idempotent).
        ``libvirt=False`` skips libvirtd (containers only).  Returns :meth:`status`."""
        from hybridnb.daemons import dockerd
        from hybridnb.drivers import nsutil

        if os.geteuid() != 0:
            raise EngineUnavailable("the sandbox needs root (network namespaces, dockerd)",
                                    hint="run as root, or use the dry-run backend")
        with self._lock():
            state = self._load()
            state.setdefault("name", self.name)
            state.setdefault("netns", self.netns)
            state.setdefault("daemons", {})
            state.setdefault("notes", {})
            state.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S"))
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._save(state)
            # 1. the namespace: only lo, never a default route
            fresh = not nsutil.netns_exists(self.netns)
            if fresh:
                if progress:
                    progress(f"creating network namespace {self.netns}")
                nsutil.create_netns(self.netns)
                state["netns_created"] = True
                self._save(state)
            self._ip("link", "set", "lo", "up")
            routes = self._ip("route", "show", "default").strip()
            if routes:
                raise ConflictError(f"network namespace {self.netns} has a default route "
                                    f"({routes}); the sandbox must be isolated",
                                    hint=f"hybridnb sandbox down --sandbox {self.name} and up again")
            # 2. dockerd
            rec = state["daemons"].get("dockerd")
            docker = Daemon.from_dict(rec) if rec else None
            if docker is not None and fresh and dockerd.alive(docker):
                dockerd.stop(docker)                     # it lives in a namespace now gone
            if docker is None or not dockerd.alive(docker):
                docker = dockerd.start(self.netns, self.data_dir, self.run_dir, progress)
                state["daemons"]["dockerd"] = docker.to_dict()
                self._save(state)
            if fresh:
                self._forget_labs(("container", "network"), progress)
            # 3. the busybox image, for `image: busybox`
            from hybridnb.images.busybox import ensure_busybox_image

            ensure_busybox_image(docker.endpoint, progress=progress)
            # 4. libvirtd, when wanted and available
            if libvirt:
                state["notes"].pop("libvirtd", None)
                self._up_libvirtd(state, progress)
                if fresh and "libvirtd" in state["daemons"]:
                    self._save(state)
                    self._forget_labs(("vm",), progress)
            elif "libvirtd" not in state["daemons"]:
                state["notes"]["libvirtd"] = "not requested"
            self._save(state)
        return self.status()

    def _forget_labs(self, kinds: tuple[str, ...], progress: Progress) -> list[str]:
        """Remove the resources of ``kinds`` that any lab holds in this sandbox.

        ``up`` of a new namespace removes the containers, Docker networks and VM domains the
        engines remember in their data directories: the bridges they hung on died with the
        old namespace — and dockerd would even re-create a lab's bridge on its own,
        unlabelled, so the lab could no longer claim it.  ``down`` removes the labs' host
        namespaces, which live beside the sandbox's and would outlive it.  A lab's next apply
        builds everything again (its addresses are kept)."""
        from hybridnb.drivers.docker import drivers as docker_drivers

        target = self.target()
        drivers: dict[str, Any] = {}
        if "host" in kinds:
            from hybridnb.drivers.netns import NetnsHostDriver

            drivers["host"] = NetnsHostDriver(target)
        if "vm" in kinds and target.libvirt_uri:
            from hybridnb.drivers.libvirt import LibvirtDriver

            drivers["vm"] = LibvirtDriver(target)
        if "container" in kinds or "network" in kinds:
            drivers.update(docker_drivers(target))
        removed: list[str] = []
        try:
            from hybridnb.core.stages import kind_order

            for kind in reversed(kind_order()):          # users before what they use
                if kind not in kinds or kind not in drivers:
                    continue
                drv = drivers[kind]
                for lab in sorted(drv.labs()):
                    bridges = drv.bridges(lab) if kind == "network" else {}
                    for name in drv.observe(lab):
                        drv.delete(lab, name)
                        removed.append(f"{kind} {name} of lab {lab}")
                        if bridges.get(name) and self._delete_docker_bridge(bridges[name]):
                            removed.append(f"bridge {bridges[name]} dockerd re-made for it")
        finally:
            for drv in drivers.values():
                drv.close()
        if removed and progress:
            progress("removed what labs left: " + ", ".join(removed))
        return removed

    def _delete_docker_bridge(self, name: str) -> bool:
        """Delete bridge ``name`` if dockerd made it (it carries no hybridnb mark): removing
        a network leaves the bridge dockerd re-made for it when it started."""
        from hybridnb.drivers import nsutil
        from hybridnb.drivers.links import get_link, link_alias, link_kind

        with nsutil.iproute(self.netns) as ipr:
            link = get_link(ipr, name)
            if link is None or link_kind(link) != "bridge" or link_alias(link):
                return False
            ipr.link("del", index=link["index"])
        return True

    def _up_libvirtd(self, state: dict[str, Any], progress: Progress) -> None:
        rec = state["daemons"].get("libvirtd")
        try:
            libvirtd = _daemon_module("libvirtd")
        except ImportError:
            state["notes"]["libvirtd"] = "hybridnb.daemons.libvirtd is not available"
            return
        lv = Daemon.from_dict(rec) if rec else None
        if lv is not None and _daemon_alive(libvirtd, lv):
            return
        if lv is not None:
            libvirtd.stop(lv)                            # sweep what a dead one left
            state["daemons"].pop("libvirtd", None)
        try:
            lv = libvirtd.start(self.netns, self.data_dir, self.run_dir, _adapt(progress))
        except EngineUnavailable as exc:
            state["notes"]["libvirtd"] = exc.message
            if progress:
                progress(f"libvirt unavailable: {exc.message}")
            return
        state["daemons"]["libvirtd"] = lv.to_dict()

    def down(self, purge: bool = False, progress: Progress = None) -> SandboxStatus:
        """Stop every daemon the sandbox started (by pid), delete its namespace and run
        directory; ``purge`` also deletes the data directory (the image cache)."""
        from hybridnb.daemons import dockerd, process
        from hybridnb.drivers import nsutil

        with self._lock():
            state = self._load()
            recs = state.get("daemons", {})
            errors: list[str] = []
            for name in reversed(DAEMONS):
                rec = recs.get(name)
                if name == "dockerd":
                    # also sweeps an engine whose record was never saved (crash during up)
                    daemon = Daemon.from_dict(rec) if rec else \
                        dockerd.record(self.netns, self.data_dir, self.run_dir)
                    mod: Any = dockerd
                elif rec:
                    try:
                        mod = _daemon_module(name)
                    except ImportError:
                        errors.append(f"{name} (pid {rec.get('pid')}) recorded but its module "
                                      f"is missing")
                        continue
                    daemon = Daemon.from_dict(rec)
                else:
                    continue
                if progress:
                    progress(f"stopping {name} (pid {daemon.pid})")
                try:
                    mod.stop(daemon)
                except EngineError as exc:
                    errors.append(f"{name}: {exc.message}")
                    continue
                recs.pop(name, None)
                if state:
                    self._save(state)
            self._stop_lab_processes(progress)
            if nsutil.netns_exists(self.netns):
                self._forget_labs(("host",), progress)
            if nsutil.netns_exists(self.netns) or os.path.lexists(f"/run/netns/{self.netns}"):
                if progress:
                    progress(f"deleting network namespace {self.netns}")
                nsutil.delete_netns(self.netns)
            if errors:
                raise EngineError("sandbox down left daemons running: " + "; ".join(errors),
                                  hint=f"see {self.run_dir}")
            process.unmount_under(self.run_dir)
            shutil.rmtree(self.run_dir, ignore_errors=True)
            if purge:
                if progress:
                    progress(f"removing {self.data_dir}")
                process.unmount_under(self.data_dir)
                shutil.rmtree(self.data_dir, ignore_errors=True)
                _rmdir_empty(_data_base(), _stop_at(_data_base(), DATA_BASE))
            with contextlib.suppress(FileNotFoundError):
                (_run_base() / f".{self.name}.lock").unlink()
        _rmdir_empty(_run_base(), _stop_at(_run_base(), RUN_BASE))
        return self.status()

    def _stop_lab_processes(self, progress: Progress) -> None:
        """Stop what labs run inside the namespace besides the engines (their DNS servers):
        a process keeps a deleted namespace alive, and a lab that was never destroyed would
        leave its server serving nobody.  Foreign processes (a shell someone opened in the
        namespace) are named, not killed."""
        from hybridnb.daemons import process

        ns = process.namespace_of_path(f"/run/netns/{self.netns}", "net")
        if ns is None:
            return
        left = process.namespace_members("net", ns)
        ours = [p for p in left if any(a.startswith("hybridnb.") for a in process.cmdline(p))]
        if ours:
            if progress:
                progress(f"stopping {len(ours)} lab process(es) in {self.netns}: "
                         + ", ".join(str(p) for p in ours))
            process.terminate(ours, timeout=5.0)
        others = [p for p in left if p not in ours and process.alive(p)]
        if others and progress:
            progress(f"still inside {self.netns} (not started by hybridnb, left alone): "
                     + ", ".join(f"{p} {' '.join(process.cmdline(p)[:2])}" for p in others))

    # -- inspection --------------------------------------------------------------------------

    def status(self) -> SandboxStatus:
        """Read-only: the namespace and each daemon, with pid and whether it is alive."""
        from hybridnb.drivers import nsutil

        try:
            state = self._load()
        except StateError:
            state = {}
        out = SandboxStatus(self.name, self.netns, nsutil.netns_exists(self.netns),
                            run_dir=str(self.run_dir), data_dir=str(self.data_dir))
        recs = state.get("daemons", {})
        notes = state.get("notes", {})
        for name in DAEMONS:
            rec = recs.get(name)
            if rec is None:
                out.daemons.append(DaemonStatus(name, note=notes.get(name, "")))
                continue
            daemon = Daemon.from_dict(rec)
            try:
                alive = _daemon_alive(_daemon_module(name), daemon)
            except ImportError:
                alive = False
            out.daemons.append(DaemonStatus(name, daemon.pid, alive, daemon.endpoint,
                                            notes.get(name, "")))
        return out

    def is_up(self) -> bool:
        """True when the namespace exists and the private dockerd runs."""
        return self.status().up

    def daemon(self, name: str) -> Daemon | None:
        """The recorded :class:`Daemon` ``name`` (``dockerd``, ``libvirtd``) or None."""
        rec = self._load().get("daemons", {}).get(name)
        return Daemon.from_dict(rec) if rec else None

    def target(self) -> Target:
        """Where labs in this sandbox live: its namespace, its Docker socket, its libvirt URI
        (None while libvirt is not running in it)."""
        from hybridnb.daemons import dockerd

        state = self._load()
        recs = state.get("daemons", {})
        docker = recs.get("dockerd", {}).get("endpoint") or \
            dockerd.record(self.netns, self.data_dir, self.run_dir).endpoint
        libvirt = recs.get("libvirtd", {}).get("endpoint") or None
        return Target(name=f"sandbox:{self.name}", netns=self.netns, docker_url=docker,
                      libvirt_uri=libvirt)

    def _ip(self, *args: str) -> str:
        try:
            out = subprocess.run(["ip", "-n", self.netns, *args], check=True,
                                 capture_output=True, text=True)
        except FileNotFoundError as exc:
            raise EngineUnavailable("the ip command is missing", hint="apt-get install iproute2",
                                    engine="kernel") from exc
        except subprocess.CalledProcessError as exc:
            raise EngineError(f"ip -n {self.netns} {' '.join(args)}: {exc.stderr.strip()}",
                              engine="kernel") from exc
        return out.stdout


def _adapt(progress: Progress) -> Callable[..., None] | None:
    """Daemon modules may report ``(event, fraction)``; the sandbox reports one line."""
    if progress is None:
        return None

    def report(event: str, *_rest: Any) -> None:
        progress(str(event))
    return report


def _daemon_alive(module: Any, daemon: Daemon) -> bool:
    fn = getattr(module, "alive", None)
    if fn is not None:
        return bool(fn(daemon))
    from hybridnb.daemons import process

    if not process.alive(daemon.pid):
        return False
    if daemon.pidfile:                           # pid reuse: the pidfile must still name it
        try:
            return Path(daemon.pidfile).read_text().strip() == str(daemon.pid)
        except OSError:
            return False
    return True


def _stop_at(base: Path, default: str) -> Path:
    """How far up empty directories are removed: ``/run/hybridnb`` and ``/var/lib/hybridnb``
    go too for the default bases; for overridden bases only the base itself."""
    return Path(default).parent.parent if base == Path(default) else base.parent


def _rmdir_empty(path: Path, stop_at: Path) -> None:
    """Remove ``path`` and its parents while they are empty, not going above ``stop_at``."""
    path, stop_at = path.resolve(), stop_at.resolve()
    while path != stop_at and stop_at in path.parents:
        try:
            path.rmdir()
        except OSError:
            return
        path = path.parent
