"""``Lab``: the one API the notebook, the CLI, the widgets and user code all call.

A ``Lab`` holds a lab description (the same mapping a YAML lab file holds), a backend and a
state store.  ``Lab.load`` opens one (a lab file, or an applied lab by name).  Editing methods
(``add``, ``add_container``, ``add_vm``, ``add_host``, ``remove``) re-validate the whole
description and roll back on error, so a Lab is never invalid.  ``plan()`` compiles the
description into resources and diffs them against what the backend observes; ``apply()``
executes that plan under the lab's lock, recording intent first (the images of the lab's
recipes are built before, :mod:`hybridnb.images.binding`); ``destroy()`` removes
everything the lab owns; ``status()`` reports each endpoint as the engines see it; ``test()``,
``validate()``, ``dns()`` and ``dns_query_log()`` look inside; ``policy()``, ``explain()``,
``links()`` and ``warnings()`` show the lab's policies and link impairments; ``report()`` puts
it all in one document (HTML, Markdown or JSON).  Every method returns an object that renders
itself.

    lab = Lab("demo", backend="dry-run")
    lab.add_container("web", image="busybox").add_vm("vm1")
    lab.apply()

Endpoint kinds come from the registry (:mod:`hybridnb.core.kinds`): ``add(kind, name,
**fields)`` takes any kind and any of its fields; what a backend can do beyond create and
delete comes from its drivers' declared capabilities (:mod:`hybridnb.drivers.base`).

A lab's state belongs to where it lives (:mod:`hybridnb.state`): the dry-run backend keeps
its labs apart from the real ones, an applied lab is found on the sandbox its state records
(when no sandbox or backend is named), and the same name on another target — or an unnamed
lab file that is not the one the lab was applied from — is refused, never mixed.  A failed
apply that changed existing resources puts them back (:func:`hybridnb.apply.converge`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import ipaddress
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

from hybridnb.apply import (ApplyResult, Observed, Progress, ProgressEvent, converge, execute,
                            observe_all, observe_settled, preflight, settle_journal)
from hybridnb.core.compile import compile_lab
from hybridnb.core.ipam import assign_addresses
from hybridnb.core.kinds import endpoint_to_dict, is_endpoint_kind, plain
from hybridnb.core.kinds import get as get_kind
from hybridnb.core.plan import Plan, destroy_plan, diff
from hybridnb.core.resource import Observation, Resource
from hybridnb.core.spec import LabSpec, lab_to_dict, parse_lab
from hybridnb.drivers.base import Backend, GuestExec, NamespaceSource, QueryLog
from hybridnb.errors import (HybridError, NotFoundError, Problem, Unsupported, ValidationError)
from hybridnb.offloop import engine_call, off_loop
from hybridnb.state import (IN_FLIGHT_STATUSES, LabState, StateStore, default_state_dir,
                            owner_conflict, recorded_specs, recorded_target)
from hybridnb.target import default_sandbox

if TYPE_CHECKING:  # pragma: no cover
    from hybridnb.core.expect import ExpectationReport
    from hybridnb.render.report import LabReport
    from hybridnb.services.capture import Capture, CaptureResult
    from hybridnb.services.doctor import DoctorReport
    from hybridnb.services.labview import LabView
    from hybridnb.services.logs import LogLine, LogView
    from hybridnb.services.monitor import TrafficReport, TrafficSample
    from hybridnb.core.policy import Decision, Policy
    from hybridnb.services.policyview import LinksView, PolicyTable
    from hybridnb.services.dns.results import DnsRecords, QueryLogView
    from hybridnb.services.probe import ConnectivityMatrix, ProbeEndpoint


def load_yaml(text: str, *, source: str | None = None) -> Any:
    """Parse YAML text into plain data within bounds (see :mod:`hybridnb.labfile`); every
    problem (syntax, alias bombs, duplicate keys) is one ValidationError."""
    from hybridnb.labfile import parse_yaml

    return parse_yaml(text, source=source)


#: State words of an endpoint (and of the lab's other resources) in ``status()``.
UP, STOPPED, DIFFERS, MISSING, NOT_APPLIED = "up", "stopped", "differs", "missing", "not applied"


@dataclass(frozen=True)
class EndpointStatus:
    name: str
    kind: str
    address: str
    fqdn: str
    state: str          # up | stopped | differs | missing | not applied
    detail: str = ""    # why: the engine's words for a stopped one, what differs
    host: str = ""      # the host it runs on (a lab with hosts:; core.hostview.host_of)


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
    policy: str = ""                                   # "inet hnb-x: 12 rules, default deny — up"
    links: tuple[tuple[str, str, str], ...] = ()       # (endpoint, impairments, state)
    #: the lab's Policy (for :attr:`denied`, computed only when asked: drawings ask)
    enforced: Any = field(default=None, repr=False, compare=False)
    #: the lab MTU, why in a few words and in a sentence (:mod:`hybridnb.core.hostview`)
    mtu: int = 1500
    mtu_reason: str = ""
    mtu_why: str = ""
    #: the bridge's MTU as observed (None: not observed; differs from ``mtu``: drift)
    bridge_mtu: int | None = None
    #: the lab's hosts (``HostRow``s, a lab with ``hosts:``) and its VXLAN segment line
    hosts: tuple[Any, ...] = ()
    vxlan: str = ""

    @functools.cached_property
    def denied(self) -> tuple[tuple[str, str], ...]:
        """Endpoint pairs between which the policy allows nothing either way (the topology
        draws them)."""
        return tuple(self.enforced.closed_pairs()) if self.enforced is not None else ()

    @property
    def up(self) -> bool:
        return self.pending == 0 and all(e.state == UP for e in self.endpoints)

    def headline(self) -> str:
        state = "up" if self.up else f"{self.pending} change(s) pending"
        why = f" ({self.mtu_reason})" if self.mtu_reason else ""
        where = f" over {len(self.hosts)} hosts" if len(self.hosts) > 1 else ""
        return (f"Lab {self.lab} on {self.backend}{where}: bridge {self.bridge} {self.subnet} "
                f"gateway {self.gateway} mtu {self.mtu}{why} — {state}")

    def _columns(self) -> list[str]:
        cols = ["name", "kind"] + (["host"] if self.hosts else []) + [
            "address", "fqdn", "state"]
        return cols + ["detail"] if any(e.detail for e in self.endpoints) else cols

    def rows(self) -> list[list[str]]:
        cols = self._columns()
        return [[str(getattr(e, c)) for c in cols] for e in self.endpoints]

    def host_lines(self) -> list[str]:
        """The hosts (a lab with ``hosts:``), the VXLAN joining them, why the lab has its MTU
        (for a lab over VXLAN) and the bridge's MTU when it drifted ([] for a one-machine
        lab whose bridge is as wanted)."""
        from hybridnb.core.hostview import bridge_mtu_drift

        lines = [f"host {h.name}{' (primary)' if h.primary else ''}: {h.engines}"
                 + (f", underlay {h.underlay} mtu {h.underlay_mtu}" if h.underlay else "")
                 + f", {h.endpoints} endpoint(s)" for h in self.hosts]
        lines += [self.vxlan] if self.vxlan else []
        lines += [f"mtu: {self.mtu_why}"] if self.vxlan and self.mtu_why else []
        drift = bridge_mtu_drift(self.bridge, self.mtu, self.bridge_mtu)
        return lines + ([f"drift: {drift}"] if drift else [])

    def to_dict(self) -> dict[str, Any]:
        """What ``hybridnb status --json`` prints."""
        return {"lab": self.lab, "backend": self.backend, "up": self.up,
                "pending": self.pending, "mtu": self.mtu, "mtu_reason": self.mtu_reason,
                "mtu_why": self.mtu_why, "bridge_mtu": self.bridge_mtu,
                "hosts": [h.record() for h in self.hosts], "vxlan": self.vxlan or None,
                "endpoints": self.records(), "policy": self.policy or None,
                "links": [{"endpoint": n, "impairments": w, "state": st}
                          for n, w, st in self.links]}

    def to_text(self) -> str:
        from hybridnb.core.tables import text_table

        text = self.headline()
        if self.endpoints:
            text += "\n" + text_table(self._columns(), self.rows())
        return text + "".join(f"\n{line}" for line in self.host_lines() + self.policy_lines())

    def policy_lines(self) -> list[str]:
        """The policy and the impaired links, one line each ([] without them)."""
        lines = [f"policy: {self.policy}"] if self.policy else []
        return lines + [f"link {name}: {what} — {state}" for name, what, state in self.links]

    __repr__ = to_text
    __str__ = to_text

    def records(self) -> list[dict[str, str]]:
        """One dict per endpoint (with ``host`` for a lab with ``hosts:``)."""
        host = ["host"] if self.hosts else []
        return [{"name": e.name, "kind": e.kind, **{k: e.host for k in host},
                 "address": e.address, "fqdn": e.fqdn, "state": e.state, "detail": e.detail}
                for e in self.endpoints]

    def _repr_html_(self) -> str:
        from hybridnb.core.tables import table

        from html import escape

        from hybridnb.core.hostview import HOST_COLUMNS, host_table_rows

        hosts = table(HOST_COLUMNS, host_table_rows(self.hosts), caption="hosts"
                      ) if self.hosts else ""
        extra = [x for x in self.host_lines() if not x.startswith("host ")] + \
            self.policy_lines()
        return table(self._columns(), self.rows(), caption=self.headline(),
                     row_classes=[("up" if e.state == UP else "missing") for e in self.endpoints]
                     ) + hosts + ("<ul>" + "".join(f"<li>{escape(x)}</li>" for x in extra)
                                  + "</ul>" if extra else "")


def _state_of(res: Resource, seen: Observation | None, applied: bool,
              reason: str) -> tuple[str, str]:
    """(state word, detail) of one resource; the same words for every kind and engine."""
    if seen is None:
        return (MISSING if applied else NOT_APPLIED), ""
    if not seen.running:
        return STOPPED, seen.reason
    if seen.fingerprint != res.fingerprint:
        return DIFFERS, reason
    return UP, ""


class Lab:
    """A hybrid lab: one bridge, one subnet, containers, VMs and hosts on it."""

    #: host → :class:`~hybridnb.drivers.runner.Runner` for a lab over several hosts:
    #: that host's share of ``test()``'s matrix runs through it (a host this process cannot
    #: enter); None or a host left out: in this process — but a remote host (``docker:``
    #: URL) left out runs its share in its agent container (see docs/multihost.md)
    probe_runners: Mapping[str, Any] | None = None

    def __init__(self, name: str = "hybrid", *, subnet: str | None = None,
                 bridge: str | None = None, gateway: str | None = None,
                 domain: str | None = None, mtu: int | None = None,
                 backend: str | Backend | None = None,
                 state_dir: str | os.PathLike[str] | None = None,
                 sandbox: str | None = None) -> None:
        network: dict[str, Any] = {}
        for key, value in (("subnet", subnet), ("bridge", bridge), ("gateway", gateway),
                           ("domain", domain), ("mtu", mtu)):
            if value is not None:
                network[key] = value
        self._init({"name": name, "network": network, "endpoints": {}}, backend, state_dir,
                   sandbox, source=None)

    def _init(self, doc: dict[str, Any], backend: str | Backend | None,
              state_dir: str | os.PathLike[str] | None, sandbox: str | None,
              source: str | None) -> None:
        from hybridnb.backends import state_scope

        self._spec = parse_lab(doc, source=source)
        self._doc = doc
        self.source = source
        #: the description names the lab (else the name is its file's stem: Lab.load)
        self.named = True
        self._state_base = Path(state_dir) if state_dir is not None else default_state_dir()
        self._backend_choice = backend
        self._sandbox = sandbox or default_sandbox()
        self._backend: Backend | None = backend if isinstance(backend, Backend) else None
        scope = state_scope(backend)
        self.store = StateStore(self._state_base / scope if scope else self._state_base)
        if not scope:
            self._follow_recorded_target(backend, sandbox)

    def _follow_recorded_target(self, backend: str | Backend | None, sandbox: str | None) -> None:
        """An applied lab is found where its state says it lives, when the caller named no
        sandbox (nor ``$HYBRIDNB_SANDBOX``) and no other backend; a legacy dry-run state in
        the real directory is moved to the dry-run one first."""
        from hybridnb.backends import SCOPES, is_explicit

        try:
            data = self.store.read(self.name)
        except HybridError:
            return                                   # reported when the state is used
        if data.get("backend") == "dry-run":         # written before dry-run had its scope
            legacy = self._state_base / SCOPES["dry-run"] / f"{self.name}.json"
            if not legacy.exists():
                legacy.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.store.path(self.name), legacy)
            return
        where = recorded_target(data)
        if where is None or isinstance(backend, Backend):
            return
        if where.startswith("sandbox:") and backend in (None, "sandbox") \
                and sandbox is None and not os.environ.get("HYBRIDNB_SANDBOX"):
            if backend == "sandbox" or not is_explicit(backend):
                self._sandbox = where.partition(":")[2]
        elif where == "host" and not is_explicit(backend):
            self._backend_choice = "host"

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, backend: str | Backend | None = None,
                  state_dir: str | os.PathLike[str] | None = None, sandbox: str | None = None,
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
    def load(cls, path_or_name: str | os.PathLike[str], **kw: Any) -> Lab:
        """Open a lab: from a YAML lab file (a file without ``name:`` is the lab named after
        the file), or — given a name that is no file — from the description saved in the
        state of the applied lab of that name.  Keywords as for ``Lab()`` (``backend``,
        ``state_dir``, ``sandbox``)."""
        from hybridnb.core.kinds import anchor_paths
        from hybridnb.labfile import load_lab_document

        from hybridnb.backends import state_scope

        text = str(path_or_name)
        if Path(path_or_name).exists() or text.endswith((".yaml", ".yml")):
            data, source, default_name = load_lab_document(path_or_name)
            data = anchor_paths(data, os.path.dirname(os.path.abspath(path_or_name)))
            if default_name is not None:
                data = {"name": default_name, **data}
            lab = cls.from_dict(data, source=source, **kw)
            lab.named = default_name is None
            return lab
        base = Path(kw["state_dir"]) if kw.get("state_dir") else default_state_dir()
        scope = state_scope(kw.get("backend"))
        state = StateStore(base / scope if scope else base).read(text)
        if not state.get("spec"):
            raise NotFoundError(f"no lab file and no applied lab named {text!r}",
                                hint="pass the path of a lab YAML file")
        lab = cls.from_dict(state["spec"], **kw)
        lab.source, lab.named = state.get("source"), bool(state.get("named", True))
        return lab

    # --------------------------------------------------------------------- properties

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def spec(self) -> LabSpec:
        return self._spec

    @property
    def sandbox(self) -> str:
        return self._sandbox

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            from hybridnb.backends import resolve_backend

            self._backend = resolve_backend(self._backend_choice, state_dir=self._state_base,
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

    def add(self, kind: str, name: str, *, replace: bool = False, **fields: Any) -> Lab:
        """Add an endpoint of ``kind`` with any of its fields (``hybridnb kinds`` lists
        them); ``None`` means the default.  ``replace=True`` redefines it if it exists (a
        cell run twice)."""
        entry = {"kind": kind, **{k: plain(v) for k, v in fields.items() if v is not None}}

        def mutate(doc: dict[str, Any]) -> None:
            eps = doc.setdefault("endpoints", {}) or {}
            doc["endpoints"] = eps
            if name in eps and not replace:
                raise ValidationError([Problem(f"endpoints.{name}",
                                               f"an endpoint named {name!r} already exists",
                                               "pick another name, remove() it first, or "
                                               "pass replace=True")])
            eps[name] = entry
        return self._edit(mutate)

    def add_container(self, name: str, image: str | None = None, **fields: Any) -> Lab:
        """Add a Docker container (fields: ``hybridnb kinds container``)."""
        return self.add("container", name, image=image, **fields)

    def add_vm(self, name: str, template: str | None = None, **fields: Any) -> Lab:
        """Add a libvirt VM (fields: ``hybridnb kinds vm``)."""
        return self.add("vm", name, template=template, **fields)

    def add_host(self, name: str, **fields: Any) -> Lab:
        """Add a network-namespace host (fields: ``hybridnb kinds host``)."""
        return self.add("host", name, **fields)

    def forget_host(self, host: str) -> list[str]:
        """Drop the record of ``host``'s share of this spread lab without touching it: for
        a host removed from ``hosts:`` that will never answer again (apply keeps naming it
        until then).  Returns what its record listed (``kind/name``), no longer hybridnb's
        to remove (:func:`hybridnb.multihost_apply.forget_host`)."""
        from hybridnb import multihost_apply

        return multihost_apply.forget_host(self, host)

    def remove(self, name: str) -> "Lab":
        if name not in {e.name for e in self._spec.endpoints}:
            raise NotFoundError(f"lab {self.name} has no endpoint {name!r}",
                                hint="see status() for the endpoints")

        def mutate(doc: dict[str, Any]) -> None:
            del doc["endpoints"][name]
        return self._edit(mutate)

    # ----------------------------------------------------------------------- planning

    @property
    def target(self) -> str:
        """Where the lab lives: ``sandbox:NAME``, ``host`` or ``dry-run``."""
        from hybridnb.backends import target_name

        return target_name(self._backend_choice, self._sandbox)

    @property
    def _source_key(self) -> str | None:
        """The lab file, as the state records it (an absolute path)."""
        return str(Path(self.source).resolve()) if self.source else None

    def _check_owner(self, data: Mapping[str, Any]) -> None:
        """Refuse state that belongs to another target or another unnamed lab file."""
        conflict = owner_conflict(data, self.name, target=self.target, source=self._source_key,
                                  named=self.named)
        if conflict is not None:
            raise conflict

    def _read_state(self) -> dict[str, Any]:
        """The lab's state, checked to be this lab's (:meth:`_check_owner`)."""
        data = self.store.read(self.name)
        self._check_owner(data)
        return data

    def _settle_if_idle(self) -> None:
        """Finish the records of calls a dead or interrupted run left in flight — when no
        other process holds the lab's lock (a run in progress keeps its intents)."""
        data = self.store.read(self.name)
        if not any(isinstance(r, Mapping) and r.get("status") in IN_FLIGHT_STATUSES
                   for r in (data.get("resources") or {}).values()):
            return
        with self.store.try_lock(self.name) as mine:
            if not mine:
                return
            st = LabState(self.name, self.store.read(self.name), self.store)
            self._check_owner(st.data)
            settle_journal(st, self._settled(st))

    def addresses(self) -> dict[str, ipaddress.IPv4Address]:
        """Every endpoint's address: explicit, else as allocated before, else newly chosen."""
        return self._assign(self._read_state().get("addresses", {}))

    def _assign(self, previous: Mapping[str, str]) -> dict[str, ipaddress.IPv4Address]:
        try:
            return assign_addresses(self._spec, previous)
        except ValidationError as exc:
            raise ValidationError(exc.problems, source=self.source) from None

    def resources(self) -> list[Resource]:
        return self._bind(compile_lab(self._spec, self.addresses())).resources

    @staticmethod
    def _runs_recipes(resources: list[Resource]) -> bool:
        return any(isinstance(r.spec.get("recipe"), Mapping) for r in resources)

    def _bind(self, resources: list[Resource], mode: str = "resolve",
              progress: Progress | None = None) -> Any:
        """The compiled ``resources`` with the images of the lab's recipes bound in
        (:mod:`hybridnb.images.binding`; ``mode``: resolve, plan, or build what is missing)."""
        if not self._runs_recipes(resources):
            return _Unbound(resources)
        from hybridnb.core.sections.images import lab_images
        from hybridnb.images.binding import bind_images

        try:
            target = self.backend.target
        except HybridError:
            if mode == "build":
                raise
            target = None                           # no engine to run them: nothing to bind
        return bind_images(resources, lab_images(self._spec.sections), target, mode=mode,
                           progress=progress)

    def _observe(self) -> Observed:
        if self._spread():                 # every host's share, seen as one lab
            from hybridnb import multihost_apply

            return multihost_apply.observe_as_one(self)
        return observe_all(self.name, self.backend)

    def _settled(self, st: Any) -> Observed:
        """:meth:`_observe`, after what a killed apply left in flight had time to land."""
        return observe_settled(self.name, self.backend, st.resources)

    @engine_call
    def plan(self) -> Plan:
        """What ``apply()`` would do now (nothing is changed but the record of an interrupted
        run, which is finished first; the notes say which images apply will make first)."""
        from hybridnb import multihost_apply

        multihost_apply.check_transition(self)     # a change of hosts: that cannot converge
        if self._spread():
            return multihost_apply.plan(self)
        self._settle_if_idle()
        recorded = recorded_specs(self._read_state())
        bound = self._bind(compile_lab(self._spec, self.addresses()), "plan")
        plan = diff(self.name, bound.resources, self._observe(), recorded,
                    updatable=self.backend.updatable())
        return dataclasses.replace(plan, warnings=tuple(self.warnings()),
                                   notes=tuple(bound.notes))

    def _on_wait(self, progress: Progress | None) -> Any:
        if progress is None:
            return None
        return lambda text: progress(ProgressEvent.note(text))

    @engine_call
    def apply(self, progress: Progress | None = None, *, workers: int = 8) -> ApplyResult:
        """Make the engines match the lab; re-applying an unchanged lab does nothing.

        Everything knowable is checked before anything is deleted (validation, the drivers'
        preflight checks); a run that fails after changing existing resources puts them back
        and raises the error (``error.result`` has both runs).  ``workers`` bounds how many
        actions of one stage run at once (1: one at a time)."""
        from hybridnb import multihost_apply

        multihost_apply.check_transition(self)     # a change of hosts: that cannot converge
        if self._spread():                 # one lab over several hosts: per host, in parallel
            return multihost_apply.apply(self, progress, workers=workers)
        with self.store.transaction(self.name, on_wait=self._on_wait(progress)) as st:
            self._check_owner(st.data)
            addresses = self._assign(st.addresses)
            # images first: what the endpoints run is made before anything of the lab changes
            resources = self._bind(compile_lab(self._spec, addresses), "build",
                                   progress).resources
            observed = self._settled(st)
            settle_journal(st, observed)
            recorded = st.recorded()
            plan = diff(self.name, resources, observed, recorded,
                        updatable=self.backend.updatable())
            if plan.empty:
                return ApplyResult(plan)
            preflight(plan, self.backend)
            # intent first: the addresses and the description are persisted before acting
            previous = {k: copy.deepcopy(st.data.get(k)) for k in ("addresses", "kinds", "spec")}
            st.data["addresses"] = {n: str(a) for n, a in addresses.items()}
            st.data["kinds"] = {e.name: e.kind for e in self._spec.endpoints}
            st.data["spec"] = lab_to_dict(self._spec)
            st.data["backend"] = self.backend.name
            st.data["target"] = self.backend.target.to_dict()
            st.data["source"], st.data["named"] = self._source_key, self.named
            st.save()

            def restore() -> None:              # the lab was put back: so is its record
                st.data.update({k: v for k, v in previous.items() if v is not None})
                st.save()
            return converge(plan, self.backend, st, before=observed, recorded_before=recorded,
                            progress=progress, workers=workers, restore=restore)

    @engine_call
    def destroy(self, progress: Progress | None = None) -> ApplyResult:
        """Remove everything this lab owns; its addresses are released, and its state and
        lock files removed."""
        from hybridnb import multihost_apply

        if self._spread() or multihost_apply.recorded_hosts(self):  # every recorded host too
            return multihost_apply.destroy(self, progress)
        with self.store.transaction(self.name, on_wait=self._on_wait(progress)) as st:
            self._check_owner(st.data)
            observed = self._settled(st)
            settle_journal(st, observed)
            plan = destroy_plan(self.name, observed, st.recorded())
            result = execute(plan, self.backend, st, progress=progress) if not plan.empty \
                else ApplyResult(plan)
            st.data["addresses"] = {}
            st.data["kinds"] = {}
            st.data["resources"] = {}
            st.save()
            self.store.forget(self.name)
            return result

    # -------------------------------------------------------------------------- tests

    def _ways_in(self, kinds: set[str]) -> dict[str, Any]:
        """Per endpoint kind: ``{endpoint: netns path}`` from a driver with the
        NamespaceSource capability, or the driver itself when it has GuestExec."""
        backend = self.backend
        ways: dict[str, Any] = {}
        for kind in sorted(kinds):
            if not backend.supports(kind):
                ways[kind] = {}                   # no engine for them here: they are down
                continue
            drv = backend.driver(kind)
            if isinstance(drv, NamespaceSource):
                ways[kind] = drv.netns_paths(self.name)
            elif isinstance(drv, GuestExec):
                ways[kind] = drv
            else:
                raise Unsupported(f"the {backend.name} backend cannot probe from {kind} "
                                  "endpoints: its driver neither opens their network "
                                  "namespaces nor runs commands inside them", hint=backend.hint,
                                  capability="NamespaceSource", kind=kind)
        return ways

    def probe_endpoints(self) -> tuple[list[ProbeEndpoint], ProbeEndpoint]:
        """(endpoints, gateway) as the probe engine sees them: each with the network namespace
        its sockets open in (a driver with NamespaceSource: hosts, containers) or a command
        executor inside it (a driver with GuestExec: VMs).  An endpoint that does not run has
        neither: probes from it fail as "not running"."""
        from hybridnb.drivers.links import observe_pass

        with observe_pass():           # one link dump of the lab host for bridge and hosts
            return self._probe_endpoints()

    def _probe_endpoints(self) -> tuple[list[ProbeEndpoint], ProbeEndpoint]:
        from hybridnb.services.probe import lab_probe_endpoints, service_checks

        if self._spread():
            from hybridnb import multihost_apply

            bridges = multihost_apply.primary_bridges(self)
            if self._spec.network.bridge not in bridges:
                raise LabNotUp(f"lab {self.name} has no bridge {self._spec.network.bridge} on "
                               "its primary host", hint="apply it first")
            return multihost_apply.probe_endpoints(self, bridges)
        backend = self.backend
        net = self._spec.network
        lab_host = backend.require("bridge", NamespaceSource, doing="probe the lab")
        bridges = lab_host.netns_paths(self.name)
        if net.bridge not in bridges:
            raise LabNotUp(f"lab {self.name} has no bridge {net.bridge} on the {backend.name} "
                           "backend", hint="apply it first")
        resources = [r for r in self.resources() if is_endpoint_kind(r.kind)]
        ways = {kind: (way if not isinstance(way, GuestExec) else
                       (lambda name, drv=way: _GuestExec(drv, self.name, name)))
                for kind, way in self._ways_in({r.kind for r in resources}).items()}
        # declared services are probed for real (no responder is opened on their ports), and
        # so is what a kind runs without declaring it (the test VM's httpd)
        services = {r.name: service_checks(self._spec.endpoint(r.name).services)
                    + get_kind(r.kind).probe_services(r) for r in resources}
        return lab_probe_endpoints(resources, services, ways, gateway=str(net.gateway),
                                   gateway_netns=bridges[net.bridge])

    @engine_call
    def test(self, checks: tuple[str, ...] | None = None, *, timeout: float = 1.0,
             count: int = 3, pin_neighbours: bool | None = None,
             responders: bool = True) -> ConnectivityMatrix:
        """Probe every endpoint against every other (and the gateway) with ``checks``
        (``icmp``, ``tcp``, ``udp``, ``http``, ``dns``, ``tcp/PORT``…; default: all the lab
        supports); returns a :class:`~hybridnb.services.probe.ConnectivityMatrix`.
        ``pin_neighbours``: see :func:`~hybridnb.services.probe.probe_matrix` (default: when
        the lab is too big for the kernel's neighbour table).  ``responders=False``: no
        stand-in listeners, even for the built-in checks (only what really listens
        answers)."""
        from hybridnb.services.probe import probe_matrix

        _check_probe_options(checks, timeout, count)
        if checks is None:
            checks = ("icmp", "tcp", "udp", "http") + (
                ("dns",) if self._spec.network.dns and self._serves_dns() else ())
        eps, gateway = self.probe_endpoints()
        net = self._spec.network
        if self._spread():                  # one matrix, each host's share where it runs
            from hybridnb import multihost_apply

            probe_matrix = multihost_apply.prober(self, self.probe_runners)
        matrix = probe_matrix(eps + [gateway], checks, domain=net.domain,
                              dns_server=str(net.gateway) if net.dns else None,
                              timeout=timeout, count=count, pin_neighbours=pin_neighbours,
                              responders=responders)
        policy = self._policy()
        if policy is not None:              # denied probes that failed are "blocked"
            from hybridnb.services.policyview import judge_matrix

            judge_matrix(matrix, policy)
        from hybridnb.core.hostview import host_of

        matrix.hosts = host_of(self._spec)           # which host each end lives on
        return matrix

    @engine_call
    def validate(self, *, timeout: float = 1.0, count: int = 2) -> ExpectationReport:
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
        return evaluate(expectations, matrix, policy=self._policy())

    # ---------------------------------------------------------------------------- dns

    def _dns_resource(self) -> Resource:
        for res in self.resources():
            if res.kind == "dns":
                return res
        raise HybridError(f"lab {self.name} has no DNS service",
                          hint="set network.dns: true (the default)")

    def dns(self) -> DnsRecords:
        """The records the lab's DNS serves (computed from the lab; the server serves the
        same zone)."""
        from hybridnb.core.dnszone import zone_from_spec
        from hybridnb.services.dns.results import DnsRecords

        res = self._dns_resource()
        zone = zone_from_spec(res.spec)
        return DnsRecords(self.name, zone.domain, str(res.spec["listen"]), zone.all_records)

    @engine_call
    def dns_query_log(self, limit: int = 50) -> QueryLogView:
        """The last ``limit`` queries the lab's DNS server answered."""
        from hybridnb.services.dns.results import QueryLogView

        self._dns_resource()
        driver = self._dns_backend().require("dns", QueryLog)
        return QueryLogView(self.name, tuple(driver.query_log(self.name, limit)))

    # --------------------------------------------------------------------------- exec

    @engine_call
    def exec(self, endpoint: str, command: str | Iterable[str], *,
             timeout: float = 30.0) -> ExecOutput:
        """Run ``command`` inside ``endpoint`` — ``docker exec`` in a container, the guest
        agent in a VM — and return its exit code and output (a string runs through
        ``/bin/sh -c``).  ``Unsupported`` on a backend whose driver for that kind cannot run
        commands (dry-run); ``check()`` on the result raises when the command failed."""
        try:
            kind = self._spec.endpoint(endpoint).kind
        except KeyError:
            raise NotFoundError(f"lab {self.name} has no endpoint {endpoint!r}") from None
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        drv = self._backend_of(endpoint).require(kind, GuestExec,
                                                  doing=f"run a command in {endpoint}")
        code, out, err = drv.guest_exec(self.name, endpoint, argv, timeout=timeout)
        return ExecOutput(endpoint, tuple(argv), int(code), str(out), str(err))

    # ---------------------------------------------------------------- policies and links

    def warnings(self) -> list[Problem]:
        """What the lab file may not mean, though nothing is wrong enough to refuse it: policy
        rules that can never match (earlier rules decide all their flows), with the rule
        numbers; for a lab spread over hosts, the MTU VXLAN leaves it and why.  ``plan()``
        shows them too."""
        from hybridnb.core.multihost import fabric_notes

        value = self._spec.sections.get("policies")
        return (list(value.warnings) if value is not None else []) + fabric_notes(self._spec)

    def _backend_of(self, endpoint: str) -> Backend:
        """The backend of the host ``endpoint`` runs on (the lab's own for a one-host lab)."""
        if self._spread():
            from hybridnb import multihost_apply
            from hybridnb.core.multihost import placement

            return multihost_apply.host_backend(self, placement(self._spec)[endpoint])
        return self.backend

    def _dns_backend(self) -> Backend:
        """The backend of the host running the lab's DNS server (the primary's)."""
        if self._spread():
            from hybridnb import multihost_apply

            return multihost_apply.host_backend(self, self._spec.sections["hosts"].primary.name)
        return self.backend

    def _serves_dns(self) -> bool:
        """Whether the backend (the primary host's, for a lab over several hosts) runs the
        lab's DNS server."""
        return self._dns_backend().supports("dns")

    def _spread(self) -> bool:
        """Whether the lab names two hosts or more (or one, with shares of it recorded per
        host): it is then planned, applied, destroyed and probed host by host
        (:mod:`hybridnb.multihost_apply`)."""
        hosts = self._spec.sections.get("hosts")
        if hosts is None or not hosts.hosts:
            return False
        from hybridnb import multihost_apply

        return hosts.multi or bool(multihost_apply.recorded_hosts(self))

    def _policy(self) -> Policy | None:
        """The lab's policy over its endpoints' addresses (None without ``policies:``)."""
        from hybridnb.core.sections.policies import policy_of

        if self._spec.sections.get("policies") is None:
            return None
        return policy_of(self._spec, self.addresses())

    def _require_policy(self) -> Policy:
        policy = self._policy()
        if policy is None:
            raise NotFoundError(f"lab {self.name} has no policies",
                                hint="add a policies: section (default: and rules:) to the lab "
                                     "file")
        return policy

    def explain(self, source: str, target: str, check: str = "icmp") -> Decision:
        """Would ``source`` reach ``target`` with ``check`` (``tcp/5432``, ``http``,
        ``icmp``, ``dns``)?  The policy's decision and the rule that makes it (computed from
        the lab file: nothing is sent)."""
        try:
            return self._require_policy().explain(source, target, check)
        except ValidationError as exc:
            raise ValidationError(exc.problems, source=self.source) from None

    @engine_call
    def policy(self) -> PolicyTable:
        """The lab's policy: its rules, the built-ins and the default as a table, with how
        many packets each decided since the last change (when the backend counts them)."""
        from hybridnb.drivers.base import RuleCounters
        from hybridnb.services.policyview import PolicyTable

        policy = self._require_policy()
        res = next(r for r in self.resources() if r.kind == "policy")
        seen = self._observe().get("policy", {}).get(res.name)
        applied = bool(self.store.read(self.name).get("resources"))
        state, _ = _state_of(res, seen, applied, "")
        counters, note = None, ""
        if not self.backend.capable("policy", RuleCounters):
            note = f"the {self.backend.name} backend counts no packets"
        elif seen is not None:
            counters = self.backend.require("policy", RuleCounters).counters(self.name)
        return PolicyTable(self.name, policy, counters, state, str(res.spec["table"]), note)

    @engine_call
    def links(self) -> LinksView:
        """The lab's link impairments: per endpoint what its link should do, whether that is
        applied, where (its bridge port, inside a VM guest) and what loss dropped."""
        from hybridnb.core.sections.links import impairments_of
        from hybridnb.drivers.base import LinkReport
        from hybridnb.services.policyview import LinkRow, LinksView, where_applied

        wanted = {r.name: r for r in self.resources() if r.kind == "link"}
        seen = self._observe().get("link", {})
        report: dict[str, Any] = {}
        # each endpoint's impairments are recorded on its own host (over several hosts)
        backends = {id(b): b for b in (self._backend_of(name) for name in sorted(wanted))}
        for backend in backends.values():
            if backend.capable("link", LinkReport):
                report.update(backend.require("link", LinkReport).link_report(self.name))
        applied = bool(self.store.read(self.name).get("resources"))
        rows = []
        for name, imp in sorted(impairments_of(self._spec).items()):
            state, _ = _state_of(wanted[name], seen.get(name), applied, "")
            got = report.get(name)
            rows.append(LinkRow(name, self._spec.endpoint(name).kind, imp.describe(), state,
                                where_applied(got), None if got is None else got["dropped"]))
        return LinksView(self.name, tuple(rows))

    # ------------------------------------------------------------------------- status

    @engine_call
    def status(self) -> LabStatus:
        net = self._spec.network
        self._settle_if_idle()
        resources = self.resources()
        observed = self._observe()
        recorded = recorded_specs(self._read_state())
        plan = diff(self.name, resources, observed, recorded, updatable=self.backend.updatable())
        reasons = {a.key: a.reason for a in plan.actions}
        applied = bool(recorded) or any(observed.values())
        rows, infra, links = [], [], []
        policy = ""
        where, spread = self._status_hosts(observed)
        for res in sorted(resources, key=lambda r: r.name):
            state, detail = _state_of(res, observed.get(res.kind, {}).get(res.name), applied,
                                      reasons.get(res.key, ""))
            if is_endpoint_kind(res.kind):
                rows.append(EndpointStatus(res.name, res.kind, str(res.spec["address"]),
                                           f"{res.name}.{net.domain}", state, detail,
                                           where.get(res.name, "")))
        for res in resources:
            if not is_endpoint_kind(res.kind):
                state, _ = _state_of(res, observed.get(res.kind, {}).get(res.name), True, "")
                infra.append((res.kind, res.name, state))
                if res.kind == "policy":
                    policy = f"{res.summary} — {state}"
                elif res.kind == "link":
                    links.append((res.name, res.summary, state))
        return LabStatus(self.name, self.backend.name, net.bridge, str(net.subnet),
                         str(net.gateway), tuple(rows), tuple(infra), len(plan.actions),
                         policy=policy, links=tuple(links), enforced=self._policy(), **spread)

    def _status_hosts(self, observed: Observed) -> tuple[dict[str, str], dict[str, Any]]:
        """(endpoint → host, the hosts/MTU fields of :class:`LabStatus`), from the lab file
        (:mod:`hybridnb.core.hostview`: the same before and after apply) and the bridge's
        observed MTU (a driver that reports it: ``Observation.mtu``)."""
        from hybridnb.core.hostview import host_of, host_rows, mtu_reason, mtu_why, vxlan_line

        spec = self._spec
        seen = observed.get("bridge", {}).get(spec.network.bridge)
        return host_of(spec), {
            "mtu": spec.network.mtu, "mtu_reason": mtu_reason(spec), "mtu_why": mtu_why(spec),
            "bridge_mtu": getattr(seen, "mtu", None), "hosts": host_rows(spec),
            "vxlan": vxlan_line(spec)}

    # ------------------------------------------------------------------------- report

    @engine_call
    def report(self, *, probe: bool = True, matrix: ConnectivityMatrix | None = None,
               validation: ExpectationReport | None = None,
               apply_result: ApplyResult | None = None, doctor: Any = None,
               traffic: Any = None, monitor: float = 0.0,
               sections: list[str] | None = None) -> LabReport:
        """One self-contained document of the lab as it is now: it renders inline in Jupyter
        and ``.save("lab.html"|"lab.md"|"lab.json")`` writes it.

        The report asks this lab for its results — status, plan, a probe run, the
        ``expect:`` lines, DNS, the doctor, the last apply's timeline — once each; a result
        at hand (``matrix``, ``validation``, ``apply_result``, ``doctor``, ``traffic``) is used
        instead.  ``probe=False`` sends nothing into the lab (no probe run, no doctor);
        ``monitor``: seconds of traffic to record; ``sections``: only these (see
        :mod:`hybridnb.render.report.sections`)."""
        from hybridnb.render.report import report_of

        return report_of(self, probe=probe, matrix=matrix, validation=validation,
                         apply_result=apply_result, doctor=doctor, traffic=traffic,
                         monitor=monitor, sections=sections)
    # ----------------------------------------------------- watching (monitor, capture, ...)

    def view(self) -> LabView:
        """The lab as the watching services see it (:class:`~hybridnb.services.labview.
        LabView`: name, compiled resources, backend, state, state directory)."""
        from hybridnb.services.labview import LabView

        view = LabView.of(self)
        if self._spread():                 # one share per host, each through its own backend
            import dataclasses

            from hybridnb.multihost_apply import host_views

            view = dataclasses.replace(view, parts=host_views(self))
        return view

    def _watched(self, doing: str) -> LabView:
        """:meth:`view`, refused (``Unsupported``) on a backend without lab hosts (dry-run):
        its target's namespace is no namespace, and looking there would mean looking at
        this machine's own network."""
        view = self.view()
        view.lab_host(doing)
        return view

    @engine_call
    def monitor(self, interval: float = 1.0, duration: float | None = 10.0, *,
                stop: threading.Event | None = None,
                on_sample: Callable[[TrafficSample], None] | None = None) -> TrafficReport:
        """Watch the traffic of every endpoint (its bridge port, both ways) and of the gateway,
        one netlink dump per ``interval``, for ``duration`` seconds (None: until ``stop`` is
        set); ``on_sample`` gets each :class:`~hybridnb.services.monitor.TrafficSample` as it
        comes.  Returns the :class:`~hybridnb.services.monitor.TrafficReport` (top talkers,
        mean and peak rates, a plot)."""
        from hybridnb.services.monitor import monitor

        return monitor(self._watched("monitor the lab"), interval=interval,
                       duration=duration, stop=stop, on_sample=on_sample)  # type: ignore[arg-type]

    def capturing(self, endpoint: str = "bridge", *, bpf: str = "", count: int | None = None,
                  duration: float | None = None,
                  path: str | os.PathLike[str] | None = None) -> Capture:
        """A packet capture (tcpdump in the lab host) on ``endpoint``'s bridge port — or the
        whole bridge (of every host of a lab over several hosts, merged) — not yet started:
        use it as a context manager around what makes the traffic (``with
        lab.capturing("web") as cap: lab.test()``; then ``cap.result``), or
        ``start()``/``stop()`` it.  The pcap goes to ``path``, by default beside the lab
        state (``captures/<lab>/<endpoint>-<time>.pcap``)."""
        from hybridnb.services.capture import capturing

        # a spread lab: in the lab host of endpoint's host; the whole bridge on every host
        return capturing(self._watched("capture packets"), endpoint, bpf=bpf, count=count,
                         duration=duration, path=path)

    @engine_call
    def capture(self, endpoint: str = "bridge", *, bpf: str = "", count: int | None = None,
                duration: float | None = 10.0, path: str | os.PathLike[str] | None = None,
                stop: threading.Event | None = None) -> CaptureResult:
        """Capture on ``endpoint`` (or ``"bridge"``) until ``count`` packets, ``duration``
        seconds or ``stop`` is set, whichever comes first; ``bpf`` filters (tcpdump syntax).
        Returns the :class:`~hybridnb.services.capture.CaptureResult` (the pcap's path and
        its decoded summary)."""
        from hybridnb.errors import HybridError as _Error

        if not count and not duration and stop is None:
            raise _Error("a capture needs a packet count, a duration or a stop event",
                         hint="pass count=, duration= or stop=")
        cap = self.capturing(endpoint, bpf=bpf, count=count, duration=duration, path=path)
        cap.start()
        try:
            return cap.wait(None if not duration else duration + 10.0, stop=stop)
        finally:
            if cap.result is None:                 # interrupted: tcpdump never outlives us
                cap.stop()

    @engine_call
    def doctor(self, fix: bool = False, *, checks: Iterable[str] | None = None,
               skip: Iterable[str] = ()) -> DoctorReport:
        """Diagnose the lab on its host: each check ``ok``/``warn``/``fail`` with what it
        found, why it matters and the command that fixes it; the report's ``exit_code`` is
        0 all ok, 1 warnings, 2 failures.  Read-only unless ``fix``: then the targeted fixes
        it printed (and only those) are applied, under the lab's lock, recorded in its
        journal, and everything is checked again.  ``checks``/``skip``: check ids or groups
        (e.g. ``skip=["leftovers"]``).  Leftovers are objects with hybridnb's marks that no
        lab of this state directory owns — a lab applied with another state directory is
        one of them."""
        from hybridnb.services.doctor import DoctorContext, diagnose, select_checks

        chosen = select_checks(checks, skip)
        view = self._watched("diagnose the lab")
        if view.parts:                     # one lab over several hosts: each host's share
            return self._doctor_hosts(view, chosen, fix)
        if not fix:
            return diagnose(DoctorContext.of(view, self._owned()), chosen)
        with self.store.transaction(self.name) as st:
            report = diagnose(DoctorContext.of(view, self._owned()), chosen, fix=True)
            if report.fixes and st.data.get("resources"):
                st.journal({"at": o.at, "seconds": o.seconds, "op": "doctor --fix",
                            "kind": "", "name": o.check, "ok": o.ok,
                            "error": None if o.ok else o.message} for o in report.fixes)
                st.save()
            return report

    def _doctor_hosts(self, view: LabView, chosen: Any, fix: bool) -> DoctorReport:
        from hybridnb.multihost_apply import doctor

        if fix:
            raise Unsupported(f"lab {self.name} spans hosts "
                              f"{', '.join(str(p.host) for p in view.parts)}: doctor --fix is "
                              "not done per host yet (each fix would need that host's lock "
                              "and journal)", hint="run the doctor without --fix and re-apply",
                              capability="hosts")
        return doctor(self, view, chosen)

    def _owned(self) -> dict[str, Mapping[str, Any]]:
        return _owned_labs(self.store, self.backend.target)

    @engine_call
    def logs(self, *endpoints: str, since: float | str | None = None,
             limit: int | None = None, kinds: Iterable[str] | None = None) -> LogView:
        """One time-ordered log of the lab: hybridnb's action journal, the DNS query log,
        each container's output and each VM's console, every line tagged by its source —
        for some ``endpoints`` only if named.  ``since``: seconds since the epoch, or
        ``"5m"``, ``"2h"``, an ISO time; ``limit`` keeps the newest lines; ``kinds``: some of
        ``hybridnb``, ``dns``, ``container``, ``vm``.  A source the backend cannot read (the
        dry-run backend has only the journal) is left out."""
        from hybridnb.services.logs import collect_logs

        return collect_logs(self.view(), endpoints or None, since=_since(since), limit=limit,
                            kinds=kinds)

    def follow_logs(self, *endpoints: str, since: float | str | None = None,
                    poll: float = 0.5, stop: threading.Event | None = None
                    ) -> Iterator[LogLine]:
        """:meth:`logs` as a generator: the lines since ``since``, then each new one as it
        appears (checked every ``poll`` seconds) until ``stop`` is set."""
        from hybridnb.services.logs import follow_logs

        return follow_logs(self.view(), endpoints or None, since=_since(since), poll=poll,
                           stop=stop)


