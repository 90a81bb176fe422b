"""The engines a lab runs on: reachable, which versions, and how VMs are virtualized.

``docker`` and ``libvirt`` ask the drivers for the engines' versions (a failure to connect
is a ``fail`` when the lab has endpoints of that kind, a ``warn`` otherwise);
``virtualization`` says whether VMs run with KVM or under TCG (QEMU's software emulation):
hybridnb's domains are of type ``qemu`` (TCG), which works everywhere but boots slower.
"""

from __future__ import annotations

from typing import Any

from hybridnb.errors import HybridError
from hybridnb.services.doctor.base import FAIL, OK, WARN, Check, DoctorContext, Finding


def _has(ctx: DoctorContext, kind: str) -> bool:
    return any(r.kind == kind for r in ctx.resources)


class Docker(Check):
    id = "docker"
    title = "Docker engine reachable"
    group = "engines"
    why = "containers and the lab's Docker network live in this engine"
    needs_lab = False

    def applies(self, ctx: DoctorContext) -> bool:
        return "container" in ctx.drivers

    def run(self, ctx: DoctorContext) -> Finding:
        url = ctx.target.docker_url
        try:
            v = ctx.drivers["container"].version()
        except HybridError as exc:
            return self.finding(FAIL if _has(ctx, "container") else WARN,
                                f"{url}: {exc.message}", fix_command="hybridnb sandbox up"
                                if ctx.target.name.startswith("sandbox") else "")
        return self.finding(OK, f"Docker {v['version']} (API {v['api']}) at {url}",
                            data=v)


class Libvirt(Check):
    id = "libvirt"
    title = "libvirt and QEMU reachable"
    group = "engines"
    why = "VMs are libvirt domains run by QEMU"
    needs_lab = False

    def applies(self, ctx: DoctorContext) -> bool:
        return "vm" in ctx.drivers

    def _versions(self, ctx: DoctorContext) -> dict[str, str]:
        return ctx.cached("libvirt-versions", lambda: ctx.drivers["vm"].versions())

    def run(self, ctx: DoctorContext) -> Finding:
        try:
            v = self._versions(ctx)
        except HybridError as exc:
            return self.finding(FAIL if _has(ctx, "vm") else WARN,
                                f"{ctx.target.libvirt_uri}: {exc.message}")
        return self.finding(OK, f"libvirt {v['libvirt']}, QEMU {v['qemu']} at "
                                f"{ctx.target.libvirt_uri}", data=v)


class Virtualization(Check):
    id = "virtualization"
    title = "KVM or TCG"
    group = "engines"
    why = "under TCG (software emulation) VMs boot in seconds instead of a second"
    needs_lab = False

    def applies(self, ctx: DoctorContext) -> bool:
        return "vm" in ctx.drivers

    def run(self, ctx: DoctorContext) -> Finding:
        try:
            v = Libvirt()._versions(ctx)
        except HybridError as exc:
            return self.finding(WARN, f"not known: {exc.message}")
        from hybridnb.services.doctor import host

        kvm = host.reader(ctx).kvm_device()
        offered = v.get("domain_types", "") or "none"
        seen = {True: "present", False: "absent"}.get(kvm, "not looked at (another machine)")
        return self.finding(OK, f"VMs run under TCG (hybridnb defines domains of type 'qemu');"
                                f" libvirt offers: {offered}; /dev/kvm {seen}",
                            data={"accelerator": "tcg", "kvm_device": kvm,
                                  "domain_types": offered})


CHECKS: list[Any] = [Docker(), Libvirt(), Virtualization()]
