"""What the probe engine needs to know about an endpoint, and how it reaches inside one.

A :class:`ProbeEndpoint` is a name, an address, and *a way in*:

* ``netns`` — the path (or ``/run/netns`` name) of the endpoint's network namespace.  A
  namespace host's is ``/run/netns/<name>``, a container's ``/proc/<pid>/ns/net``, the
  gateway's the lab host's namespace.  The engine opens its sockets there from this process
  (on a worker thread that entered the namespace), so nothing runs inside the endpoint and
  images need no tools.  It also opens *responders* there (a TCP/HTTP listener, a UDP echo)
  for the checks whose port the endpoint does not declare as a real service.
* ``executor`` — for endpoints whose network stack is out of reach (VMs): an object that runs
  a command inside the endpoint and returns ``(rc, stdout, stderr)``
  (:class:`Executor`; for libvirt guests it wraps qemu-guest-agent ``guest-exec``).  Such a
  source probes with a shell script (see :mod:`hybridnb.services.probe.script`).

``services`` lists the real services to test on this endpoint (``"tcp/5432"``,
``"http/80"``, ``"udp/53"``): the engine probes those ports and opens no responder on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

#: Ports the engine's own responders listen on when an endpoint declares nothing.
DEFAULT_PORTS = {"tcp": 7, "udp": 7, "http": 80}


@runtime_checkable
class Executor(Protocol):
    """Runs ``argv`` inside an endpoint; returns ``(exit code, stdout, stderr)``."""

    def __call__(self, argv: Sequence[str], timeout: float) -> tuple[int, str, str]: ...


@dataclass(frozen=True)
class ProbeEndpoint:
    name: str
    address: str
    netns: str | None = None
    executor: Executor | None = None
    kind: str = "host"                     # host | container | vm | gateway
    services: tuple[str, ...] = ()
    #: the MAC of an endpoint with no namespace here (a VM), for pinned neighbour entries
    mac: str | None = None

    def declared_port(self, protocol: str) -> int | None:
        """The first port declared for ``protocol`` in ``services``."""
        for s in self.services:
            proto, _, port = s.partition("/")
            if proto == protocol and port.isdigit():
                return int(port)
        return None

    def declares(self, protocol: str, port: int) -> bool:
        return f"{protocol}/{port}" in self.services or (
            protocol == "tcp" and f"http/{port}" in self.services) or (
            protocol == "http" and f"tcp/{port}" in self.services)

    @property
    def can_source(self) -> bool:
        return self.kind != "gateway" and (self.netns is not None or self.executor is not None)
