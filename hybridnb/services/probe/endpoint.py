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
``down`` says why an endpoint that should be there is not running (a stopped container has
no namespace): probes *from* it fail with that reason, probes *to* it go to its address and
fail as a client would see it.

:func:`lab_probe_endpoints` builds these from what a lab knows (its compiled resources, the
services each endpoint declares, the namespaces its engines report), so ``Lab`` only gathers
the facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Callable,
    Iterable,
    Mapping,
    Protocol,
    Sequence,
    runtime_checkable,
)

if TYPE_CHECKING:
    from hybridnb.core.resource import Resource

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
    #: why the endpoint is not running (None: it is, as far as the lab knows)
    down: str | None = None

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
        return self.kind != "gateway" and self.down is None and (
            self.netns is not None or self.executor is not None)

    @property
    def reachable(self) -> bool:
        """Whether this process can open sockets in its namespace (a gateway without one is
        this process's own namespace)."""
        return self.netns is not None or self.kind == "gateway"


def service_checks(services: Iterable[object]) -> tuple[str, ...]:
    """``proto/port`` strings for declared services (objects with ``name``, ``protocol`` and
    ``port``, like :class:`~hybridnb.core.kinds.ServiceSpec`): an ``http`` service is probed
    with HTTP, any other with its transport protocol."""
    out = []
    for s in services:
        name, protocol, port = (getattr(s, "name", ""), getattr(s, "protocol", "tcp"),
                                getattr(s, "port", 0))
        out.append(f"{'http' if name == 'http' else protocol}/{port}")
    return tuple(dict.fromkeys(out))


#: How the probes get into the endpoints of one kind: the namespace paths of the running
#: ones (``{endpoint: path}``), or a factory of command executors inside them.
WayIn = Mapping[str, str] | Callable[[str], Executor]


def lab_probe_endpoints(resources: Iterable[Resource], services: Mapping[str, Sequence[str]],
                        ways: Mapping[str, WayIn], *, gateway: str, gateway_netns: str | None,
                        ) -> tuple[list[ProbeEndpoint], ProbeEndpoint]:
    """(endpoints sorted by name, the gateway) of a lab, from plain facts: the compiled
    resources of its endpoints, the ``proto/port`` services each runs (declared, and what
    its kind runs without declaring it), and per kind the way in (:data:`WayIn`, from the
    drivers' capabilities).  An endpoint with no namespace and no executor is down: probes
    from it fail with that reason.

    The gateway is the lab host itself (the namespace holding the bridge): it probes and is
    probed like a host, so host -> endpoint checks are part of every run."""
    from hybridnb.drivers.nsutil import netns_path

    eps = []
    for res in resources:
        way = ways.get(res.kind, {})
        declared = tuple(dict.fromkeys(services.get(res.name, ())))
        if callable(way):
            eps.append(ProbeEndpoint(res.name, str(res.spec["address"]), kind=res.kind,
                                     executor=way(res.name), services=declared,
                                     mac=res.spec.get("mac")))
            continue
        ns = way.get(res.name)
        eps.append(ProbeEndpoint(res.name, str(res.spec["address"]), kind=res.kind,
                                 netns=ns, services=declared,
                                 down=None if ns else f"{res.name} is not running"))
    gw = ProbeEndpoint("gateway", gateway, netns=netns_path(gateway_netns), kind="host")
    return sorted(eps, key=lambda e: e.name), gw
