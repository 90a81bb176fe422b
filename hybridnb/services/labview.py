"""What the watching services (monitor, capture, doctor, logs) know about a lab: plain data.

The services must not import :mod:`hybridnb.lab` (layering), so a lab hands them a
:class:`LabView`: its name, the resources it compiles to, its backend (the drivers and the
target: which namespace, which engines), the persisted state (the action journal) and the
directory beside the state where files such as captures go.  ``Lab`` builds one in a line
(:meth:`LabView.of`)::

    LabView(lab.name, tuple(lab.resources()), lab.backend, lab.store.read(lab.name),
            lab.store.dir)

Everything else the services need is derived here: the bridge, subnet, gateway and domain
(from the ``bridge`` and ``dns`` resources) and the endpoints — any resource whose spec names
an ``endpoint`` and an ``address`` is one, whatever its kind, so a new kind of endpoint is
watched without a change here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hybridnb.core.resource import Resource
from hybridnb.errors import NotFoundError


@dataclass(frozen=True)
class LabView:
    name: str
    resources: tuple[Resource, ...]
    backend: Any                                   # hybridnb.drivers.base.Backend
    state: Mapping[str, Any] = field(default_factory=dict)
    state_dir: Path | None = None
    #: endpoint (and ``gateway``) → the host it runs on, for a lab with ``hosts:``
    #: (:func:`hybridnb.core.hostview.host_of`); empty for a one-machine lab
    hosts: Mapping[str, str] = field(default_factory=dict)
    #: the host this view is one share of (a part of a lab over several hosts), else None
    host: str | None = None
    #: a lab over several hosts: one view per host — that host's share of the resources,
    #: its own backend and journal — which the services watch each through its own lab
    #: host and merge (empty for a one-machine lab)
    parts: tuple["LabView", ...] = ()

    def part(self, endpoint: str) -> "LabView":
        """The view of the host ``endpoint`` lives on (this view for a one-machine lab)."""
        if not self.parts:
            return self
        host = self.hosts.get(endpoint)
        for part in self.parts:
            if part.host == host:
                return part
        self.endpoint(endpoint)                    # unknown endpoint: NotFoundError
        raise NotFoundError(f"lab {self.name}: endpoint {endpoint!r} has no host share")

    @classmethod
    def of(cls, lab: Any) -> "LabView":
        """From a :class:`hybridnb.Lab` (duck-typed: this module never imports it)."""
        from hybridnb.core.hostview import host_of

        return cls(lab.name, tuple(lab.resources()), lab.backend, lab.store.read(lab.name),
                   lab.store.dir, host_of(lab.spec))

    # -- the network -------------------------------------------------------------------

    def _bridge_spec(self) -> Mapping[str, Any]:
        for res in self.resources:
            if res.kind == "bridge":
                return res.spec
        raise NotFoundError(f"lab {self.name} has no bridge resource")

    @property
    def bridge(self) -> str:
        return str(self._bridge_spec()["bridge"])

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self._bridge_spec()["subnet"])

    @property
    def gateway(self) -> str:
        return str(self._bridge_spec()["address"]).split("/")[0]

    @property
    def mtu(self) -> int:
        return int(self._bridge_spec().get("mtu") or 1500)

    @property
    def dns(self) -> Resource | None:
        return next((r for r in self.resources if r.kind == "dns"), None)

    @property
    def domain(self) -> str | None:
        dns = self.dns
        if dns is not None:
            return str(dns.spec["domain"])
        return next((str(r.spec["domain"]) for r in self.endpoints() if r.spec.get("domain")),
                    None)

    @property
    def netns(self) -> str | None:
        """The lab host: the namespace holding the bridge (None: the host's own); refused
        (:class:`~hybridnb.errors.Unsupported`) on a backend that cannot say (dry-run)."""
        return self.lab_host()

    def lab_host(self, doing: str = "watch the lab") -> str | None:
        """The lab host's namespace name, once the backend's bridge driver has declared
        where its lab hosts are (:class:`~hybridnb.drivers.base.NamespaceSource`).  A backend
        without that — the dry-run one: its labs are nowhere — is refused, because its
        target's ``netns`` of ``None`` would otherwise mean *this machine's own network*.  So is
        the lab host of a host on another machine (its bridge driver reads it there,
        :class:`~hybridnb.drivers.base.LinksThere`); a spread view checks its other parts —
        the services read such a part through its agent."""
        from hybridnb.drivers.base import LinksThere, NamespaceSource
        from hybridnb.errors import Unsupported

        if self.parts:                 # every host's lab host must be there (a host of
            hosts = {part.host: part.lab_host(doing) for part in self.parts   # another
                     if not isinstance(part.driver("bridge"), LinksThere)}    # machine:
            return hosts.get(self.hosts.get("gateway"))                       # its agent
        where = f"host {self.host}: " if self.host else ""
        if isinstance(self.driver("bridge"), LinksThere):
            raise Unsupported(
                f"{where}its lab host is on another machine, reached through its agent: "
                f"hybridnb cannot {doing} there from this machine",
                hint="monitor, doctor and status read it through the agent",
                capability="NamespaceSource", kind="bridge")
        if not isinstance(self.driver("bridge"), NamespaceSource):
            name = getattr(self.backend, "name", "this")
            raise Unsupported(
                f"{where}the {name} backend cannot {doing}: its lab has no bridge, ports or lab "
                "host to look at (looking anyway would mean this machine's own network)",
                hint=getattr(self.backend, "hint", None) or "use the sandbox backend",
                capability="NamespaceSource", kind="bridge")
        return self.backend.target.netns

    # -- the endpoints -----------------------------------------------------------------

    def endpoints(self) -> list[Resource]:
        """Every endpoint resource (sorted by name; of every host for a spread lab)."""
        if self.parts:
            return sorted((r for p in self.parts for r in p.endpoints()), key=lambda r: r.name)
        return sorted((r for r in self.resources
                       if "endpoint" in r.spec and "address" in r.spec),
                      key=lambda r: r.name)

    def endpoint(self, name: str) -> Resource:
        for res in self.endpoints():
            if res.name == name:
                return res
        known = ", ".join(r.name for r in self.endpoints()) or "none"
        raise NotFoundError(f"lab {self.name} has no endpoint {name!r}",
                            hint=f"its endpoints: {known}")

    def resource(self, kind: str, name: str) -> Resource | None:
        return next((r for r in self.resources if r.kind == kind and r.name == name), None)

    def driver(self, kind: str) -> Any | None:
        """The backend's driver for ``kind``, or None when it has none."""
        return self.backend.drivers.get(kind)

    def files(self, what: str) -> Path:
        """``<state dir>/<what>/<lab>``: where a service keeps this lab's files."""
        base = self.state_dir if self.state_dir is not None else Path.cwd()
        return Path(base) / what / self.name


__all__ = ["LabView"]
