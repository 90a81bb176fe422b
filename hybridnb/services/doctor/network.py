"""The lab's wire: the bridge, MTUs, routes, and who answers for each address.

* ``bridge`` — the bridge exists in the lab host, is up and carries the gateway address;
* ``mtu`` — the bridge has the planned MTU and every port the bridge's (a smaller port drags
  the bridge down or drops big frames; a future VXLAN port needs 50 bytes of headroom on its
  underlay: :data:`HEADROOM` is where that goes);
* ``route-overlap`` — a route in the lab host, not on the bridge, that overlaps the subnet
  steals part of the lab's addresses;
* ``duplicate-address`` — one ARP sweep from the gateway (:mod:`.arp`): an address answered by
  two MACs, and the bridge port the intruder hangs on (from the bridge's FDB);
* ``endpoint-identity`` — each running endpoint answers for its address with its own MAC, and
  (hosts, containers) carries the planned address on its ``eth0``.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from hybridnb.drivers.base import NamespaceSource
from hybridnb.services.doctor import host
from hybridnb.services.doctor.base import FAIL, OK, WARN, Check, DoctorContext, Finding

#: Extra MTU a port of this kind needs on its underlay (VXLAN: outer Ethernet+IP+UDP+VXLAN).
HEADROOM: dict[str, int] = {"vxlan": 50}


def _bridge_spec(ctx: DoctorContext) -> Any:
    res = ctx.resource("bridge")
    assert res is not None
    return res.spec


def ports(ctx: DoctorContext) -> Any:
    """The lab's :class:`~hybridnb.services.ports.PortMap` (cached)."""
    from hybridnb.services.ports import resolve_ports

    return ctx.cached("ports", lambda: resolve_ports(ctx.view(), host.links(ctx)))


def _addresses(netns: str | None, ifname: str | None = None,
               index: int | None = None) -> set[str]:
    from hybridnb.drivers import nsutil

    with nsutil.iproute(netns) as ipr:
        if index is None:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                return set()
            index = found[0]
        return {f"{a.get('address')}/{a['prefixlen']}" for a in ipr.get_addr(family=2,
                                                                              index=index)}


class Bridge(Check):
    id = "bridge"
    title = "the lab bridge is up with the gateway address"
    group = "network"
    why = "every endpoint hangs off the bridge; the gateway address is where DNS answers"

    def run(self, ctx: DoctorContext) -> Finding:
        spec = _bridge_spec(ctx)
        name, address = spec["bridge"], spec["address"]
        link = host.link_named(ctx, name)
        cmd = f"hybridnb apply {ctx.lab}"
        if link is None:
            return self.finding(FAIL, f"bridge {name} does not exist in the lab host",
                                fix_command=cmd, fixable=True)
        problems = []
        if link.operstate not in ("up", "unknown"):
            problems.append(f"it is {link.operstate}")
        if address is None:                # a lab over hosts: the gateway is the primary's
            address = "no address (the gateway is on the primary host)"
        elif address not in (have := host.reader(ctx).link_addresses(name)):
            problems.append(f"it lacks the gateway address {address} (has "
                            f"{', '.join(sorted(have)) or 'none'})")
        if problems:
            return self.finding(FAIL, f"bridge {name}: " + "; ".join(problems),
                                fix_command=cmd, fixable=True)
        n = sum(1 for lk in host.links(ctx).values() if lk.master == link.index)
        return self.finding(OK, f"bridge {name} is {link.operstate} with {address}, {n} ports")

    def fix(self, ctx: DoctorContext) -> None:
        res = ctx.resource("bridge")
        ctx.drivers["bridge"].create(ctx.lab, res)


def declared_mtus(ctx: DoctorContext) -> dict[str, int]:
    """Endpoint → the MTU its link declares (``links: {web: {mtu: 1400}}`` sets both ends of
    that endpoint's link, its bridge port included)."""
    return {r.name: int(r.spec["mtu"]) for r in ctx.resources
            if r.kind == "link" and r.spec.get("mtu")}


