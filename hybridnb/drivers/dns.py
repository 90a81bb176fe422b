"""The ``dns`` driver: runs the lab's name server as its own process on the gateway address.

The resource spec (see :mod:`hybridnb.core.compile`) carries ``domain``, ``listen`` (the
gateway address, already on the lab bridge), ``subnet``, ``gateway``, ``bridge``, ``records``
(endpoint → address) and ``upstream``; optionally ``services`` (SRV: ``{service, proto,
endpoint, port}``) and ``ttl``.

The server's contract — its files, how it is launched, reloaded, flushed and stopped, how its
query log is read — is :mod:`hybridnb.daemons.dns.control`; this driver maps resources onto
it, one server per lab in ``<state_dir>/<lab>/dns/``, started in the target's network
namespace.  ``update`` rewrites the zone and reloads: the server swaps the new answers in
without a restart (a new endpoint resolves within a second).  ``observe`` reports the
fingerprint the *running* server says it loaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hybridnb.core.dnszone import Record, Zone, zone_from_spec
from hybridnb.core.resource import Observation, Resource
from hybridnb.daemons.dns import control
from hybridnb.daemons.dns.querylog import QueryRecord
from hybridnb.errors import EngineError, NotFoundError
from hybridnb.target import Target


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

    def directory(self, lab: str) -> Path:
        return self.state_dir / lab / "dns"

    def layout(self, lab: str) -> control.Layout:
        return control.Layout(self.directory(lab))

    def _launch_spec(self, resource: Resource) -> control.LaunchSpec:
        return control.LaunchSpec(resource.name, str(resource.spec["listen"]), self.port,
                                  str(resource.spec["subnet"]), self.target.netns)

    # ---------------------------------------------------------------- protocol
    def observe(self, lab: str) -> dict[str, Observation]:
        layout = self.layout(lab)
        launch = control.read_launch(layout)
        status = control.status(layout)
        if launch is None or status is None:
            return {}
        return {launch.name: Observation(status.fingerprint)}

    def create(self, lab: str, resource: Resource) -> None:
        self.delete(lab, resource.name)                 # leftovers of a crashed attempt
        layout = self.layout(lab)
        try:
            layout.directory.mkdir(parents=True, exist_ok=True)
            control.write_zone(layout, zone_from_spec(resource.spec), resource.fingerprint)
            self._procs[lab] = control.launch(layout, self._launch_spec(resource), self.python)
        except ValueError as exc:
            raise EngineError(f"dns/{resource.name}: {exc}", engine="dns") from None
        except OSError as exc:
            raise EngineError(f"dns/{resource.name}: cannot start the name server: {exc}",
                              engine="dns") from None
        self._wait_loaded(lab, resource.fingerprint, starting=True)

    def update(self, lab: str, resource: Resource) -> None:
        """Serve the new records without a restart (restart only if the address, port,
        client subnet or namespace changed, or the server is not running)."""
        layout = self.layout(lab)
        launch = control.read_launch(layout)
        wanted = self._launch_spec(resource)
        same = launch is not None and (launch.listen, launch.subnet, launch.port,
                                       launch.netns) == (wanted.listen, wanted.subnet,
                                                         wanted.port, wanted.netns)
        if not same or control.running_pid(layout) is None:
            self.create(lab, resource)
            return
        try:
            if launch is not None and launch.name != resource.name:
                control.write_launch(layout, wanted)
            control.reload(layout, zone_from_spec(resource.spec), resource.fingerprint)
        except ValueError as exc:
            raise EngineError(f"dns/{resource.name}: {exc}", engine="dns") from None
        except OSError as exc:
            raise EngineError(f"dns/{resource.name}: cannot reload: {exc}",
                              engine="dns") from None
        self._wait_loaded(lab, resource.fingerprint)

    def delete(self, lab: str, name: str) -> None:
        layout = self.layout(lab)
        control.stop(layout, self._procs.pop(lab, None))
        shutil.rmtree(layout.directory, ignore_errors=True)
        try:
            layout.directory.parent.rmdir()      # the lab's directory, when nothing else is in it
        except OSError:
            pass

    # ---------------------------------------------------------------- helpers
    def records(self, lab: str) -> list[Record]:
        """Every record the lab's server serves (from its zone file), sorted."""
        data = control.read_json(self.layout(lab).zone)
        if data is None:
            raise NotFoundError(f"lab {lab!r} has no DNS zone",
                                hint="apply the lab with network.dns enabled")
        return list(Zone.from_dict(data).all_records)

    def query_log(self, lab: str, limit: int = 100) -> list[QueryRecord]:
        """The last ``limit`` queries the lab's server answered (oldest first), up to the
        moment of the call."""
        return control.read_log(self.layout(lab), limit)

    def status(self, lab: str) -> dict[str, Any] | None:
        """What the running server reports (pid, fingerprint, serial, names), or None."""
        status = control.status(self.layout(lab))
        return status.to_dict() if status is not None else None

    # ---------------------------------------------------------------- process
    def _wait_loaded(self, lab: str, fingerprint: str, *, starting: bool = False) -> None:
        layout = self.layout(lab)
        proc = self._procs.get(lab) if starting else None
        if control.wait_loaded(layout, fingerprint, proc):
            return
        why = control.server_error(layout)
        if starting:
            self.delete(lab, "")
        raise EngineError(f"the DNS server of lab {lab!r} did not "
                          f"{'start' if starting else 'reload'}", hint=why, engine="dns")
