"""Plan, apply, destroy and probe one lab spread over several hosts (``hosts:``, issue 17).

A lab whose ``hosts:`` section names two machines or more is made host by host, each through
its own backend, from one description:

* **One IPAM, one zone.**  Addresses are assigned once over the whole spec and kept in the
  lab's own state (as for a one-host lab); the lab compiles once
  (:func:`~hybridnb.core.compile.compile_lab`), and each host makes its share
  (:func:`~hybridnb.core.multihost.host_resources`): the bridge everywhere (the gateway
  address and the one-host MAC on the primary only; the others carry no lab address and a
  MAC of their own), the VXLAN device that joins the bridges, the firewall rule and the
  policy table everywhere, the DNS server on the primary only (every endpoint asks the
  gateway, which the VXLAN makes reachable from every host), each endpoint on its host.
* **One backend per host.** ``sandbox: NAME`` is that sandbox's backend (two sandboxes stand
  in for two machines), ``engine: local`` the backend the lab is applied with; a dry-run lab
  simulates every host with a dry-run engine of its own.  A host reached only by engine URLs
  (``docker: ssh://…``) is a *remote* host (:mod:`hybridnb.remote`): its containers through
  its Docker API, its bridge, VXLAN device, firewall rule, policy table, namespace hosts
  and link impairments by hybridnb's agent container there, which also runs that host's
  share of the probe matrix and watches it; its VMs through its ``libvirt:`` URI (boot
  files uploaded into a storage pool there, :mod:`hybridnb.drivers.vmpool`); probes from
  its VMs are refused, naming it.
* **State per host.** Each host keeps the journal of what was made there in a state store of
  its own (``<state dir>/hosts/<host>/<lab>.json``), under its own lock; the lab's state holds
  the description and the addresses.  So one host failing leaves the others recorded as they
  are, and the next apply goes on from there on each host.
* **Changes of ``hosts:`` converge.**  A host the file no longer names but whose share is
  recorded (:func:`removed_hosts`) is planned last, named as removed with where it was, with
  the deletion of everything the lab owns there; apply removes it first (then the others'
  VXLAN devices stop flooding to it), and an unreachable one keeps its record, named in the
  error.  An endpoint moved to another host keeps its address and announces its new place
  (:func:`announce_moved`).  Dropping ``hosts:`` from a spread lab, spreading a one-host
  lab, or re-pointing a host name at other engines is refused with a hint
  (:func:`check_transition`); a VXLAN device in a host's kernel on the lab's VNI and port
  that is not the lab's refuses it too (:func:`check_kernel_clash`).
* **In parallel, named.** Hosts plan and apply at the same time (one thread per host, each
  running the ordinary staged apply :func:`~hybridnb.apply.converge`); an error says which
  host it came from (``host b (sandbox x): ...``), and when several hosts fail, all of them.
* **One matrix.** Probes run from every host's endpoints: each host's drivers say how to get
  inside its endpoints (namespaces, the guest agent) and the probe engine runs them all
  together in one matrix, the gateway on the primary.  On one machine the sandboxes share the
  kernel, so one process enters every namespace; a host given a runner (:func:`prober`,
  ``Lab.probe_runners``) runs its share of the matrix there instead
  (:mod:`hybridnb.services.probe.coordinate`), merged into the same matrix — a remote host
  always does, in its agent container (:func:`share_runners`), its containers' and
  namespace hosts' namespaces named as seen on that host.

:class:`HostsPlan` and :class:`HostsApplyResult` are a :class:`~hybridnb.core.plan.Plan` and
an :class:`~hybridnb.apply.ApplyResult` (every front shows them as before) that group their
actions by host.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, TypeVar

from hybridnb.apply import (ApplyResult, Progress, ProgressEvent, converge, execute,
                            observe_all, observe_settled, preflight, settle_journal)
from hybridnb.core.compile import compile_lab
from hybridnb.core.multihost import Hosts, LabHost, host_resources, placement
from hybridnb.core.plan import Plan, diff
from hybridnb.core.resource import Resource
from hybridnb.core.spec import lab_to_dict
from hybridnb.drivers.base import Backend, GuestExec, NamespaceSource
from hybridnb.errors import HybridError, Unsupported
from hybridnb.state import HOSTS_DIR, StateStore, owners, recorded_specs
from hybridnb.state import host_store as state_host_store

if TYPE_CHECKING:  # pragma: no cover
    from hybridnb.services.labview import LabView
    from hybridnb.services.probe import ProbeEndpoint

T = TypeVar("T")
#: a :class:`hybridnb.lab.Lab` (not imported: the lab imports this module)
Lab = Any


# ---------------------------------------------------------------------------------- results

@dataclass(frozen=True)
class HostsPlan(Plan):
    """A plan of a lab over several hosts: every host's plan (``hosts``, in the order of
    ``hosts:``); ``actions`` holds them all, so it reads like any plan."""

    hosts: tuple[tuple[str, Plan], ...] = ()
    where: tuple[tuple[str, str], ...] = ()        # host -> its engines in a few words
    removed: tuple[str, ...] = ()                  # hosts no longer in the file (last)

    def headline(self) -> str:
        n = len(self.hosts) - len(self.removed)
        gone = f", removing host {', '.join(self.removed)}" if self.removed else ""
        over = f"over {n} host{'s' if n != 1 else ''}{gone}"
        return super().headline().replace(f"lab {self.lab}:", f"lab {self.lab} {over}:")

    def _host_line(self, host: str, plan: Plan) -> str:
        where = dict(self.where).get(host, "")
        text = plan.headline().partition(": ")[2]
        return f"host {host}" + (f" ({where})" if where else "") + f": {text}"

    def to_text(self) -> str:
        lines = [self.headline()]
        for host, plan in self.hosts:
            lines.append("  " + self._host_line(host, plan))
            lines += ["    " + a.describe() for a in plan.actions]
        lines += ["  " + note for note in self.notes]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    __str__ = to_text
    __repr__ = to_text

    def records(self) -> list[dict[str, str]]:
        return [{"host": host, **rec} for host, plan in self.hosts for rec in plan.records()]

    def _repr_html_(self) -> str:
        from html import escape

        from hybridnb.core.tables import table

        rows = [[host, a.op, a.kind, a.name, a.resource.summary if a.resource else "",
                 a.reason] for host, plan in self.hosts for a in plan.actions]
        out = table(["host", "action", "kind", "name", "what", "why"], rows,
                    caption=self.headline(),
                    row_classes=[a.op for _, plan in self.hosts for a in plan.actions])
        extra = [self._host_line(h, p) for h, p in self.hosts] + list(self.notes) + \
            [f"warning: {w}" for w in self.warnings]
        return out + "<ul>" + "".join(f"<li>{escape(x)}</li>" for x in extra) + "</ul>"


@dataclass
class HostsApplyResult(ApplyResult):
    """What an apply or destroy did on every host (``hosts``: host -> its result)."""

    hosts: dict[str, ApplyResult] = field(default_factory=dict)
    #: what apply did beyond the plan, or could not (an endpoint that moved, not announced)
    notes: list[str] = field(default_factory=list)

    def to_text(self) -> str:
        lines = [f"{self.plan.headline()}; done in {self.seconds:.2f}s"]
        for host, result in self.hosts.items():
            lines.append(f"  host {host}:")
            lines += ["    " + line for line in result.to_text().splitlines()]
        lines += ["  " + note for note in self.notes]
        return "\n".join(lines)

    __repr__ = to_text
    __str__ = to_text

    def records(self) -> list[dict[str, Any]]:
        return [{"host": host, **rec} for host, result in self.hosts.items()
                for rec in result.records()]


# ------------------------------------------------------------------------ hosts and backends

def spread(lab: Lab) -> Hosts | None:
    """The lab's hosts when it is made host by host: it names two or more, or it names one
    and shares of it are recorded per host (it was spread and is being gathered on one
    host); else None: a one-machine lab."""
    hosts = lab.spec.sections.get("hosts")
    if not isinstance(hosts, Hosts) or not hosts.hosts:
        return None
    return hosts if hosts.multi or recorded_hosts(lab) else None


def _hosts(lab: Lab) -> Hosts:
    hosts = lab.spec.sections.get("hosts")
    assert isinstance(hosts, Hosts)
    return hosts


# ------------------------------------------------------------- hosts no longer in the file

def recorded_hosts(lab: Lab) -> list[str]:
    """The hosts that hold a share of the lab as recorded (a state of their own under
    ``<state dir>/hosts/``), sorted."""
    root = Path(lab.store.dir) / HOSTS_DIR
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir()
                  if d.is_dir() and (d / f"{lab.name}.json").is_file())


def removed_hosts(lab: Lab) -> list[str]:
    """Recorded hosts the lab file no longer names (their shares are to be removed)."""
    hosts = lab.spec.sections.get("hosts")
    names = set(hosts.names) if isinstance(hosts, Hosts) else set()
    return [h for h in recorded_hosts(lab) if h not in names]


def _recorded_host(lab: Lab, name: str) -> LabHost:
    """A host no longer in the lab file, as it was last applied: its entry in the recorded
    description (``hosts:``), else what its own state says of its target."""
    from hybridnb.core.multihost import parse_host
    from hybridnb.core.problems import Collector

    data = lab.store.read(lab.name)
    raw = (data.get("removed") or {}).get(name) or \
        ((data.get("spec") or {}).get("hosts") or {}).get(name)
    if isinstance(raw, Mapping):
        host = parse_host(Collector(), name, raw)
        if host is not None:
            return host
    target = host_store(lab, name).read(lab.name).get("target") or {}
    sandbox = str(target.get("name", "")).partition("sandbox:")[2] or None
    if sandbox:
        return LabHost(name, sandbox=sandbox)
    if target.get("docker_url"):
        from hybridnb.core.multihost import parse_docker_url, parse_libvirt_uri

        uri = target.get("libvirt_uri")
        return LabHost(name, docker=parse_docker_url(target["docker_url"]),
                       libvirt=parse_libvirt_uri(uri) if uri else None)
    return LabHost(name, engine="local")


def lab_host(lab: Lab, name: str) -> LabHost:
    """``name`` as the lab file gives it, else as it was recorded (a removed host)."""
    hosts = lab.spec.sections.get("hosts")
    if isinstance(hosts, Hosts) and name in hosts.names:
        return hosts.get(name)
    return _recorded_host(lab, name)


def _where_of(lab: Lab, name: str) -> str:
    """A host's engines in a few words; a removed host says so."""
    where = lab_host(lab, name).where
    hosts = lab.spec.sections.get("hosts")
    if isinstance(hosts, Hosts) and name in hosts.names:
        return where
    return f"removed from hosts:, was {where}"


