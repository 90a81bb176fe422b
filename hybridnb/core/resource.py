"""Resources: the engine-level things a lab is made of, and what the engines report of them.

A lab spec (what the user wrote) is compiled into *resources* — a bridge, a firewall rule, a
Docker network, one resource per endpoint, later the DNS service.  A resource is plain data:
its ``kind`` (which driver handles it), its ``name`` (unique within the kind and the lab) and
its ``spec``, a JSON-able mapping holding everything the driver needs to create it.  The
``fingerprint`` of the spec is stored on the real object by the driver (a Docker label, libvirt
metadata, an interface alias), so the planner can tell "exists and is as wanted" from "exists
but differs" by observing the engines alone.

An :class:`Observation` is what a driver reports of one resource it finds: the fingerprint it
was made with, whether it runs, and if not why (in the engine's words).  Every driver reports
the same way, so a stopped VM and a stopped container read the same in plans and status.

The creation order of resource kinds lives in :mod:`hybridnb.core.stages` (it comes from the
registry of endpoint kinds).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace) used for fingerprints and golden files."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(spec: Mapping[str, Any]) -> str:
    """Short stable hash of a resource spec: equal specs ⇔ equal fingerprints."""
    return hashlib.sha256(canonical_json(dict(spec)).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Resource:
    kind: str
    name: str
    spec: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""                  # one human line for plans, e.g. "10.0.1.100 image busybox"

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)

    @property
    def fingerprint(self) -> str:
        """Short stable hash of the spec: equal specs ⇔ equal fingerprints."""
        return fingerprint(self.spec)

    def sort_key(self) -> tuple[int, str]:
        from hybridnb.core.stages import rank

        return (rank(self.kind), self.name)


@dataclass(frozen=True)
class Observation:
    """One resource as its engine shows it."""

    fingerprint: str
    running: bool = True
    #: why it does not run, in the engine's words ("exited (137) 2 minutes ago", "shut off")
    reason: str = ""
    #: anything else worth showing (engine state text)
    detail: str = ""
    #: the MTU it has, for a link that reports one (the bridge: status flags drift); not
    #: part of equality: what was made is the fingerprint's business
    mtu: int | None = field(default=None, compare=False)


def __getattr__(name: str) -> Any:
    if name == "KIND_ORDER":              # the creation order, computed from the registry
        from hybridnb.core.stages import kind_order

        return kind_order()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
