"""The driver protocol and the backend that bundles drivers.

Each capability is one small protocol handling one resource *kind* (``bridge``, ``firewall``,
``network``, ``host``, ``container``, ``vm``, ``dns``):

* ``observe(lab)`` — the resources of this kind that the engine holds *and that belong to this
  lab*, as ``{name: fingerprint}``.  Ownership and the fingerprint are read from the object
  itself (a label, metadata, an interface alias).  It must be cheap and must not write.
* ``create(lab, resource)`` — make it; idempotent enough that a half-finished earlier attempt
  (a crash between two steps) does not make it fail: clean up leftovers of the same name first.
* ``delete(lab, name)`` — remove it and everything it made; deleting something already gone
  is not an error.

Optional: ``update(lab, resource)`` (change in place), ``check(lab, resource)`` (refuse before
anything is made), ``settle`` (seconds a daemon may still spend carrying out a call whose
caller died: see :func:`hybridnb.apply.observe_settled`) and ``labs()`` (every lab that owns
something in the engine: the sandbox sweeps what outlived its namespace).

Drivers translate engine exceptions into :mod:`hybridnb.errors` at this edge.  A
:class:`Backend` is a bundle of drivers (one per kind) plus the :class:`~hybridnb.target.Target`
they talk to; the planner and ``Lab`` only ever see a backend — the dry-run backend and the real
one share every line of code above this module (httpx's transports are the model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

from hybridnb.core.resource import Resource
from hybridnb.target import Target


@runtime_checkable
class Driver(Protocol):
    kind: str
    #: True when ``create``/``delete`` of different resources may run on concurrent threads.
    concurrent: bool

    def observe(self, lab: str) -> Mapping[str, str]: ...

    def create(self, lab: str, resource: Resource) -> None: ...

    def delete(self, lab: str, name: str) -> None: ...


@dataclass
class Backend:
    """A named bundle of drivers, one per resource kind, bound to one target."""

    name: str
    target: Target
    drivers: dict[str, Driver] = field(default_factory=dict)
    #: Extra capabilities (e.g. ``"endpoint_state"`` readers) keyed by name.
    extras: dict[str, Any] = field(default_factory=dict)

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

    def close(self) -> None:
        for drv in self.drivers.values():
            close: Callable[[], None] | None = getattr(drv, "close", None)
            if close is not None:
                close()
