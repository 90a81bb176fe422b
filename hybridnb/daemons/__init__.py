"""Engine daemons hybridnb starts itself (private dockerd, libvirtd, the lab DNS server).

Each daemon module exposes ``start(...) -> Daemon`` and ``stop(daemon)``.  A :class:`Daemon`
records what was started — pids, pidfiles, the endpoint clients connect to — so that it can be
stopped *by pid* later, from another process, after the notebook kernel that started it died.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Daemon:
    name: str                                   # "dockerd", "libvirtd", "virtlogd", "dns"
    pid: int
    endpoint: str = ""                          # URL/URI/socket clients use
    pidfile: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Daemon":
        return cls(**data)
