"""``hybridnb images build|list|prune`` (the builds themselves are faked here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridnb.cli import main
from hybridnb.images import recipes, store


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def cache(monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("HYBRIDNB_IMAGE_DIR", str(tmp_path))
    return tmp_path


def test_list_and_prune_an_empty_cache(capsys, cache) -> None:
    code, out, _ = run(capsys, "images", "list")
    assert code == 0 and out.startswith(f"0 image builds in {cache}")
    code, out, _ = run(capsys, "images", "list", "--json")
    assert code == 0 and out.strip() == "[]"
    code, out, _ = run(capsys, "images", "prune")
    assert code == 0 and out.strip() == "nothing to prune"


def test_build_names_what_a_lab_uses(capsys, cache, monkeypatch, tmp_path) -> None:
    asked: list[tuple[str, str, bool]] = []

    class Ref:
        disk = Path("/c/disk.img")
        rootfs = Path("/c/rootfs")

    def fake(recipe, target, shape, progress=None, **kw):
        asked.append((recipe.name, shape, kw.get("refresh", False)))
        if progress:
            from hybridnb.images.builder import BuildEvent
            progress(BuildEvent(recipe.name, "done", 1.0, "built"))
        return Ref()

    monkeypatch.setattr(recipes, "ensure_image", fake)
    lab = tmp_path / "lab.yaml"
    lab.write_text("images:\n  pg: {packages: [postgresql], services: [postgresql]}\n"
                   "  spare: {packages: [curl]}\n"
                   "endpoints:\n  db: {kind: vm, image: pg}\n"
                   "  api: {kind: container, image: pg}\n"
                   "  watch: {kind: vm, template: observer}\n")
    code, out, err = run(capsys, "images", "build", str(lab), "--refresh")
    assert code == 0, err
    assert asked == [("observer", "vm", True), ("pg", "vm", True), ("spare", "rootfs", True)]
    assert "image pg: VM disk /c/disk.img (+ container: docker import on first use)" in out
    assert "image spare: rootfs /c/rootfs" in out and "image pg: built" in err
    asked.clear()
    code, out, _ = run(capsys, "images", "build", "base", "-q")
    assert code == 0 and asked == [("base", "vm", False)]


def test_build_errors(capsys, cache, tmp_path) -> None:
    code, _, err = run(capsys, "images", "build", "nosuch")
    assert code == 2 and "'nosuch' is neither a lab file nor a built-in image" in err
    assert "base, docker, observer" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("images:\n  pg: {packages: [PG], servics: []}\n")
    code, _, err = run(capsys, "images", "build", str(bad))
    assert code == 2
    assert "images.pg.packages[0]: 'PG' is not a Debian package name" in err
    assert "images.pg.servics: unknown key 'servics' (hint: did you mean 'services'?)" in err
    assert not store.builds(cache)


def test_build_reads_lab_files_like_any_lab_file(capsys, cache, tmp_path) -> None:
    """Through the bounded loader and the lab's own validation: a duplicate key, an alias
    bomb or an endpoint naming an unknown recipe is one clear error, nothing is built."""
    dup = tmp_path / "dup.yaml"
    dup.write_text("images:\n  pg: {packages: [curl]}\n  pg: {packages: [wget]}\n")
    code, _, err = run(capsys, "images", "build", str(dup))
    assert code == 2 and "duplicate key" in err and "dup.yaml" in err, err
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("endpoints:\n  db: {kind: vm, image: pgg}\n")
    code, _, err = run(capsys, "images", "build", str(unknown))
    assert code == 2 and "endpoints.db.image: unknown image recipe 'pgg'" in err, err
    assert not store.builds(cache)
