"""``Lab``: the one API the notebook, the CLI, the widgets and user code all call.

A ``Lab`` holds a lab description (the same mapping a YAML lab file holds), a backend and a
state store.  Editing methods (``add_container``, ``add_vm``, ``add_host``, ``remove``)
re-validate the whole description and roll back on error, so a Lab is never invalid.
``plan()`` compiles the description into resources and diffs them against what the backend
observes; ``apply()`` executes that plan under the lab's lock, recording intent first;
``destroy()`` removes everything the lab owns; ``status()`` reports each endpoint as the
engines see it.  Every method returns an object that renders itself.

    lab = Lab("demo", backend="dry-run")
    lab.add_container("web", image="busybox").add_vm("vm1")
    lab.apply()
"""

from __future__ import annotations

import copy
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from hybridnb.apply import ApplyResult, Progress, execute, observe_settled, preflight
from hybridnb.core.compile import compile_lab
from hybridnb.core.ipam import assign_addresses
from hybridnb.core.plan import Plan, destroy_plan, diff
from hybridnb.core.resource import Resource
from hybridnb.core.spec import LabSpec, endpoint_to_dict, lab_to_dict, parse_lab
from hybridnb.drivers.base import Backend
from hybridnb.errors import EngineUnavailable, HybridError, NotFoundError, ValidationError
from hybridnb.offloop import engine_call
from hybridnb.state import StateStore


def load_yaml(text: str, *, source: str | None = None) -> Any:
    """Parse YAML text into plain data, turning syntax errors into a ValidationError."""
    import yaml

    from hybridnb.errors import Problem, ValidationError

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValidationError([Problem(where, f"YAML syntax error: {problem}",
                                       "check the indentation and the quoting around it")],
                              source=source) from None


@dataclass(frozen=True)
class EndpointStatus:
    name: str
    kind: str
    address: str
    fqdn: str
    state: str          # up | missing | differs | stopped | not applied


@dataclass(frozen=True)
class LabStatus:
    """The lab as the engines see it: one row per endpoint, plus the shared pieces."""

    lab: str
    backend: str
    bridge: str
    subnet: str
    gateway: str
    endpoints: tuple[EndpointStatus, ...] = ()
    infra: tuple[tuple[str, str, str], ...] = ()       # (kind, name, state)
    pending: int = 0                                   # actions an apply would run

    @property
    def up(self) -> bool:
        return self.pending == 0 and all(e.state == "up" for e in self.endpoints)

    def headline(self) -> str:
        state = "up" if self.up else f"{self.pending} change(s) pending"
        return (f"Lab {self.lab} on {self.backend}: bridge {self.bridge} {self.subnet} "
                f"gateway {self.gateway} — {state}")

    def rows(self) -> list[list[str]]:
        return [[e.name, e.kind, e.address, e.fqdn, e.state] for e in self.endpoints]

    def to_text(self) -> str:
        from hybridnb.render.html import text_table

        text = self.headline()
        if self.endpoints:
            text += "\n" + text_table(["name", "kind", "address", "fqdn", "state"], self.rows())
        return text

    __repr__ = to_text
    __str__ = to_text

    def records(self) -> list[dict[str, str]]:
        return [{"name": e.name, "kind": e.kind, "address": e.address, "fqdn": e.fqdn,
                 "state": e.state} for e in self.endpoints]

    def _repr_html_(self) -> str:
        from hybridnb.render.html import table

        return table(["name", "kind", "address", "fqdn", "state"], self.rows(),
                     caption=self.headline(),
                     row_classes=[("up" if e.state == "up" else "missing") for e in self.endpoints])


