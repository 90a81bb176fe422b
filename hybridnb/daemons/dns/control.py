"""The lab name server's contract: how it is launched, reloaded, flushed and stopped, and how
its query log is read.  The server (:mod:`.server`) and whoever manages it (the ``dns``
driver, benchmarks, tests) both take every file name, signal and format from here.

One directory per server (:class:`Layout`) holds everything:

* ``zone.json``    the zone (:class:`~hybridnb.core.dnszone.Zone` as a dict) plus the
  ``fingerprint`` the server reports for it (:func:`write_zone`)
* ``launch.json``  how it was started (:class:`LaunchSpec`)
* ``dns.pid``      written by the server once its sockets are bound and the zone is loaded:
  *ready*.  The path is on the server's command line, so a pid is only ever signalled after
  its command line proves it is still our server (:func:`running_pid`)
* ``status.json``  written by the server after every (re)load (:class:`ServerStatus`)
* ``query.log`` (+ ``query.log.1``) the query log, read by :func:`read_log`;
  ``query.log.flushed`` the server's answer to a flush request
* ``server.err``   its stderr

Launch (:func:`launch`): ``python -m hybridnb.daemons.dns.server`` with the layout's paths
(:func:`command`), the package imported as installed (no ``PYTHONPATH`` is set), inside the
target's network namespace (``nsenter --net``), in a session of its own so it outlives the
notebook kernel; ready when :func:`wait_loaded` sees the pidfile and the fingerprint.

Reload (:func:`reload`): rewrite ``zone.json``, send :data:`RELOAD` (SIGHUP); the server
builds the new answers on a thread and swaps them in, never dropping a query, then rewrites
``status.json``; :func:`wait_loaded` waits for the new fingerprint.

Flush (:func:`flush`): send :data:`FLUSH` (SIGUSR1); the server writes every query it has
answered so far and then rewrites ``query.log.flushed`` with a new token; the reader waits
(at most ``FLUSH_TIMEOUT``) for the token to change, so what it reads next is up to the
moment.  Every answer is logged *before* it is sent, so a client that got its answer and then
flushes finds its query.

Stop (:func:`stop`): SIGTERM, wait, SIGKILL — by pid, after the marker check.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from hybridnb.daemons import Daemon, process
from hybridnb.daemons.dns.querylog import QueryRecord
from hybridnb.daemons.dns.querylog import read_log as _read_log

#: The module the server runs as.
MODULE = "hybridnb.daemons.dns.server"
#: Signal: reload the zone file.
RELOAD = signal.SIGHUP
#: Signal: write the query log's pending records now, then rewrite the flushed mark.
FLUSH = signal.SIGUSR1
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
#: How long :func:`flush` waits for the server to write its pending queries.
FLUSH_TIMEOUT = 1.0


def flushed_mark(log: str | os.PathLike[str]) -> Path:
    """The file the server rewrites after each flush of the query log ``log``."""
    log = Path(log)
    return log.with_name(log.name + ".flushed")


@dataclass(frozen=True)
class Layout:
    """The files of one server, all in ``directory``."""

    directory: Path

    @property
    def zone(self) -> Path:
        return self.directory / "zone.json"

    @property
    def launch_file(self) -> Path:
        return self.directory / "launch.json"

    @property
    def pidfile(self) -> Path:
        return self.directory / "dns.pid"

    @property
    def status(self) -> Path:
        return self.directory / "status.json"

    @property
    def log(self) -> Path:
        return self.directory / "query.log"

    @property
    def flushed(self) -> Path:
        return flushed_mark(self.log)

    @property
    def err(self) -> Path:
        return self.directory / "server.err"


@dataclass(frozen=True)
class LaunchSpec:
    """How a server was started: resource name, address, port, client subnet, namespace."""

    name: str
    listen: str
    port: int
    subnet: str
    netns: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LaunchSpec:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class ServerStatus:
    """What a server wrote after its last (re)load (``status.json``)."""

    pid: int
    fingerprint: str            # what the zone file says (the resource's fingerprint)
    zone_fingerprint: str       # the zone's own
    serial: int
    names: int
    loaded_at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServerStatus:
        return cls(pid=int(data["pid"]), fingerprint=str(data.get("fingerprint", "")),
                   zone_fingerprint=str(data.get("zone_fingerprint", "")),
                   serial=int(data.get("serial", 0)), names=int(data.get("names", 0)),
                   loaded_at=float(data.get("loaded_at", 0.0)))


# ---------------------------------------------------------------------------- files
def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_zone(layout: Layout, zone: Any, fingerprint: str) -> None:
    """Write ``zone`` (a :class:`~hybridnb.core.dnszone.Zone`) for the server to load, with
    the fingerprint it will report."""
    data = zone.to_dict()
    data["fingerprint"] = fingerprint
    write_atomic(layout.zone, json.dumps(data, sort_keys=True, indent=1))


def write_status(path: Path, status: ServerStatus) -> None:
    write_atomic(path, json.dumps(status.to_dict(), sort_keys=True))


def read_status(layout: Layout) -> ServerStatus | None:
    data = read_json(layout.status)
    try:
        return ServerStatus.from_dict(data) if data is not None else None
    except (KeyError, TypeError, ValueError):
        return None


def read_launch(layout: Layout) -> LaunchSpec | None:
    data = read_json(layout.launch_file)
    try:
        return LaunchSpec.from_dict(data) if data is not None else None
    except TypeError:
        return None


def write_launch(layout: Layout, spec: LaunchSpec) -> None:
    write_atomic(layout.launch_file, json.dumps(spec.to_dict(), sort_keys=True))


# --------------------------------------------------------------------------- process
def command(layout: Layout, spec: LaunchSpec, python: str = sys.executable,
            extra: Sequence[str] = (), *, log: bool = True) -> list[str]:
    """The server's command line (inside ``spec.netns`` when it names one); ``log=False``
    runs it without a query log."""
    cmd = [python, "-m", MODULE, "--zone", str(layout.zone), "--listen", spec.listen,
           "--port", str(spec.port), "--subnet", spec.subnet,
           *(["--log", str(layout.log)] if log else []),
           "--pidfile", str(layout.pidfile), "--status", str(layout.status), *extra]
    if spec.netns:
        cmd = ["nsenter", f"--net=/run/netns/{spec.netns}", *cmd]
    return cmd


def launch(layout: Layout, spec: LaunchSpec, python: str = sys.executable,
           extra: Sequence[str] = (), *, log: bool = True) -> subprocess.Popen[bytes]:
    """Start the server for ``layout`` (its zone already written) in a session of its own;
    ``nsenter`` execs the server, so the returned process is the server."""
    layout.directory.mkdir(parents=True, exist_ok=True)
    write_launch(layout, spec)
    with open(layout.err, "ab") as err:
        return subprocess.Popen(command(layout, spec, python, extra, log=log),
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, cwd="/",
                                start_new_session=True, close_fds=True)


def running_pid(layout: Layout) -> int | None:
    """The pid of the server serving ``layout``, if it runs (checked by its command line)."""
    try:
        pid = int(layout.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if process.alive(pid, str(layout.pidfile)) else None


def daemon(layout: Layout) -> Daemon | None:
    """The running server as a :class:`~hybridnb.daemons.Daemon` record, or ``None``."""
    pid = running_pid(layout)
    spec = read_launch(layout)
    if pid is None or spec is None:
        return None
    return Daemon("dns", pid, f"udp://{spec.listen}:{spec.port}", str(layout.pidfile),
                  {"directory": str(layout.directory), "netns": spec.netns})


def status(layout: Layout) -> ServerStatus | None:
    """What the running server reports about the zone it serves, or ``None``."""
    if running_pid(layout) is None:
        return None
    return read_status(layout)


def wait_loaded(layout: Layout, fingerprint: str, proc: subprocess.Popen[bytes] | None = None,
                timeout: float = READY_TIMEOUT) -> bool:
    """Wait until the server runs and reports ``fingerprint`` (False: it did not in time, or
    ``proc`` — the server being started — exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = read_status(layout)
        if st is not None and st.fingerprint == fingerprint and running_pid(layout) is not None:
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.01)
    return False