def _machine(entry: Mapping[str, Any]) -> dict[str, str]:
    """What names a host's machine in its ``hosts:`` entry (its underlay and MTU may change:
    the VXLAN devices follow; its engines may not)."""
    return {k: str(entry[k]) for k in ("engine", "sandbox", "docker", "libvirt")
            if entry.get(k) is not None}


def _check_same_machines(lab: Lab, hosts: Hosts, recorded: list[str],
                         data: Mapping[str, Any]) -> None:
    """Refuse a host name kept while its engines changed: its recorded share lives on the
    engines it named before, which the per-host state of that name would then no longer
    reach."""
    from hybridnb.errors import ConflictError

    before = (data.get("spec") or {}).get("hosts") or {}
    for host in hosts.hosts:
        old = before.get(host.name)
        if host.name not in recorded or not isinstance(old, Mapping):
            continue
        was, now = _machine(old), _machine(host.to_dict())
        if was.get("libvirt") is None or now.get("libvirt") is None:
            was.pop("libvirt", None)         # a libvirt URL added or dropped: the same machine
            now.pop("libvirt", None)
        if was != now:
            from hybridnb.core.multihost import parse_host
            from hybridnb.core.problems import Collector

            then = parse_host(Collector(), host.name, old)
            gone = then.where if then is not None else ", ".join(was.values())
            raise ConflictError(
                f"host {host.name} now names other engines ({host.where}) than those "
                f"holding its share of lab {lab.name} ({gone})",
                hint=f"give the new machine another host name (the share of "
                     f"{host.name!r} is then removed), or put {host.name!r} back as it was")