class Lab:
    """A hybrid lab: one bridge, one subnet, containers, VMs and hosts on it."""

    def __init__(self, name: str = "hybrid", *, subnet: str | None = None,
                 bridge: str | None = None, gateway: str | None = None,
                 domain: str | None = None, mtu: int | None = None,
                 backend: str | Backend | None = None,
                 state_dir: str | os.PathLike[str] | None = None,
                 sandbox: str = "default") -> None:
        network: dict[str, Any] = {}
        for key, value in (("subnet", subnet), ("bridge", bridge), ("gateway", gateway),
                           ("domain", domain), ("mtu", mtu)):
            if value is not None:
                network[key] = value
        self._init({"name": name, "network": network, "endpoints": {}}, backend, state_dir,
                   sandbox, source=None)

    def _init(self, doc: dict[str, Any], backend: str | Backend | None,
              state_dir: str | os.PathLike[str] | None, sandbox: str,
              source: str | None) -> None:
        self._spec = parse_lab(doc, source=source)
        self._doc = doc
        self.source = source
        self.store = StateStore(state_dir)
        self._backend_choice = backend
        self._sandbox = sandbox
        self._backend: Backend | None = backend if isinstance(backend, Backend) else None

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, backend: str | Backend | None = None,
                  state_dir: str | os.PathLike[str] | None = None, sandbox: str = "default",
                  source: str | None = None) -> "Lab":
        lab = cls.__new__(cls)
        lab._init(copy.deepcopy(dict(data)) if isinstance(data, Mapping) else data, backend,
                  state_dir, sandbox, source)
        return lab

    @classmethod
    def from_yaml(cls, text: str, **kw: Any) -> "Lab":
        source = kw.pop("source", None)
        return cls.from_dict(load_yaml(text, source=source), source=source, **kw)

    @classmethod
    def load(cls, path: str | os.PathLike[str], **kw: Any) -> "Lab":
        p = Path(path)
        try:
            text = p.read_text()
        except FileNotFoundError:
            raise NotFoundError(f"lab file {p} does not exist",
                                hint="check the path, or create one (see README)") from None
        return cls.from_yaml(text, source=str(p), **kw)

    # --------------------------------------------------------------------- properties

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def spec(self) -> LabSpec:
        return self._spec

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            from hybridnb.backends import resolve_backend

            self._backend = resolve_backend(self._backend_choice, state_dir=self.store.dir,
                                            sandbox=self._sandbox)
        return self._backend

    def to_dict(self) -> dict[str, Any]:
        return lab_to_dict(self._spec)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def __repr__(self) -> str:
        net = self._spec.network
        return (f"<Lab {self.name}: {net.bridge} {net.subnet}, "
                f"{len(self._spec.endpoints)} endpoint(s)>")

    # ------------------------------------------------------------------------ editing

    def _edit(self, mutate: Any) -> "Lab":
        doc = copy.deepcopy(self._doc)
        mutate(doc)
        self._spec = parse_lab(doc, source=self.source)     # raises, leaving self untouched
        self._doc = doc
        return self

    def _add(self, name: str, entry: dict[str, Any], replace: bool) -> "Lab":
        def mutate(doc: dict[str, Any]) -> None:
            eps = doc.setdefault("endpoints", {}) or {}
            doc["endpoints"] = eps
            if name in eps and not replace:
                from hybridnb.errors import Problem, ValidationError

                raise ValidationError([Problem(f"endpoints.{name}",
                                               f"an endpoint named {name!r} already exists",
                                               "pick another name, remove() it first, or "
                                               "pass replace=True")])
            eps[name] = {k: v for k, v in entry.items() if v is not None}
        return self._edit(mutate)

    def add_container(self, name: str, image: str = "busybox", *, address: str | None = None,
                      command: str | list[str] | None = None, env: Mapping[str, str] | None = None,
                      ports: list[str] | None = None, labels: Mapping[str, str] | None = None,
                      services: list[str] | None = None, replace: bool = False) -> "Lab":
        """Add a container; ``replace=True`` redefines it if it exists (a cell run twice)."""
        return self._add(name, {"kind": "container", "image": image, "address": address,
                                "command": command, "env": dict(env) if env else None,
                                "ports": ports, "labels": dict(labels) if labels else None,
                                "services": services}, replace)

    def add_vm(self, name: str, template: str = "test", *, address: str | None = None,
               memory: int | None = None, vcpus: int | None = None, image: str | None = None,
               kernel: str | None = None, initrd: str | None = None,
               services: list[str] | None = None, replace: bool = False) -> "Lab":
        """Add a VM; ``replace=True`` redefines it if it exists."""
        return self._add(name, {"kind": "vm", "template": template, "address": address,
                                "memory": memory, "vcpus": vcpus, "image": image,
                                "kernel": kernel, "initrd": initrd, "services": services},
                         replace)

    def add_host(self, name: str, *, address: str | None = None,
                 services: list[str] | None = None, replace: bool = False) -> "Lab":
        """Add a namespace host; ``replace=True`` redefines it if it exists."""
        return self._add(name, {"kind": "host", "address": address, "services": services},
                         replace)

    def remove(self, name: str) -> "Lab":
        if name not in {e.name for e in self._spec.endpoints}:
            raise NotFoundError(f"lab {self.name} has no endpoint {name!r}",
                                hint="see status() for the endpoints")

        def mutate(doc: dict[str, Any]) -> None:
            del doc["endpoints"][name]
        return self._edit(mutate)

    # ----------------------------------------------------------------------- planning

    def addresses(self) -> dict[str, ipaddress.IPv4Address]:
        """Every endpoint's address: explicit, else as allocated before, else newly chosen."""
        return self._assign(self.store.read(self.name).get("addresses", {}))

    def _assign(self, previous: Mapping[str, str]) -> dict[str, ipaddress.IPv4Address]:
        try:
            return assign_addresses(self._spec, previous)
        except ValidationError as exc:
            raise ValidationError(exc.problems, source=self.source) from None

    def resources(self) -> list[Resource]:
        return compile_lab(self._spec, self.addresses())

    def _observe(self) -> dict[str, dict[str, str]]:
        backend = self.backend
        return {kind: dict(drv.observe(self.name)) for kind, drv in sorted(backend.drivers.items())}

    def _settled(self, st: Any) -> dict[str, dict[str, str]]:
        """:meth:`_observe`, after what a killed apply left in flight had time to land."""
        return observe_settled(self.name, self.backend, st.resources)

    def _updatable(self) -> list[str]:
        return [k for k, d in self.backend.drivers.items() if hasattr(d, "update")]

    @engine_call
    def plan(self) -> Plan:
        """What ``apply()`` would do now (nothing is changed)."""
        recorded = [tuple(k.split("/", 1)) for k in self.store.read(self.name).get("resources", {})]
        return diff(self.name, self.resources(), self._observe(), recorded,  # type: ignore[arg-type]
                    updatable=self._updatable())

    @engine_call
    def apply(self, progress: Progress | None = None, *, workers: int = 8) -> ApplyResult:
        """Make the engines match the lab; re-applying an unchanged lab does nothing.

        ``workers`` bounds how many actions of one stage run at once (1: one at a time)."""
        with self.store.transaction(self.name) as st:
            addresses = self._assign(st.addresses)
            resources = compile_lab(self._spec, addresses)
            plan = diff(self.name, resources, self._settled(st), st.recorded(),
                        updatable=self._updatable())
            if plan.empty:
                return ApplyResult(plan)
            preflight(plan, self.backend)
            # intent first: the addresses and the description are persisted before acting
            st.data["addresses"] = {n: str(a) for n, a in addresses.items()}
            st.data["kinds"] = {e.name: e.kind for e in self._spec.endpoints}
            st.data["spec"] = lab_to_dict(self._spec)
            st.data["backend"] = self.backend.name
            st.data["target"] = self.backend.target.to_dict()
            st.save()
            return execute(plan, self.backend, st, progress=progress, workers=workers)

    @engine_call
    def destroy(self, progress: Progress | None = None) -> ApplyResult:
        """Remove everything this lab owns; its addresses are released."""
        with self.store.transaction(self.name) as st:
            plan = destroy_plan(self.name, self._settled(st), st.recorded())
            result = execute(plan, self.backend, st, progress=progress) if not plan.empty \
                else ApplyResult(plan)
            st.data["addresses"] = {}
            st.data["kinds"] = {}
            st.data["resources"] = {}
            st.save()
            self.store.forget(self.name)
            return result

    # -------------------------------------------------------------------------- tests

    def probe_endpoints(self) -> tuple[list[Any], Any]:
        """(endpoints, gateway) as the probe engine sees them: each with the network namespace
        its sockets open in (hosts, containers) or a guest-agent executor (VMs)."""
        from hybridnb.services.probe import lab_probe_endpoints, service_checks

        backend = self.backend
        if backend.name == "dry-run":
            raise EngineUnavailable("the dry-run backend sends no packets",
                              hint="use the sandbox backend to probe for real")
        containers: Mapping[str, str] = {}
        if backend.supports("container") and self._spec.of_kind("container"):
            containers = backend.driver("container").netns_paths(self.name)  # type: ignore[attr-defined]
        vm_executor = (lambda name: _GuestExec(backend.driver("vm"), self.name, name)) \
            if backend.supports("vm") else None
        return lab_probe_endpoints(
            self.resources(), {e.name: service_checks(e.services) for e in self._spec.endpoints},
            container_netns=containers, vm_executor=vm_executor,
            gateway=str(self._spec.network.gateway), gateway_netns=backend.target.netns)

    @engine_call
    def test(self, protocols: tuple[str, ...] | None = None, *, timeout: float = 1.0,
             count: int = 3, pin_neighbours: bool | None = None,
             responders: bool = True) -> Any:
        """Probe every endpoint against every other (and the gateway); returns a
        :class:`~hybridnb.services.probe.ConnectivityMatrix`.  ``pin_neighbours``: see
        :func:`~hybridnb.services.probe.probe_matrix` (default: when the lab is too big for
        the kernel's neighbour table).  ``responders=False``: no stand-in listeners, even for
        the built-in checks (only what really listens answers)."""
        from hybridnb.services.probe import probe_matrix

        if protocols is None:
            protocols = ("icmp", "tcp", "udp", "http") + (
                ("dns",) if self._spec.network.dns and self.backend.supports("dns") else ())
        eps, gateway = self.probe_endpoints()
        net = self._spec.network
        return probe_matrix(eps + [gateway], protocols, domain=net.domain,
                            dns_server=str(net.gateway) if net.dns else None,
                            timeout=timeout, count=count, pin_neighbours=pin_neighbours,
                            responders=responders)

    @engine_call
    def validate(self, *, timeout: float = 1.0, count: int = 2) -> Any:
        """Check the lab file's ``expect:`` lines against a probe run; the report's
        ``exit_code`` is 0 when all hold and 1 when some fail (2: the lab is not up)."""
        from hybridnb.core.expect import evaluate, parse_expectations

        expectations = parse_expectations(self._spec.expect,
                                          names=[e.name for e in self._spec.endpoints])
        status = self.status()
        if not status.up:
            raise LabNotUp(f"lab {self.name} is not up ({status.pending} change(s) pending)",
                           hint="run apply first")
        checks = sorted({e.check for e in expectations})
        # every expect: line is an assertion: only what really listens may answer it
        matrix = self.test(tuple(checks) or ("icmp",), timeout=timeout, count=count,
                           responders=False)
        return evaluate(expectations, matrix)

    # ---------------------------------------------------------------------------- dns

    def _dns_resource(self) -> Resource:
        for res in self.resources():
            if res.kind == "dns":
                return res
        raise HybridError(f"lab {self.name} has no DNS service",
                          hint="set network.dns: true (the default)")

    def dns(self) -> Any:
        """The records the lab's DNS serves (computed from the lab; the server serves the
        same zone)."""
        from hybridnb.core.dnszone import zone_from_spec
        from hybridnb.services.dns.results import DnsRecords

        res = self._dns_resource()
        zone = zone_from_spec(res.spec)
        return DnsRecords(self.name, zone.domain, str(res.spec["listen"]), zone.all_records)

    @engine_call
    def dns_logs(self, limit: int = 50) -> Any:
        """The last ``limit`` queries the lab's DNS server answered."""
        from hybridnb.services.dns.results import QueryLogView

        self._dns_resource()
        driver = self.backend.driver("dns")
        logs = getattr(driver, "logs", None)
        entries = logs(self.name, limit) if logs is not None else []
        return QueryLogView(self.name, tuple(entries))

    # ------------------------------------------------------------------------- status

    @engine_call
    def status(self) -> LabStatus:
        net = self._spec.network
        resources = self.resources()
        observed = self._observe()
        recorded = [tuple(k.split("/", 1)) for k in self.store.read(self.name).get("resources", {})]
        plan = diff(self.name, resources, observed, recorded,  # type: ignore[arg-type]
                    updatable=self._updatable())
        applied = bool(recorded) or any(observed.values())
        rows = []
        for res in sorted(resources, key=lambda r: r.name):
            if res.kind not in ("host", "container", "vm"):
                continue
            fp = observed.get(res.kind, {}).get(res.name)
            if fp is None:
                state = "missing" if applied else "not applied"
            elif fp == res.fingerprint:
                state = "up"
            elif fp.endswith(":stopped"):
                state = "stopped"
            else:
                state = "differs"
            rows.append(EndpointStatus(res.name, res.kind, str(res.spec["address"]),
                                       f"{res.name}.{net.domain}", state))
        infra = []
        for res in resources:
            if res.kind in ("host", "container", "vm"):
                continue
            fp = observed.get(res.kind, {}).get(res.name)
            infra.append((res.kind, res.name, "up" if fp == res.fingerprint
                          else ("missing" if fp is None else "differs")))
        return LabStatus(self.name, self.backend.name, net.bridge, str(net.subnet),
                         str(net.gateway), tuple(rows), tuple(infra), len(plan.actions))


