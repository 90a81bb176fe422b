"""Lab endpoints bound to the images of their recipes: what ``plan`` shows, ``apply`` builds.

Compiling a lab is pure (:mod:`hybridnb.core.compile`): a container or VM that runs an image
recipe compiles with the recipe's identity (``recipe: {name, digest}``) and without what only
the image cache knows.  :func:`bind_images` fills that in for the target the lab lives on:

* a container's ``create.image`` becomes the tag of the recipe's build in the target's Docker
  engine (``hybridnb/pg:<recipe key>-<versions key>-<layer key>``);
* a VM gets the kernel bundle's ``kernel`` and ``initrd`` and the build's ``disk`` to put its
  overlay on;
* both record the build (``recipe.build``), so a rebuilt image (``hybridnb images build
  --refresh``, a changed recipe) changes the endpoint's fingerprint and the next apply
  replaces it, while an unchanged lab plans nothing.

Three modes, one code path:

* ``resolve`` (``Lab.resources()``, ``status``...): what exists is looked up (a manifest
  read and a few ``stat`` calls per recipe) — no build, no engine call;
* ``plan``: the same, and :attr:`Bound.notes` says what ``apply`` will make first ("image
  pg: will be built", "… imported into the engine", "… VM disk will be made");
* ``build`` (``apply``, before anything of the lab changes): what is missing is made, with
  :class:`ImageEvent` progress (resolve, download, unpack, install, setup, files, run, disk,
  import) — the builder's own stages.  An image that is there is reused as it is: apply
  never rebuilds because Debian published a new version (that is ``images build
  --refresh``), so re-applying an unchanged lab does nothing.

A target without the engine a shape runs on (the dry-run backend has neither Docker nor
libvirt) binds nothing: its resources stay as compiled, deterministic and without any look
at this machine's cache — plans and ``--dry-run`` never build.

Why a step before the plan rather than image resources in it: an image is not the lab's —
the cache is shared by every lab and outlives them, ``destroy`` must not remove it — yet the
endpoints' specs need what building it yields (the tag, the disk) to be compiled and
compared.  So images are made before the plan is made, under the lab's lock, and a build
that fails stops the apply before anything of the lab was touched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from hybridnb.core.recipe import LabImages, Recipe
from hybridnb.core.resource import Resource
from hybridnb.images import store
from hybridnb.images.builder import BuildEvent
from hybridnb.target import Target

#: What each resource kind runs a recipe as.
SHAPE = {"container": "container", "vm": "vm"}
MODES = ("resolve", "plan", "build")


@dataclass(frozen=True)
class ImageEvent:
    """Progress of the images step of an apply, shaped like the apply's own events for the
    fronts (``phase``, ``done``/``total``, ``str()``): ``done`` counts percent of the images
    being made."""

    recipe: str
    shape: str
    stage: str
    fraction: float
    message: str
    done: int
    total: int
    phase: str = "image"

    def __str__(self) -> str:
        return f"image {self.recipe} ({self.shape}): {self.message or self.stage}"


@dataclass
class Bound:
    """The lab's resources with their images bound in, and what is still to be made."""

    resources: list[Resource]
    notes: list[str] = field(default_factory=list)
    #: images made by this call (``build`` mode), e.g. ``pg (vm)``
    made: list[str] = field(default_factory=list)
    seconds: float = 0.0


def needed(resources: Iterable[Resource]) -> list[tuple[str, str]]:
    """``(recipe, shape)`` pairs the resources run, sorted."""
    return sorted({(r.spec["recipe"]["name"], SHAPE[r.kind]) for r in resources
                   if r.kind in SHAPE and isinstance(r.spec.get("recipe"), dict)})


def _engine(target: Target | None, shape: str) -> str | None:
    if target is None:
        return None
    return target.docker_url if shape == "container" else target.libvirt_uri