class Mtu(Check):
    id = "mtu"
    title = "bridge and ports share one MTU"
    group = "network"
    why = ("a port with a smaller MTU silently drops the big frames others send it (or pulls "
           "the bridge's MTU down); VXLAN will need 50 bytes of headroom on its underlay")

    def _mismatches(self, ctx: DoctorContext
                    ) -> tuple[Any, int, list[tuple[Any, str, int]]]:
        """The bridge, the lab's MTU, and each port off its MTU: (link, why, what it wants)."""
        spec = _bridge_spec(ctx)
        link = host.link_named(ctx, spec["bridge"])
        want = int(spec.get("mtu") or 1500)
        names = {p.ifindex: p.endpoint for p in ports(ctx).ports.values()}
        declared = declared_mtus(ctx)
        bad = []
        for lk in sorted(host.links(ctx).values(), key=lambda x: x.name):
            who = names.get(lk.index)
            wanted = declared.get(who or "", want)
            if link is not None and lk.master == link.index and lk.mtu != wanted:
                bad.append((lk, f"port {lk.name} ({who or 'not a lab endpoint'}) has MTU "
                                f"{lk.mtu}" + (f", its link declares {wanted}"
                                               if wanted != want else ""), wanted))
        return link, want, bad

    def run(self, ctx: DoctorContext) -> Finding:
        link, want, bad = self._mismatches(ctx)
        if link is None:
            return self.finding(WARN, "not checked: the bridge is missing")
        owned = not _bridge_spec(ctx).get("adopt")
        msgs = [m for _, m, _ in bad]
        cmds = [ctx.in_lab_host(["ip", "link", "set", "dev", lk.name, "mtu", str(mtu)])
                for lk, _, mtu in bad]
        if link.mtu != want:
            msgs.insert(0, f"bridge {link.name} has MTU {link.mtu}, the lab wants {want}")
            if owned:
                cmds.insert(0, ctx.in_lab_host(["ip", "link", "set", "dev", link.name, "mtu",
                                                str(want)]))
        if not msgs:
            own = "".join(f"; {n}'s link {m}, as declared" for n, m in
                          sorted(declared_mtus(ctx).items()))
            return self.finding(OK, f"bridge {link.name} and its ports all have MTU {want}"
                                + own)
        return self.finding(FAIL, "; ".join(msgs), fix_command=" && ".join(cmds),
                            fixable=bool(cmds), data={"want": want})

    def fix(self, ctx: DoctorContext) -> None:
        from hybridnb.drivers import nsutil

        link, want, bad = self._mismatches(ctx)
        with nsutil.iproute(ctx.netns) as ipr:
            if link is not None and link.mtu != want and not _bridge_spec(ctx).get("adopt"):
                ipr.link("set", index=link.index, mtu=want)
            for lk, _, mtu in bad:
                ipr.link("set", index=lk.index, mtu=mtu)


class RouteOverlap(Check):
    id = "route-overlap"
    title = "no other route overlaps the lab subnet"
    group = "network"
    why = ("a route in the lab host that overlaps the subnet on another interface sends part "
           "of the lab's addresses somewhere else: the gateway cannot reach those endpoints")

    def run(self, ctx: DoctorContext) -> Finding:
        spec = _bridge_spec(ctx)
        subnet = ipaddress.IPv4Network(spec["subnet"])
        clashes = []
        for r in json.loads(host.run(ctx, ["ip", "-j", "-4", "route", "show", "table", "all"])
                            or "[]"):
            dst, dev = r.get("dst", "default"), r.get("dev")
            if dst == "default" or dev == spec["bridge"]:
                continue
            try:
                net = ipaddress.IPv4Network(dst, strict=False)
            except ValueError:
                continue
            if net.overlaps(subnet):
                table = r.get("table", "main")
                words = ["ip", "route", "del"] + ([r["type"]] if r.get("type") else []) + [dst]
                words += (["dev", dev] if dev else []) + ["table", str(table)]
                clashes.append((f"{dst}" + (f" dev {dev}" if dev else "") + f" table {table}",
                                ctx.in_lab_host(words)))
        if not clashes:
            return self.finding(OK, f"no route but the bridge's covers {subnet}")
        return self.finding(FAIL, f"{subnet} overlaps " + "; ".join(c for c, _ in clashes),
                            fix_command=" && ".join(cmd for _, cmd in clashes),
                            why=self.why + " (the route is not hybridnb's: remove it, or give "
                                           "the lab another subnet)")


