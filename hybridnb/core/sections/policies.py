"""The ``policies:`` section: who may talk to whom on the lab bridge, compiled to nftables.

::

    policies:
      default: allow                                   # or deny
      rules:
        - {from: frontend, to: data, allow: [tcp/5432]}
        - {from: any, to: data, deny: all}

The rules are validated with the groups and the endpoints when the file is read
(:func:`hybridnb.core.policy.parse_policy`: every problem with its path and a hint).  Rules
that can never match because earlier rules decide all their flows are not errors but
*warnings*, with the rule numbers: :attr:`PolicySpec.warnings`, shown by ``plan`` and
``Lab.warnings()``.

The section compiles to one resource of kind ``policy`` named after the lab — the nftables
table ``inet hnb-<lab>`` (:mod:`hybridnb.core.nftables`) — created right after the firewall
rule (stage 25), before any endpoint, so no endpoint is ever up without its policy.  A changed
policy is one atomic table replacement (the policy driver's ``update``), never a delete and a
create.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from hybridnb.core.problems import Collector
from hybridnb.core.sections import Section
from hybridnb.core.sections.groups import validate_policy
from hybridnb.errors import Problem

if TYPE_CHECKING:  # pragma: no cover
    from hybridnb.core.kinds.base import CompileContext
    from hybridnb.core.policy import Policy
    from hybridnb.core.resource import Resource
    from hybridnb.core.spec import LabSpec

#: Where the policy table is made: after the firewall rule (20), before the Docker network
#: and the endpoints (30+).
STAGE = 25


@dataclass(frozen=True)
class PolicySpec:
    """The ``policies:`` section: as written (``raw``) and validated (``policy``, whose
    members carry the addresses written in the lab file; :meth:`compiled` gives it the
    allocated ones)."""

    raw: Mapping[str, Any]
    policy: Policy

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return self.policy.warnings


class PoliciesSection(Section):
    key = "policies"
    help = ("`default: allow|deny` and `rules:` (first match wins, stateful): `{from: SEL, to: "
            "SEL, allow|deny: [tcp/PORT, udp/PORT, http[/PORT], tcp/LOW-HIGH, icmp, all]}`; "
            "selectors: endpoints, groups, `any`, `hosts`, `containers`, `vms`, `label:K=V`, "
            "`gateway` (in `to:`); DNS to the gateway is allowed unless a rule says otherwise; "
            "enforced by one nftables table per lab (see [policies](policies.md))")
    order = 41
    stages = {"policy": STAGE}

    def parse(self, c: Collector, raw: Any, parsed: Mapping[str, Any]) -> PolicySpec | None:
        if raw is None:
            return None
        policy = validate_policy(c, parsed.get("groups"), raw, parsed)
        if policy is None:
            return None
        return PolicySpec(copy.deepcopy(dict(raw)), policy)

    def dump(self, value: PolicySpec | None) -> Any:
        return None if value is None else copy.deepcopy(dict(value.raw))

    def compile(self, lab: LabSpec, ctx: CompileContext) -> list[Resource]:
        value = lab.sections.get(self.key)
        if value is None:
            return []
        return [policy_resource_of(lab.name, value.policy, ctx)]


def policy_of(lab: LabSpec, addresses: Mapping[str, Any]) -> Policy | None:
    """The lab's policy over its allocated ``addresses`` (None: the lab has no policies)."""
    value = lab.sections.get("policies")
    return None if value is None else value.policy.with_addresses(addresses)


def policy_resource_of(lab: str, policy: Policy, ctx: CompileContext) -> Resource:
    from hybridnb.core.nftables import policy_body, policy_resource

    net = ctx.network
    enforced = policy.with_addresses(ctx.addresses)
    body = policy_body(enforced, lab=lab, bridge=net.bridge, gateway=str(net.gateway))
    return policy_resource(lab, body, bridge=net.bridge, gateway=str(net.gateway),
                           rules=len(enforced.rules), default=enforced.default)


SECTION = PoliciesSection()