def reload(layout: Layout, zone: Any, fingerprint: str) -> None:
    """Make the running server serve ``zone`` (raises ``ProcessLookupError`` if none runs);
    :func:`wait_loaded` tells when it does."""
    pid = running_pid(layout)
    if pid is None:
        raise ProcessLookupError(f"no name server runs for {layout.directory}")
    write_zone(layout, zone, fingerprint)
    os.kill(pid, RELOAD)


def flush(layout: Layout, timeout: float = FLUSH_TIMEOUT) -> bool:
    """Ask the running server to write every query it has answered; True once it has (False:
    no server, or no answer within ``timeout``)."""
    pid = running_pid(layout)
    if pid is None:
        return False
    before = _read_text(layout.flushed)
    try:
        os.kill(pid, FLUSH)
    except OSError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _read_text(layout.flushed) != before:
            return True
        time.sleep(0.002)
    return False


def read_log(layout: Layout, limit: int = 100, *, up_to_date: bool = True
             ) -> list[QueryRecord]:
    """The last ``limit`` queries the server answered (oldest first); with ``up_to_date``
    the running server is asked to write what it holds first (:func:`flush`)."""
    if up_to_date:
        flush(layout)
    return _read_log(layout.log, limit)


def stop(layout: Layout, proc: subprocess.Popen[bytes] | None = None,
         timeout: float = STOP_TIMEOUT) -> None:
    """Stop the server of ``layout`` by pid (SIGTERM, then SIGKILL) and reap ``proc``."""
    pid = running_pid(layout)
    if pid is not None:
        process.terminate([pid], marker=str(layout.pidfile), timeout=timeout)
    if proc is not None:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass


def server_error(layout: Layout) -> str | None:
    """The last line the server wrote to its stderr (why it did not start), if any."""
    tail = process.log_tail(layout.err, 5).strip()
    return tail.splitlines()[-1] if tail else None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
