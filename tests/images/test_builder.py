"""The image builder without the network: cache keys and hits, atomic builds, errors, argv.

mmdebstrap and apt are replaced by fakes here (the real build is in test_images_real.py):
the cache logic — when a build is reused, when versions are re-checked, what an interrupted
or failed build leaves — is what these tests pin down.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hybridnb.core.recipe import parse_recipe
from hybridnb.errors import BuildError, EngineError
from hybridnb.images import builder, store
from hybridnb.images.aptindex import UnknownPackages, sources
from hybridnb.images.container import changes, image_tag

STATUS = "Package: {p}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {v}\n"


class FakeIndex:
    """Stands in for AptIndex: versions and fingerprint set by the test."""

    versions: dict[str, str] = {}
    fp = "fp1"
    refreshed = 0
    resolved = 0
    offline = False
    fresh = True

    def __init__(self, cache: Path, suite: str) -> None:
        self.suite = suite

    def stale(self, limit=None) -> bool:
        return not FakeIndex.fresh

    def present(self) -> bool:
        return True

    def refresh(self) -> None:
        if FakeIndex.offline:
            raise EngineError("apt-get update failed: offline", engine="images")
        FakeIndex.refreshed += 1
        FakeIndex.fresh = True

    def fingerprint(self) -> str:
        return FakeIndex.fp

    def resolve(self, packages) -> dict[str, str]:
        FakeIndex.resolved += 1
        unknown = sorted(p for p in packages if p.startswith("nosuch"))
        if unknown:
            raise UnknownPackages(unknown, self.suite)
        return dict(FakeIndex.versions)


@pytest.fixture
def fake(monkeypatch, tmp_path):
    FakeIndex.versions = {"base-files": "12.4", "curl": "7.88.1"}
    FakeIndex.fp, FakeIndex.refreshed, FakeIndex.resolved = "fp1", 0, 0
    FakeIndex.offline, FakeIndex.fresh = False, True
    calls: list[list[str]] = []

    def run(recipe, argv, log_path, report):
        calls.append(argv)
        target = Path(argv[-1 - len(sources(recipe.suite))])
        (target / "var/lib/dpkg").mkdir(parents=True)
        (target / "var/lib/dpkg/status").write_text("\n".join(
            STATUS.format(p=p, v=v) for p, v in FakeIndex.versions.items()))
        report("install", 0.6, "installing")

    monkeypatch.setattr(builder, "AptIndex", FakeIndex)
    monkeypatch.setattr(builder, "_run_mmdebstrap", run)
    return {"cache": tmp_path / "cache", "calls": calls}


def events_of(fn):
    seen: list[builder.BuildEvent] = []
    return seen, lambda e: seen.append(e)


def test_build_then_hit_then_version_change(fake) -> None:
    recipe = parse_recipe("web", {"packages": ["curl"]})
    seen, progress = events_of(None)
    b1 = builder.ensure_build(recipe, cache=fake["cache"], progress=progress)
    assert len(fake["calls"]) == 1 and seen[-1].stage == "done" and seen[-1].fraction == 1.0
    assert b1.id == f"web-{builder.recipe_key(recipe)}-{b1.versions_key}"
    assert b1.installed == FakeIndex.versions and b1.manifest["index_fingerprints"] == ["fp1"]
    assert not list((fake["cache"] / "tmp").iterdir())          # nothing left behind
    # a hit while the lists are unchanged: no apt call at all (the < 1 s of a cache hit is
    # measured on real builds, tests/images real tests and benchmarks/images.py)
    resolved = FakeIndex.resolved
    seen, progress = events_of(None)
    assert builder.ensure_build(recipe, cache=fake["cache"], progress=progress) == b1
    assert FakeIndex.resolved == resolved
    assert [e.stage for e in seen] == ["cached"]
    # the lists change but not the versions: one resolve, recorded, still a hit
    FakeIndex.fp = "fp2"
    assert builder.ensure_build(recipe, cache=fake["cache"]) == b1
    assert FakeIndex.resolved == resolved + 1 and len(fake["calls"]) == 1
    assert store.builds(fake["cache"], "web")[0].manifest["index_fingerprints"] == ["fp1", "fp2"]
    # a version moves: rebuilt, a new build beside the old one
    FakeIndex.fp, FakeIndex.versions = "fp3", {"base-files": "12.4", "curl": "7.88.2"}
    seen, progress = events_of(None)
    b2 = builder.ensure_build(recipe, cache=fake["cache"], progress=progress)
    assert b2 != b1 and len(fake["calls"]) == 2
    assert any("1 package version(s) changed (curl)" in e.message for e in seen)
    assert store.builds(fake["cache"], "web")[0] == b2


def test_stale_lists_are_refreshed_and_offline_keeps_the_build(fake) -> None:
    recipe = parse_recipe("web", {"packages": ["curl"]})
    b1 = builder.ensure_build(recipe, cache=fake["cache"])
    FakeIndex.fresh, FakeIndex.offline = False, True
    seen, progress = events_of(None)
    assert builder.ensure_build(recipe, cache=fake["cache"], progress=progress) == b1
    assert any("offline" in e.message for e in seen)
    FakeIndex.offline = False
    refreshed = FakeIndex.refreshed
    assert builder.ensure_build(recipe, cache=fake["cache"], refresh=True) == b1
    assert FakeIndex.refreshed == refreshed + 1
    # without any build, offline is an error naming the recipe and the step
    FakeIndex.fresh, FakeIndex.offline = False, True
    with pytest.raises(BuildError) as err:
        builder.ensure_build(parse_recipe("other", {}), cache=fake["cache"])
    assert err.value.recipe == "other" and err.value.step == "resolve"


def test_force_and_recipe_changes(fake) -> None:
    recipe = parse_recipe("web", {"packages": ["curl"], "services": ["nginx"]})
    b1 = builder.ensure_build(recipe, cache=fake["cache"])
    assert builder.ensure_build(recipe, cache=fake["cache"], force=True).id == b1.id
    assert len(fake["calls"]) == 2 and len(store.builds(fake["cache"], "web")) == 1
    # a port, the command, env or disk size do not change the rootfs ...
    same = parse_recipe("web", {"packages": ["curl"], "services": ["nginx/8080"],
                                "command": "sleep 1", "env": {"A": "1"}, "disk": "1G"})
    assert builder.recipe_key(same) == builder.recipe_key(recipe)
    assert builder.layer_key(same) != builder.layer_key(recipe)
    # ... packages and files do
    other = parse_recipe("web", {"packages": ["curl", "tcpdump"], "services": ["nginx"]})
    assert builder.recipe_key(other) != builder.recipe_key(recipe)


def test_unknown_packages_fail_before_building(fake) -> None:
    recipe = parse_recipe("bad", {"packages": ["curl", "nosuchthing", "nosuchother"]})
    with pytest.raises(BuildError) as err:
        builder.ensure_build(recipe, cache=fake["cache"])
    e = err.value
    assert (e.recipe, e.step) == ("bad", "resolve")
    assert "nosuchother, nosuchthing" in str(e) and "packages.debian.org/bookworm" in str(e)
    assert not fake["calls"] and not store.builds(fake["cache"])


def test_a_failed_build_leaves_nothing(fake, monkeypatch) -> None:
    def boom(recipe, argv, log_path, report):
        Path(argv[-1 - len(sources(recipe.suite))]).mkdir(parents=True)
        raise builder._failure(recipe, ("run", "command 1: exit 3"),
                               ["I: running --customize-hook", "hnb-step: run command 1",
                                "oops from the command", "E: hook 'x' failed"], 1)

    monkeypatch.setattr(builder, "_run_mmdebstrap", boom)
    with pytest.raises(BuildError) as err:
        builder.ensure_build(parse_recipe("r", {"run": ["exit 3"]}), cache=fake["cache"])
    assert err.value.step == "run" and "command 1: exit 3 exited with an error" in str(err.value)
    assert "oops from the command" in err.value.log and "E: hook" not in err.value.log
    assert not store.builds(fake["cache"]) and not list((fake["cache"] / "tmp").iterdir())


def test_leftovers_of_a_killed_build_are_cleared(fake) -> None:
    recipe = parse_recipe("web", {"packages": ["curl"]})
    key = f"rootfs-{builder.recipe_key(recipe)}"
    dead = fake["cache"] / "tmp" / f"{key}.999999999.1"
    (dead / "build/rootfs/etc").mkdir(parents=True)
    other = fake["cache"] / "tmp" / f"other-x.{os.getpid()}.2"
    other.mkdir()
    builder.ensure_build(recipe, cache=fake["cache"])
    assert not dead.exists() and other.exists()             # another key's live build stays
    assert store.clear_temps(fake["cache"]) == []          # its owner (we) is alive
    os.rename(other, fake["cache"] / "tmp" / "other-x.999999999.2")
    assert len(store.clear_temps(fake["cache"])) == 1


def test_failure_messages() -> None:
    recipe = parse_recipe("r", {})
    e = builder._failure(recipe, ("install", "installing"),
                         ["E: Unable to locate package foo"], 1)
    assert e.step == "resolve" and "Unable to locate package foo" in str(e)
    e = builder._failure(recipe, ("install", "installing"),
                         ["dpkg: error processing", "No space left on device",
                          "E: dpkg failed"], 1)
    assert e.step == "install" and "prune" in (e.hint or "")
    e = builder._failure(recipe, ("download", "x"), ["something"], 2)
    assert "mmdebstrap exited with code 2" in str(e)


def test_mmdebstrap_argv() -> None:
    recipe = parse_recipe("pg", {"packages": ["postgresql-client"], "services": ["postgresql"],
                                 "exclude": ["/usr/share/extra/*"]})
    argv = builder.mmdebstrap_argv(recipe, Path("/t/rootfs"), ["echo hook"], Path("/w/slim"))
    assert argv[:5] == ["unshare", "--pid", "--kill-child", "mmdebstrap", "--mode=unshare"]
    assert "--variant=minbase" in argv and "--dpkgopt=force-unsafe-io" in argv
    assert "--include=postgresql,postgresql-client" in argv
    assert not any("path-exclude" in a for a in argv)        # slow: see mmdebstrap_argv
    assert '--extract-hook=mkdir -p "$1/etc/dpkg/dpkg.cfg.d" && cp /w/slim ' \
           '"$1/etc/dpkg/dpkg.cfg.d/99hybridnb-slim"' in argv
    assert "--customize-hook=echo hook" in argv
    tail = argv[argv.index("bookworm"):]
    assert tail[1] == "/t/rootfs" and tail[2].endswith("bookworm main")
    assert any("bookworm-security" in s for s in tail)


def test_steps_files_and_guest_layer(tmp_path) -> None:
    recipe = parse_recipe("w", {"services": ["postgresql"], "run": ["echo one", "echo two"],
                                "files": {"/srv/a": "{{name}}", "/srv/b": {"content": "x",
                                                                           "mode": "0755"}}})
    hooks = builder._write_steps(recipe, tmp_path)
    assert [h.split("'")[1] for h in hooks] == [
        "hnb-step: setup setup of service postgresql", "hnb-step: files 2 file(s)",
        "hnb-step: run command 1: echo one", "hnb-step: run command 2: echo two"]
    install = (tmp_path / "files/install.sh").read_text()
    assert "install -D -m 0644 /tmp/hnb-files/1 /etc/hybridnb/templates/srv/a" in install
    assert "install -D -m 0755 /tmp/hnb-files/3 /srv/b" in install
    assert "listen_addresses" in (tmp_path / "setup-0.sh").read_text()
    files = builder.guest_files(recipe)
    assert set(files) == {"/usr/lib/hybridnb/init", "/etc/hybridnb/services.sh"}
    assert files["/usr/lib/hybridnb/init"][1] == 0o755
    written = builder.write_guest_files(recipe, tmp_path / "layer")
    assert sorted(written) == ["etc/hybridnb/services.sh", "usr/lib/hybridnb/init"]
    assert os.access(tmp_path / "layer/usr/lib/hybridnb/init", os.X_OK)


def test_remove_excluded(tmp_path) -> None:
    for rel in ("usr/share/doc/curl/copyright", "usr/share/doc/curl/README.gz",
                "usr/share/man/man1/curl.1.gz", "usr/share/locale/de/LC_MESSAGES/x.mo",
                "usr/share/locale/locale.alias", "usr/bin/curl"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    recipe = parse_recipe("r", {"exclude": ["/usr/bin/cur*"]})
    n = builder.remove_excluded(tmp_path, recipe.path_excludes(), recipe.path_includes())
    assert n == 4
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["usr/share/doc/curl/copyright", "usr/share/locale/locale.alias"]


def test_installed_packages(tmp_path) -> None:
    (tmp_path / "var/lib/dpkg").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/status").write_text(
        STATUS.format(p="curl", v="7.88") + "\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n"
        "Package: libc6\nStatus: install ok installed\nArchitecture: i386\nVersion: 2.36\n"
        "Description: x\n multi-line\n")
    assert builder.installed_packages(tmp_path) == {"curl": "7.88", "libc6:i386": "2.36"}


def test_container_config() -> None:
    recipe = parse_recipe("web", {"services": ["nginx"], "env": {"MSG": 'say "hi"'},
                                  "command": ["python3", "-m", "http.server"]})
    b = store.Build(Path("/c/recipes/web-aaa-bbb"), {"name": "web", "recipe_key": "aaa",
                                                     "versions_key": "bbb"})
    assert image_tag(b, recipe) == f"hybridnb/web:aaa-bbb-{builder.layer_key(recipe)}"
    assert changes(b, recipe) == [
        'ENTRYPOINT ["/usr/lib/hybridnb/init"]', "WORKDIR /",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LABEL hybridnb.image=web-aaa-bbb", "LABEL hybridnb.recipe=web",
        'CMD ["python3", "-m", "http.server"]', 'ENV MSG="say \\"hi\\""', "EXPOSE 80/tcp"]


def test_store_listing_and_safe_removal(tmp_path) -> None:
    root = tmp_path
    for i, (name, built) in enumerate((("a", 1.0), ("a", 3.0), ("b", 2.0))):
        d = store.recipes_dir(root) / f"{name}-k{i}-v"
        d.mkdir(parents=True)
        store.write_json_atomic(d / store.MANIFEST, {"name": name, "recipe_key": f"k{i}",
                                                     "versions_key": "v", "built": built})
    (store.recipes_dir(root) / "half-k9-v").mkdir()            # no manifest: not a build
    assert [b.id for b in store.builds(root)] == ["a-k1-v", "b-k2-v", "a-k0-v"]
    assert [b.id for b in store.builds(root, "a", "k0")] == ["a-k0-v"]
    f = root / "x" / "f"
    f.parent.mkdir()
    f.write_bytes(b"y" * 10000)
    os.link(f, root / "x" / "g")
    assert 8192 <= store.tree_size(root / "x") < 20000        # hard links counted once
    store.remove_tree(root / "x")
    assert not (root / "x").exists()
    data = json.loads((store.recipes_dir(root) / "a-k0-v" / store.MANIFEST).read_text())
    assert data["built"] == 1.0


def test_prune_keeps_the_newest_of_each_recipe_and_what_is_in_use(tmp_path) -> None:
    from hybridnb.images.recipes import list_images, prune

    root = tmp_path

    def make(name: str, key: str, built: float, disks: tuple[str, ...] = ()) -> Path:
        d = store.recipes_dir(root) / f"{name}-{key}-v"
        (d / "rootfs/etc").mkdir(parents=True)
        (d / "rootfs/etc/x").write_bytes(b"x" * 5000)
        store.write_json_atomic(d / store.MANIFEST, {"name": name, "recipe_key": key,
                                                     "versions_key": "v", "built": built})
        for i, disk in enumerate(disks):
            (d / disk).mkdir()
            (d / disk / "disk.img").write_bytes(b"d")
            store.write_json_atomic(d / disk / store.MANIFEST, {"built": built + i})
        return d

    old = make("web", "k1", 1.0)
    new = make("web", "k2", 2.0, ("vm-old-kernel-d1-aa",))
    busy = make("pg", "k3", 1.0)
    held = make("pg", "k4", 0.5)
    (root / "tmp" / "rootfs-k9.999999999.1").mkdir(parents=True)
    listing = list_images(root)
    assert [r["id"] for r in listing.records()] == ["pg-k3-v", "pg-k4-v", "web-k2-v",
                                                    "web-k1-v"]
    assert "4 image builds" in listing.to_text() and "<table" in listing._repr_html_()
    with open(held / "rootfs/etc/x", "rb"):                 # "a running VM holds it"
        result = prune(root)
    assert sorted(result.removed) == ["recipes/web-k1-v", "recipes/web-k2-v/vm-old-kernel-d1-aa",
                                      "tmp/rootfs-k9.999999999.1"]
    assert result.kept == [f"recipes/pg-k4-v (in use: {held}/rootfs/etc/x)"]
    assert not old.exists() and new.exists() and busy.exists() and held.exists()
    assert "kept recipes/pg-k4-v" in result.to_text()
    everything = prune(root, everything=True)
    assert len(everything.removed) == 3 and not store.builds(root)
    assert prune(root).to_text() == "nothing to prune"