def check_transition(lab: Lab) -> None:
    """Refuse the two changes of ``hosts:`` that would leave a share of the lab behind
    unrecorded: dropping ``hosts:`` from a lab whose shares are recorded per host (a
    one-host lab keeps one journal, on the backend it is applied with — which may be none
    of those hosts), and giving ``hosts:`` to a lab applied as a one-host lab (its journal
    is the lab's own, on that backend).  Removing hosts while keeping ``hosts:`` (one host
    is enough) converges."""
    from hybridnb.errors import ConflictError

    hosts = lab.spec.sections.get("hosts")
    recorded = recorded_hosts(lab)
    if not isinstance(hosts, Hosts) or not hosts.hosts:
        if recorded:
            raise ConflictError(
                f"lab {lab.name} is applied over hosts {', '.join(recorded)} (each host's "
                "share is recorded on its own): without hosts: it would be a one-host lab "
                f"on {lab.target} and those shares would be left behind",
                hint="keep a hosts: section naming the machines you want - one host is "
                     "enough (hosts: {a: {sandbox: NAME}}): apply then gathers every "
                     "endpoint there and removes the others' shares; or destroy the lab "
                     "first")
        return
    if not (hosts.multi or recorded):
        return
    data = lab.store.read(lab.name)
    _check_same_machines(lab, hosts, recorded, data)
    if data.get("resources"):
        from hybridnb.state import describe_target, recorded_target

        where = describe_target(recorded_target(data) or lab.target)
        raise ConflictError(
            f"lab {lab.name} is applied as a one-host lab on {where}: spreading it over "
            f"hosts {', '.join(hosts.names)} would make its endpoints again on each host "
            "and leave what the one-host lab made behind, unrecorded",
            hint=f"destroy it first (hybridnb destroy {lab.name}), then apply it with "
                 "hosts:")


def host_store(lab: Lab, host: str) -> StateStore:
    """Where ``host``'s share of the lab records what was made there."""
    return state_host_store(lab.store.dir, host)


def _dry_run(lab: Lab) -> bool:
    return lab.target == "dry-run"


def _make_backend(lab: Lab, host: LabHost) -> Backend:
    from hybridnb.backends import DRY_RUN_ENGINE, resolve_backend

    if _dry_run(lab):
        from hybridnb.drivers.dryrun import dry_run_backend

        return dry_run_backend(Path(lab.store.dir) / HOSTS_DIR / host.name / DRY_RUN_ENGINE)
    if host.engine == "local":
        return lab.backend
    if host.sandbox:
        # drivers that keep files (the DNS server's, the VMs') keep them per host: a host's
        # driver must never see another host's share as its own
        return resolve_backend("sandbox", state_dir=Path(lab.store.dir) / HOSTS_DIR / host.name,
                               sandbox=host.sandbox)
    return _remote_backend(host, Path(lab.store.dir) / HOSTS_DIR / host.name)


def _remote_backend(host: LabHost, state_dir: Path | None = None) -> Backend:
    """A host given by its engines' URLs: its Docker API, the agent container there for its
    bridge and VXLAN device (:mod:`hybridnb.remote`)."""
    if host.docker is None:
        raise Unsupported(f"host {host.name} is reached through its engines' URLs "
                          f"({host.where}) but names no Docker engine: its bridge and VXLAN "
                          "device are made by hybridnb's agent container, started through "
                          "the host's Docker API", hint="give the host a docker: URL too",
                          capability="hosts")
    from hybridnb.remote.backend import remote_backend

    return remote_backend(host.name, host.docker.url, where=host.where, state_dir=state_dir,
                          libvirt_uri=host.libvirt.url if host.libvirt else None)


def is_remote(backend: Backend) -> bool:
    """A backend that reaches its host through the engines' URLs only."""
    return backend.name == "remote"


def host_backend(lab: Lab, host: str) -> Backend:
    """``host``'s backend (made once per ``Lab``)."""
    cache: dict[str, Backend] = lab.__dict__.setdefault("_host_backends", {})
    if host not in cache:
        try:
            cache[host] = _make_backend(lab, lab_host(lab, host))
        except HybridError as exc:
            raise _named(exc, lab, host) from None
    return cache[host]


def _named(exc: HybridError, lab: Lab, host: str) -> HybridError:
    """``exc`` with the host it happened on in front of its message (once)."""
    head = f"host {host} ({_where_of(lab, host)}): "
    if not exc.message.startswith(head):
        exc.message = head + exc.message
    exc.host = host  # type: ignore[attr-defined]
    return exc


def _each_host(lab: Lab, work: Callable[[str], T],
               names: tuple[str, ...] | list[str] | None = None) -> dict[str, T]:
    """``work(host)`` on every host (``names``, default: the lab file's) at once; every host
    runs to its end, then the errors (each naming its host) are raised as one — the first
    error, its message listing the others — so one failing host never stops another
    half-way."""
    results, errors = _run_each(lab, work, _hosts(lab).names if names is None else names)
    if errors:
        first = errors[0]
        if len(errors) > 1:
            first.message += "; also " + "; ".join(e.message for e in errors[1:])
        first.results = results  # type: ignore[attr-defined]
        raise first
    return results


