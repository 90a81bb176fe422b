"""Choosing a backend: ``"dry-run"``, ``"sandbox"`` (the isolated lab host) or ``"host"``.

The dry-run backend lives in memory (persisted in its own corner of the state directory,
``dry-run/``, with the dry-run labs' state: :func:`state_scope`), so a dry-run lab lasts from
one command to the next and never reads or writes the state of a real lab.  The real backends bundle the real drivers — pyroute2 for
bridges and namespace hosts, the docker SDK for networks and containers, iptables for the
DOCKER-USER rule, libvirt-python for VMs, our own DNS server — bound to a
:class:`~hybridnb.target.Target`: the sandbox's namespace and private daemons, or the
machine's own.  Driver modules are imported only when a real backend is built.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hybridnb.drivers.base import Backend
from hybridnb.errors import EngineUnavailable, HybridError
from hybridnb.target import Target, default_sandbox

BACKENDS = ("dry-run", "sandbox", "host")
#: What :func:`default_backend` decides, in words (the fronts' help texts say it).
DEFAULT_RULE = "$HYBRIDNB_BACKEND, else sandbox as root and dry-run otherwise"
#: The state directory's subdirectory per backend whose labs live apart from the real ones.
SCOPES = {"dry-run": "dry-run"}
#: The dry-run engine's file inside its scope (``_``: no lab is named so).
DRY_RUN_ENGINE = "_engine.json"


def state_scope(backend: str | Backend | None) -> str:
    """The subdirectory of the state directory holding the labs of ``backend`` (``""``: the
    directory itself — the real targets, which record which one each lab lives on)."""
    name = backend.name if isinstance(backend, Backend) else (backend or default_backend())
    return SCOPES.get(name, "")


def is_explicit(backend: str | Backend | None) -> bool:
    """A backend was chosen (an argument or ``$HYBRIDNB_BACKEND``), not defaulted."""
    return backend is not None or bool(os.environ.get("HYBRIDNB_BACKEND", "").strip())


def target_name(backend: str | Backend | None, sandbox: str | None) -> str:
    """The name of the target a backend choice reaches, without building it (``sandbox:NAME``,
    ``host``, ``dry-run``): what lab state records and checks."""
    if isinstance(backend, Backend):
        return backend.target.name
    name = backend or default_backend()
    if name == "sandbox":
        return f"sandbox:{sandbox or default_sandbox()}"
    return name


def default_backend() -> str:
    """The backend a lab uses when none is named: ``$HYBRIDNB_BACKEND`` if set, else the
    sandbox when running as root and the dry-run backend when not (mybinder, a laptop
    user: the sandbox needs root, the dry-run backend needs nothing)."""
    chosen = os.environ.get("HYBRIDNB_BACKEND", "").strip()
    if chosen:
        return chosen
    return "sandbox" if os.geteuid() == 0 else "dry-run"


def resolve_backend(backend: str | Backend | None, *, state_dir: Path,
                    sandbox: str | None = None) -> Backend:
    """A :class:`Backend` for a name (or the backend itself); no name:
    :func:`default_backend`.  The sandbox is the one named by ``sandbox``, else
    ``$HYBRIDNB_SANDBOX``, else ``default``."""
    if isinstance(backend, Backend):
        return backend
    name = backend or default_backend()
    if name == "dry-run":
        from hybridnb.drivers.dryrun import dry_run_backend

        return dry_run_backend(state_dir / SCOPES["dry-run"] / DRY_RUN_ENGINE)
    if name == "sandbox":
        from hybridnb.sandbox import Sandbox

        box = Sandbox(sandbox or default_sandbox())
        if not box.is_up():
            raise EngineUnavailable(f"the sandbox {box.name!r} is not running",
                                    hint=f"start it with `hybridnb sandbox up --sandbox "
                                         f"{box.name}`")
        return real_backend(box.target(), state_dir=state_dir, name="sandbox")
    if name == "host":
        return real_backend(Target.host(), state_dir=state_dir, name="host")
    raise HybridError(f"unknown backend {name!r}", hint=f"use one of: {', '.join(BACKENDS)}")


def real_backend(target: Target, *, state_dir: Path, name: str = "real") -> Backend:
    """The real drivers for ``target``; each kind's driver module is imported lazily."""
    drivers: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    from hybridnb.drivers.bridge import BridgeDriver
    from hybridnb.drivers.netns import NetnsHostDriver

    from hybridnb.drivers.vxlan import VxlanDriver

    drivers["bridge"] = BridgeDriver(target)
    drivers["vxlan"] = VxlanDriver(target)
    drivers["host"] = NetnsHostDriver(target)
    if target.docker_url:
        from hybridnb.drivers.docker import ContainerDriver, NetworkDriver
        from hybridnb.drivers.firewall import FirewallDriver

        drivers["firewall"] = FirewallDriver(target)
        drivers["network"] = NetworkDriver(target)
        drivers["container"] = ContainerDriver(target)
    if target.libvirt_uri:
        try:
            from hybridnb.drivers.libvirt import VMDriver
        except ImportError:                      # libvirt extra not installed
            pass
        else:
            drivers["vm"] = VMDriver(target, state_dir=state_dir / "vms")
    try:
        from hybridnb.drivers.dns import DnsDriver
    except ImportError:
        pass
    else:
        drivers["dns"] = DnsDriver(target, state_dir=state_dir / "dns")
    drivers.update(_policy_drivers(target, drivers))
    return Backend(name, target, drivers, extras)


def _policy_drivers(target: Target, drivers: dict[str, Any]) -> dict[str, Any]:
    """The ``policy`` driver (nftables) and the ``link`` driver (tc, nftables), which reaches
    containers through the container driver's namespaces and VMs through the VM driver's
    guest agent — whatever drivers declare those capabilities."""
    from hybridnb.drivers.base import GuestExec, NamespaceSource
    from hybridnb.drivers.impairments import LinkDriver
    from hybridnb.drivers.nftables import PolicyDriver

    containers, vms = drivers.get("container"), drivers.get("vm")
    return {"policy": PolicyDriver(target),
            "link": LinkDriver(target,
                               container_netns=containers.netns_paths
                               if isinstance(containers, NamespaceSource) else None,
                               guest_exec=vms.guest_exec if isinstance(vms, GuestExec)
                               else None)}
