"""Kind ``vm``: a libvirt virtual machine with a NIC on the lab bridge.

Templates: ``test`` boots the small test image (Debian kernel + busybox initramfs, or the
spec's own ``kernel``/``initrd``) with its identity on the kernel command line; ``base`` and
``docker`` boot a cloud ``image`` configured by a cloud-init seed.  The resource spec is what
:mod:`hybridnb.core.vmxml` and :mod:`hybridnb.core.cloudinit` turn into the domain XML and the
seed: the common network facts, the domain name and MAC, and each field under its own name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from hybridnb.core import naming
from hybridnb.core.kinds.base import (Choice, CompileContext, EndpointSpec, Integer, KeyValues,
                                      Kind, Text, spec_field)
from hybridnb.core.problems import Collector, text_value
from hybridnb.core.resource import Resource

TEMPLATES = ("test", "base", "docker")
#: Templates that boot a cloud ``image:`` of the user's and have no image of their own: a VM
#: of these without ``image:`` is refused in validation, before anything is made.  (The one
#: place to change when a template gets a built-in image.)
NEEDS_IMAGE = frozenset({"base", "docker"})
MIN_VM_MEMORY = 96
MAX_VCPUS = 64
_IMAGE_FILE = Text(what="a file path", hint="e.g. /var/lib/hybridnb/images/debian-12.qcow2")
_KERNEL_FILE = Text(what="a file path", hint="e.g. /boot/vmlinuz-6.1.0-28-amd64")
_INITRD_FILE = Text(what="a file path", hint="e.g. /boot/initrd.img-6.1.0-28-amd64")


@dataclass(frozen=True)
class VMSpec(EndpointSpec):
    kind: str = "vm"
    template: str = spec_field(
        Choice(TEMPLATES), default="test", to=("template",),
        help="test: the small test image; base/docker: a cloud image with cloud-init")
    memory: int = spec_field(
        Integer(what="a size in MiB", hint="e.g. 128", minimum=MIN_VM_MEMORY,
                out_of_range=lambda v: (f"{v} MiB is too little for a guest",
                                        f"give it at least {MIN_VM_MEMORY} MiB")),
        default=128, to=("memory",), metavar="MiB", help="guest memory in MiB")
    vcpus: int = spec_field(
        Integer(what="a number of CPUs", hint="e.g. 1", minimum=1, maximum=MAX_VCPUS,
                out_of_range=lambda v: (f"{v} vCPUs is out of range", f"use 1 to {MAX_VCPUS}")),
        default=1, to=("vcpus",), help="virtual CPUs")
    image: str | None = spec_field(
        _IMAGE_FILE, to=("image",), metavar="PATH",
        help="cloud image (qcow2) for the base/docker templates")
    kernel: str | None = spec_field(
        _KERNEL_FILE, to=("kernel",), metavar="PATH",
        help="kernel for the test template (default: the built test image's)")
    initrd: str | None = spec_field(
        _INITRD_FILE, to=("initrd",), metavar="PATH",
        help="initramfs for the test template (default: the built test image's)")
    labels: Mapping[str, str] = spec_field(
        KeyValues(check=lambda k, v: text_value(v)), default={}, option="label",
        help="labels that policy groups and label:K=V selectors match (the VM does not "
             "see them)")


class VMKind(Kind):
    name = "vm"
    spec = VMSpec
    title = "VM"
    plural = "VMs"
    description = "a libvirt/QEMU virtual machine with a NIC on the lab bridge"
    rank = 2
    stage = 60
    pool_offset = 200
    colour = "#9467bd"
    names = {("domain_name",): "name", ("hostname",): "name", ("mac",): "name"}

    def check(self, c: Collector, path: str, values: Mapping[str, Any]) -> bool:
        template = values.get("template")
        ok = True
        if template in ("base", "docker") and (values.get("kernel") or values.get("initrd")):
            c.add(f"{path}.kernel", "kernel/initrd apply only to the 'test' template",
                  "drop them, or use template: test")
            ok = False
        bad_image = any(p.path == f"{path}.image" for p in c.problems)    # reported already
        if template in NEEDS_IMAGE and not values.get("image") and not bad_image:
            c.add(f"{path}.image", f"template {template!r} boots a cloud image: image: is "
                  "missing", "set image: to a downloaded cloud image (qcow2), e.g. "
                  "/var/lib/hybridnb/images/debian-12-genericcloud-amd64.qcow2, or use "
                  "template: test")
            ok = False
        return ok

    def base_spec(self, ep: EndpointSpec, ctx: CompileContext) -> dict[str, Any]:
        spec = ctx.common(ep)
        spec.update({"domain_name": naming.object_name(ctx.lab, ep.name),
                     "mac": naming.mac_address(ctx.lab, ep.name)})
        return spec

    def summary(self, ep: EndpointSpec, spec: Mapping[str, Any]) -> str:
        assert isinstance(ep, VMSpec)
        return f"{spec['address']} template {ep.template} {ep.memory} MiB"

    def details(self, ep: EndpointSpec) -> str:
        assert isinstance(ep, VMSpec)
        return f"template {ep.template}, {ep.memory} MiB, {ep.vcpus} vCPU"

    def probe_services(self, resource: Resource) -> tuple[str, ...]:
        if resource.spec.get("template") == "test":       # busybox httpd, hnb-udp echo
            return ("http/80", "tcp/80", "udp/7")
        return ()


KIND = VMKind()