def _owned_labs(store: StateStore, target: Any) -> dict[str, Mapping[str, Any]]:
    """Every lab of a state directory that may own objects on ``target``, by name (what
    leftovers are compared with): :func:`hybridnb.state.owners`."""
    from hybridnb.state import owners

    return owners(store, target.to_dict())


def _since(value: float | str | None) -> float | None:
    if value is None or isinstance(value, (int, float)):
        return value
    from hybridnb.services.logs import parse_since

    return parse_since(value)


def host_doctor(backend: str | Backend | None = None, *, fix: bool = False,
                state_dir: str | os.PathLike[str] | None = None, sandbox: str | None = None,
                checks: Iterable[str] | None = None, skip: Iterable[str] = ()
                ) -> DoctorReport:
    """``doctor`` without a lab: the checks that look at the target itself — the engines and
    their versions, KVM or TCG, and leftovers (objects with hybridnb's marks that no lab of
    this state directory owns); ``fix`` removes those leftovers."""
    from hybridnb.backends import resolve_backend
    from hybridnb.services.doctor import DoctorContext, diagnose, select_checks

    store = StateStore(state_dir)
    chosen = select_checks(checks, skip)
    real = backend if isinstance(backend, Backend) else resolve_backend(
        backend, state_dir=store.dir, sandbox=sandbox or default_sandbox())
    ctx = DoctorContext.of_backend(real, {}, store.dir)            # refused on dry-run
    ctx.owned = _owned_labs(store, real.target)
    return off_loop(lambda: diagnose(ctx, chosen, fix=fix))



