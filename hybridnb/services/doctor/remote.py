"""The doctor on a host of another machine: every check that can judge what its agent reads.

A *remote* host (:mod:`hybridnb.remote`: reached through its Docker API, its fabric made by
the hybridnb agent container there) has no lab host this machine could enter, so nothing
may read *this* machine's netlink, sysctls, iptables or namespaces for it.
:func:`diagnose_there` runs instead:

* ``vxlan`` (remote hosts only) from one link dump **read there** by the agent
  (:class:`~hybridnb.drivers.base.LinksThere`) and the VXLAN device's flood list (its FDB
  entries) asked from the agent's VXLAN driver: the VXLAN device is a port of the bridge,
  up, with the lab's MTU and one all-zeros FDB entry per other host's underlay address;
* the checks that only use the host's drivers (:data:`THROUGH_DRIVERS`: the engines through
  its Docker API and libvirt URI, endpoints, the policy table and its counters through the
  agent's policy driver) as they are;
* the ordinary checks of :data:`READ_BY_AGENT` — the bridge and its ports' MTUs, the
  kernel's sysctls and the FORWARD chain, route overlap, the ARP sweep
  (``duplicate-address``, ``endpoint-identity``), leftovers, nftables' features — **the
  same check code** given a :class:`RemoteHost` reader
  (:mod:`.host`), whose every read is one agent request answered there
  (:class:`~hybridnb.drivers.base.HostThere`, :mod:`hybridnb.remote.hostread`): that host's
  sysctls, ``iptables-save`` and routes as the agent sees them, the ARP sweep sent from that
  host's lab bridge (only to the lab's own addresses, only on a bridge carrying the lab's
  mark), the addresses inside its containers' namespaces as seen there, its hybridnb marks
  judged against the host's own journal;
* a chosen check that applies to the share but cannot be judged there (:data:`NOT_THERE`,
  with the reason; or a check of a group registered later, which would read this machine)
  becomes one ``not-checked`` warning naming the host, the checks and why — never silently
  left out.

Read-only: the findings carry the command to run *on that host*, never ``fixable``
(``doctor --fix`` on a lab over several hosts is refused before this).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Mapping, Sequence

from hybridnb.errors import HybridError
from hybridnb.services.doctor.base import (FAIL, OK, WARN, Check, DoctorContext, DoctorReport,
                                           Finding, _run_one)

#: checks that look only through the host's drivers (its Docker API, libvirt URI, agent)
THROUGH_DRIVERS = ("docker", "libvirt", "endpoint-state", "policy-table", "policy-drops")
#: remote-only findings made here from what the agent reads there
READ_THERE = ("vxlan",)
#: ordinary checks run with a :class:`RemoteHost` reader: each read answered by the agent
READ_BY_AGENT = ("bridge", "mtu", "forward-drop", "br-netfilter", "ip-forward",
                 "neighbour-cap", "route-overlap", "duplicate-address", "endpoint-identity",
                 "leftovers", "policy-kernel", "virtualization", "link-kernel")
#: checks that cannot be judged there, and why
NOT_THERE: dict[str, str] = {}          # every check runs there now; a new check that reads
                                        # this machine directly goes here, with its reason
IFF_UP = 0x1


def _finding(check: str, title: str, status: str, found: str, why: str,
             data: Mapping[str, Any] | None = None) -> Finding:
    return Finding(check, title, status, found, why, "", False, "network", dict(data or {}))


def vxlan_finding(host: str, spec: Mapping[str, Any] | None, links: Mapping[int, Any],
                  flood: Sequence[str] | None, remotes: Sequence[str]) -> Finding:
    """The VXLAN device is a port of the bridge, up, with the lab's MTU, and its FDB sends
    flooded frames to exactly every other host's underlay address (``remotes``)."""
    title = "the VXLAN device joins this host's bridge to the others"
    why = "frames between hosts cross it; a missing FDB entry cuts one host off"
    if spec is None:
        return _finding("vxlan", title, OK, f"host {host} has no VXLAN device in the lab", why)
    device = str(spec["device"])
    link = next((lk for lk in links.values() if lk.name == device), None)
    if link is None:
        return _finding("vxlan", title, FAIL, f"VXLAN device {device} does not exist on host "
                        f"{host}", why)
    bridge = next((lk for lk in links.values() if lk.name == spec.get("bridge")), None)
    problems = []
    if bridge is None or link.master != bridge.index:
        problems.append(f"it is not a port of {spec.get('bridge')}")
    if not link.flags & IFF_UP:
        problems.append(f"it is {link.operstate}")
    if spec.get("mtu") and link.mtu != int(spec["mtu"]):
        problems.append(f"its MTU is {link.mtu}, not {spec['mtu']}")
    have, want = sorted(set(flood or ())), sorted(set(remotes))
    if have != want:
        problems.append(f"its FDB floods to {', '.join(have) or 'nobody'}, not "
                        f"{', '.join(want) or 'nobody'}")
    data = {"device": device, "flood": have}
    if problems:
        return _finding("vxlan", title, FAIL, f"VXLAN device {device} on host {host}: "
                        + "; ".join(problems), why, data)
    return _finding("vxlan", title, OK, f"VXLAN device {device} on host {host} is up on "
                    f"{spec.get('bridge')}, MTU {link.mtu}, flooding to "
                    f"{', '.join(have) or 'nobody'}", why, data)


