"""The driver protocol, the capabilities a driver may declare, and the backend bundling them.

Each driver handles one resource *kind* (``bridge``, ``firewall``, ``network``, ``host``,
``container``, ``vm``, ``dns``) and implements the small :class:`Driver` protocol:

* ``observe(lab)`` — the resources of this kind that the engine holds *and that belong to this
  lab*, as ``{name: Observation}`` (:class:`~hybridnb.core.resource.Observation`: the
  fingerprint it was made with, whether it runs, why not).  Ownership and the fingerprint are
  read from the object itself (a label, metadata, an interface alias).  It must be cheap and
  must not write.
* ``create(lab, resource)`` — make it; idempotent enough that a half-finished earlier attempt
  (a crash between two steps) does not make it fail: clean up leftovers of the same name first.
* ``delete(lab, name)`` — remove it and everything it made; deleting something already gone
  is not an error.

Anything more is a *capability*: a small runtime-checkable protocol a driver implements or
not, checked with ``isinstance`` — never by probing attributes:

=====================  ===========================================================
:class:`Updatable`     ``update(lab, resource)``: change in place instead of replace
:class:`Checkable`     ``check(lab, resource)``: refuse before anything is made
:class:`Settling`      ``settle``: seconds a daemon may still spend carrying out a call
                       whose caller died (:func:`hybridnb.apply.observe_settled`)
:class:`LabLister`     ``labs()``: every lab that owns something in the engine
:class:`NamespaceSource` ``netns_paths(lab)``: the network namespace of each endpoint
                       (or of the lab host, for the bridge; ``None``: this process's
                       own), where probes open sockets
:class:`GuestExec`     ``guest_exec(lab, endpoint, argv, timeout)``: run a command inside
:class:`ProbeChannel`  ``probe_channel(lab, endpoint)``: the host-side socket of a VM's
                       resident probe helper port (None: it has none)
:class:`QueryLog`      ``query_log(lab, limit)``: the DNS queries the lab's server answered
:class:`Closable`      ``close()``: release connections
:class:`Startable`     ``start(lab, endpoint)``/``stop(lab, endpoint)``: power an
                       endpoint off and on again (it keeps its definition)
:class:`OutputLog`     ``logs(lab, endpoint, since=, tail=)``: what an endpoint printed
:class:`ConsoleLog`    ``console_path(lab, endpoint)``: the file its serial console goes to
:class:`PortInterfaces` ``interfaces(lab, endpoint)``: its NICs and the bridge ports
                       (taps) the engine made for them
:class:`RuleCounters`  ``counters(lab)``: packets and bytes each policy rule decided
:class:`LinkReport`    ``link_report(lab)``: where each endpoint's impairments are applied
=====================  ===========================================================

:meth:`Backend.require` returns the driver of a kind that has a capability, or raises
:class:`~hybridnb.errors.Unsupported` — one typed error the fronts show as a clear message.

Drivers translate engine exceptions into :mod:`hybridnb.errors` at this edge.  A
:class:`Backend` is a bundle of drivers (one per kind) plus the :class:`~hybridnb.target.Target`
they talk to; the planner and ``Lab`` only ever see a backend — the dry-run backend and the real
one share every line of code above this module (httpx's transports are the model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence, TypeVar, runtime_checkable

from hybridnb.core.resource import Observation, Resource
from hybridnb.target import Target


@runtime_checkable
class Driver(Protocol):
    kind: str
    #: True when ``create``/``delete`` of different resources may run on concurrent threads.
    concurrent: bool

    def observe(self, lab: str) -> Mapping[str, Observation]: ...

    def create(self, lab: str, resource: Resource) -> None: ...

    def delete(self, lab: str, name: str) -> None: ...


# ------------------------------------------------------------------------- capabilities

@runtime_checkable
class Updatable(Protocol):
    """change resources in place"""

    def update(self, lab: str, resource: Resource) -> None: ...


@runtime_checkable
class Checkable(Protocol):
    """check a resource before anything is made"""

    def check(self, lab: str, resource: Resource) -> None: ...


@runtime_checkable
class Settling(Protocol):
    """wait for calls a dead process left in flight"""

    settle: float


@runtime_checkable
class LabLister(Protocol):
    """list the labs that own something in its engine"""

    def labs(self) -> set[str]: ...


@runtime_checkable
class NamespaceSource(Protocol):
    """open sockets inside the network namespaces of its resources"""

    def netns_paths(self, lab: str) -> Mapping[str, str | None]: ...


@runtime_checkable
class LinksThere(Protocol):
    """read the links of its lab host (with their counters) where that host is: a host of
    another machine, asked through its agent (``netns``: a namespace path *as seen there*,
    e.g. a container's ``/proc/PID/ns/net``; None: the lab host itself)"""

    def links_there(self, netns: str | None = None) -> Mapping[int, Any]: ...


@runtime_checkable
class HostThere(Protocol):
    """read its lab host's kernel settings, firewall, routes and neighbours where that host
    is: a host of another machine, asked through its agent (``what``: one of the reads the
    agent serves, :data:`hybridnb.remote.hostread.READS`)"""

    def read_there(self, what: str, *args: Any) -> Any: ...


@runtime_checkable
class GuestExec(Protocol):
    """run commands inside its endpoints"""

    def guest_exec(self, lab: str, endpoint: str, argv: Sequence[str],
                   timeout: float = 10.0) -> tuple[int, str, str]: ...


@runtime_checkable
class ProbeChannel(Protocol):
    """reach a resident probe helper inside its endpoints"""

    def probe_channel(self, lab: str, endpoint: str) -> str | None: ...


@runtime_checkable
class QueryLog(Protocol):
    """read the DNS query log"""

    def query_log(self, lab: str, limit: int = 100) -> Sequence[Any]: ...


@runtime_checkable
class Closable(Protocol):
    """release its connections"""

    def close(self) -> None: ...


@runtime_checkable
class Startable(Protocol):
    """stop and start its endpoints"""

    def start(self, lab: str, endpoint: str) -> None: ...

    def stop(self, lab: str, endpoint: str) -> None: ...


@runtime_checkable
class OutputLog(Protocol):
    """read what its endpoints print"""

    def logs(self, lab: str, endpoint: str, *, since: float | None = None,
             tail: int | None = None) -> Sequence[tuple[str, str]]: ...


@runtime_checkable
class ConsoleLog(Protocol):
    """say where its endpoints' serial consoles are written"""

    def console_path(self, lab: str, endpoint: str) -> Any: ...


@runtime_checkable
class PortInterfaces(Protocol):
    """name the bridge ports of its endpoints"""

    def interfaces(self, lab: str, endpoint: str) -> Sequence[Mapping[str, str]]: ...


@runtime_checkable
class RuleCounters(Protocol):
    """count the packets each policy rule decided"""

    def counters(self, lab: str) -> Mapping[str, tuple[int, int]]: ...


@runtime_checkable
class LinkReport(Protocol):
    """report where impairments are applied"""

    def link_report(self, lab: str) -> Mapping[str, Mapping[str, Any]]: ...


C = TypeVar("C")


def capability_name(capability: type) -> str:
    """What a capability lets a driver do, for messages (its docstring's first line)."""
    return (capability.__doc__ or capability.__name__).strip().splitlines()[0]


@dataclass
class Backend:
    """A named bundle of drivers, one per resource kind, bound to one target."""

    name: str
    target: Target
    drivers: dict[str, Driver] = field(default_factory=dict)
    #: Extra objects by name (the dry-run backend's ``engine``).
    extras: dict[str, Any] = field(default_factory=dict)
    #: What to do when an operation needs something this backend lacks.
    hint: str = "use a backend that supports it (e.g. the sandbox)"

    def driver(self, kind: str) -> Driver:
        try:
            return self.drivers[kind]
        except KeyError:
            from hybridnb.errors import EngineUnavailable

            raise EngineUnavailable(
                f"backend {self.name!r} has no driver for {kind!r} resources",
                hint="use a backend that supports this kind of endpoint (e.g. the sandbox)",
            ) from None

    def supports(self, kind: str) -> bool:
        return kind in self.drivers

    def capable(self, kind: str, capability: type) -> bool:
        """The backend has a ``kind`` driver with ``capability``."""
        return isinstance(self.drivers.get(kind), capability)

    def require(self, kind: str, capability: type[C], *, doing: str | None = None) -> C:
        """The ``kind`` driver, which has ``capability``; else :class:`Unsupported` saying
        what cannot be done (``doing``, e.g. "probe the lab") and why."""
        drv = self.driver(kind)
        if not isinstance(drv, capability):
            from hybridnb.errors import Unsupported

            can = capability_name(capability)
            what = f"{doing}: its {kind} driver cannot {can}" if doing else \
                f"{can} ({kind} resources)"
            raise Unsupported(f"the {self.name} backend cannot {what}", hint=self.hint,
                              capability=capability.__name__, kind=kind)
        return drv

    def having(self, capability: type[C]) -> dict[str, C]:
        """The drivers with ``capability``, by kind."""
        return {k: d for k, d in self.drivers.items() if isinstance(d, capability)}

    def updatable(self) -> list[str]:
        """Kinds whose driver changes a resource in place."""
        return sorted(self.having(Updatable))

    def close(self) -> None:
        for drv in self.having(Closable).values():
            drv.close()
