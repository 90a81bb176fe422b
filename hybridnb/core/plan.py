"""Plans: the ordered actions that turn what exists into what the lab file asks for.

``diff(lab, desired, observed, recorded)`` compares the resources compiled from the lab spec
with what the engines report (``observed``: kind → {name: fingerprint}) and what the persisted
state says was attempted (``recorded``: keys of resources whose creation started, even if a
crash stopped it half way).  The result is deterministic:

1. deletes of resources that exist (or were recorded) but are no longer wanted, in reverse
   kind order (endpoints before the network before the bridge);
2. creates, replaces and in-place updates, in kind order (bridge, firewall, network, hosts,
   containers, VMs, DNS).

A replaced bridge replaces everything on it; a replaced Docker network replaces its
containers.  Re-planning an unchanged, healthy lab yields no action at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from hybridnb.core.resource import KIND_ORDER, Resource

OPS = ("delete", "create", "replace", "update")
_SYMBOL = {"create": "+", "delete": "-", "replace": "~", "update": "^"}

#: When a resource of the key kind is replaced, resources of these kinds go with it.
_DEPENDENTS: dict[str, tuple[str, ...]] = {
    "bridge": ("firewall", "network", "host", "container", "vm", "dns"),
    "network": ("container",),
}


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


@dataclass(frozen=True)
class Plan:
    lab: str
    actions: tuple[Action, ...] = ()
    unchanged: int = 0
    desired: tuple[Resource, ...] = field(default=(), repr=False)

    @property
    def empty(self) -> bool:
        return not self.actions

    def count(self, op: str) -> int:
        return sum(1 for a in self.actions if a.op == op)

    def headline(self) -> str:
        if self.empty:
            return f"Plan for lab {self.lab}: no changes ({self.unchanged} resources up to date)"
        parts = [f"{self.count(op)} to {op}" for op in ("create", "replace", "update", "delete")]
        return f"Plan for lab {self.lab}: " + ", ".join(parts)

    def to_text(self) -> str:
        lines = [self.headline()]
        lines += ["  " + a.describe() for a in self.actions]
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
        from hybridnb.render.html import table

        rows = [[_SYMBOL[a.op] + " " + a.op, a.kind, a.name,
                 a.resource.summary if a.resource else "", a.reason] for a in self.actions]
        return table(["action", "kind", "name", "what", "why"], rows, caption=self.headline(),
                     row_classes=[a.op for a in self.actions])


def diff(lab: str, desired: Iterable[Resource], observed: Mapping[str, Mapping[str, str]],
         recorded: Iterable[tuple[str, str]] = (), *,
         updatable: Iterable[str] = (), delete_reason: str = "no longer in the lab") -> Plan:
    """The plan that makes ``observed`` equal to ``desired``.

    ``updatable`` lists kinds whose driver changes a resource in place (``update``) instead of
    deleting and re-creating it.
    """
    wanted = {r.key: r for r in sorted(desired, key=Resource.sort_key)}
    can_update = set(updatable)
    present: dict[tuple[str, str], str] = {}
    for kind, names in observed.items():
        for name, fp in names.items():
            present[(kind, name)] = fp
    leftovers = set(recorded) | set(present)

    deletes = sorted((k for k in leftovers if k not in wanted),
                     key=lambda k: (-_order(k[0]), k[1]))
    actions = [Action("delete", kind, name, None,
                      delete_reason if (kind, name) in present
                      else "left over from an interrupted run") for kind, name in deletes]

    replaced_kinds: set[str] = set()
    unchanged = 0
    for key, res in wanted.items():
        fp = present.get(key)
        if fp is None:
            reason = "missing" if key in set(recorded) else ""
            actions.append(Action("create", res.kind, res.name, res, reason))
        elif fp != res.fingerprint:
            if res.kind in replaced_kinds:
                actions.append(Action("replace", res.kind, res.name, res, "its parent is replaced"))
                continue
            op = "update" if res.kind in can_update and not fp.endswith(":stopped") else "replace"
            reason = "not running" if fp.endswith(":stopped") else "changed"
            actions.append(Action(op, res.kind, res.name, res, reason))
            if op == "replace":
                replaced_kinds.update(_DEPENDENTS.get(res.kind, ()))
        elif res.kind in replaced_kinds:
            actions.append(Action("replace", res.kind, res.name, res, "its parent is replaced"))
        else:
            unchanged += 1
    return Plan(lab, tuple(actions), unchanged, tuple(wanted.values()))


def destroy_plan(lab: str, observed: Mapping[str, Mapping[str, str]],
                 recorded: Iterable[tuple[str, str]] = ()) -> Plan:
    """Delete everything the lab owns (observed on the engines or recorded in its state)."""
    return diff(lab, (), observed, recorded, delete_reason="destroy")


def _order(kind: str) -> int:
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
