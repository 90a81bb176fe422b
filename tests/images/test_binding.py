"""Binding a lab's endpoints to the images of their recipes (the builds are faked here):
resolve/plan look without building, apply builds what is missing first, a target without
engines (dry-run) binds nothing, and an unchanged lab plans nothing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from hybridnb.core.compile import compile_lab
from hybridnb.core.ipam import assign_addresses
from hybridnb.core.spec import parse_lab
from hybridnb.drivers.base import Backend
from hybridnb.drivers.dryrun import dry_run_backend
from hybridnb.images import binding, builder, container, store, vmdisk
from hybridnb.images.binding import ImageEvent, bind_images
from hybridnb.images.builder import BuildEvent, recipe_key
from hybridnb.images.vmkernel import KernelBundle, _format_key
from hybridnb.lab import Lab
from hybridnb.target import Target

PG = {"packages": ["postgresql", "postgresql-client"], "services": ["postgresql"]}
DOC = {"name": "bind", "images": {"pg": PG},
       "endpoints": {"db": {"kind": "vm", "image": "pg"},
                     "api": {"kind": "container", "image": "pg"},
                     "bb": {"kind": "container"}}}
REAL = Target("fake", docker_url="unix:///nonexistent.sock", libvirt_uri="qemu:///nowhere")


@pytest.fixture
def cache(monkeypatch, tmp_path) -> Path:
    root = tmp_path / "cache"
    root.mkdir()
    monkeypatch.setenv("HYBRIDNB_IMAGE_DIR", str(root))
    return root


def spec_and_resources():
    spec = parse_lab(DOC)
    return spec, compile_lab(spec, assign_addresses(spec))


def fake_build(root: Path, recipe: Any, versions: str = "v1") -> store.Build:
    d = store.recipes_dir(root) / f"{recipe.name}-{recipe_key(recipe)}-{versions}"
    (d / "rootfs").mkdir(parents=True)
    store.write_json_atomic(d / store.MANIFEST, {
        "name": recipe.name, "recipe_key": recipe_key(recipe), "versions_key": versions,
        "built": time.time(), "installed": {}, "size": 1 << 20})
    return store.Build(d, store.read_manifest(d) or {})


def fake_bundle(root: Path) -> KernelBundle:
    d = root / f"vmkernel-6.1.0-t-{_format_key()}"
    d.mkdir()
    (d / "vmlinux").write_bytes(b"k")
    (d / "initrd.img").write_bytes(b"i")
    store.write_json_atomic(d / store.MANIFEST, {"version": "6.1.0-t", "built": 1.0})
    return KernelBundle(d, "6.1.0-t")


def fake_disk(build: store.Build, recipe: Any, bundle: KernelBundle) -> Path:
    d = vmdisk.vm_image_dir(build, recipe, bundle)
    d.mkdir()
    (d / "disk.img").write_bytes(b"d")
    store.write_json_atomic(d / store.MANIFEST, {"size_mib": 64})
    return d / "disk.img"


@pytest.fixture
def fake_builders(monkeypatch, cache):
    """ensure_build / ensure_vm_image / docker import replaced by fakes that record calls and
    report progress like the real ones."""
    calls: list[str] = []

    def ensure_build(recipe, cache=None, progress=None, **kw):
        calls.append(f"build {recipe.name}")
        for stage, f in (("download", 0.2), ("unpack", 0.5), ("done", 1.0)):
            if progress:
                progress(BuildEvent(recipe.name, stage, f, stage))
        return fake_build(store.cache_root(cache), recipe)

    def ensure_vm_image(build, recipe, cache=None, progress=None):
        calls.append(f"disk {recipe.name}")
        root = store.cache_root(cache)
        from hybridnb.images.vmkernel import find_bundle

        bundle = find_bundle(root) or fake_bundle(root)
        disk = fake_disk(build, recipe, bundle)
        if progress:
            progress(BuildEvent(recipe.name, "disk", 1.0, "VM disk ready"))
        return vmdisk.VMImage(recipe.name, build.id, bundle.kernel, bundle.initrd, disk, 64)

    imported: set[str] = set()

    def ensure_container_image(build, recipe, url, progress=None):
        tag = container.image_tag(build, recipe)
        if tag not in imported:
            calls.append(f"import {recipe.name}")
            if progress:
                progress(BuildEvent(recipe.name, "import", 0.0, "importing"))
            imported.add(tag)
        return tag

    monkeypatch.setattr(builder, "ensure_build", ensure_build)
    monkeypatch.setattr(vmdisk, "ensure_vm_image", ensure_vm_image)
    monkeypatch.setattr(container, "ensure_container_image", ensure_container_image)
    monkeypatch.setattr(binding, "_has_image", lambda url, tag: tag in imported)
    return calls


def test_resolve_binds_what_the_cache_has(cache) -> None:
    spec, resources = spec_and_resources()
    recipe = spec.sections["images"].get("pg")
    build = fake_build(cache, recipe)
    bundle = fake_bundle(cache)
    disk = fake_disk(build, recipe, bundle)
    bound = bind_images(resources, spec.sections["images"], REAL)
    by = {r.name: r.spec for r in bound.resources}
    assert by["api"]["create"]["image"] == container.image_tag(build, recipe)
    assert by["db"]["disk"] == str(disk) and by["db"]["kernel"] == str(bundle.kernel)
    assert by["db"]["recipe"]["build"] == by["api"]["recipe"]["build"] == build.id
    assert by["bb"]["create"]["image"] == "busybox" and "recipe" not in by["bb"]
    # a newer build (images build --refresh) changes the endpoints: they will be replaced
    newer = fake_build(cache, recipe, versions="v2")
    again = {r.name: r for r in bind_images(resources, spec.sections["images"],
                                            REAL).resources}
    assert again["db"].spec["recipe"]["build"] == newer.id
    assert again["db"].fingerprint != {r.name: r for r in bound.resources}["db"].fingerprint


def test_plan_notes_what_apply_will_make(cache, fake_builders) -> None:
    spec, resources = spec_and_resources()
    bound = bind_images(resources, spec.sections["images"], REAL, mode="plan")
    assert bound.notes == ["image pg: will be built from Debian packages"]
    assert [r.fingerprint for r in bound.resources] == [r.fingerprint for r in resources]
    fake_build(cache, spec.sections["images"].get("pg"))
    notes = bind_images(resources, spec.sections["images"], REAL, mode="plan").notes
    assert notes == ["image pg: will be imported into the engine",
                     "image pg: the VM kernel bundle and disk will be made"]
    assert fake_builders == []


def test_a_target_without_engines_binds_nothing(cache, fake_builders) -> None:
    spec, resources = spec_and_resources()
    fake_build(cache, spec.sections["images"].get("pg"))
    for mode in ("resolve", "plan", "build"):
        bound = bind_images(resources, spec.sections["images"], Target("dry-run"), mode=mode)
        assert bound.resources == resources and not bound.notes and not bound.made
    assert fake_builders == []


def test_build_makes_what_is_missing_with_progress(cache, fake_builders) -> None:
    spec, resources = spec_and_resources()
    events: list[ImageEvent] = []
    bound = bind_images(resources, spec.sections["images"], REAL, mode="build",
                        progress=events.append)
    assert fake_builders == ["build pg", "import pg", "disk pg"]
    assert bound.made == ["pg (rootfs)", "pg (container)", "pg (vm)"]
    assert all(e.phase == "image" and 0 <= e.done < e.total == 200 for e in events)
    assert str(events[0]) == "image pg (container): download"
    # the same resources the next plan sees: nothing more to make
    planned = bind_images(resources, spec.sections["images"], REAL, mode="plan")
    assert not planned.notes
    assert [r.fingerprint for r in planned.resources] == \
        [r.fingerprint for r in bound.resources]


def test_lab_apply_builds_first_and_then_plans_nothing(cache, fake_builders, tmp_path) -> None:
    drivers = dry_run_backend(tmp_path / "engine.json").drivers
    backend = Backend("fake", REAL, dict(drivers))
    lab = Lab.from_dict(DOC, backend=backend, state_dir=tmp_path / "state")
    plan = lab.plan()
    assert "  image pg: will be built from Debian packages" in plan.to_text().splitlines()
    assert "image pg: will be built" in plan._repr_html_()
    events: list[Any] = []
    lab.apply(progress=events.append)
    phases = [getattr(e, "phase", "") for e in events]
    assert phases.index("image") < min(i for i, p in enumerate(phases) if p != "image")
    assert fake_builders == ["build pg", "import pg", "disk pg"]
    again = lab.plan()
    assert again.empty and not again.notes, again.to_text()
    assert lab.apply().plan.empty and fake_builders == ["build pg", "import pg", "disk pg"]


def test_image_progress_in_the_cli_and_the_notebook(capsys) -> None:
    import argparse

    from hybridnb.cli import _progress
    from hybridnb.notebook.progress import ProgressBar

    event = ImageEvent("pg", "vm", "unpack", 0.5, "unpacking the essential packages", 50, 100)
    show = _progress(argparse.Namespace(quiet=False))
    assert show is not None
    show(event)
    assert capsys.readouterr().err == "image pg (vm): unpacking the essential packages\n"
    lines: list[str] = []
    bar = ProgressBar(use_widgets=False, write=lines.append)
    bar(event)
    assert lines == ["image pg (vm): unpacking the essential packages"]


def test_dry_run_labs_never_look_at_the_cache(cache, fake_builders, tmp_path) -> None:
    fake_build(cache, parse_lab(DOC).sections["images"].get("pg"))
    lab = Lab.from_dict(DOC, backend="dry-run", state_dir=tmp_path / "state")
    plan = lab.plan()
    assert not plan.notes and plan.count("create") == 7
    lab.apply()
    assert lab.plan().empty and fake_builders == []
    api = next(r for r in lab.resources() if r.name == "api")
    assert api.spec["create"]["image"] == "hybridnb/pg" and "build" not in api.spec["recipe"]