GATEWAY = "gateway"


@dataclass
class _Unbound:
    """The resources of a lab that runs no image recipe (nothing to bind)."""

    resources: list[Resource]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExecOutput:
    """What a command run by :meth:`Lab.exec` inside an endpoint returned."""

    endpoint: str
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def check(self) -> "ExecOutput":
        """This result, or :class:`~hybridnb.errors.EngineError` with the command's output
        when it exited non-zero."""
        if not self.ok:
            from hybridnb.errors import EngineError

            tail = (self.stderr or self.stdout).strip()[-2000:]
            raise EngineError(f"{self.command} in {self.endpoint} exited {self.exit_code}: "
                              f"{tail}")
        return self

    @property
    def command(self) -> str:
        return self.argv[-1] if self.argv[:2] == ("/bin/sh", "-c") else " ".join(self.argv)

    def __repr__(self) -> str:
        head = f"{self.endpoint}$ {self.command}  (exit {self.exit_code})"
        return "\n".join(x for x in (head, self.stdout.rstrip(), self.stderr.rstrip()) if x)

    def _repr_html_(self) -> str:
        from html import escape

        style = "color:#b00" if not self.ok else "color:#070"
        body = escape(self.stdout.rstrip()) + (
            f"<span style='color:#b00'>{escape(self.stderr.rstrip())}</span>"
            if self.stderr.strip() else "")
        return (f"<div><code>{escape(self.endpoint)}$ {escape(self.command)}</code> "
                f"<span style='{style}'>exit {self.exit_code}</span><pre>{body}</pre></div>")