GATEWAY = "gateway"


class LabNotUp(HybridError):
    """An operation needs the lab applied and healthy."""

    exit_code = 2


class _GuestExec:
    """Probe executor running commands inside a VM through its driver (qemu-guest-agent)."""

    def __init__(self, driver: Any, lab: str, endpoint: str) -> None:
        self.driver, self.lab, self.endpoint = driver, lab, endpoint

    def __call__(self, argv: Any, timeout: float) -> tuple[int, str, str]:
        result = self.driver.guest_exec(self.lab, self.endpoint, list(argv), timeout=timeout)
        return (int(result[0]), str(result[1]), str(result[2]))


def open_lab(path_or_name: str, **kw: Any) -> Lab:
    """A lab from a YAML file path, or from the description saved in the state of an applied
    lab of that name."""
    if os.path.exists(path_or_name) or path_or_name.endswith((".yaml", ".yml")):
        return Lab.load(path_or_name, **kw)
    store = StateStore(kw.get("state_dir"))
    data = store.read(path_or_name)
    if not data.get("spec"):
        raise NotFoundError(f"no lab file and no applied lab named {path_or_name!r}",
                            hint="pass the path of a lab YAML file")
    return Lab.from_dict(data["spec"], **kw)


__all__ = ["Lab", "LabStatus", "EndpointStatus", "open_lab", "HybridError", "endpoint_to_dict"]
