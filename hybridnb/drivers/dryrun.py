"""The dry-run backend: every driver protocol implemented in memory.

It is a product feature, not a test shortcut: ``--dry-run`` previews, the Binder notebooks and
the unit tests all run the very code real runs use, with this backend underneath (httpx's
``MockTransport`` is the model).  Each driver records what it was asked to do in
``DryRunEngine.log``; the engine can be persisted to a JSON file so that a dry-run lab survives
from one command (or kernel) to the next, and it can be told to fail on a given action to test
error paths.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Mapping

from hybridnb.core.resource import Observation, Resource
from hybridnb.core.stages import kind_order
from hybridnb.drivers.base import Backend
from hybridnb.errors import EngineError
from hybridnb.target import Target


class DryRunEngine:
    """In-memory objects: ``{lab: {kind: {name: fingerprint}}}``, the ones that do not run
    (``stopped``: ``"lab/kind/name"``) and an action log."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.objects: dict[str, dict[str, dict[str, str]]] = {}
        self.specs: dict[str, dict[str, dict[str, dict]]] = {}
        self.stopped: set[str] = set()
        self.log: list[str] = []
        self.fail_on: set[str] = set()          # e.g. {"create container/web"}
        self.fail_once: set[str] = set()        # the same, failing only the next time
        self._lock = threading.Lock()
        if self.path is not None and self.path.exists():
            data = json.loads(self.path.read_text())
            self.objects = data.get("objects", {})
            self.specs = data.get("specs", {})
            self.stopped = set(data.get("stopped", []))

    def _persist(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"objects": self.objects, "specs": self.specs,
                                   "stopped": sorted(self.stopped)}, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def record(self, entry: str) -> None:
        if entry in self.fail_on:
            raise EngineError(f"dry-run: injected failure on {entry!r}", engine="dry-run")
        if entry in self.fail_once:
            self.fail_once.discard(entry)
            raise EngineError(f"dry-run: injected failure on {entry!r}", engine="dry-run")
        self.log.append(entry)

    def put(self, lab: str, resource: Resource) -> None:
        with self._lock:
            self.objects.setdefault(lab, {}).setdefault(resource.kind, {})[resource.name] = \
                resource.fingerprint
            self.specs.setdefault(lab, {}).setdefault(resource.kind, {})[resource.name] = \
                dict(resource.spec)
            self.stopped.discard(f"{lab}/{resource.kind}/{resource.name}")
            self._persist()

    def drop(self, lab: str, kind: str, name: str) -> None:
        with self._lock:
            self.objects.get(lab, {}).get(kind, {}).pop(name, None)
            self.specs.get(lab, {}).get(kind, {}).pop(name, None)
            self.stopped.discard(f"{lab}/{kind}/{name}")
            self._persist()

    def tamper(self, lab: str, kind: str, name: str, fingerprint: str | None, *,
               running: bool = True) -> None:
        """Change an object behind hybridnb's back (``None`` removes it; ``running=False``
        stops it) — for demos and tests."""
        with self._lock:
            key = f"{lab}/{kind}/{name}"
            if fingerprint is None:
                self.objects.get(lab, {}).get(kind, {}).pop(name, None)
            else:
                self.objects.setdefault(lab, {}).setdefault(kind, {})[name] = fingerprint
            if fingerprint is None or running:
                self.stopped.discard(key)
            else:
                self.stopped.add(key)
            self._persist()

    def stop(self, lab: str, kind: str, name: str) -> None:
        """Stop an object behind hybridnb's back (it stays, not running)."""
        fp = self.objects.get(lab, {}).get(kind, {}).get(name)
        if fp is not None:
            self.tamper(lab, kind, name, fp, running=False)

    def observation(self, lab: str, kind: str, name: str, fingerprint: str) -> Observation:
        if f"{lab}/{kind}/{name}" in self.stopped:
            return Observation(fingerprint, running=False, reason="stopped (dry-run)")
        return Observation(fingerprint)


class DryRunDriver:
    """One resource kind, in memory."""

    concurrent = True

    def __init__(self, kind: str, engine: DryRunEngine) -> None:
        self.kind = kind
        self.engine = engine

    def observe(self, lab: str) -> Mapping[str, Observation]:
        return {name: self.engine.observation(lab, self.kind, name, fp) for name, fp in
                sorted(self.engine.objects.get(lab, {}).get(self.kind, {}).items())}

    def create(self, lab: str, resource: Resource) -> None:
        self.engine.record(f"create {self.kind}/{resource.name}")
        self.engine.put(lab, resource)

    def delete(self, lab: str, name: str) -> None:
        self.engine.record(f"delete {self.kind}/{name}")
        self.engine.drop(lab, self.kind, name)


class DryRunDnsDriver(DryRunDriver):
    """Changed in place, like the real driver: the DNS service (its records), a policy (one
    table replacement) and a link's impairments (the endpoint is not re-created)."""

    def update(self, lab: str, resource: Resource) -> None:
        self.engine.record(f"update {self.kind}/{resource.name}")
        self.engine.put(lab, resource)


#: Kinds whose real drivers change a resource in place (``update``), and so do these.
UPDATED_IN_PLACE = ("dns", "policy", "link")

#: What the dry-run backend cannot do, and where to do it instead.
HINT = ("the dry-run backend sends no packets and runs no servers: use the sandbox backend "
        "(or host) to do this for real")


def dry_run_backend(path: str | os.PathLike[str] | None = None) -> Backend:
    """Every resource kind in memory; no driver has a capability that needs an engine
    (probing from namespaces, guest exec, a query log)."""
    engine = DryRunEngine(path)
    drivers = {kind: (DryRunDnsDriver if kind in UPDATED_IN_PLACE else DryRunDriver)(
        kind, engine) for kind in kind_order()}
    return Backend("dry-run", Target(name="dry-run"), dict(drivers), {"engine": engine},
                   hint=HINT)
