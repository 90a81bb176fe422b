"""The creation order of resource kinds, and what a replaced resource takes with it.

Every resource kind has a *stage*: the lab's infrastructure (bridge 10, firewall 20, DNS 90),
each endpoint kind (``Kind.stage``: hosts 40, containers 50, VMs 60), what a kind makes once
per lab (``Kind.shared``: the Docker network 30) and what registered sections compile
(``Section.stages``).  Creation runs in stage order, deletion in reverse; kinds in one stage do
not depend on each other, so their actions may run concurrently.

A replaced bridge replaces everything on it; a replaced resource of a kind that endpoint
kinds ``need`` (the Docker network for containers) replaces their resources, and so does one
of a kind a section's resource kind ``needs`` (an endpoint for link impairments).
"""

from __future__ import annotations

from hybridnb.core.kinds import kinds
from hybridnb.core.sections import extra_sections, generation

#: The lab's own resource kinds and their stages.
INFRA: dict[str, int] = {"bridge": 10, "firewall": 20, "dns": 90}

_cache: dict[int, tuple[str, ...]] = {}


def stages() -> dict[str, int]:
    out = dict(INFRA)
    for kind in kinds():
        out.update(kind.shared)
        out[kind.name] = kind.stage
    for section in extra_sections():
        out.update(section.stages)
    return out


def kind_order() -> tuple[str, ...]:
    """Every resource kind in creation order (deletion runs in reverse)."""
    gen = generation()
    order = _cache.get(gen)
    if order is None:
        order = tuple(k for k, _ in sorted(stages().items(), key=lambda kv: (kv[1], kv[0])))
        _cache.clear()
        _cache[gen] = order
    return order


def rank(kind: str) -> int:
    """Position of ``kind`` in :func:`kind_order` (unknown kinds last)."""
    order = kind_order()
    return order.index(kind) if kind in order else len(order)


def dependents(kind: str) -> tuple[str, ...]:
    """Resource kinds replaced together with a replaced resource of ``kind``."""
    order = kind_order()
    if kind == "bridge":
        return tuple(k for k in order if k != "bridge")
    out = [k.name for k in kinds() if kind in k.needs]
    out += [rk for s in extra_sections() for rk, needs in s.needs.items() if kind in needs]
    return tuple(out)


__all__ = ["INFRA", "dependents", "kind_order", "rank", "stages"]