def _run_each(lab: Lab, work: Callable[[str], T], names: tuple[str, ...] | list[str]
              ) -> tuple[dict[str, T], list[HybridError]]:
    """``work(host)`` on every host of ``names`` at once: (the results of those that
    succeeded, the error of each that failed, naming its host), in the order of ``names``."""
    results: dict[str, T] = {}
    errors: list[HybridError] = []
    if not names:
        return results, errors
    with ThreadPoolExecutor(max_workers=len(names),
                            thread_name_prefix="hybridnb-host") as pool:
        futures = {h: pool.submit(_guarded, lab, h, work) for h in names}
        for h in names:
            try:
                results[h] = futures[h].result()
            except HybridError as exc:
                errors.append(exc)
    return results, errors


def _guarded(lab: Lab, host: str, work: Callable[[str], T]) -> T:
    from hybridnb.errors import EngineError

    try:
        return work(host)
    except HybridError as exc:
        raise _named(exc, lab, host) from None
    except Exception as exc:               # an engine error no driver translated
        raise _named(EngineError(f"{type(exc).__name__}: {exc}"), lab, host) from exc


def _where(lab: Lab) -> tuple[tuple[str, str], ...]:
    return tuple((h.name, h.where) for h in _hosts(lab).hosts)


def resources_by_host(lab: Lab, addresses: Mapping[str, Any], mode: str = "resolve",
                      progress: Progress | None = None,
                      notes: list[str] | None = None) -> dict[str, list[Resource]]:
    """Each host's share of the lab (one compile, one IPAM over the whole spec), the images
    of the lab's recipes bound in for that host's engines (:mod:`hybridnb.images.binding`;
    ``mode``: ``resolve``, ``plan`` — what apply makes first is added to ``notes``, each
    naming its host — or ``build``: a recipe is built once into this machine's image cache
    and imported into each host's engine that runs it, host after host, before anything of
    the lab changes)."""
    compiled = compile_lab(lab.spec, addresses)
    shares = {h: host_resources(lab.spec, compiled, h) for h in _hosts(lab).names}
    if not lab._runs_recipes(compiled):
        return shares
    from hybridnb.core.sections.images import lab_images
    from hybridnb.images.binding import bind_images

    images = lab_images(lab.spec.sections)
    out = {}
    for h, share in shares.items():
        if not lab._runs_recipes(share):
            out[h] = share
            continue
        target = host_backend(lab, h).target
        try:
            bound = bind_images(share, images, target, mode=mode, progress=progress)
        except HybridError as exc:
            if mode == "build":
                raise _named(exc, lab, h) from None
            # its engine unreachable: bound without asking it (its plan then says why)
            bound = bind_images(share, images, target, mode="resolve")
        out[h] = bound.resources
        if notes is not None:
            notes += [f"host {h}: {note}" for note in bound.notes]
    return out


def _usable(backend: Backend, resources: list[Resource]) -> list[Resource]:
    """The firewall rule only where a Docker engine runs (it is Docker's FORWARD drop it
    works around); on a remote host, a share with kinds it cannot make is refused."""
    if is_remote(backend):
        from hybridnb.remote.backend import refuse_unserved

        refuse_unserved(backend.target.name.partition(":")[2], backend.extras["where"],
                        backend, resources)
    return [r for r in resources if r.kind != "firewall" or backend.supports("firewall")]


# ------------------------------------------------------------------------ plan/apply/destroy

def check_clash(lab: Lab) -> None:
    """Refuse a lab whose VXLAN segment (VNI and port over a shared underlay address) is
    another applied lab's of the same state directory: their segments would merge."""
    from hybridnb.core.multihost import vxlan_clash
    from hybridnb.core.spec import parse_lab
    from hybridnb.errors import ConflictError

    for name in lab.store.labs():
        if name == lab.name:
            continue
        try:
            data = lab.store.read(name)
            other = parse_lab(data["spec"]) if data.get("spec") else None
        except (HybridError, KeyError, TypeError):
            continue                   # no description to compare with
        why = vxlan_clash(lab.spec, other) if other is not None else None
        if why:
            raise ConflictError(why, hint=f"give one of them another network.vxlan.vni "
                                f"(lab {name} is applied)")


def check_kernel_clash(lab: Lab, host: str, backend: Backend,
                       resources: list[Resource]) -> None:
    """Refuse ``host``'s share when a VXLAN device already in that host's kernel — another
    lab's, of another state directory or another user, or not hybridnb's at all — uses the
    VNI and UDP port of this lab's device (one segment would receive the other's frames; the
    kernel also refuses a second device on the same VNI and port).  Read where the driver
    reads this machine's or a sandbox's kernel; not on a remote host (its agent is not
    asked)."""
    from hybridnb.errors import ConflictError

    mine = [r for r in resources if r.kind == "vxlan"]
    segments = getattr(backend.drivers.get("vxlan"), "segments", None) if mine else None
    if segments is None:
        return
    vni, port = mine[0].spec["vni"], mine[0].spec["port"]
    for device, other_vni, other_port, owner in segments():
        if (other_vni, other_port) != (vni, port) or owner == lab.name or \
                device == mine[0].name:         # ours, half made: its driver deals with it
            continue
        whose = f"lab {owner!r}'s" if owner else "a device hybridnb did not make"
        raise ConflictError(f"VXLAN device {device} there ({whose}) already uses VNI {vni} "
                            f"on UDP port {port}: lab {lab.name}'s segment would merge with "
                            "it", hint="give this lab another network.vxlan.vni (or port)")


def plan(lab: Lab) -> HostsPlan:
    """Every host's plan, made at the same time; nothing is changed.  A host the lab file
    no longer names but whose share is recorded (:func:`removed_hosts`) comes last, with
    the deletion of everything the lab owns there; one that cannot be reached is a note
    naming it (its share stays recorded: apply removes it once it answers)."""
    check_clash(lab)
    state = lab._read_state()
    notes: list[str] = []
    wanted = resources_by_host(lab, lab._assign(state.get("addresses", {})), "plan",
                               notes=notes)

    def one(host: str) -> Plan:
        backend = host_backend(lab, host)
        check_kernel_clash(lab, host, backend, wanted[host])
        recorded = recorded_specs(host_store(lab, host).read(lab.name))
        return diff(lab.name, _usable(backend, wanted[host]), observe_all(lab.name, backend),
                    recorded, updatable=backend.updatable())

    plans = _each_host(lab, one)
    gone, unreachable = _plan_removed(lab)
    notes += unreachable
    return _merged(lab, {**plans, **gone}, warnings=tuple(lab.warnings()), notes=tuple(notes))