@dataclass
class _Binder:
    images: LabImages
    target: Target | None
    mode: str
    progress: Callable[[Any], None] | None
    cache: Path | str | None
    notes: list[str] = field(default_factory=list)
    made: list[str] = field(default_factory=list)
    _todo: int = 1
    _step: int = 0

    def emit(self, recipe: str, shape: str) -> Callable[[BuildEvent], None] | None:
        if self.progress is None:
            return None
        sink = self.progress

        def report(event: BuildEvent) -> None:
            done = int(100 * (self._step + max(0.0, min(1.0, event.fraction))))
            sink(ImageEvent(recipe, shape, event.stage, event.fraction, event.message,
                            min(done, 100 * self._todo - 1), 100 * self._todo))
        return report

    def build_of(self, recipe: Recipe, shape: str) -> store.Build | None:
        from hybridnb.images.recipes import find_image

        found = find_image(recipe, cache=self.cache)
        if found is not None or self.mode != "build":
            if found is None:
                self.notes.append(f"image {recipe.name}: will be built from Debian packages")
            return found
        from hybridnb.images.builder import ensure_build

        self.made.append(f"{recipe.name} (rootfs)")
        return ensure_build(recipe, cache=self.cache, progress=self.emit(recipe.name, shape))

    def container(self, recipe: Recipe, build: store.Build) -> dict[str, Any] | None:
        from hybridnb.images.container import ensure_container_image, image_tag

        tag = image_tag(build, recipe)
        url = self.target.docker_url if self.target else None
        if self.mode == "build" and url:
            tag = ensure_container_image(build, recipe, url, self._noting(recipe, "container"))
        elif self.mode == "plan" and url and not _has_image(url, tag):
            self.notes.append(f"image {recipe.name}: will be imported into the engine")
        return {"tag": tag, "build": build.id}

    def _noting(self, recipe: Recipe, shape: str) -> Callable[[BuildEvent], None]:
        inner = self.emit(recipe.name, shape)

        def report(event: BuildEvent) -> None:
            if event.stage == "import" and event.fraction == 0.0:
                self.made.append(f"{recipe.name} ({shape})")
            if inner is not None:
                inner(event)
        return report

    def vm(self, recipe: Recipe, build: store.Build) -> dict[str, Any] | None:
        from hybridnb.images.vmdisk import ensure_vm_image, vm_image_dir
        from hybridnb.images.vmkernel import find_bundle

        bundle = find_bundle(self.cache)
        disk_dir = vm_image_dir(build, recipe, bundle) if bundle is not None else None
        present = disk_dir is not None and (disk_dir / store.MANIFEST).exists()
        if not present and self.mode == "build":
            self.made.append(f"{recipe.name} (vm)")
            image = ensure_vm_image(build, recipe, cache=self.cache,
                                    progress=self.emit(recipe.name, "vm"))
            return {"kernel": str(image.kernel), "initrd": str(image.initrd),
                    "disk": str(image.disk), "build": build.id}
        if bundle is None or disk_dir is None:
            self.notes.append(f"image {recipe.name}: the VM kernel bundle and disk will be made")
            return None
        if not present:
            self.notes.append(f"image {recipe.name}: VM disk will be made")
        return {"kernel": str(bundle.kernel), "initrd": str(bundle.initrd),
                "disk": str(disk_dir / "disk.img"), "build": build.id}

    def bind(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        out: dict[tuple[str, str], dict[str, Any]] = {}
        runnable = [(n, s) for n, s in pairs if _engine(self.target, s)]
        self._todo = max(1, len(runnable))
        for self._step, (name, shape) in enumerate(runnable):
            recipe = self.images.get(name)
            if recipe is None:                     # validation names every recipe it accepts
                continue
            build = self.build_of(recipe, shape)
            if build is None:
                continue
            fields = self.container(recipe, build) if shape == "container" else \
                self.vm(recipe, build)
            if fields is not None:
                out[(name, shape)] = fields
        return out


def _has_image(url: str, tag: str) -> bool:
    import docker
    import docker.errors

    from hybridnb.drivers.docker import docker_errors

    with docker_errors(f"look for image {tag}"):
        client = docker.APIClient(base_url=url, version="auto", timeout=30)
        try:
            client.inspect_image(tag)
            return True
        except docker.errors.ImageNotFound:
            return False
        finally:
            client.close()


def bind_images(resources: Iterable[Resource], images: LabImages, target: Target | None, *,
                mode: str = "resolve", progress: Callable[[Any], None] | None = None,
                cache: Path | str | None = None) -> Bound:
    """``resources`` with the images of their recipes bound in (see the module docstring);
    ``mode`` is ``resolve``, ``plan`` or ``build``.  Raises
    :class:`~hybridnb.errors.BuildError` when a build fails (``build`` mode)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    t0 = time.monotonic()
    resources = list(resources)
    binder = _Binder(images, target, mode, progress, cache)
    fields = binder.bind(needed(resources))
    out = []
    for res in resources:
        recipe = res.spec.get("recipe") if res.kind in SHAPE else None
        bound = fields.get((recipe["name"], SHAPE[res.kind])) if isinstance(recipe, dict) \
            else None
        if bound is None:
            out.append(res)
            continue
        out.append(_bound(res, bound))
    return Bound(out, list(dict.fromkeys(binder.notes)), binder.made, time.monotonic() - t0)


def _bound(res: Resource, fields: dict[str, Any]) -> Resource:
    spec = dict(res.spec)
    spec["recipe"] = {**spec["recipe"], "build": fields["build"]}
    if res.kind == "container":
        spec["create"] = {**spec["create"], "image": fields["tag"]}
    else:
        spec.update({k: fields[k] for k in ("kernel", "initrd", "disk")})
    return Resource(res.kind, res.name, spec, res.summary)


__all__ = ["Bound", "ImageEvent", "bind_images", "needed"]
