"""Where a lab lives: the *target* names the engines a backend talks to.

A target is plain data: the network namespace the lab's bridge lives in (``None`` for the
host's own namespace), the Docker engine URL and the libvirt URI.  The sandbox
(:mod:`hybridnb.sandbox`) produces a target for its isolated lab host; ``Target.host()`` is the
machine's own engines.  Drivers receive a target and never guess.  :func:`default_sandbox`
names the sandbox every front uses when none is given (``$HYBRIDNB_SANDBOX``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_SANDBOX = "default"


def default_sandbox() -> str:
    """The sandbox used when none is named: ``$HYBRIDNB_SANDBOX``, else ``default`` (the CLI,
    ``Lab`` and the magics all ask here)."""
    return os.environ.get("HYBRIDNB_SANDBOX") or DEFAULT_SANDBOX


@dataclass(frozen=True)
class Target:
    name: str
    netns: str | None = None            # network namespace holding the lab bridges (None: host)
    docker_url: str | None = None       # e.g. unix:///run/hybridnb/sandbox/docker.sock
    libvirt_uri: str | None = None      # e.g. qemu:///system?socket=/run/hybridnb/.../libvirt-sock

    @classmethod
    def host(cls) -> "Target":
        """The machine's own namespace and default engines."""
        return cls(name="host", netns=None, docker_url="unix:///var/run/docker.sock",
                   libvirt_uri="qemu:///system")

    @property
    def sandbox(self) -> str | None:
        """The sandbox's name, for a sandbox's target (``sandbox:NAME``)."""
        kind, sep, name = self.name.partition(":")
        return name if sep and kind == "sandbox" else None

    def start_hint(self, engine: str) -> str:
        """How to get ``engine`` (``dockerd``, ``libvirtd``) running for this target."""
        if self.sandbox is not None:
            return (f"is sandbox {self.sandbox!r} up? `hybridnb sandbox status --sandbox "
                    f"{self.sandbox}`; start it with `hybridnb sandbox up --sandbox "
                    f"{self.sandbox}`")
        return f"start the host's {engine}"

    def to_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "netns": self.netns, "docker_url": self.docker_url,
                "libvirt_uri": self.libvirt_uri}
