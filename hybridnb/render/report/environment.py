"""Where a report was made: the machine, the engines and their versions, KVM or TCG.

Read-only facts, each a ``(name, value)`` pair in a fixed order: the kernel and the OS, the
Python and hybridnb versions, the backend and its target (namespace, Docker URL, libvirt
URI), what each engine says its version is (drivers that can tell expose
``engine_version()``), and how VMs are accelerated.  A fact that cannot be read says why
instead of failing the report.
"""

from __future__ import annotations

import os
import platform
from typing import Any

from hybridnb.errors import HybridError


def _os_release(path: str = "/etc/os-release") -> str:
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                if key == "PRETTY_NAME":
                    return value.strip('"')
    except OSError:
        pass
    return "unknown"


def _engine_versions(backend: Any) -> list[tuple[str, str]]:
    """What each engine says (drivers sharing an engine say the same: one line each)."""
    out: dict[str, str] = {}
    for kind, driver in sorted(getattr(backend, "drivers", {}).items()):
        ask = getattr(driver, "engine_version", None)
        if ask is None:
            continue
        try:
            out.update(ask())
        except HybridError as exc:
            out[f"{kind} engine"] = f"unavailable: {exc.message}"
    return sorted(out.items())


def _acceleration(backend: Any) -> str:
    if not backend.target.libvirt_uri:
        return "no hypervisor on this backend"
    kvm = "present" if os.path.exists("/dev/kvm") else "absent"
    # hybridnb's domains are <domain type='qemu'> (see hybridnb.core.vmxml): TCG
    return f"TCG (QEMU emulation); /dev/kvm {kvm}"


def environment_facts(lab: Any) -> list[tuple[str, str]]:
    """The facts of the machine and engines ``lab`` runs on, in report order."""
    from hybridnb.version import version

    facts = [("hybridnb", version()),
             ("python", platform.python_version()),
             ("kernel", f"{platform.system()} {platform.release()} {platform.machine()}"),
             ("os", _os_release())]
    try:
        backend = lab.backend
    except HybridError as exc:
        return facts + [("backend", f"unavailable: {exc.message}")]
    target = backend.target
    facts.append(("backend", backend.name))
    if target.netns:
        facts.append(("lab host", f"network namespace {target.netns}"))
    elif target.docker_url or target.libvirt_uri:
        facts.append(("lab host", "this machine's own network namespace"))
    else:
        facts.append(("lab host", "none: the backend keeps the lab in memory"))
    if target.docker_url:
        facts.append(("docker endpoint", target.docker_url))
    if target.libvirt_uri:
        facts.append(("libvirt URI", target.libvirt_uri))
    facts.extend(_engine_versions(backend))
    facts.append(("VM acceleration", _acceleration(backend)))
    return facts


__all__ = ["environment_facts"]
