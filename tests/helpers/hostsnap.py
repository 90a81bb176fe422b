"""Host-safety snapshots: prove that a run left a network namespace exactly as it found it.

``snapshot(netns)`` records what hybridnb could possibly change in a namespace (the host's own
for ``None``): its links (name, kind, administrative flags, master, MTU — never counters),
addresses, routes of every table, the iptables/ip6tables rules (counters and comment lines
stripped), the nftables ruleset (counters stripped), the namespaces under /run/netns and the
sysctls hybridnb touches.  ``diff(before, after)`` lists the differences, one readable line
each, so a test reads::

    before = snapshot(ns)
    ...                      # create and destroy a lab
    assert diff(before, snapshot(ns)) == []
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from hybridnb.drivers import nsutil

SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.forwarding",
    "net.ipv6.conf.all.forwarding",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.ipv4.ping_group_range",
)

# administrative flags only: carrier/running/dormant follow the state of the peer or the ports
_FLAGS = {0x1: "UP", 0x2: "BROADCAST", 0x8: "LOOPBACK", 0x10: "POINTOPOINT", 0x80: "NOARP",
          0x100: "PROMISC", 0x200: "ALLMULTI", 0x1000: "MULTICAST"}
_COUNTERS = re.compile(r"\[\d+:\d+\]")
_NFT_COUNTERS = re.compile(r"counter packets \d+ bytes \d+")
_TABLES = {253: "default", 254: "main", 255: "local"}


@dataclass(frozen=True)
class HostSnapshot:
    netns: str | None
    sections: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __str__(self) -> str:
        out = [f"# snapshot of {self.netns or 'the host namespace'}"]
        for name, lines in self.sections.items():
            out.append(f"[{name}]")
            out.extend(f"  {line}" for line in lines)
        return "\n".join(out)


def _run(netns: str | None, argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return f"<{argv[0]} not installed>"
    if netns is not None:
        argv = ["nsenter", f"--net={nsutil.netns_path(netns)}", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        return f"<{argv[-1] if netns else argv[0]} failed: {proc.stderr.strip()}>"
    return proc.stdout


def _iptables(netns: str | None, tool: str) -> tuple[str, ...]:
    lines = []
    for line in _run(netns, [tool]).splitlines():
        if not line or line.startswith("#"):
            continue
        lines.append(_COUNTERS.sub("[*]", line))
    return tuple(lines)            # rule order matters: keep it


def _nft(netns: str | None) -> tuple[str, ...]:
    text = _run(netns, ["nft", "list", "ruleset"])
    return tuple(_NFT_COUNTERS.sub("counter", line.rstrip())
                 for line in text.splitlines() if line.strip())


def _flags(value: int) -> str:
    return ",".join(name for bit, name in sorted(_FLAGS.items()) if value & bit) or "-"


def _netlink(netns: str | None) -> dict[str, tuple[str, ...]]:
    with nsutil.iproute(netns) as ipr:
        links = ipr.get_links()
        names = {l["index"]: l.get("ifname") for l in links}
        link_lines = sorted(
            f"{l.get('ifname')} kind={l.get(('linkinfo', 'kind')) or '-'} "
            f"flags={_flags(l['flags'])} master={names.get(l.get('master'), '-')} "
            f"mtu={l.get('mtu')}"
            for l in links)
        addr_lines = sorted(
            f"{names.get(a['index'], a['index'])} "
            f"{a.get('address')}/{a['prefixlen']} scope={a['scope']}"
            for a in ipr.get_addr())
        route_lines = []
        for family in (2, 10):
            for r in ipr.route("dump", family=family):
                table = r.get("table") or r["table"]
                dst = r.get("dst")
                route_lines.append(
                    f"table={_TABLES.get(table, table)} type={r['type']} "
                    f"dst={dst + '/' + str(r['dst_len']) if dst else 'default'} "
                    f"via={r.get('gateway') or '-'} dev={names.get(r.get('oif'), '-')} "
                    f"proto={r['proto']} scope={r['scope']} "
                    f"metric={r.get('priority') or 0}")
    return {"links": tuple(link_lines), "addresses": tuple(addr_lines),
            "routes": tuple(sorted(route_lines))}


def snapshot(netns: str | None = None, *,
             netns_filter: Callable[[str], bool] | None = None) -> HostSnapshot:
    """Everything hybridnb could change in ``netns`` (None: the host's own namespace).

    ``netns_filter`` limits the recorded /run/netns entries (e.g. to the names a test makes,
    when other programs create namespaces at the same time)."""
    sections: dict[str, tuple[str, ...]] = dict(_netlink(netns))
    sections["iptables"] = _iptables(netns, "iptables-save")
    sections["ip6tables"] = _iptables(netns, "ip6tables-save")
    sections["nft"] = _nft(netns)
    try:
        entries: Iterable[str] = sorted(os.listdir(nsutil.NETNS_RUN_DIR))
    except FileNotFoundError:
        entries = []
    sections["netns"] = tuple(e for e in entries if netns_filter is None or netns_filter(e))
    sections["sysctl"] = tuple(f"{k}={v}" for k in SYSCTLS
                               if (v := nsutil.read_sysctl(netns, k)) is not None)
    return HostSnapshot(netns, sections)


def diff(before: HostSnapshot, after: HostSnapshot) -> list[str]:
    """Readable differences (``section: - line`` gone, ``section: + line`` new); [] if equal."""
    out: list[str] = []
    for name in sorted(set(before.sections) | set(after.sections)):
        old = before.sections.get(name, ())
        new = after.sections.get(name, ())
        if old == new:
            continue
        old_set, new_set = set(old), set(new)
        out += [f"{name}: - {line}" for line in old if line not in new_set]
        out += [f"{name}: + {line}" for line in new if line not in old_set]
        if old_set == new_set:
            out.append(f"{name}: same lines, different order")
    return out
