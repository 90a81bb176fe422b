"""Section ``images:`` — the image recipes a lab's containers and VMs run.

::

    images:
      pg:  {packages: [postgresql, postgresql-client], services: [postgresql], memory: 192}
      web: {packages: [nginx-light, curl], services: [nginx],
            files: {/var/www/html/index.html: "hello from {{name}}"}}
    endpoints:
      db:    {kind: vm, image: pg}                # a VM booting the pg recipe's disk
      api:   {kind: container, image: pg}         # the same recipe as a container image
      watch: {kind: vm, template: observer}       # a built-in recipe (base, docker, observer)
      bb:    {kind: container, image: busybox}    # no recipe: an image the engine has

Each recipe (:mod:`hybridnb.core.recipe`) is checked with the rest of the lab file: its
problems are in the lab's one validation error, with their paths (``images.pg.services[0]``).
The built-in recipes ``base``, ``docker`` and ``observer`` are always there (a recipe of the
same name replaces one).  An endpoint runs a recipe when a container's ``image:`` names one,
when a VM's ``image:`` does (a VM ``image:`` that is a file path stays a cloud image) or when
a VM's ``template:`` is a built-in recipe (``test`` stays the busybox test VM).

What the recipe decides for such an endpoint is checked here (a VM asking for less memory
than the recipe needs, a container of a recipe that only a VM can run, an unknown recipe)
and filled in once the lab is valid (:meth:`ImagesSection.complete`): an endpoint that
declares no ``services:`` offers the recipe's real ports (``postgresql/5432``, ``http/80``),
so its SRV records and the probes name what really listens; a VM's memory is raised to the
recipe's ``memory:``.  The kind modules compile such endpoints with the recipe's identity
(:func:`~hybridnb.core.recipe.recipe_identity`); the images layer binds them to the built
image (:mod:`hybridnb.images.binding`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

from hybridnb.core import recipe as rc
from hybridnb.core.kinds import EndpointSpec, ServiceSpec
from hybridnb.core.kinds.vm import VMSpec
from hybridnb.core.problems import Collector, did_you_mean
from hybridnb.core.sections import Section

#: The VM memory a lab gets when it gives none (raised to the recipe's ``memory:``).
DEFAULT_VM_MEMORY: int = next(f.default for f in dataclasses.fields(VMSpec)
                              if f.name == "memory")


def recipe_of(ep: EndpointSpec, images: rc.LabImages | None) -> rc.Recipe | None:
    """The recipe endpoint ``ep`` runs, or ``None``."""
    return rc.endpoint_recipe(ep.kind, getattr(ep, "image", None), getattr(ep, "template", None),
                              images)


def lab_images(sections: Mapping[str, Any]) -> rc.LabImages:
    """The lab's images (``LabSpec.sections`` or ``CompileContext.sections``)."""
    value = sections.get(ImagesSection.key)
    return value if isinstance(value, rc.LabImages) else rc.LabImages()


def used_images(lab: Any) -> dict[str, tuple[rc.Recipe, tuple[str, ...]]]:
    """The recipes a lab uses: ``{name: (recipe, shapes)}`` — the shapes its endpoints run
    it in (``container``, ``vm``), ``("rootfs",)`` for a recipe of its ``images:`` section
    that no endpoint runs.  ``lab`` is a :class:`~hybridnb.core.spec.LabSpec`."""
    images = lab_images(lab.sections)
    shapes: dict[str, set[str]] = {name: set() for name in images.own}
    for ep in lab.endpoints:
        recipe = recipe_of(ep, images)
        if recipe is not None:
            shapes.setdefault(recipe.name, set()).add(ep.kind)
    recipes = images.recipes()
    return {name: (recipes[name], tuple(sorted(kinds)) or ("rootfs",))
            for name, kinds in sorted(shapes.items())}


class ImagesSection(Section):
    """Image recipes built from Debian packages, run by containers and VMs (``image:``)."""

    key = "images"
    order = 15
    value: ClassVar[str] = "mapping of recipes"
    help: ClassVar[str] = ("image recipes built from Debian packages (name → recipe); "
                           "endpoints run one with image: NAME, VMs also with template: "
                           "base|docker|observer")

    def parse(self, c: Collector, raw: Any, parsed: Mapping[str, Any]) -> rc.LabImages:
        own = rc.collect_recipes(c, raw, self.key)
        return rc.LabImages(own, dict(raw) if isinstance(raw, Mapping) else {})

    def check(self, c: Collector, lab: Any) -> None:
        images = lab_images(lab.sections)
        for ep in lab.endpoints:
            if ep.kind == "vm":
                _check_vm(c, ep, images)
            elif ep.kind == "container":
                recipe = images.get(getattr(ep, "image", None))
                if recipe is not None:
                    _check_container(c, ep, recipe)

    def complete(self, lab: Any) -> Any:
        images = lab_images(lab.sections)
        endpoints = tuple(_completed(ep, recipe) if (recipe := recipe_of(ep, images)) else ep
                          for ep in lab.endpoints)
        if endpoints == lab.endpoints:
            return lab
        return dataclasses.replace(lab, endpoints=endpoints)

    def dump(self, value: rc.LabImages) -> Any:
        return {str(k): _plain(v) for k, v in value.raw.items()} if value.raw else None

    def reference_rows(self) -> tuple[tuple[str, str, str, str], ...]:
        return RECIPE_ROWS