def _check_probe_options(checks: tuple[str, ...] | None, timeout: float, count: int) -> None:
    """Refuse bad probe options (usage errors, exit code 2) before the lab is looked at."""
    from hybridnb.services.probe.plan import parse_checks

    problems: list[Problem] = []
    if checks is not None:
        try:
            parse_checks(checks)
        except ValidationError as exc:
            problems += exc.problems
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        problems.append(Problem("count", f"count must be a whole number of at least 1, not "
                                f"{count!r}", "give the number of attempts per pair, e.g. 3"))
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0 \
            or timeout == float("inf"):
        problems.append(Problem("timeout", f"timeout must be a positive number of seconds, "
                                f"not {timeout!r}", "e.g. 1"))
    if problems:
        raise ValidationError(problems)


class LabNotUp(HybridError):
    """An operation needs the lab applied and healthy."""

    exit_code = 2


class _GuestExec:
    """Probe executor running commands inside an endpoint through its driver's
    :class:`~hybridnb.drivers.base.GuestExec` capability (qemu-guest-agent for VMs)."""

    def __init__(self, driver: GuestExec, lab: str, endpoint: str) -> None:
        self.driver, self.lab, self.endpoint = driver, lab, endpoint

    def __call__(self, argv: Any, timeout: float) -> tuple[int, str, str]:
        result = self.driver.guest_exec(self.lab, self.endpoint, list(argv), timeout=timeout)
        return (int(result[0]), str(result[1]), str(result[2]))

    def probe_channel(self) -> str | None:
        """The socket of the endpoint's resident probe helper, if its driver has one
        (:mod:`hybridnb.services.probe.vmhelper`)."""
        from hybridnb.drivers.base import ProbeChannel

        if isinstance(self.driver, ProbeChannel):
            return self.driver.probe_channel(self.lab, self.endpoint)
        return None


__all__ = ["Lab", "LabStatus", "EndpointStatus", "ExecOutput", "LabNotUp", "HybridError", "endpoint_to_dict",
           "host_doctor", "load_yaml"]
