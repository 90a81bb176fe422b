"""Policies and link impairments: the kernel features they rely on, and the drops they cause.

These checks run for a lab that has a ``policies:`` or ``links:`` section:

* ``policy-kernel`` — what nftables offers in the lab host: libnftables, br_netfilter
  (``bridge-nf-call-iptables=1``: bridged IPv4 passes the IPv4 hooks, which is how the lab's
  ``inet`` table sees east-west traffic), an ``inet`` table on the forward hook with conntrack
  (stateful rules), and the bridge family with ``numgen`` (loss).  Each is a kernel-validated
  dry run; nothing is made.
* ``link-kernel`` — the qdiscs this kernel has (tbf, netem, IFB with ingress redirection),
  tried in a throwaway namespace, and which of the lab's impairments this host cannot give.
* ``policy-table`` — the policy is enforced: the lab's table is in the kernel with the
  fingerprint of the policy the lab file says.  Fix: the policy is replaced (one transaction).
* ``policy-drops`` — a drop that comes from the policy, explained: the packets each deny rule
  (and a deny default) dropped since the last change, with the rule; a flow that fails because
  of them is the policy at work, not a fault, and ``hybridnb policy LAB FROM TO PROTO/PORT``
  names the rule that decides it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from hybridnb.core.resource import Resource
from hybridnb.services.doctor import host
from hybridnb.services.doctor.base import FAIL, OK, WARN, Check, DoctorContext, Finding

BNF = "net.bridge.bridge-nf-call-iptables"


def _has(ctx: DoctorContext, *kinds: str) -> bool:
    return any(r.kind in kinds for r in ctx.resources)


def _links(ctx: DoctorContext) -> list[Resource]:
    return [r for r in ctx.resources if r.kind == "link"]


class _PolicyCheck(Check):
    group = "policy"

    def applies(self, ctx: DoctorContext) -> bool:
        return _has(ctx, "policy", "link")


class PolicyKernel(_PolicyCheck):
    id = "policy-kernel"
    title = "the kernel features policies and loss rely on"
    why = ("the lab's policy is an inet nftables table on the forward and input hooks: it sees "
           "traffic between endpoints only when bridged IPv4 passes the IPv4 hooks "
           "(br_netfilter), and it is stateful through conntrack; loss is an nftables rule of "
           "the bridge family with numgen")

    def run(self, ctx: DoctorContext) -> Finding:
        from hybridnb.services.doctor import host

        features = ctx.cached("nft-features", lambda: host.reader(ctx).nft_features())
        needed = {"libnftables"}
        if _has(ctx, "policy"):
            needed |= {"br_netfilter", "nft inet forward + conntrack"}
        if any(r.spec.get("loss") for r in _links(ctx)):
            needed.add("nft bridge numgen")
        missing = [f for f in features if not f.ok and f.name in needed]
        listing = "; ".join(f"{f.name}: {'yes' if f.ok else 'no'} ({f.detail})"
                            for f in features)
        data = {f.name: f.ok for f in features}
        if not missing:
            return self.finding(OK, listing, data=data)
        fix = ""
        if any(f.name == "br_netfilter" for f in missing):
            fix = f"modprobe br_netfilter && {ctx.in_lab_host(['sysctl', '-w', f'{BNF}=1'])}"
        elif any(f.name == "libnftables" for f in missing):
            fix = "apt-get install nftables"
        names = ", ".join(f.name for f in missing)
        return self.finding(FAIL, f"missing what this lab needs: {names} — {listing}",
                            fix_command=fix, data=data)


class LinkKernel(_PolicyCheck):
    id = "link-kernel"
    title = "the qdiscs impairments rely on"
    why = ("rate needs tbf and IFB devices (with ingress redirection) to shape both directions; "
           "delay and jitter need netem — on the host for containers and hosts, or inside a "
           "VM's guest; a kernel without netem cannot delay a container")

    def applies(self, ctx: DoctorContext) -> bool:
        return bool(_links(ctx))

    def run(self, ctx: DoctorContext) -> Finding:
        from hybridnb.core.impairments import Impairment, placement
        from hybridnb.drivers.impairments import capabilities_of

        features = ctx.cached("tc-features", host.reader(ctx).tc_features)
        caps = capabilities_of(features)
        listing = "; ".join(f"{f.name}: {'yes' if f.ok else 'no'}" for f in features)
        problems = []
        for res in _links(ctx):
            spec = res.spec
            guest = replace(caps, guest_netem=bool(spec.get("guest_netem")))
            _, probs = placement(Impairment.from_spec(spec["endpoint"], spec), spec["kind"],
                                 guest)
            problems += probs
        data = {f.name: f.ok for f in features}
        if not problems:
            return self.finding(OK, f"{listing}; every impairment of the lab can be given here",
                                data=data)
        lines = "; ".join(f"{p.path}: {p.message}" for p in problems)
        return self.finding(FAIL, f"{listing}; this host cannot give: {lines}",
                            why=problems[0].hint or self.why, data=data)


class PolicyEnforced(_PolicyCheck):
    id = "policy-table"
    title = "the policy is enforced"
    why = ("without the lab's nftables table (or with an older one) the traffic between "
           "endpoints is not filtered as the lab file says")

    def applies(self, ctx: DoctorContext) -> bool:
        return _has(ctx, "policy")

    def _resource(self, ctx: DoctorContext) -> Resource:
        res = ctx.resource("policy")
        assert res is not None
        return res

    def run(self, ctx: DoctorContext) -> Finding:
        res = self._resource(ctx)
        driver = ctx.drivers.get("policy")
        if driver is None:
            return self.finding(WARN, "this backend has no policy driver: nothing is enforced")
        seen = driver.observe(ctx.lab).get(res.name)
        table = res.spec["table"]
        if seen is None:
            return self.finding(FAIL, f"table inet {table} is missing: the policy is not "
                                      "enforced", fix_command=f"hybridnb apply {ctx.lab}",
                                fixable=True)
        if seen.fingerprint != res.fingerprint:
            return self.finding(FAIL, f"table inet {table} holds another version of the policy "
                                      f"({seen.fingerprint}, the lab file says "
                                      f"{res.fingerprint})", fix_command=f"hybridnb apply "
                                f"{ctx.lab}", fixable=True)
        return self.finding(OK, f"table inet {table} enforces the policy ({res.summary})")

    def fix(self, ctx: DoctorContext) -> None:
        ctx.drivers["policy"].update(ctx.lab, self._resource(ctx))


def _rules_of(ctx: DoctorContext) -> Mapping[int, str]:
    """Rule number → ``from -> to deny services`` from the lab description in the state."""
    from hybridnb.core.spec import parse_lab
    from hybridnb.errors import HybridError

    try:
        spec = parse_lab(ctx.state.get("spec") or {})
    except HybridError:
        return {}
    value = spec.sections.get("policies")
    return {} if value is None else {r.number: r.describe() for r in value.policy.rules}


class PolicyDrops(_PolicyCheck):
    id = "policy-drops"
    title = "drops that come from the policy"
    why = ("a flow that fails because a deny rule (or a deny default) drops it is the policy at "
           "work, not a fault; `hybridnb policy LAB FROM TO PROTO/PORT` names the rule that "
           "decides a flow")

    def applies(self, ctx: DoctorContext) -> bool:
        return _has(ctx, "policy")

    def run(self, ctx: DoctorContext) -> Finding:
        from hybridnb.drivers.base import RuleCounters

        driver = ctx.drivers.get("policy")
        if not isinstance(driver, RuleCounters):
            return self.finding(OK, "this backend counts no packets")
        counters = driver.counters(ctx.lab or "")
        res = ctx.resource("policy")
        deny = _deny_keys(res.spec["body"] if res is not None else [])
        dropped = {k: counters.get(k, (0, 0))[0] for k in deny}
        dropped = {k: n for k, n in dropped.items() if n}
        if not dropped:
            return self.finding(OK, "the policy dropped nothing since its last change",
                                data={"dropped": {}})
        rules = _rules_of(ctx)
        parts = []
        for key, n in sorted(dropped.items(), key=lambda kv: -kv[1]):
            number = int(key.split()[1]) if key.startswith("rule ") else None
            what = f" ({rules[number]})" if number in rules else ""
            parts.append(f"{key}{what}: {n}")
        total = sum(dropped.values())
        return self.finding(OK, f"the policy dropped {total} packet{'s' if total != 1 else ''} "
                                f"since its last change — {'; '.join(parts)}",
                            data={"dropped": dropped})


def _deny_keys(body: Any) -> set[str]:
    """Comments (``rule N``, ``default``) of the table's rules that drop."""
    out = set()
    for cmd in body or []:
        rule = cmd.get("add", {}).get("rule") if isinstance(cmd, Mapping) else None
        if rule and any("drop" in e for e in rule.get("expr", [])):
            out.add(str(rule.get("comment", "")))
    return out


CHECKS = [PolicyKernel(), LinkKernel(), PolicyEnforced(), PolicyDrops()]

__all__ = ["CHECKS", "LinkKernel", "PolicyDrops", "PolicyEnforced", "PolicyKernel"]
