"""Read-only looks at the lab host that several checks share (cached per doctor run).

* :func:`run` — a command inside the lab host's network namespace (``nsenter --net``);
* :func:`links` — every link of the lab host, one netlink dump
  (:mod:`hybridnb.drivers.linkstats`);
* :func:`iptables` — the ``filter`` table as ``(policies, rules)`` from ``iptables-save``;
* :func:`sysctl` — a namespace-local sysctl of the lab host (``None`` when absent).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from typing import Any

from hybridnb.errors import EngineError, EngineUnavailable
from hybridnb.services.doctor.base import DoctorContext

_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def run(ctx: DoctorContext, argv: list[str], *, check: bool = True) -> str:
    tool = shutil.which(argv[0], path=_PATH)
    if tool is None:
        raise EngineUnavailable(f"{argv[0]} is not installed", engine=argv[0])
    cmd = [tool, *argv[1:]]
    if ctx.netns:
        cmd = [shutil.which("nsenter", path=_PATH) or "nsenter",
               f"--net=/run/netns/{ctx.netns}", *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, env={"PATH": _PATH, "LANG": "C"})
    if check and done.returncode != 0:
        raise EngineError(f"{shlex.join(argv)} failed: {done.stderr.strip()}", engine=argv[0])
    return done.stdout


def links(ctx: DoctorContext) -> dict[int, Any]:
    from hybridnb.drivers.linkstats import dump_links

    return ctx.cached("links", lambda: dump_links(ctx.netns))


def link_named(ctx: DoctorContext, name: str) -> Any | None:
    return next((lk for lk in links(ctx).values() if lk.name == name), None)


def sysctl(ctx: DoctorContext, key: str) -> str | None:
    from hybridnb.drivers.nsutil import read_sysctl

    return ctx.cached(f"sysctl:{key}", lambda: read_sysctl(ctx.netns, key))


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


__all__ = ["iptables", "link_named", "links", "run", "sysctl"]