def sweep(ctx: DoctorContext) -> dict[str, set[str]]:
    """Who answers for each endpoint address (cached ARP sweep from the gateway)."""
    def run() -> dict[str, set[str]]:
        spec = _bridge_spec(ctx)
        link = host.link_named(ctx, spec["bridge"])
        if link is None or link.mac is None:
            return {}
        # a bridge without the gateway (a lab over hosts, not the primary) asks as an ARP
        # probe does, from 0.0.0.0: endpoints still answer, to the bridge's MAC
        gateway = (spec["address"] or "0.0.0.0").split("/")[0]
        targets = [str(r.spec["address"]) for r in ctx.endpoints()]
        return host.reader(ctx).arp_sweep(ctx.lab, spec["bridge"], gateway, link.mac,
                                          str(spec["subnet"]), targets)
    return ctx.cached("arp", run)


def _fdb(ctx: DoctorContext) -> dict[str, str]:
    """``{MAC: port name}`` from the bridge's forwarding database."""
    bridge = _bridge_spec(ctx)["bridge"]
    rows = json.loads(host.run(ctx, ["bridge", "-j", "fdb", "show", "br", bridge]) or "[]")
    return {r["mac"]: r["ifname"] for r in rows
            if r.get("ifname") and r.get("ifname") != bridge and "self" not in r.get("flags", [])}


def _expected_macs(ctx: DoctorContext) -> dict[str, str]:
    """``{address: the MAC of the endpoint planned there}`` for running endpoints."""
    pm = ports(ctx)
    out = {}
    for r in ctx.endpoints():
        port = pm.ports.get(r.name)
        mac = (port.mac if port is not None else None) or r.spec.get("mac")
        if mac:
            out[str(r.spec["address"])] = str(mac).lower()
    return out


class DuplicateAddress(Check):
    id = "duplicate-address"
    title = "every lab address is answered by one MAC"
    group = "network"
    why = ("two machines answering for one address split its traffic between them: "
           "connections break at random, ARP caches flip")

    def _dups(self, ctx: DoctorContext) -> list[tuple[str, list[tuple[str, str, bool]]]]:
        answers = sweep(ctx)
        expected = _expected_macs(ctx)
        lab_ports = {p.ifname for p in ports(ctx).ports.values()}
        fdb = _fdb(ctx) if any(len(m) > 1 for m in answers.values()) else {}
        out = []
        for addr, macs in sorted(answers.items()):
            if len(macs) < 2:
                continue
            rows = []
            for mac in sorted(macs):
                port = fdb.get(mac, "?")
                rogue = mac != expected.get(addr) and port not in lab_ports and port != "?"
                rows.append((mac, port, rogue))
            out.append((addr, rows))
        return out

    def run(self, ctx: DoctorContext) -> Finding:
        dups = self._dups(ctx)
        if not dups:
            n = sum(1 for m in sweep(ctx).values() if m)
            return self.finding(OK, f"{n} addresses answered ARP, each by one MAC")
        names = {str(r.spec["address"]): r.name for r in ctx.endpoints()}
        texts, cmds = [], []
        for addr, rows in dups:
            who = ", ".join(f"{mac} on port {port}" + (" (not a lab endpoint)" if rogue else "")
                            for mac, port, rogue in rows)
            texts.append(f"{addr} ({names.get(addr, '?')}) is answered by {who}")
            cmds += [ctx.in_lab_host(["ip", "link", "set", "dev", port, "nomaster"])
                     for _, port, rogue in rows if rogue]
        return self.finding(FAIL, "; ".join(texts), fix_command=" && ".join(cmds),
                            fixable=bool(cmds),
                            why=self.why + "; the fix detaches the intruder's port (not the "
                                           "lab's) from the bridge")

    def fix(self, ctx: DoctorContext) -> None:
        from hybridnb.drivers import nsutil

        with nsutil.iproute(ctx.netns) as ipr:
            for _, rows in self._dups(ctx):
                for _, port, rogue in rows:
                    if rogue:
                        ipr.link("set", index=ipr.link_lookup(ifname=port)[0], master=0)


