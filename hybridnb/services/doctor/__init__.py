"""``doctor``: what is wrong with this lab on this host, why it matters, and the exact fix.

Checks are grouped in modules, each exporting ``CHECKS`` (instances of
:class:`~hybridnb.services.doctor.base.Check`):

* :mod:`.kernel`    — FORWARD policy vs. br_netfilter, br_netfilter, ip_forward, the
  neighbour-table cap against the lab's size;
* :mod:`.network`   — the bridge, MTU of bridge and ports, route overlap, duplicate addresses
  and endpoints answering with another MAC (one ARP sweep from the gateway);
* :mod:`.dns`       — the lab's DNS server alive and answering each endpoint's name;
* :mod:`.engines`   — Docker, libvirt and QEMU reachable (with versions), KVM or TCG;
* :mod:`.endpoints` — endpoints missing, stopped or different from the plan;
* :mod:`.leftovers` — objects carrying hybridnb's marks that no lab state owns;
* :mod:`.policy`    — for labs with policies or impairments: the kernel features they rely
  on, whether the policy is enforced, and the drops that come from it.

Another part of hybridnb adds its own group with :func:`register_group` (the module path of a
module exporting ``CHECKS``), e.g. the nftables policies registering checks of the kernel
features they need.  :func:`diagnose` runs them all.
"""

from __future__ import annotations

import importlib
from typing import Iterable

from hybridnb.services.doctor.base import (FAIL, OK, WARN, Check, DoctorContext, DoctorReport,
                                           Finding, diagnose)

GROUPS: list[str] = [
    "hybridnb.services.doctor.engines",
    "hybridnb.services.doctor.kernel",
    "hybridnb.services.doctor.network",
    "hybridnb.services.doctor.endpoints",
    "hybridnb.services.doctor.dns",
    "hybridnb.services.doctor.leftovers",
]


def register_group(module: str) -> None:
    """Add a module exporting ``CHECKS`` to every later :func:`diagnose` run."""
    if module not in GROUPS:
        GROUPS.append(module)


register_group("hybridnb.services.doctor.policy")


def all_checks() -> list[Check]:
    out: list[Check] = []
    for name in GROUPS:
        out.extend(importlib.import_module(name).CHECKS)
    return out


def select_checks(only: Iterable[str] | None = None, skip: Iterable[str] = ()) -> list[Check]:
    """The checks named in ``only`` (a check id or a group name; None: all) minus those in
    ``skip``; an unknown name is a :class:`~hybridnb.errors.NotFoundError` listing them."""
    from hybridnb.errors import NotFoundError

    checks = all_checks()
    known = {c.id for c in checks} | {c.group for c in checks}
    wanted, dropped = (set(only) if only is not None else None), set(skip)
    unknown = sorted(((wanted or set()) | dropped) - known)
    if unknown:
        raise NotFoundError(f"no doctor check named {unknown[0]!r}",
                            hint="the checks: " + ", ".join(c.id for c in checks))
    return [c for c in checks
            if (wanted is None or {c.id, c.group} & wanted) and not {c.id, c.group} & dropped]


__all__ = ["Check", "DoctorContext", "DoctorReport", "FAIL", "Finding", "GROUPS", "OK", "WARN",
           "all_checks", "diagnose", "register_group", "select_checks"]
