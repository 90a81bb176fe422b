"""Kernel settings of the lab host that decide whether bridged traffic flows.

* ``forward-drop`` — with ``bridge-nf-call-iptables=1`` every frame bridged between two ports
  passes iptables' FORWARD chain; dockerd sets its policy to DROP, so unless a rule accepts
  ``-i BR -o BR`` first, VMs and namespace hosts cannot reach anyone.  The check follows the
  chain as a frame from one port of the bridge to another would (jumps into user chains,
  RETURN, rules that match only on ``-i``/``-o``; rules with other conditions are skipped)
  and names the verdict and what gave it.  Fix: the lab's own accept rule.
* ``br-netfilter`` — whether bridged frames reach iptables/nftables at all.
* ``ip-forward`` — the lab host's routing (Docker wants it; bridged traffic does not).
* ``neighbour-cap`` — every namespace endpoint learns its neighbours in the *machine's* one
  neighbour table, capped at ``gc_thresh3``: a full mesh of N endpoints needs about N² entries.
"""

from __future__ import annotations

from typing import Any

from hybridnb.services.doctor import host
from hybridnb.services.doctor.base import FAIL, OK, WARN, Check, DoctorContext, Finding

BNF = "net.bridge.bridge-nf-call-iptables"


def _iface_match(args: list[str], flag: str, bridge: str) -> bool | None:
    """True/False when the rule's ``-i``/``-o`` matches or not; None when it has none."""
    for i, word in enumerate(args):
        if word == flag and i + 1 < len(args):
            negated = i > 0 and args[i - 1] == "!"
            name = args[i + 1]
            hit = name == bridge or (name.endswith("+") and bridge.startswith(name[:-1]))
            return hit != negated
    return None


def _unconditional(args: list[str]) -> bool:
    """True when the rule has no conditions besides -i, -o and a comment."""
    skip = 0
    for i, word in enumerate(args):
        if skip:
            skip -= 1
            continue
        if word in ("-i", "-o", "-j", "-g", "--comment"):
            skip = 1
        elif word == "-m" and i + 1 < len(args) and args[i + 1] == "comment":
            skip = 1
        elif word != "!":
            return False
    return True


def _target(args: list[str]) -> str | None:
    for flag in ("-j", "-g"):
        if flag in args:
            return args[args.index(flag) + 1]
    return None


def forward_verdict(policies: dict[str, str], rules: dict[str, list[list[str]]],
                    bridge: str) -> tuple[str, str]:
    """``("accept"|"drop", what decided)`` for a frame bridged from one port of ``bridge``
    to another, passing the FORWARD chain."""
    def walk(chain: str, depth: int) -> tuple[str, str] | None:
        for args in rules.get(chain, []):
            if _iface_match(args, "-i", bridge) is False or \
                    _iface_match(args, "-o", bridge) is False or not _unconditional(args):
                continue
            target = _target(args)
            text = f"-A {chain} " + " ".join(args)
            if target == "ACCEPT":
                return "accept", text
            if target in ("DROP", "REJECT"):
                return "drop", text
            if target == "RETURN":
                return None
            if target in rules and depth < 8:
                got = walk(target, depth + 1)
                if got is not None:
                    return got
        return None

    got = walk("FORWARD", 0)
    if got is not None:
        return got
    policy = policies.get("FORWARD", "ACCEPT")
    return ("accept" if policy == "ACCEPT" else "drop"), f"FORWARD policy {policy}"


class ForwardDrop(Check):
    id = "forward-drop"
    title = "bridged frames pass the FORWARD chain"
    group = "kernel"
    why = ("with bridge-nf-call-iptables=1 every frame between two ports of the lab bridge "
           "passes iptables FORWARD; Docker sets its policy to DROP, so VMs and hosts on the "
           "bridge cannot reach anyone unless a rule accepts the bridge first")

    def run(self, ctx: DoctorContext) -> Finding:
        bridge = _bridge(ctx)
        bnf = host.sysctl(ctx, BNF)
        if bnf != "1":
            state = "absent (br_netfilter not loaded)" if bnf is None else f"{bnf}"
            return self.finding(OK, f"{BNF} is {state}: bridged frames skip iptables")
        policies, rules = host.iptables(ctx)
        verdict, what = forward_verdict(policies, rules, bridge)
        if verdict == "accept":
            return self.finding(OK, f"frames between ports of {bridge} are accepted ({what})")
        argv = self._rule(ctx, bridge, policies, rules)
        return self.finding(FAIL, f"frames between ports of {bridge} are dropped ({what}); "
                            f"{BNF}=1 and no rule accepts -i {bridge} -o {bridge}",
                            fix_command=ctx.in_lab_host(argv), fixable=bool(ctx.lab),
                            data={"verdict": verdict, "by": what})

    @staticmethod
    def _rule(ctx: DoctorContext, bridge: str, policies: dict[str, str],
              rules: dict[str, list[list[str]]]) -> list[str]:
        fw = ctx.resource("firewall")
        comment = f"hybridnb:{ctx.lab}" + (f" {fw.fingerprint}" if fw is not None else "")
        jumped = any(_target(a) == "DOCKER-USER" and _unconditional(a)
                     for a in rules.get("FORWARD", []))
        chain = "DOCKER-USER" if jumped and "DOCKER-USER" in policies else "FORWARD"
        return ["iptables", "-w", "10", "-t", "filter", "-I", chain, "1", "-i", bridge, "-o",
                bridge, "-m", "comment", "--comment", comment, "-j", "ACCEPT"]

    def fix(self, ctx: DoctorContext) -> None:
        policies, rules = host.iptables(ctx)
        host.run(ctx, self._rule(ctx, _bridge(ctx), policies, rules))


