"""What the agent reads of its host for the doctor there: sysctls, the firewall, routes, ARP.

The doctor's checks (:mod:`hybridnb.services.doctor`) read the lab host through one small
reader (:mod:`hybridnb.services.doctor.host`); on a host of another machine that reader asks
the agent (pseudo kind ``hostread``, :meth:`hybridnb.remote.agent.Agent.call`), which answers
from *its* namespace — the remote host's — with the same functions the doctor uses here.
Every read is read-only, and each is bounded:

* ``sysctls [keys]`` — namespace-local ``net.*`` sysctls only (``{key: value or None}``);
* ``command argv`` — one of :data:`COMMANDS` exactly (``iptables-save -t filter``, the IPv4
  routes of every table) or the forwarding database of one bridge; nothing else is run
  (``{"rc", "out", "err"}``);
* ``arp_cache`` — ``(entries, table_fulls)`` of ``/proc/net/stat/arp_cache``;
* ``arp_sweep lab bridge gateway mac subnet targets`` — the doctor's ARP sweep
  (:func:`hybridnb.services.doctor.arp.arp_sweep`), only on a bridge that carries *that*
  lab's hybridnb mark, and (as ever) only for addresses inside the lab's subnet;
* ``addresses netns ifname`` — the IPv4 addresses of one interface of the host (``netns``
  None) or in a lab container's namespace *as seen there* (``/proc/PID/ns/net``: the agent
  shares the host's PID namespace);
* ``nft_features`` — what nftables offers there (kernel-validated dry runs, nothing made).
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from hybridnb.errors import HybridError

#: the reads the agent serves under the pseudo kind ``hostread``
READS = frozenset({"sysctls", "command", "arp_cache", "arp_sweep", "addresses",
                   "nft_features", "tc_features"})
#: the only commands the agent runs for the doctor (read-only listings)
COMMANDS: tuple[tuple[str, ...], ...] = (
    ("iptables-save", "-t", "filter"),
    ("ip", "-j", "-4", "route", "show", "table", "all"),
)
FDB = ("bridge", "-j", "fdb", "show", "br")
_IFNAME = re.compile(r"[A-Za-z0-9_.\-]{1,15}")
_SYSCTL = re.compile(r"net(\.[A-Za-z0-9_\-]+)+")
_NETNS = re.compile(r"/proc/[0-9]+/ns/net")
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def allowed(argv: Sequence[str]) -> bool:
    """Whether the agent runs ``argv`` for the doctor (:data:`COMMANDS`, or the FDB of one
    bridge named like an interface)."""
    words = tuple(argv)
    return words in COMMANDS or (len(words) == len(FDB) + 1 and words[:-1] == FDB
                                 and bool(_IFNAME.fullmatch(words[-1])))


def sysctls(keys: Sequence[str]) -> dict[str, str | None]:
    from hybridnb.drivers.nsutil import read_sysctl

    bad = [k for k in keys if not _SYSCTL.fullmatch(str(k))]
    if bad:
        raise HybridError(f"the agent reads net.* sysctls only, not {bad[0]!r}")
    return {str(k): read_sysctl(None, str(k)) for k in keys}


def command(argv: Sequence[str]) -> dict[str, Any]:
    import shutil
    import subprocess

    if not allowed(argv):
        raise HybridError(f"the agent does not run {' '.join(argv)!r} for the doctor",
                          hint="it runs: " + "; ".join(" ".join(c) for c in COMMANDS)
                               + "; " + " ".join(FDB) + " BRIDGE")
    tool = shutil.which(argv[0], path=_PATH)
    if tool is None:
        from hybridnb.errors import EngineUnavailable

        raise EngineUnavailable(f"{argv[0]} is not installed in the agent", engine=argv[0])
    done = subprocess.run([tool, *argv[1:]], capture_output=True, text=True,
                          env={"PATH": _PATH, "LANG": "C"})
    return {"rc": done.returncode, "out": done.stdout, "err": done.stderr}


def arp_sweep(lab: str, bridge: str, gateway: str, mac: str, subnet: str,
              targets: Sequence[str]) -> dict[str, set[str]]:
    """The doctor's sweep on ``bridge`` — refused unless it is ``lab``'s bridge here."""
    from hybridnb.drivers.bridge import BridgeMark
    from hybridnb.drivers.linkstats import dump_links
    from hybridnb.services.doctor.arp import arp_sweep as sweep

    link = next((lk for lk in dump_links(None).values() if lk.name == bridge), None)
    mark = BridgeMark.parse(link.alias or "") if link is not None else None
    if mark is None or mark.lab != lab:
        raise HybridError(f"refusing to ARP on {bridge}: it is not lab {lab}'s bridge on "
                          "this host" + ("" if link is not None else " (it does not exist)"))
    return sweep(None, bridge, gateway, mac, subnet, list(targets))


def addresses(netns: str | None, ifname: str) -> list[str]:
    """``ifname``'s IPv4 addresses in ``netns`` (None: the agent's own, the host's)."""
    from hybridnb.services.doctor.network import _addresses

    if (netns is not None and not _NETNS.fullmatch(str(netns))) or \
            not _IFNAME.fullmatch(str(ifname)):
        raise HybridError(f"the agent reads addresses in /proc/PID/ns/net only, not {netns!r}")
    return sorted(_addresses(netns, ifname=ifname))


def arp_cache() -> list[int]:
    from hybridnb.services.doctor.kernel import arp_cache_stats

    return list(arp_cache_stats())


def nft_features() -> list[dict[str, Any]]:
    import dataclasses

    from hybridnb.drivers.nftables import nft_features as features

    return [dataclasses.asdict(f) for f in features(None)]


def tc_features() -> list[dict[str, Any]]:
    """The qdiscs this host's kernel takes, tried in a throwaway namespace made and removed
    here (what the agent's link driver asks before it impairs a link)."""
    import dataclasses

    from hybridnb.drivers.impairments import tc_features as features

    return [dataclasses.asdict(f) for f in features()]


def read(what: str, args: Sequence[Any]) -> Any:
    """Answer one ``host`` request of the agent."""
    if what not in READS:
        raise HybridError(f"the agent has no host read {what!r}",
                          hint=f"one of {', '.join(sorted(READS))}")
    fn = {"sysctls": sysctls, "command": command, "arp_cache": arp_cache,
          "arp_sweep": arp_sweep, "addresses": addresses, "nft_features": nft_features,
          "tc_features": tc_features}[what]
    return fn(*args)


__all__ = ["COMMANDS", "READS", "allowed", "read"]