def not_checked(host: str, where: str, ids: Sequence[str],
                reasons: Mapping[str, str] | None = None) -> Finding:
    why = "; ".join(f"{i}: {(reasons or {}).get(i) or OTHER}" for i in ids)
    return Finding("not-checked", "checks that cannot run on a host of another machine", WARN,
                   f"not checked on remote host {host} ({where}): {', '.join(ids)}",
                   why, "", False, "remote", {"checks": list(ids)})


#: why a check not known to be safe there is not run on a remote host
OTHER = ("its code reads the machine it runs on directly (not through a reader the agent "
         "can answer)")


class RemoteHost:
    """The doctor's reader (:mod:`.host`) of a host on another machine: every read is one
    request to its agent (``driver``: the host's bridge proxy,
    :class:`~hybridnb.drivers.base.HostThere` and
    :class:`~hybridnb.drivers.base.LinksThere`); nothing opens a socket, runs a command or
    enters a namespace on this machine."""

    remote = True

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def command(self, argv: list[str]) -> tuple[int, str, str]:
        got = self.driver.read_there("command", list(argv))
        return int(got["rc"]), str(got["out"]), str(got["err"])

    def links(self) -> dict[int, Any]:
        return dict(self.driver.links_there(None))

    def sysctl(self, key: str) -> str | None:
        return self.driver.read_there("sysctls", [key]).get(key)

    #: the agent lives in the host's own namespace: the lab host *is* the machine's there
    machine_sysctl = sysctl

    def arp_cache(self) -> tuple[int, int]:
        entries, fulls = self.driver.read_there("arp_cache")
        return int(entries), int(fulls)

    def arp_sweep(self, lab: str | None, bridge: str, gateway: str, mac: str, subnet: str,
                  targets: list[str]) -> dict[str, set[str]]:
        got = self.driver.read_there("arp_sweep", lab, bridge, gateway, mac, str(subnet),
                                     list(targets))
        return {str(a): set(macs) for a, macs in dict(got).items()}

    def addresses(self, netns: str, ifname: str) -> set[str]:
        return set(self.driver.read_there("addresses", netns, ifname))

    def link_addresses(self, ifname: str) -> set[str]:
        return set(self.driver.read_there("addresses", None, ifname))

    def nft_features(self) -> list[Any]:
        from hybridnb.drivers.nftables import Feature

        return [Feature(**f) for f in self.driver.read_there("nft_features")]

    def tc_features(self) -> list[Any]:
        from hybridnb.drivers.nftables import Feature

        return [Feature(**f) for f in self.driver.read_there("tc_features")]

    def kvm_device(self) -> bool | None:
        return None                     # the agent container is given no devices


def _fabric(view: Any, chosen: set[str]) -> list[Finding]:
    if "vxlan" not in chosen:
        return []
    links = view.driver("bridge").links_there(None)
    spec = next((r.spec for r in view.resources if r.kind == "vxlan"), None)
    flood, remotes = None, []
    if spec is not None:
        from hybridnb.drivers.vxlan import resolve_underlay

        remotes = [resolve_underlay(r) for r in spec.get("remotes") or ()]
        flood = view.driver("vxlan").flood_list(str(spec["device"]))
    return [vxlan_finding(str(view.host), spec, links, flood, remotes)]


def _there(finding: Finding, host: str, read_there: bool) -> Finding:
    """A finding of a remote host, never fixed by --fix; a command of a check that read the
    host through its agent is to be run on that host (``hybridnb …`` and the engines' own
    commands, which name the host's URL, are run from here)."""
    fix = finding.fix_command
    if fix and read_there and not fix.startswith("hybridnb "):
        fix = f"on host {host}: {fix}"
    return dataclasses.replace(finding, fix_command=fix, fixable=False)


def diagnose_there(view: Any, checks: Sequence[Check], where: str = "",
                   owned: Mapping[str, Mapping[str, Any]] | None = None) -> DoctorReport:
    """The doctor of ``view`` — one host's share of a spread lab, that host on another
    machine — read-only (``owned``: every lab that host's journal knows, for leftovers):
    see the module's docstring."""
    started = time.perf_counter()
    ids = [c.id for c in checks]
    chosen = set(ids)
    if chosen & {"bridge", "mtu"}:
        chosen.add("vxlan")                # the network group, there: with the fabric device
    host = str(view.host)
    ctx = DoctorContext(view.name, view.backend.target, dict(view.backend.drivers),
                        tuple(view.resources), dict(view.state), dict(owned or {}),
                        view.state_dir, view.backend.name,
                        reader=RemoteHost(view.driver("bridge")))
    findings = [_there(_run_one(c, ctx), host, c.id in READ_BY_AGENT) for c in checks
                if c.id in THROUGH_DRIVERS + READ_BY_AGENT and c.applies(ctx)]
    try:
        findings += _fabric(view, chosen)
    except HybridError as exc:
        findings.append(Finding("vxlan", "the VXLAN device joins this host's bridge to the "
                                "others", FAIL, f"could not read host {view.host}'s VXLAN "
                                f"device through its agent: {exc.message}", exc.hint or "",
                                "", False, "network"))
    rest = [c.id for c in checks                 # those that would apply to this share
            if c.id not in THROUGH_DRIVERS + READ_THERE + READ_BY_AGENT and c.applies(ctx)]
    if rest:
        findings.append(not_checked(host, where or view.backend.target.name, rest, NOT_THERE))
    return DoctorReport(view.name, where or view.backend.target.name, tuple(findings),
                        seconds=time.perf_counter() - started)


__all__ = ["NOT_THERE", "READ_BY_AGENT", "READ_THERE", "THROUGH_DRIVERS", "RemoteHost",
           "diagnose_there", "not_checked", "vxlan_finding"]