class BrNetfilter(Check):
    id = "br-netfilter"
    title = "br_netfilter (bridged frames seen by iptables/nftables)"
    group = "kernel"
    why = ("east-west policies in an inet table see bridged IPv4 only through br_netfilter "
           "(bridge-nf-call-iptables=1); with it, iptables FORWARD decides too")

    def run(self, ctx: DoctorContext) -> Finding:
        value = host.sysctl(ctx, BNF)
        needs = any(r.kind == "policy" for r in ctx.resources)
        if value is None:
            status = WARN if needs else OK
            return self.finding(status, "br_netfilter is not loaded: bridged frames bypass "
                                "iptables and nftables' inet hooks",
                                fix_command="modprobe br_netfilter")
        if value != "1" and needs:
            return self.finding(WARN, f"{BNF}={value}: the lab's policies cannot see bridged "
                                "frames", fix_command=ctx.in_lab_host(
                                    ["sysctl", "-w", f"{BNF}=1"]), fixable=bool(ctx.netns))
        return self.finding(OK, f"{BNF}={value} in the lab host")

    def fix(self, ctx: DoctorContext) -> None:
        _write_lab_sysctl(ctx, BNF, "1")


class IpForward(Check):
    id = "ip-forward"
    title = "the lab host routes (net.ipv4.ip_forward)"
    group = "kernel"
    why = ("bridged traffic does not need it, but Docker does (published ports, traffic "
           "leaving the bridge); dockerd turns it on when it starts")
    key = "net.ipv4.ip_forward"

    def run(self, ctx: DoctorContext) -> Finding:
        value = host.sysctl(ctx, self.key)
        if value == "1":
            return self.finding(OK, f"{self.key}=1 in the lab host")
        containers = any(r.kind == "container" for r in ctx.resources)
        return self.finding(WARN if containers else OK,
                            f"{self.key}={value} in the lab host"
                            + ("" if containers else " (the lab has no containers)"),
                            fix_command=ctx.in_lab_host(["sysctl", "-w", f"{self.key}=1"]),
                            fixable=bool(ctx.netns) and containers)

    def fix(self, ctx: DoctorContext) -> None:
        _write_lab_sysctl(ctx, self.key, "1")


def _write_lab_sysctl(ctx: DoctorContext, key: str, value: str) -> None:
    """Set a sysctl in the lab host — never in the machine's own namespace."""
    from hybridnb.drivers.nsutil import write_sysctl
    from hybridnb.errors import HybridError

    if not ctx.netns:
        raise HybridError(f"not changing {key} of the machine itself",
                          hint="run the printed command yourself if you mean it")
    write_sysctl(ctx.netns, key, value)


class NeighbourCap(Check):
    id = "neighbour-cap"
    title = "neighbour table big enough for the lab"
    group = "kernel"
    why = ("the kernel keeps one neighbour (ARP) table for the whole machine, capped at "
           "gc_thresh3; namespace endpoints that talk to each other need about N² entries, "
           "and past the cap new neighbours fail (probes pin entries, real traffic cannot)")

    def run(self, ctx: DoctorContext) -> Finding:
        cap = int(host.machine_sysctl(ctx, "net.ipv4.neigh.default.gc_thresh3") or 1024)
        eps = ctx.endpoints()
        learners = 1 + sum(1 for r in eps if r.kind != "vm")     # VMs have their own kernel
        need = learners * len(eps)
        entries, fulls = host.reader(ctx).arp_cache()
        found = (f"the lab needs up to {need} entries ({learners} namespaces x {len(eps)} "
                 f"endpoints); gc_thresh3 is {cap}; {entries} in use machine-wide, "
                 f"{fulls} table-full events since boot")
        data = {"need": need, "cap": cap, "entries": entries, "table_fulls": fulls}
        if need <= cap:
            return self.finding(OK, found, data=data)
        target = 1 << (2 * need - 1).bit_length()
        cmd = (f"sysctl -w net.ipv4.neigh.default.gc_thresh3={target} "
               f"net.ipv4.neigh.default.gc_thresh2={target // 2}")
        return self.finding(WARN, found + " — smaller than the lab needs", fix_command=cmd,
                            data=data)


def arp_cache_stats() -> tuple[int, int]:
    """(entries, table_fulls) from /proc/net/stat/arp_cache (machine-wide numbers)."""
    try:
        with open("/proc/net/stat/arp_cache") as f:
            head, first = f.readline().split(), f.readline().split()
    except OSError:
        return 0, 0
    row = dict(zip(head, first))
    return int(row.get("entries", "0"), 16), int(row.get("table_fulls", "0"), 16)


def _bridge(ctx: DoctorContext) -> str:
    res = ctx.resource("bridge")
    assert res is not None
    return str(res.spec["bridge"])


CHECKS: list[Any] = [ForwardDrop(), BrNetfilter(), IpForward(), NeighbourCap()]
