"""The ``dns`` driver: runs the lab's name server as its own process on the gateway address.

The resource spec (see :mod:`hybridnb.core.compile`) carries ``domain``, ``listen`` (the
gateway address, already on the lab bridge), ``subnet``, ``gateway``, ``bridge``, ``records``
(endpoint → address) and ``upstream``; optionally ``services`` (SRV: ``{service, proto,
endpoint, port}``) and ``ttl``.

Everything the driver makes lives in one directory per lab, ``<state_dir>/<lab>/dns/``:

* ``zone.json``   the zone (:class:`~hybridnb.core.dnszone.Zone`) plus the resource fingerprint
* ``dns.pid``     written by the server once it serves (readiness); the driver stops by this pid
* ``status.json`` written by the server after every (re)load: the fingerprint it serves
* ``launch.json`` how it was started (address, port, subnet, netns) and the resource name
* ``query.log``   (+ ``query.log.1``) the query log (``query.log.flushed``: the server's
  answer to "write what you hold now"); ``server.err`` its stderr

The server is started in the target's network namespace (``nsenter --net=/run/netns/NS``) in a
session of its own, so it survives the notebook kernel.  ``update`` rewrites the zone file and
sends SIGHUP: the server swaps the new answers in without a restart (a new endpoint resolves
within a second).  ``observe`` reports the fingerprint the *running* server says it loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from hybridnb.core.dnszone import Record, Zone, zone_from_spec
from hybridnb.core.resource import Observation, Resource
from hybridnb.daemons import process
from hybridnb.errors import EngineError, NotFoundError
from hybridnb.target import Target

READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
#: How long :meth:`DnsDriver.logs` waits for the server to write its pending queries.
FLUSH_TIMEOUT = 1.0


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class DnsDriver:
    """Driver for ``dns`` resources (one name server process per lab)."""

    kind = "dns"
    concurrent = True

    def __init__(self, target: Target, state_dir: str | os.PathLike[str], *, port: int = 53,
                 python: str = sys.executable) -> None:
        self.target = target
        self.state_dir = Path(state_dir)
        self.port = port
        self.python = python
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------------- paths
    def directory(self, lab: str) -> Path:
        return self.state_dir / lab / "dns"

    def _pid(self, lab: str) -> int | None:
        d = self.directory(lab)
        try:
            pid = int((d / "dns.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if process.alive(pid, str(d / "dns.pid")) else None

    # ---------------------------------------------------------------- protocol
    def observe(self, lab: str) -> dict[str, Observation]:
        d = self.directory(lab)
        launch = _read_json(d / "launch.json")
        status = _read_json(d / "status.json")
        if launch is None or status is None or self._pid(lab) is None:
            return {}
        return {str(launch["name"]): Observation(str(status.get("fingerprint", "")))}

    def create(self, lab: str, resource: Resource) -> None:
        self.delete(lab, resource.name)                 # leftovers of a crashed attempt
        d = self.directory(lab)
        try:
            d.mkdir(parents=True, exist_ok=True)
            zone = zone_from_spec(resource.spec)
            self._write_zone(d, zone, resource.fingerprint)
            launch = {"name": resource.name, "listen": resource.spec["listen"],
                      "port": self.port, "subnet": resource.spec["subnet"],
                      "netns": self.target.netns}
            _write_atomic(d / "launch.json", json.dumps(launch, sort_keys=True))
            self._start(lab, d, launch)
        except ValueError as exc:
            raise EngineError(f"dns/{resource.name}: {exc}", engine="dns") from None
        except OSError as exc:
            raise EngineError(f"dns/{resource.name}: cannot start the name server: {exc}",
                              engine="dns") from None
        self._wait_loaded(lab, resource.fingerprint, starting=True)

    def update(self, lab: str, resource: Resource) -> None:
        """Serve the new records without a restart (restart only if the address, port,
        client subnet or namespace changed, or the server is not running)."""
        d = self.directory(lab)
        launch = _read_json(d / "launch.json") or {}
        pid = self._pid(lab)
        same = (launch.get("listen") == resource.spec["listen"]
                and launch.get("subnet") == resource.spec["subnet"]
                and launch.get("port") == self.port and launch.get("netns") == self.target.netns)
        if pid is None or not same:
            self.create(lab, resource)
            return
        try:
            self._write_zone(d, zone_from_spec(resource.spec), resource.fingerprint)
            if launch.get("name") != resource.name:
                launch["name"] = resource.name
                _write_atomic(d / "launch.json", json.dumps(launch, sort_keys=True))
            os.kill(pid, signal.SIGHUP)
        except ValueError as exc:
            raise EngineError(f"dns/{resource.name}: {exc}", engine="dns") from None
        except OSError as exc:
            raise EngineError(f"dns/{resource.name}: cannot reload: {exc}",
                              engine="dns") from None
        self._wait_loaded(lab, resource.fingerprint)

    def delete(self, lab: str, name: str) -> None:
        d = self.directory(lab)
        pid = self._pid(lab)
        proc = self._procs.pop(lab, None)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + STOP_TIMEOUT
            while time.monotonic() < deadline and process.alive(pid, str(d / "dns.pid")):
                if proc is not None:
                    proc.poll()
                time.sleep(0.02)
            if process.alive(pid, str(d / "dns.pid")):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if proc is not None:
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(d, ignore_errors=True)
        try:
            d.parent.rmdir()                     # the lab's directory, when nothing else is in it
        except OSError:
            pass

    # ---------------------------------------------------------------- helpers
    def records(self, lab: str) -> list[Record]:
        """Every record the lab's server serves (from its zone file), sorted."""
        data = _read_json(self.directory(lab) / "zone.json")
        if data is None:
            raise NotFoundError(f"lab {lab!r} has no DNS zone",
                                hint="apply the lab with network.dns enabled")
        return list(Zone.from_dict(data).all_records)

    def query_log(self, lab: str, limit: int = 100) -> list[dict[str, Any]]:
        """The last ``limit`` queries the lab's server answered (oldest first), up to the
        moment of the call: the running server is asked to write what it holds first."""
        from hybridnb.services.dns.querylog import read_log

        log = self.directory(lab) / "query.log"
        pid = self._pid(lab)
        if pid is not None:
            mark = log.with_name(log.name + ".flushed")
            before = _read_text(mark)
            try:
                os.kill(pid, signal.SIGUSR1)
            except OSError:
                pass
            else:
                deadline = time.monotonic() + FLUSH_TIMEOUT
                while _read_text(mark) == before and time.monotonic() < deadline:
                    time.sleep(0.002)
        return read_log(log, limit)

    def status(self, lab: str) -> dict[str, Any] | None:
        """What the running server reports (pid, fingerprint, serial, names), or None."""
        pid = self._pid(lab)
        status = _read_json(self.directory(lab) / "status.json")
        if pid is None or status is None:
            return None
        return dict(status, pid=pid)

    # ---------------------------------------------------------------- process
    @staticmethod
    def _write_zone(d: Path, zone: Zone, fingerprint: str) -> None:
        data = zone.to_dict()
        data["fingerprint"] = fingerprint
        _write_atomic(d / "zone.json", json.dumps(data, sort_keys=True, indent=1))

    def _start(self, lab: str, d: Path, launch: Mapping[str, Any]) -> None:
        cmd = [self.python, "-m", "hybridnb.services.dns.server",
               "--zone", str(d / "zone.json"), "--listen", str(launch["listen"]),
               "--port", str(launch["port"]), "--subnet", str(launch["subnet"]),
               "--log", str(d / "query.log"), "--pidfile", str(d / "dns.pid"),
               "--status", str(d / "status.json")]
        if self.target.netns:
            cmd = ["nsenter", f"--net=/run/netns/{self.target.netns}"] + cmd
        root = str(Path(__file__).resolve().parent.parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"]
                                    if env.get("PYTHONPATH") else "")
        with open(d / "server.err", "ab") as err:
            self._procs[lab] = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                env=env, cwd="/", start_new_session=True, close_fds=True)

    def _wait_loaded(self, lab: str, fingerprint: str, *, starting: bool = False) -> None:
        d = self.directory(lab)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            status = _read_json(d / "status.json")
            if self._pid(lab) is not None and status and status.get("fingerprint") == fingerprint:
                return
            proc = self._procs.get(lab)
            if starting and proc is not None and proc.poll() is not None:
                break
            time.sleep(0.01)
        tail = ""
        try:
            tail = (d / "server.err").read_text(errors="replace")[-2000:]
        except OSError:
            pass
        what = "start" if starting else "reload"
        if starting:
            self.delete(lab, "")
        raise EngineError(f"the DNS server of lab {lab!r} did not {what}",
                          hint=tail.strip().splitlines()[-1] if tail.strip() else None,
                          engine="dns")
