"""The ``groups:`` section: named sets of endpoints that policies talk about.

::

    groups:
      frontend: [web, api]                  # by name: endpoints, other groups, selectors
      data: {labels: {tier: data}}          # by the endpoints' labels (members: and labels: unite)

A group is checked against the lab's endpoints as soon as the file is read — an unknown
member, a cycle, a name that clashes with an endpoint or a built-in selector is a problem with
its path (``groups.frontend[1]``) and a hint — whether or not a ``policies:`` section uses it
(:mod:`hybridnb.core.sections.policies`).  The value kept in ``LabSpec.sections["groups"]`` is
the section as written; :func:`hybridnb.core.policy.parse_policy` resolves it.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

from hybridnb.core.problems import Collector
from hybridnb.core.sections import Section
from hybridnb.errors import ValidationError


def members_at_parse(endpoints: Any) -> dict[str, Any]:
    """Policy members of parsed endpoints (addresses as written; allocation comes later)."""
    from hybridnb.core.policy import members_of

    eps = tuple(endpoints or ())
    return members_of(eps, {ep.name: ep.address or "" for ep in eps})


def validate_policy(c: Collector, groups: Any, policies: Any,
                    parsed: Mapping[str, Any]) -> Any:
    """:func:`~hybridnb.core.policy.parse_policy` over the parsed endpoints; its problems go
    to ``c`` (the same problem reported by two sections is listed once).  The Policy, or
    None."""
    from hybridnb.core.kinds import KINDS
    from hybridnb.core.policy import parse_policy

    try:
        return parse_policy(groups, policies, members_at_parse(parsed.get("endpoints")),
                            kinds=KINDS)
    except ValidationError as exc:
        c.problems.extend(exc.problems)
        return None


class GroupsSection(Section):
    key = "groups"
    help = ("named sets of endpoints for policies: a list of endpoints, groups and selectors, "
            "or `{members: [...], labels: {K: V}}`")
    order = 40

    def parse(self, c: Collector, raw: Any, parsed: Mapping[str, Any]) -> Any:
        if raw is None:
            return None
        validate_policy(c, raw, None, parsed)
        return copy.deepcopy(raw) if isinstance(raw, Mapping) else None

    def dump(self, value: Any) -> Any:
        return copy.deepcopy(dict(value)) if value else None


SECTION = GroupsSection()
