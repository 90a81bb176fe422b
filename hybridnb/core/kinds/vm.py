"""Kind ``vm``: a libvirt virtual machine with a NIC on the lab bridge.

What it boots: template ``test`` (the default) the small test image (Debian kernel + busybox
initramfs, or the spec's own ``kernel``/``initrd``) with its identity on the kernel command
line; an *image recipe* — ``image: NAME`` of the lab's ``images:`` section or a built-in one,
or ``template: base|docker|observer``, which are built-in recipes — hybridnb's kernel bundle
with the recipe's ext4 disk under a per-VM overlay (``boot: disk``; the kernel, initramfs and
disk paths are bound in by the images layer before the VM is made, see
:mod:`hybridnb.images.binding`); ``template: base|docker`` with ``image:`` a cloud image file
(qcow2) configured by a cloud-init seed.  The resource spec is what :mod:`hybridnb.core.vmxml`
and :mod:`hybridnb.core.cloudinit` turn into the domain XML and the seed: the common network
facts, the domain name and MAC, and each field under its own name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from hybridnb.core import naming
from hybridnb.core.kinds.base import (Choice, CompileContext, EndpointSpec, Integer, KeyValues,
                                      Kind, Text, spec_field)
from hybridnb.core.problems import Collector, text_value
from hybridnb.core.recipe import endpoint_recipe, is_image_path, recipe_identity
from hybridnb.core.resource import Resource

TEMPLATES = ("test", "base", "docker", "observer")
MIN_VM_MEMORY = 96
MAX_VCPUS = 64
_IMAGE = Text(what="an image recipe or a file path",
              hint="e.g. pg (a recipe of images:) or /var/lib/hybridnb/images/debian-12.qcow2")
#: How long a recipe VM may take to be up (its init gives up on a service after 120 s;
#: cloud-init alone takes ~30 s of Python under TCG).
RECIPE_BOOT_TIMEOUT, CLOUD_INIT_BOOT_TIMEOUT = 180, 300
_KERNEL_FILE = Text(what="a file path", hint="e.g. /boot/vmlinuz-6.1.0-28-amd64")
_INITRD_FILE = Text(what="a file path", hint="e.g. /boot/initrd.img-6.1.0-28-amd64")


@dataclass(frozen=True)
class VMSpec(EndpointSpec):
    kind: str = "vm"
    template: str = spec_field(
        Choice(TEMPLATES), default="test", to=("template",),
        help="test: the small test image; base/docker/observer: those built-in image "
             "recipes (or, with image: FILE, a cloud image with cloud-init)")
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
        _IMAGE, to=("image",), metavar="RECIPE|PATH",
        help="image recipe to boot (of images: or built in), or a cloud image file (qcow2) "
             "for the base/docker templates")
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
    names = {("domain_name",): "name", ("hostname",): "name", ("mac",): "name",
             ("recipe",): "image", ("boot",): "image", ("disk",): "image",
             ("image_build",): "image", ("cloud_init",): "image"}

    def check(self, c: Collector, path: str, values: Mapping[str, Any]) -> bool:
        # base/docker/observer without image: are built-in recipes (they boot as they are);
        # with image: FILE, a cloud image.  Only the test template takes kernel/initrd.
        if values.get("template") not in (None, "test") and (
                values.get("kernel") or values.get("initrd")):
            c.add(f"{path}.kernel", "kernel/initrd apply only to the 'test' template",
                  "drop them, or use template: test")
            return False
        return True

    def base_spec(self, ep: EndpointSpec, ctx: CompileContext) -> dict[str, Any]:
        spec = ctx.common(ep)
        spec.update({"domain_name": naming.object_name(ctx.lab, ep.name),
                     "mac": naming.mac_address(ctx.lab, ep.name)})
        return spec

    def compile(self, ep: EndpointSpec, ctx: CompileContext) -> Resource:
        res = super().compile(ep, ctx)
        recipe = endpoint_recipe("vm", getattr(ep, "image", None), getattr(ep, "template", None),
                                 ctx.sections.get("images"))
        if recipe is None:
            return res
        spec = dict(res.spec)
        spec.pop("image", None)
        spec.update({"boot": "disk", "recipe": recipe_identity(recipe),
                     "boot_timeout": CLOUD_INIT_BOOT_TIMEOUT if recipe.cloud_init
                     else RECIPE_BOOT_TIMEOUT})
        if recipe.cloud_init:
            spec["cloud_init"] = True
        return Resource(self.name, ep.name, spec, self.summary(ep, spec))

    def summary(self, ep: EndpointSpec, spec: Mapping[str, Any]) -> str:
        assert isinstance(ep, VMSpec)
        recipe = spec.get("recipe")
        what = f"image {recipe['name']}" if recipe else f"template {ep.template}"
        return f"{spec['address']} {what} {ep.memory} MiB"

    def details(self, ep: EndpointSpec) -> str:
        assert isinstance(ep, VMSpec)
        what = f"image {ep.image}" if ep.image and not is_image_path(ep.image) else \
            f"template {ep.template}"
        return f"{what}, {ep.memory} MiB, {ep.vcpus} vCPU"

    def probe_services(self, resource: Resource) -> tuple[str, ...]:
        spec = resource.spec
        recipe = spec.get("recipe")
        if isinstance(recipe, Mapping):                    # the recipe's services' ports
            return tuple(f"tcp/{port}" for port in recipe.get("ports", ()))
        if spec.get("template") == "test":
            return ("http/80", "tcp/80", "udp/7")          # busybox httpd, hnb-udp echo
        return ()


KIND = VMKind()
