"""Read-only looks at the lab host that several checks share (cached per doctor run).

* :func:`run` — a command inside the lab host's network namespace (``nsenter --net``);
* :func:`links` — every link of the lab host, one netlink dump
  (:mod:`hybridnb.drivers.linkstats`);
* :func:`iptables` — the ``filter`` table as ``(policies, rules)`` from ``iptables-save``;
* :func:`sysctl` — a namespace-local sysctl of the lab host (``None`` when absent);
  :func:`machine_sysctl` — one of the machine's own namespace (the neighbour-table cap).

Each goes through the context's *reader* (:func:`reader`): :class:`LocalHost` — the lab
host on this machine, its namespace entered from here — unless the caller gave the context
another.  The doctor of a host on another machine gives
:class:`~hybridnb.services.doctor.remote.RemoteHost`, which asks that host's agent, so the
same checks judge what is read *there*.  A reader has: ``remote``, ``command(argv)``,
``links()``, ``sysctl(key)``, ``machine_sysctl(key)``, ``arp_cache()``,
``arp_sweep(lab, bridge, gateway, mac, subnet, targets)``, ``addresses(netns, ifname)``
(inside an endpoint's namespace), ``link_addresses(ifname)`` (of the lab host's own link),
``nft_features()``, ``tc_features()`` (the qdiscs the kernel takes, tried in a throwaway
namespace) and ``kvm_device()``.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from typing import Any

from hybridnb.errors import EngineError, EngineUnavailable
from hybridnb.services.doctor.base import DoctorContext

_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class LocalHost:
    """The lab host on this machine (``netns``: its namespace; None: the machine's own)."""

    remote = False

    def __init__(self, netns: str | None) -> None:
        self.netns = netns

    def command(self, argv: list[str]) -> tuple[int, str, str]:
        tool = shutil.which(argv[0], path=_PATH)
        if tool is None:
            raise EngineUnavailable(f"{argv[0]} is not installed", engine=argv[0])
        cmd = [tool, *argv[1:]]
        if self.netns:
            cmd = [shutil.which("nsenter", path=_PATH) or "nsenter",
                   f"--net=/run/netns/{self.netns}", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True,
                              env={"PATH": _PATH, "LANG": "C"})
        return done.returncode, done.stdout, done.stderr

    def links(self) -> dict[int, Any]:
        from hybridnb.drivers.linkstats import dump_links

        return dump_links(self.netns)

    def sysctl(self, key: str) -> str | None:
        from hybridnb.drivers.nsutil import read_sysctl

        return read_sysctl(self.netns, key)

    def machine_sysctl(self, key: str) -> str | None:
        from hybridnb.drivers.nsutil import read_sysctl

        return read_sysctl(None, key)

    def arp_cache(self) -> tuple[int, int]:
        from hybridnb.services.doctor.kernel import arp_cache_stats

        return arp_cache_stats()

    def arp_sweep(self, lab: str | None, bridge: str, gateway: str, mac: str, subnet: str,
                  targets: list[str]) -> dict[str, set[str]]:
        from hybridnb.services.doctor.arp import arp_sweep

        return arp_sweep(self.netns, bridge, gateway, mac, subnet, targets)

    def addresses(self, netns: str, ifname: str) -> set[str]:
        from hybridnb.services.doctor.network import _addresses

        return _addresses(netns, ifname=ifname)

    def link_addresses(self, ifname: str) -> set[str]:
        from hybridnb.services.doctor.network import _addresses

        return _addresses(self.netns, ifname=ifname)

    def nft_features(self) -> list[Any]:
        from hybridnb.drivers.nftables import nft_features

        return nft_features(self.netns)

    def tc_features(self) -> list[Any]:
        from hybridnb.drivers.impairments import tc_features

        return tc_features()

    def kvm_device(self) -> bool | None:
        import os

        return os.path.exists("/dev/kvm")


def reader(ctx: DoctorContext) -> Any:
    """What reads ``ctx``'s lab host: the context's own reader, else :class:`LocalHost`."""
    return ctx.reader if ctx.reader is not None else LocalHost(ctx.netns)


def run(ctx: DoctorContext, argv: list[str], *, check: bool = True) -> str:
    code, out, err = reader(ctx).command(list(argv))
    if check and code != 0:
        raise EngineError(f"{shlex.join(argv)} failed: {err.strip()}", engine=argv[0])
    return out


def links(ctx: DoctorContext) -> dict[int, Any]:
    return ctx.cached("links", lambda: reader(ctx).links())


def link_named(ctx: DoctorContext, name: str) -> Any | None:
    return next((lk for lk in links(ctx).values() if lk.name == name), None)


def sysctl(ctx: DoctorContext, key: str) -> str | None:
    return ctx.cached(f"sysctl:{key}", lambda: reader(ctx).sysctl(key))


def machine_sysctl(ctx: DoctorContext, key: str) -> str | None:
    return ctx.cached(f"machine-sysctl:{key}", lambda: reader(ctx).machine_sysctl(key))


def iptables(ctx: DoctorContext) -> tuple[dict[str, str], dict[str, list[list[str]]]]:
    """``({chain: policy}, {chain: [rule args after -A CHAIN]})`` of the filter table."""
    def read() -> tuple[dict[str, str], dict[str, list[list[str]]]]:
        text = run(ctx, ["iptables-save", "-t", "filter"])
        policies: dict[str, str] = {}
        rules: dict[str, list[list[str]]] = {}
        for line in text.splitlines():
            if line.startswith(":"):
                name, policy = line[1:].split()[:2]
                policies[name] = policy
                rules.setdefault(name, [])
            elif line.startswith("-A "):
                words = shlex.split(line)
                rules.setdefault(words[1], []).append(words[2:])
        return policies, rules
    return ctx.cached("iptables", read)


__all__ = ["LocalHost", "iptables", "link_named", "links", "machine_sysctl", "reader", "run",
           "sysctl"]
