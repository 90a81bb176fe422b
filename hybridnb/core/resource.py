"""Resources: the engine-level things a lab is made of.

A lab spec (what the user wrote) is compiled into *resources* — a bridge, a firewall rule, a
Docker network, one resource per endpoint, later the DNS service.  A resource is plain data:
its ``kind`` (which driver handles it), its ``name`` (unique within the kind and the lab) and
its ``spec``, a JSON-able mapping holding everything the driver needs to create it.  The
``fingerprint`` of the spec is stored on the real object by the driver (a Docker label, libvirt
metadata, an interface alias), so the planner can tell "exists and is as wanted" from "exists
but differs" by observing the engines alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

#: Creation order of resource kinds (deletion runs in reverse).  Kinds in one stage do not
#: depend on each other, so their actions may run concurrently.
KIND_ORDER: tuple[str, ...] = ("bridge", "firewall", "network", "host", "container", "vm", "dns")


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace) used for fingerprints and golden files."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


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
        return hashlib.sha256(canonical_json(dict(self.spec)).encode()).hexdigest()[:12]

    def sort_key(self) -> tuple[int, str]:
        return (KIND_ORDER.index(self.kind), self.name)