#: why a removed host's share is deleted (its plan's lines)
REMOVED_REASON = "its host was removed from hosts:"


def _plan_gone(lab: Lab, host: str) -> Plan:
    """The deletion of everything of the lab on ``host`` (removed from the file)."""
    backend = host_backend(lab, host)
    recorded = recorded_specs(host_store(lab, host).read(lab.name))
    return diff(lab.name, (), observe_all(lab.name, backend), recorded,
                delete_reason=REMOVED_REASON)


def _plan_removed(lab: Lab) -> tuple[dict[str, Plan], list[str]]:
    """(each reachable removed host's deletions, a note per unreachable one)."""
    gone = removed_hosts(lab)
    plans: dict[str, Plan] = {}
    notes: list[str] = []
    for host in gone:
        try:
            plans[host] = _guarded(lab, host, lambda h: _plan_gone(lab, h))
        except HybridError as exc:
            notes.append(_unreachable(exc))
            continue
        if is_remote(host_backend(lab, host)):
            notes.append(f"host {host}: hybridnb's agent container there goes too, once no "
                         "lab of hybridnb uses that engine any more")
    return plans, notes


def _unreachable(exc: HybridError) -> str:
    host = getattr(exc, "host", "NAME")
    return (f"{exc.message}: its share of the lab stays recorded; apply removes it once the "
            f"host answers again (a host gone for good: Lab.forget_host({host!r}) drops the "
            "record)")


def forget_host(lab: Lab, host: str) -> list[str]:
    """Drop the record of ``host``'s share of the lab without touching the host — for a
    host removed from ``hosts:`` that will never answer again (a machine gone for good).
    Refused for a host the file still names or one that holds no record.  What its record
    listed (``kind/name``) is returned: it is no longer hybridnb's to remove."""
    from hybridnb.errors import ConflictError, NotFoundError

    hosts = lab.spec.sections.get("hosts")
    if isinstance(hosts, Hosts) and host in hosts.names:
        raise ConflictError(f"host {host} is still in lab {lab.name}'s hosts:",
                            hint="remove it from hosts: and apply; forget it only if that "
                                 "apply cannot reach it")
    if host not in recorded_hosts(lab):
        raise NotFoundError(f"lab {lab.name} holds no record of host {host}",
                            hint=f"recorded hosts: {', '.join(recorded_hosts(lab)) or 'none'}")
    with lab.store.transaction(lab.name) as st:
        store = host_store(lab, host)
        with store.transaction(lab.name) as hst:
            listed = sorted(hst.resources)
            store.forget(lab.name)
        st.data["removed"] = {h: d for h, d in (st.data.get("removed") or {}).items()
                              if h != host}
        st.save()
    return listed


def _merged(lab: Lab, plans: Mapping[str, Plan], **kw: Any) -> HostsPlan:
    names = list(_hosts(lab).names) if spread(lab) else []
    removed = tuple(h for h in plans if h not in names)
    ordered = tuple((h, plans[h]) for h in names + sorted(removed) if h in plans)
    where = tuple((h, _where_of(lab, h)) for h, _ in ordered)
    return HostsPlan(lab.name, tuple(a for _, p in ordered for a in p.actions),
                     sum(p.unchanged for _, p in ordered),
                     tuple(r for _, p in ordered for r in p.desired), hosts=ordered,
                     where=where, removed=removed, **kw)


def _apply_host(lab: Lab, host: str, resources: list[Resource], progress: Progress | None,
                workers: int) -> ApplyResult:
    backend = host_backend(lab, host)
    store = host_store(lab, host)
    with store.transaction(lab.name) as st:
        observed = observe_settled(lab.name, backend, st.resources)
        settle_journal(st, observed)
        recorded = st.recorded()
        plan = diff(lab.name, _usable(backend, resources), observed, recorded,
                    updatable=backend.updatable())
        if plan.empty:
            return ApplyResult(plan)
        preflight(plan, backend)
        st.data.update(spec=None, backend=backend.name, target=backend.target.to_dict(),
                       host=host)
        st.save()
        return converge(plan, backend, st, before=observed, recorded_before=recorded,
                        progress=_tagged(progress, host), workers=workers)


@dataclass(frozen=True)
class HostEvent(ProgressEvent):
    """A :class:`~hybridnb.apply.ProgressEvent` of one host's apply (its counts are that
    host's); it reads ``host b: [2/6] create vxlan ...``."""

    host: str = ""

    def __str__(self) -> str:
        return f"host {self.host}: {super().__str__()}"


def _tagged(progress: Progress | None, host: str) -> Progress | None:
    """Progress events naming their host."""
    if progress is None:
        return None

    def report(event: ProgressEvent) -> None:
        fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
        progress(HostEvent(**fields, host=host))
    return report