def _completed(ep: EndpointSpec, recipe: rc.Recipe) -> EndpointSpec:
    changes: dict[str, Any] = {}
    if not ep.services:
        services = []
        for item in recipe.endpoint_services():
            name, _, port = item.partition("/")
            services.append(ServiceSpec(name, int(port)))
        if services:
            changes["services"] = tuple(services)
    memory = getattr(ep, "memory", None)
    if ep.kind == "vm" and recipe.memory and memory is not None and memory < recipe.memory:
        changes["memory"] = recipe.memory
    return dataclasses.replace(ep, **changes) if changes else ep


def _check_vm(c: Collector, ep: EndpointSpec, images: rc.LabImages) -> None:
    image, template = getattr(ep, "image", None), getattr(ep, "template", "test")
    path = ep.path
    name = rc.endpoint_recipe_name("vm", image, template)
    if name is None:
        return
    recipe = images.get(name)
    if recipe is None and name in images.raw:
        return                                    # a recipe of the lab with problems of its own
    if recipe is None:
        known = sorted(images.recipes())
        c.add(f"{path}.image", f"unknown image recipe {name!r}",
              (did_you_mean(name, known) or f"recipes: {', '.join(known)}")
              + "; a cloud image is a file path, e.g. ./debian-12.qcow2")
        return
    if image and template != "test":
        c.add(f"{path}.template", f"template {template!r} and image {image!r} both say what "
              "the VM boots", f"drop template: (image: {image} is the recipe it runs)")
    if image and (getattr(ep, "kernel", None) or getattr(ep, "initrd", None)):
        c.add(f"{path}.kernel", f"kernel/initrd do not apply to a VM of image recipe "
              f"{recipe.name!r}", "drop them: recipe VMs boot hybridnb's kernel bundle")
    memory = getattr(ep, "memory", DEFAULT_VM_MEMORY)
    if recipe.memory and memory != DEFAULT_VM_MEMORY and memory < recipe.memory:
        c.add(f"{path}.memory", f"{memory} MiB is less than image {recipe.name!r} needs "
              f"({recipe.memory} MiB)", f"give it memory: {recipe.memory} or more, or leave "
              "memory out")


def _check_container(c: Collector, ep: EndpointSpec, recipe: rc.Recipe) -> None:
    path = f"{ep.path}.image"
    if recipe.cloud_init:
        c.add(path, f"image {recipe.name!r} is configured by cloud-init, which only a VM runs",
              "use kind: vm for it, or a recipe without cloud_init")
    vm_only = [s.name for s in recipe.services if s.modules]
    if vm_only:
        c.add(path, f"image {recipe.name!r} runs {', '.join(vm_only)}, which needs its own "
              "kernel (modules): only a VM runs it", "use kind: vm for it")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


#: The keys of one recipe, for the lab-file reference.
RECIPE_ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("suite", "string", rc.DEFAULT_SUITE, "Debian release the rootfs is built from"),
    ("packages", "list", "", "Debian packages to install (with their dependencies)"),
    ("files", "mapping", "", "absolute path → text (or {content, mode, template}); "
     "{{ name|address|domain|fqdn|gateway }} are filled in at every start"),
    ("run", "list", "", "shell commands run at build time in the rootfs"),
    ("services", "list", "", "services started at boot: catalogue names (postgresql, nginx, "
     "haproxy, prometheus, node-exporter, dockerd, redis, sshd, iperf3, apache2), NAME/PORT, "
     "or {name, command, port, user, srv}"),
    ("env", "mapping", "", "environment of the services and the command"),
    ("command", "string or list", "", "what a container runs once the services are up"),
    ("boot", "list", "", "shell commands run at every start once the services are up"),
    ("disk", "size", "", "VM disk size (2G, 512M); default: what the files need plus room"),
    ("memory", "size", "", "the least memory a VM of it needs (raises the VM's default)"),
    ("modules", "list", "", "kernel modules a VM loads"),
    ("exclude", "list", "", "dpkg path-exclude patterns (slimming)"),
    ("slim", "boolean", "true", "drop man pages, docs and locales"),
    ("cloud_init", "boolean", "false", "configure the VM with cloud-init from a NoCloud seed"),
    ("description", "string", "", "what the image is for"),
)

SECTION = ImagesSection()

__all__ = ["SECTION", "ImagesSection", "lab_images", "recipe_of", "used_images"]
