"""Plans: the ordered actions that turn what exists into what the lab file asks for.

``diff(lab, desired, observed, recorded)`` compares the resources compiled from the lab spec
with what the engines report (``observed``: kind → {name: :class:`Observation`}) and what the
persisted state says was attempted (``recorded``: the resources whose creation started, even
if a crash stopped it half way, each with the spec it was created from when known).  The
result is deterministic:

1. deletes of resources that exist (or were recorded) but are no longer wanted, in reverse
   kind order (endpoints before the network before the bridge);
2. creates, replaces and in-place updates, in kind order (bridge, firewall, network, hosts,
   containers, VMs, DNS).

A replaced bridge replaces everything on it; a replaced Docker network replaces its
containers (:func:`hybridnb.core.stages.dependents`).  A resource that does not run is
replaced ("not running", whatever its engine); one that differs says *what* differs when the
recorded spec it was made from is known ("changed: image, command"), else just "changed".
Re-planning an unchanged, healthy lab yields no action at all.

A replace is two driver calls, and :meth:`Plan.stages` runs them apart (the order apply
follows): every delete — of removed resources and of the old half of replaced ones — first,
in reverse kind order, so a resource's dependents are gone before it goes (the containers
before their Docker network, everything before a renumbered bridge); then every create,
replace-create and update in kind order.  :func:`rollback_plan` is the plan that puts back
what a failed apply changed, from the specs the resources had been made from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from hybridnb.core.kinds import REGISTRY
from hybridnb.core.resource import Observation, Resource, fingerprint
from hybridnb.core.stages import dependents, rank

OPS = ("delete", "create", "replace", "update")
_SYMBOL = {"create": "+", "delete": "-", "replace": "~", "update": "^"}
#: The plan reason of a resource that exists but does not run (any kind, any engine).
NOT_RUNNING = "not running"
Key = tuple[str, str]


@dataclass(frozen=True)
class Action:
    op: str                          # create | delete | replace | update
    kind: str
    name: str
    resource: Resource | None = None  # the desired resource (None for delete)
    reason: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)

    def describe(self) -> str:
        summary = self.resource.summary if self.resource is not None else ""
        text = f"{_SYMBOL[self.op]} {self.kind:<10} {self.name:<12} {summary}".rstrip()
        if self.reason:
            text += f"  ({self.reason})"
        return text


#: The parts of an action, as driver calls (a replace is a delete, then a create).
PARTS = {"delete": ("delete",), "create": ("create",), "replace": ("delete", "create"),
         "update": ("update",)}


@dataclass(frozen=True)
class Step:
    """One driver call of an action: ``part`` is ``delete``, ``create`` or ``update``."""

    action: Action
    part: str

    @property
    def kind(self) -> str:
        return self.action.kind

    def describe(self) -> str:
        """``create vm vm1``; the halves of a replace say which they are."""
        a = self.action
        text = f"{a.op} {a.kind} {a.name}"
        if a.op == "replace":
            text += " (remove the old)" if self.part == "delete" else " (create the new)"
        return text


def stages(actions: Iterable[Action]) -> list[tuple[Step, ...]]:
    """The driver calls of ``actions`` grouped in the order they run: deletes (and the delete
    half of replaces) by kind in reverse kind order, then creates, the create half of
    replaces and updates by kind in kind order.  Calls in one stage do not depend on each
    other."""
    actions = list(actions)
    out: list[tuple[Step, ...]] = []
    order = sorted({a.kind for a in actions}, key=lambda k: (rank(k), k))
    for kind in reversed(order):
        group = tuple(Step(a, "delete") for a in actions
                      if a.kind == kind and "delete" in PARTS[a.op])
        if group:
            out.append(group)
    for kind in order:
        group = tuple(Step(a, part) for a in actions if a.kind == kind
                      for part in PARTS[a.op] if part != "delete")
        if group:
            out.append(group)
    return out


@dataclass(frozen=True)
class Plan:
    lab: str
    actions: tuple[Action, ...] = ()
    unchanged: int = 0
    desired: tuple[Resource, ...] = field(default=(), repr=False)
    #: what the lab file may not mean (e.g. a policy rule that never matches): path, message
    #: and hint, like validation problems, but nothing is refused
    warnings: tuple[Any, ...] = ()
    #: what apply makes before it acts (``image pg: will be built from Debian packages``)
    notes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.actions

    def count(self, op: str) -> int:
        return sum(1 for a in self.actions if a.op == op)

    def stages(self) -> list[tuple[Step, ...]]:
        """The driver calls in the order apply runs them (see :func:`stages`)."""
        return stages(self.actions)

    def headline(self) -> str:
        if self.empty:
            return f"Plan for lab {self.lab}: no changes ({self.unchanged} resources up to date)"
        parts = [f"{self.count(op)} to {op}" for op in ("create", "replace", "update", "delete")]
        return f"Plan for lab {self.lab}: " + ", ".join(parts)

    def to_text(self) -> str:
        lines = [self.headline()]
        lines += ["  " + a.describe() for a in self.actions]
        lines += ["  " + note for note in self.notes]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return self.to_text()

    def records(self) -> list[dict[str, str]]:
        return [{"op": a.op, "kind": a.kind, "name": a.name,
                 "summary": a.resource.summary if a.resource else "", "reason": a.reason}
                for a in self.actions]

    def _repr_html_(self) -> str:
        from hybridnb.core.tables import table

        from html import escape

        rows = [[_SYMBOL[a.op] + " " + a.op, a.kind, a.name,
                 a.resource.summary if a.resource else "", a.reason] for a in self.actions]
        out = table(["action", "kind", "name", "what", "why"], rows, caption=self.headline(),
                    row_classes=[a.op for a in self.actions])
        if self.notes:
            out += "<ul>" + "".join(f"<li>{escape(n)}</li>" for n in self.notes) + "</ul>"
        if self.warnings:
            out += "<ul>" + "".join(f"<li>warning: {escape(str(w))}</li>"
                                    for w in self.warnings) + "</ul>"
        return out


def diff(lab: str, desired: Iterable[Resource], observed: Mapping[str, Mapping[str, Observation]],
         recorded: Iterable[Key] | Mapping[Key, Mapping[str, Any] | None] = (), *,
         updatable: Iterable[str] = (), delete_reason: str = "no longer in the lab") -> Plan:
    """The plan that makes ``observed`` equal to ``desired``.

    ``recorded``: keys of resources the state remembers, or a mapping from those keys to the
    spec each was created from (``None``: unknown), so a change can be named.
    ``updatable`` lists kinds whose driver changes a resource in place (``update``) instead of
    deleting and re-creating it.
    """
    wanted = {r.key: r for r in sorted(desired, key=Resource.sort_key)}
    specs: Mapping[Key, Mapping[str, Any] | None] = (
        recorded if isinstance(recorded, Mapping) else dict.fromkeys(recorded))
    can_update = set(updatable)
    present: dict[Key, Observation] = {
        (kind, name): seen for kind, names in observed.items() for name, seen in names.items()}
    leftovers = set(specs) | set(present)

    deletes = sorted((k for k in leftovers if k not in wanted), key=lambda k: (-rank(k[0]), k[1]))
    actions = [Action("delete", kind, name, None,
                      delete_reason if (kind, name) in present
                      else "left over from an interrupted run") for kind, name in deletes]

    replaced_kinds: set[str] = set()
    unchanged = 0
    for key, res in wanted.items():
        seen = present.get(key)
        if seen is None:
            actions.append(Action("create", res.kind, res.name, res,
                                  "missing" if key in specs else ""))
            continue
        differs = not seen.running or seen.fingerprint != res.fingerprint
        if res.kind in replaced_kinds:
            actions.append(Action("replace", res.kind, res.name, res, "its parent is replaced"))
        elif not differs:
            unchanged += 1
        else:
            op = "update" if res.kind in can_update and seen.running else "replace"
            reason = NOT_RUNNING if not seen.running else what_changed(
                res, specs.get(key), seen.fingerprint)
            actions.append(Action(op, res.kind, res.name, res, reason))
            if op == "replace":
                replaced_kinds.update(dependents(res.kind))
    return Plan(lab, tuple(actions), unchanged, tuple(wanted.values()))


def changed_paths(old: Any, new: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The paths (key tuples) at which two JSON-like specs differ, sorted."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[tuple[str, ...]] = []
        for key in sorted(set(old) | set(new), key=str):
            out += changed_paths(old.get(key), new.get(key), prefix + (str(key),))
        return out
    return [] if old == new else [prefix]


def explain(kind: str, paths: Iterable[tuple[str, ...]]) -> list[str]:
    """The names a plan gives changed spec paths: an endpoint kind names its fields; other
    resource kinds name the top-level keys (``mtu``, ``records``)."""
    if kind in REGISTRY:
        return REGISTRY[kind].explain(paths)
    return list(dict.fromkeys(p[0] for p in paths if p))


def what_changed(res: Resource, recorded: Mapping[str, Any] | None, seen: str) -> str:
    """``changed: image, command`` when the recorded spec is what the engine holds (its
    fingerprint is the observed one), else ``changed``."""
    if recorded is None or fingerprint(recorded) != seen:
        return "changed"
    names = explain(res.kind, changed_paths(recorded, res.spec))
    return "changed: " + ", ".join(names) if names else "changed"


def destroy_plan(lab: str, observed: Mapping[str, Mapping[str, Observation]],
                 recorded: Iterable[Key] | Mapping[Key, Mapping[str, Any] | None] = ()) -> Plan:
    """Delete everything the lab owns (observed on the engines or recorded in its state)."""
    return diff(lab, (), observed, recorded, delete_reason="destroy")



def rollback_plan(plan: Plan, before: Mapping[str, Mapping[str, Observation]],
                  recorded_before: Mapping[Key, Mapping[str, Any] | None],
                  now: Mapping[str, Mapping[str, Observation]],
                  recorded_now: Iterable[Key] | Mapping[Key, Mapping[str, Any] | None] = (),
                  *, updatable: Iterable[str] = ()) -> Plan:
    """The plan that puts back what a failed run of ``plan`` changed.

    Only the resources ``plan`` acted on are considered.  One that ran before as made from
    its recorded spec (``recorded_before``; its fingerprint is the observed one) is made
    again from that spec; one that did not exist before is removed; one that was broken or
    unknown before (not running, changed behind our back, no recorded spec) is left as it
    is now.  ``before``/``now`` are what the engines showed before the run and show now.
    """
    seen_before = {(k, n): o for k, names in before.items() for n, o in names.items()}
    restore: list[Resource] = []
    scope: set[Key] = set()
    for action in plan.actions:
        key = action.key
        old, spec = seen_before.get(key), recorded_before.get(key)
        if old is None:
            scope.add(key)
        elif spec is not None and old.running and fingerprint(spec) == old.fingerprint:
            restore.append(Resource(action.kind, action.name, dict(spec), "as before"))
            scope.add(key)
    observed = {kind: {n: o for n, o in names.items() if (kind, n) in scope}
                for kind, names in now.items()}
    specs = recorded_now if isinstance(recorded_now, Mapping) else dict.fromkeys(recorded_now)
    return diff(plan.lab, restore, observed, {k: v for k, v in specs.items() if k in scope},
                updatable=updatable, delete_reason="not there before")