def apply(lab: Lab, progress: Progress | None = None, *, workers: int = 8) -> HostsApplyResult:
    """Make every host's engines match its share of the lab, all hosts at once.  The lab's
    description and addresses are recorded first; the shares of hosts the file no longer
    names are removed first (an endpoint moved off such a host never runs twice), then each
    host runs the ordinary staged apply under its own lock.  A host that fails raises
    (naming it) after the others finished: they stay as made, and applying again goes on
    from there — a removed host that cannot be reached keeps its record for that."""
    import time

    t0 = time.perf_counter()
    with lab.store.transaction(lab.name, on_wait=lab._on_wait(progress)) as st:
        lab._check_owner(st.data)
        check_clash(lab)
        addresses = lab._assign(st.addresses)
        wanted = resources_by_host(lab, addresses, "build", progress)
        # every host's kernel checked before any host changes
        _each_host(lab, lambda h: check_kernel_clash(lab, h, host_backend(lab, h), wanted[h]))
        gone = removed_hosts(lab)
        before = dict(st.data.get("placement") or {})
        # how to reach them, kept before the new description replaces theirs
        st.data["removed"] = {h: lab_host(lab, h).to_dict() for h in gone}
        st.data["addresses"] = {n: str(a) for n, a in addresses.items()}
        st.data["kinds"] = {e.name: e.kind for e in lab.spec.endpoints}
        st.data["spec"] = lab_to_dict(lab.spec)
        st.data["backend"] = lab.target.partition(":")[0]
        st.data["target"] = {"name": lab.target}
        st.data["hosts"] = {h: w for h, w in _where(lab)}
        st.data["placement"] = placement(lab.spec)
        st.data["source"], st.data["named"] = lab._source_key, lab.named
        st.save()
        removed, failed = _remove_hosts(lab, gone, progress)
        st.data["removed"] = {h: d for h, d in st.data["removed"].items() if h not in removed}
        st.save()
        try:
            results = _each_host(lab, lambda h: _apply_host(lab, h, wanted[h], progress,
                                                            workers))
        except HybridError as exc:
            done = {**removed, **getattr(exc, "results", {})}
            if failed:
                exc.message += "; also " + "; ".join(_unreachable(e) for e in failed)
            exc.result = _result(lab, done, t0)  # type: ignore[attr-defined]
            raise
        result = _result(lab, {**removed, **results}, t0)
        result.notes = announce_moved(lab, before, addresses)
        if failed:
            first = failed[0]
            first.message = "; ".join(_unreachable(e) for e in failed)
            first.result = result  # type: ignore[attr-defined]
            raise first
        return result


def moved(before: Mapping[str, str], lab: Lab) -> dict[str, str]:
    """Endpoints now on another host than at the last apply: endpoint → its new host."""
    now = placement(lab.spec)
    return {ep: h for ep, h in sorted(now.items()) if before.get(ep) not in (None, h)}


def announce_moved(lab: Lab, before: Mapping[str, str], addresses: Mapping[str, Any]
                   ) -> list[str]:
    """A gratuitous ARP from each endpoint that moved to another host, from where it now
    runs (:func:`hybridnb.drivers.announce.announce`): the bridges, VXLAN devices and
    neighbours of every host learn its new place at once, not when their entries age out.
    Done where this process can enter the endpoint's namespace (containers and namespace
    hosts of this machine or a sandbox); what could not be announced is returned as notes
    (its peers find it again once their entries expire)."""
    from hybridnb.drivers.announce import announce

    notes: list[str] = []
    for ep, host in moved(before, lab).items():
        kind = lab.spec.endpoint(ep).kind
        backend = host_backend(lab, host)
        drv = backend.driver(kind) if backend.supports(kind) else None
        if is_remote(backend) or not isinstance(drv, NamespaceSource):
            notes.append(f"{kind} {ep} moved to host {host}: not announced (hybridnb does "
                         "not enter it there); its peers find it once their entries expire")
            continue
        try:
            netns = dict(drv.netns_paths(lab.name)).get(ep)
            if netns is None:
                raise HybridError(f"{kind} {ep} is not running")
            announce(netns, str(addresses[ep]))
        except (HybridError, OSError) as exc:
            notes.append(f"{kind} {ep} moved to host {host}: not announced ({exc})")
    return notes


def _remove_hosts(lab: Lab, gone: list[str], progress: Progress | None
                  ) -> tuple[dict[str, ApplyResult], list[HybridError]]:
    """Remove the lab's share on every host in ``gone`` (at once): (what each host that
    answered did, the error of each that did not — its share stays recorded)."""
    return _run_each(lab, lambda h: _destroy_host(lab, h, progress, REMOVED_REASON), gone)


def _result(lab: Lab, results: Mapping[str, ApplyResult], t0: float) -> HostsApplyResult:
    import time

    merged = _merged(lab, {h: r.plan for h, r in results.items()})
    ordered = {h: results[h] for h, _ in merged.hosts}
    return HostsApplyResult(merged, [o for r in ordered.values() for o in r.outcomes],
                            time.perf_counter() - t0, hosts=ordered)


def _destroy_host(lab: Lab, host: str, progress: Progress | None,
                  reason: str = "destroy") -> ApplyResult:
    """Remove the lab's share on ``host`` and its record there (``reason``: why, in each
    action's line)."""
    backend = host_backend(lab, host)
    store = host_store(lab, host)
    with store.transaction(lab.name) as st:
        observed = observe_settled(lab.name, backend, st.resources)
        settle_journal(st, observed)
        plan = diff(lab.name, (), observed, st.recorded(), delete_reason=reason)
        result = execute(plan, backend, st, progress=_tagged(progress, host)) \
            if not plan.empty else ApplyResult(plan)
        store.forget(lab.name)
    if is_remote(backend):          # the agent container goes with the host's last lab
        from hybridnb.remote.backend import release_if_unused

        release_if_unused(backend)
    return result


def destroy(lab: Lab, progress: Progress | None = None) -> HostsApplyResult:
    """Remove what the lab owns on every host, all at once — the hosts of the lab file and
    those it no longer names whose share is still recorded; the lab's state is forgotten
    only when every host is clean (a host that failed keeps its record and the lab's, so
    destroying again finishes the job)."""
    import time

    t0 = time.perf_counter()
    with lab.store.transaction(lab.name, on_wait=lab._on_wait(progress)) as st:
        lab._check_owner(st.data)
        current = list(_hosts(lab).names) if spread(lab) else []
        every = current + [h for h in recorded_hosts(lab) if h not in current]
        try:
            results = _each_host(lab, lambda h: _destroy_host(lab, h, progress), every)
        except HybridError as exc:
            exc.result = _result(lab, getattr(exc, "results", {}), t0)  # type: ignore
            raise
        st.data.update(addresses={}, kinds={}, resources={})
        st.save()
        lab.store.forget(lab.name)
        return _result(lab, results, t0)


