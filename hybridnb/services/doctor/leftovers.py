"""Leftovers: objects carrying hybridnb's marks that no lab state owns.

Every object hybridnb makes carries its lab's mark — a Docker label, libvirt metadata, an
interface alias, an iptables comment, a DNS directory under the state — so the doctor can
list, per engine of the target, every ``(kind, lab, name)`` and compare it with the state
store: an object whose lab has no state, or whose state does not record it, is a leftover (a
crashed run, a state file deleted by hand, a lab applied from another state directory).  For
each the finding prints the command that removes it, and the fix removes it through its
driver's ``delete`` — which removes exactly what that lab made.
"""

from __future__ import annotations

import shlex
from typing import Any

from hybridnb.core import naming
from hybridnb.drivers.base import LabLister
from hybridnb.services.doctor import host
from hybridnb.services.doctor.base import OK, WARN, Check, DoctorContext, Finding

#: Removal order: users before what they use.
ORDER = ("vm", "container", "host", "network", "dns", "firewall", "vxlan", "bridge")


def _owned(ctx: DoctorContext, lab: str, kind: str, name: str) -> bool:
    state = ctx.owned.get(lab)
    if state is None and lab == ctx.lab:
        state = ctx.state
    return state is not None and f"{kind}/{name}" in (state.get("resources") or {})


def _found(ctx: DoctorContext) -> list[tuple[str, str, str]]:
    """Every ``(kind, lab, name)`` the target's engines hold with a hybridnb mark."""
    out: set[tuple[str, str, str]] = set()
    for kind in ("vm", "container", "host", "network"):
        driver = ctx.drivers.get(kind)
        if not isinstance(driver, LabLister):
            continue
        for lab in sorted(driver.labs()):
            out.update((kind, lab, name) for name in driver.observe(lab))
    from hybridnb.drivers.bridge import BridgeMark
    from hybridnb.drivers.vxlan import parse_vxlan_alias

    for link in host.links(ctx).values():       # (a host veth's alias has four fields)
        mark = BridgeMark.parse(link.alias) if "bridge" in ctx.drivers else None
        if mark is not None:
            out.add(("bridge", mark.lab, link.name))
        vx = parse_vxlan_alias(link.alias) if link.kind == "vxlan" else None
        if vx is not None and "vxlan" in ctx.drivers:
            out.add(("vxlan", vx[0], link.name))
    if "firewall" in ctx.drivers:
        out.update(("firewall", lab, bridge) for lab, bridge, _ in _rules(ctx))
    dns = ctx.drivers.get("dns")
    if dns is not None and getattr(dns, "state_dir", None) is not None and dns.state_dir.is_dir():
        for d in sorted(dns.state_dir.iterdir()):
            if (d / "dns").is_dir():
                for name in dns.observe(d.name) or {d.name: ""}:
                    out.add(("dns", d.name, name))
    return sorted(out, key=lambda t: (ORDER.index(t[0]), t[1], t[2]))


def _rules(ctx: DoctorContext) -> list[tuple[str, str, list[str]]]:
    """``(lab, bridge, ["-D", chain, args...])`` for every rule with a hybridnb comment."""
    out = []
    _, rules = host.iptables(ctx)
    for chain, chain_rules in sorted(rules.items()):
        for args in chain_rules:
            comment = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--comment"),
                           "")
            words = comment.split()
            if not words or not words[0].startswith("hybridnb:"):
                continue
            bridge = next((w[5:] for w in words[2:] if w.startswith("jump:")), None)
            bridge = bridge or next((args[i + 1] for i, a in enumerate(args[:-1])
                                     if a == "-i"), "")
            out.append((words[0].split(":", 1)[1], bridge, ["-D", chain, *args]))
    return out


def _command(ctx: DoctorContext, kind: str, lab: str, name: str) -> str:
    t = ctx.target
    obj = naming.object_name(lab, name)
    if kind == "container":
        return f"docker -H {t.docker_url} rm -f {obj}"
    if kind == "network":
        return f"docker -H {t.docker_url} network rm {name}"
    if kind == "vm":
        uri = shlex.quote(t.libvirt_uri or "")
        return f"virsh -c {uri} destroy {obj}; virsh -c {uri} undefine {obj}"
    if kind == "host":
        return (ctx.in_lab_host(["ip", "link", "del", naming.veth_pair(lab, name)[0]])
                + f" && ip netns del {obj}")
    if kind in ("bridge", "vxlan"):
        return ctx.in_lab_host(["ip", "link", "del", name])
    if kind == "firewall":
        return " && ".join(ctx.in_lab_host(["iptables", "-t", "filter", *rule])
                           for rlab, bridge, rule in _rules(ctx) if (rlab, bridge) == (lab, name))
    if kind == "dns":
        d = ctx.drivers["dns"].directory(lab)
        return f"kill $(cat {d}/dns.pid); rm -r {d.parent}"
    return ""


class Leftovers(Check):
    id = "leftovers"
    title = "nothing of hybridnb's is left without an owner"
    group = "leftovers"
    why = ("objects no lab state owns hold names, addresses and bridge ports: a new lab may "
           "collide with them, and nothing will ever remove them")
    needs_lab = False

    def applies(self, ctx: DoctorContext) -> bool:
        return bool(ctx.drivers)

    def leftovers(self, ctx: DoctorContext) -> list[tuple[str, str, str]]:
        return [(k, lab, n) for k, lab, n in _found(ctx) if not _owned(ctx, lab, k, n)]

    def run(self, ctx: DoctorContext) -> Finding:
        left = self.leftovers(ctx)
        if not left:
            return self.finding(OK, "every object with a hybridnb mark belongs to a lab state")
        text = "; ".join(f"{k} {n} of lab {lab}" for k, lab, n in left)
        cmds = [_command(ctx, k, lab, n) for k, lab, n in left]
        return self.finding(WARN, text, fix_command=" && ".join(c for c in cmds if c),
                            fixable=True,
                            data={"leftovers": [list(t) for t in left]})

    def fix(self, ctx: DoctorContext) -> None:
        for kind, lab, name in self.leftovers(ctx):
            ctx.drivers[kind].delete(lab, name)


CHECKS: list[Any] = [Leftovers()]
