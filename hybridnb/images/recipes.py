"""Recipe images as a lab asks for them: one call per endpoint, then list and prune the cache.

:func:`ensure_image` is the whole interface the lab needs::

    ref = ensure_image(recipe, target, "container", progress)   # → ContainerImage (a tag)
    ref = ensure_image(recipe, target, "vm", progress)          # → VMImage (kernel, disk...)
    spec.update(ref.spec())                                     # into the resource spec

It builds the rootfs when the cache has none for this recipe and these package versions
(:mod:`~hybridnb.images.builder`), then the shape: a ``docker import`` into the target's
engine (:mod:`~hybridnb.images.container`) or an ext4 disk with the kernel bundle
(:mod:`~hybridnb.images.vmdisk`).  Every step reports :class:`BuildEvent` s to ``progress``
and is a cache hit (milliseconds for the rootfs and the disk, one engine call for the image)
when nothing changed.  :func:`find_image` answers without building (plans, dry runs).

:func:`list_images` and :func:`prune` keep the cache in view and in bounds; both return
objects that render themselves (text and HTML).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hybridnb.core.recipe import Recipe
from hybridnb.images import store
from hybridnb.images.builder import BuildEvent, ensure_build, layer_key, recipe_key
from hybridnb.target import Target

SHAPES = ("container", "vm", "rootfs")
Progress = Callable[[BuildEvent], None]


@dataclass(frozen=True)
class ContainerImage:
    """A recipe's image in a Docker engine."""

    recipe: str
    build: str
    tag: str

    def spec(self) -> dict[str, object]:
        """The fields a container resource spec takes from the image."""
        return {"image": self.tag, "image_build": self.build}


def ensure_image(recipe: Recipe, target: Target | None, shape: str,
                 progress: Progress | None = None, *, cache: Path | str | None = None,
                 refresh: bool = False, force: bool = False) -> Any:
    """The image of ``recipe`` in ``shape`` (``container``: in ``target``'s engine; ``vm``:
    a disk and kernel to boot; ``rootfs``: the build itself), made when missing."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}")
    build = ensure_build(recipe, cache=cache, progress=progress, refresh=refresh, force=force)
    if shape == "rootfs":
        return build
    if shape == "vm":
        from hybridnb.images.vmdisk import ensure_vm_image

        return ensure_vm_image(build, recipe, cache=cache, progress=progress)
    from hybridnb.images.container import ensure_container_image

    if target is None or not target.docker_url:
        from hybridnb.errors import EngineUnavailable

        raise EngineUnavailable(f"no Docker engine to put image {recipe.name} into",
                                engine="docker", hint="hybridnb sandbox up")
    tag = ensure_container_image(build, recipe, target.docker_url, progress)
    return ContainerImage(recipe.name, build.id, tag)


def find_image(recipe: Recipe, *, cache: Path | str | None = None) -> store.Build | None:
    """The newest build of this exact recipe, without building or checking versions."""
    found = store.builds(store.cache_root(cache), recipe_key=recipe_key(recipe))
    return found[0] if found else None


# ------------------------------------------------------------------------------ list / prune

def _age(ts: float) -> str:
    s = max(0.0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.0f} {unit} ago"
    return f"{s:.0f} s ago"


@dataclass
class ImageList:
    """The cache's builds (one row each) and what else it holds."""

    root: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    others: list[tuple[str, int]] = field(default_factory=list)      # (name, bytes)

    HEADERS = ("image", "build", "packages", "size", "vm disk", "built")

    def _cells(self) -> list[list[str]]:
        return [[r["name"], r["id"][len(r["name"]) + 1:], str(r["packages"]),
                 f"{r['size'] / 2**20:.0f} MiB", r["vm"], _age(r["built"])] for r in self.rows]

    def to_text(self) -> str:
        from hybridnb.core.tables import text_table

        head = f"{len(self.rows)} image build{'s' if len(self.rows) != 1 else ''} in {self.root}"
        lines = [head]
        if self.rows:
            lines.append(text_table(self.HEADERS, self._cells()))
        for name, size in self.others:
            lines.append(f"  also: {name} ({size / 2**20:.0f} MiB)")
        return "\n".join(lines)

    __repr__ = to_text

    def _repr_html_(self) -> str:
        from hybridnb.core.tables import table

        return table(self.HEADERS, self._cells(), caption=f"image builds in {self.root}")

    def records(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.rows]


def list_images(cache: Path | str | None = None) -> ImageList:
    root = store.cache_root(cache)
    out = ImageList(root)
    for b in sorted(store.builds(root), key=lambda b: (b.name, -b.built)):
        disks = b.vm_images()
        out.rows.append({"name": b.name, "id": b.id, "packages": len(b.installed),
                         "size": b.size, "built": b.built, "seconds": b.manifest.get("seconds"),
                         "vm": f"{len(disks)}" if disks else "-"})
    for d in sorted(root.glob("vmkernel-*")) + sorted(root.glob("testvm-*")):
        if d.is_dir():
            out.others.append((d.name, store.tree_size(d)))
    return out


@dataclass
class PruneResult:
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    freed: int = 0

    def to_text(self) -> str:
        lines = [f"removed {len(self.removed)} item(s), {self.freed / 2**20:.0f} MiB freed"
                 + (":" if self.removed else "")] if self.removed else ["nothing to prune"]
        lines += [f"  {r}" for r in self.removed]
        lines += [f"  kept {k}" for k in self.kept]
        return "\n".join(lines)

    __repr__ = to_text


def _open_files() -> set[str]:
    """Paths some process holds open (a running VM's disk, the kernel it booted...)."""
    out = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
                except OSError:
                    pass
        except OSError:
            pass
    return out


def prune(cache: Path | str | None = None, *, everything: bool = False) -> PruneResult:
    """Remove builds superseded by a newer one of the same recipe name (``everything``: all
    builds and kernel bundles), VM disks of older kernel bundles or guest layers, and
    leftovers of interrupted builds whose process is gone.  Anything a running process
    holds open (a VM's disk) is kept."""
    from hybridnb.images.vmkernel import find_bundle

    root = store.cache_root(cache)
    result = PruneResult()
    busy = _open_files()

    def drop(path: Path) -> None:
        prefix = str(path) + "/"
        held = sorted(f for f in busy if f.startswith(prefix))
        if held:
            result.kept.append(f"{path.relative_to(root)} (in use: {held[0]})")
            return
        result.freed += store.tree_size(path)
        store.remove_tree(path)
        result.removed.append(str(path.relative_to(root)))

    seen: set[str] = set()
    bundle = find_bundle(root)
    for b in store.builds(root):                       # newest first
        key = b.name
        with store.locked(root, f"rootfs-{b.recipe_key}"):
            if everything or key in seen:
                drop(b.path)
                continue
            seen.add(key)
            current = [d for d in b.vm_images() if bundle is not None
                       and d.name.startswith(f"vm-{bundle.id}-")]
            newest = max(current, key=lambda d: (store.read_manifest(d) or {}).get("built", 0),
                         default=None)
            for disk in b.vm_images():
                if disk != newest:
                    drop(disk)
    for d in store.clear_temps(root):
        result.removed.append(str(d.relative_to(root)))
    for d in sorted(root.glob("vmkernel-*")):
        if everything or bundle is None or d != bundle.path:
            drop(d)
    return result


__all__ = ["ContainerImage", "ensure_image", "find_image", "list_images", "prune",
           "layer_key", "SHAPES"]