# ---------------------------------------------------------------------------------- probes

def _ways_in(lab: Lab, backend: Backend, kinds: set[str]) -> dict[str, Any]:
    """Per endpoint kind on one host: ``{endpoint: netns}`` or a command executor maker."""
    ways: dict[str, Any] = {}
    for kind in sorted(kinds):
        if not backend.supports(kind):
            ways[kind] = {}
            continue
        drv = backend.driver(kind)
        if isinstance(drv, NamespaceSource):
            ways[kind] = drv.netns_paths(lab.name)
        elif isinstance(drv, GuestExec):
            ways[kind] = (lambda name, d=drv: _Exec(d, lab.name, name))
        else:
            raise Unsupported(f"the {backend.name} backend cannot probe from {kind} "
                              "endpoints", hint=backend.hint,
                              capability="NamespaceSource", kind=kind)
    return ways


class _Exec:
    """A command executor inside one endpoint, through its driver's guest exec."""

    def __init__(self, driver: GuestExec, lab: str, endpoint: str) -> None:
        self.driver, self.lab, self.endpoint = driver, lab, endpoint

    def __call__(self, argv: Any, timeout: float) -> tuple[int, str, str]:
        code, out, err = self.driver.guest_exec(self.lab, self.endpoint, list(argv),
                                                timeout=timeout)
        return int(code), str(out), str(err)

    def wire_ref(self) -> dict[str, Any]:
        """How a probe share in another process reconnects to the guest (the libvirt URI;
        see :class:`~hybridnb.services.probe.share.LibvirtGuest`)."""
        return {"kind": "libvirt", "uri": getattr(self.driver, "uri", None), "lab": self.lab,
                "endpoint": self.endpoint, "channel": None}


def primary_bridges(lab: Lab) -> dict[str, str | None]:
    """The lab's bridges on the primary host and the namespace holding them."""
    primary = host_backend(lab, _hosts(lab).primary.name)
    lab_host = primary.require("bridge", NamespaceSource, doing="probe the lab")
    return dict(lab_host.netns_paths(lab.name))


def probe_endpoints(lab: Lab, bridges: Mapping[str, str | None]
                    ) -> tuple[list[ProbeEndpoint], ProbeEndpoint]:
    """(endpoints of every host, the gateway on the primary) for one probe matrix;
    ``bridges``: :func:`primary_bridges` (the lab's bridge must be among them)."""
    from hybridnb.core.kinds import get as get_kind
    from hybridnb.core.kinds import is_endpoint_kind
    from hybridnb.services.probe import lab_probe_endpoints, service_checks

    hosts, net = _hosts(lab), lab.spec.network
    where = placement(lab.spec)
    resources = [r for r in lab.resources() if is_endpoint_kind(r.kind)]
    services = {r.name: service_checks(lab.spec.endpoint(r.name).services)
                + get_kind(r.kind).probe_services(r) for r in resources}
    eps: list[ProbeEndpoint] = []
    gateway = None
    for host in hosts.names:
        mine = [r for r in resources if where.get(r.name) == host]
        backend = host_backend(lab, host)
        kinds = {r.kind for r in mine}
        ways = _remote_ways_in(lab, host, backend, mine) if is_remote(backend) else \
            _ways_in(lab, backend, kinds)
        found, gw = lab_probe_endpoints(mine, services, ways, gateway=str(net.gateway),
                                        gateway_netns=bridges[net.bridge])
        eps += found
        gateway = gateway or gw
    assert gateway is not None
    return sorted(eps, key=lambda e: e.name), gateway


def _remote_ways_in(lab: Lab, host: str, backend: Backend,
                    resources: list[Resource]) -> dict[str, Any]:
    """The ways into a remote host's endpoints **as seen on that host**: its containers'
    namespace paths from its Docker API (``/proc/<pid>/ns/net`` of dockerd's PID namespace)
    and its namespace hosts' (``/run/netns/hnb-<lab>-<name>`` there, asked from its agent),
    for its probe share, which runs there (:func:`share_runners`).  VMs are refused, naming
    the host."""
    served = ("container", "host")
    other = sorted({(r.kind, r.name) for r in resources if r.kind not in served})
    if other:
        what = ", ".join(f"{k} {n}" for k, n in other)
        raise Unsupported(f"host {host} ({_hosts(lab).get(host).where}) is reached through "
                          f"its engines' APIs only: hybridnb cannot probe from {what} there "
                          "(its probe share runs in the agent container, which enters "
                          "containers' and namespace hosts' namespaces only)",
                          hint="place VMs on a sandbox or engine: local host to test them",
                          capability="hosts", kind=other[0][0])
    kinds = sorted({r.kind for r in resources})
    try:
        return {kind: backend.driver(kind).netns_paths_there(lab.name) for kind in kinds}
    except HybridError as exc:
        raise _named(exc, lab, host) from None