class EndpointIdentity(Check):
    id = "endpoint-identity"
    title = "each endpoint has its planned address and MAC"
    group = "network"
    why = ("an endpoint answering with another MAC, or carrying another address, is not the "
           "machine the plan made: names resolve to the wrong place")

    def run(self, ctx: DoctorContext) -> Finding:
        answers = sweep(ctx)
        pm = ports(ctx)
        expected = _expected_macs(ctx)
        bad, silent = [], []
        for r in ctx.endpoints():
            if r.name not in pm.ports:
                continue                                   # not running: endpoint-state says so
            addr = str(r.spec["address"])
            macs = answers.get(addr, set())
            want = expected.get(addr)
            if not macs:
                silent.append(f"{r.name} ({addr})")
            elif want and want not in macs and len(macs) == 1:
                bad.append(f"{r.name}: {addr} is answered by {min(macs)}, not its {want}")
            inside = _inside_address(ctx, r)
            want_addr = f"{addr}/{r.spec.get('prefix', ctx_prefix(ctx))}"
            if inside is not None and want_addr not in inside:
                bad.append(f"{r.name}: eth0 has {', '.join(sorted(inside)) or 'no address'}, "
                           f"the plan says {want_addr}")
        if bad:
            return self.finding(FAIL, "; ".join(bad + [f"{s} did not answer ARP"
                                                       for s in silent]),
                                fix_command=f"hybridnb destroy {ctx.lab} && "
                                            f"hybridnb apply {ctx.lab}")
        if silent:
            return self.finding(WARN, ", ".join(silent) + " did not answer ARP from the gateway",
                                why="a running endpoint that does not answer ARP is cut off "
                                    "(its NIC is down, or it has another address)")
        return self.finding(OK, f"{len(pm.ports)} running endpoints answer with their own "
                                "MAC and carry their planned address")


def ctx_prefix(ctx: DoctorContext) -> int:
    return ipaddress.IPv4Network(_bridge_spec(ctx)["subnet"]).prefixlen


def _inside_address(ctx: DoctorContext, res: Any) -> set[str] | None:
    """eth0's addresses inside a host's or container's namespace (None: cannot look) — on a
    host of another machine, in the container's namespace as seen there, read by its agent."""
    path: str | None = None
    driver = ctx.drivers.get(res.kind)
    look = host.reader(ctx)
    if look.remote:
        if hasattr(driver, "netns_paths_there"):
            paths = ctx.cached(f"netns-there:{res.kind}",
                               lambda: dict(driver.netns_paths_there(ctx.lab)))
            path = paths.get(res.name)
    elif res.spec.get("netns"):
        path = str(res.spec["netns"])
    elif isinstance(driver, NamespaceSource):
        paths = ctx.cached(f"netns:{res.kind}", lambda: dict(driver.netns_paths(ctx.lab)))
        path = paths.get(res.name)
    if path is None:
        return None
    try:
        return set(look.addresses(path, "eth0"))
    except Exception:  # the namespace went away meanwhile
        return None


CHECKS: list[Any] = [Bridge(), Mtu(), RouteOverlap(), DuplicateAddress(), EndpointIdentity()]