def share_runners(lab: Lab, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Where each host's share of the probe matrix runs: a remote host's in its agent
    container (:func:`hybridnb.remote.backend.share_runner`) unless ``given``
    (``Lab.probe_runners``) names another runner for it; ``given`` may add runners for
    other hosts, and a host mapped to None runs its share in this process — refused for a
    remote host whose engine is not on this machine (not ``unix://``): the namespace paths
    of its containers name that machine's processes."""
    out: dict[str, Any] = {}
    given = dict(given or {})
    for host in _hosts(lab).names:
        backend = host_backend(lab, host)
        if not is_remote(backend):
            continue
        from hybridnb.remote.backend import share_runner

        out[host] = share_runner(backend)
        url = str(backend.target.docker_url or "")
        if host in given and given[host] is None and not url.startswith("unix://"):
            # its containers' /proc/<pid> paths name processes of *that* machine
            raise Unsupported(f"host {host} ({_hosts(lab).get(host).where}) is another "
                              "machine: its probe share cannot run in this process (its "
                              "containers' namespaces are that machine's)",
                              hint=f"leave probe_runners[{host!r}] unset: its agent "
                                   "container runs it", capability="hosts")
    out.update(given)
    return {h: r for h, r in out.items() if r is not None}


def prober(lab: Lab, runners: Mapping[str, Any] | None = None) -> Callable[..., Any]:
    """How to probe the spread ``lab`` as one matrix: with no runner (every host's
    namespaces can be entered from here, as two sandboxes on one machine), the ordinary
    :func:`~hybridnb.services.probe.probe_matrix`; else
    :func:`~hybridnb.services.probe.coordinate.probe_shares` with each host's share run
    where it can (host → :class:`~hybridnb.drivers.runner.Runner`: ``runners`` and
    each remote host's agent, :func:`share_runners`; a host without one in this process),
    the endpoints placed on their hosts, the gateway on the primary."""
    import functools

    from hybridnb.services.probe import probe_matrix

    runners = share_runners(lab, runners)
    if not runners:
        return probe_matrix
    from hybridnb.services.probe.coordinate import probe_shares

    where = dict(placement(lab.spec))
    where["gateway"] = _hosts(lab).primary.name
    return functools.partial(probe_shares, placement=where, runners=dict(runners))


# ---------------------------------------------------------------------- the lab as one

def _as_one(wanted: Resource, seen: list[tuple[Resource, Any]]) -> Any:
    """One observation of a resource of the whole lab from what each host holding its
    share shows: there only when there on every one of them, running only when running
    everywhere, and as wanted (the whole lab's fingerprint) only when each host's share is
    as that host wants it."""
    from hybridnb.core.resource import Observation

    if not seen or any(obs is None for _, obs in seen):
        return None
    down = [obs for _, obs in seen if not obs.running]
    if down:
        return down[0]
    same = all(obs.fingerprint == mine.fingerprint for mine, obs in seen)
    return Observation(wanted.fingerprint if same else "", detail=seen[0][1].detail)


def observe_as_one(lab: Lab) -> dict[str, dict[str, Any]]:
    """What the engines of every host hold of the lab, as if it were one host: ``{kind:
    {name: Observation}}`` over the whole lab's resources (what ``status``, ``policy`` and
    ``links`` compare with), each host's share translated back (the bridge of a non-primary
    host is as wanted when it is as *that* host wants it).  Per-host devices (the VXLAN)
    are left out; a host that cannot be reached raises, naming it."""
    state = lab._read_state()
    addresses = lab._assign(state.get("addresses", {}))
    shares = resources_by_host(lab, addresses)
    compiled = lab._bind(compile_lab(lab.spec, addresses)).resources
    observed = _each_host(lab, lambda h: observe_all(lab.name, host_backend(lab, h)))
    out: dict[str, dict[str, Any]] = {}
    for res in compiled:
        seen = [(mine, observed[h].get(res.kind, {}).get(res.name))
                for h, share in shares.items() for mine in share if mine.key == res.key]
        obs = _as_one(res, seen)
        if obs is not None:
            out.setdefault(res.kind, {})[res.name] = obs
    return out


# ------------------------------------------------------------------------------- watching

def host_views(lab: Lab) -> tuple[LabView, ...]:
    """One :class:`~hybridnb.services.labview.LabView` per host: its share of the lab's
    resources, its own backend and journal, so monitor/capture/logs look at each endpoint
    through the lab host of the host it lives on (its ``state_dir`` is that host's state
    directory: the logs read its journal there).  A remote host's view is read through its
    agent (its bridge driver reads the links there,
    :class:`~hybridnb.drivers.base.LinksThere`), never in a namespace of this machine."""
    from hybridnb.core.hostview import host_of
    from hybridnb.services.labview import LabView

    hosts = host_of(lab.spec)
    shares = resources_by_host(lab, lab.addresses())
    return tuple(LabView(lab.name, tuple(shares[h]), host_backend(lab, h),
                         host_store(lab, h).read(lab.name), host_store(lab, h).dir, hosts,
                         host=h)
                 for h in _hosts(lab).names)


def doctor(lab: Lab, view: LabView, checks: Any) -> Any:
    """The doctor of a lab over several hosts, read-only: each host's checks run on that
    host's share through its own backend and lab host (its leftovers judged against its own
    journal); the findings are merged, each titled ``host X: ...`` and carrying ``host``.
    A remote host's share is diagnosed through its agent
    (:func:`~hybridnb.services.doctor.remote.diagnose_there`): the same checks, judging what
    the agent reads there (sysctls, firewall, routes, the ARP sweep on that host's bridge,
    leftovers against that host's journal), endpoints and engines through its APIs; only
    what cannot be judged there is one ``not-checked`` warning naming the host and why."""
    from hybridnb.services.doctor import DoctorContext, DoctorReport, all_checks, diagnose

    def one(part: LabView) -> Any:
        assert part.host is not None
        owned = owners(lab.store, part.backend.target.to_dict())
        if is_remote(part.backend):        # another machine: what its agent reads there
            from hybridnb.services.doctor.remote import diagnose_there

            return diagnose_there(part, checks if checks is not None else all_checks(),
                                  where=_hosts(lab).get(part.host).where, owned=owned)
        return diagnose(DoctorContext.of(part, owned), checks)

    reports = {part.host: one(part) for part in view.parts}
    findings = tuple(dataclasses.replace(f, title=f"host {h}: {f.title}",
                                         data={**f.data, "host": h})
                     for h, r in reports.items() for f in r.findings)
    where = ", ".join(f"{h} {r.where}" for h, r in reports.items())
    return DoctorReport(lab.name, where, findings,
                        seconds=sum(r.seconds for r in reports.values()))
