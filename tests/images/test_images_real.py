"""Building recipes for real (mmdebstrap, the Debian mirror, mkfs.ext4, docker import).

The builds happen on the machine, in its own network namespace (the mirror is reachable
there); what they make runs offline in the sandbox.  Shared builds come from the ``built``
fixture (the image cache), so only the error cases build anything of their own: a recipe
whose command fails (a minbase build, ~30 s) and builds interrupted after a few seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hybridnb.core.recipe import parse_recipe
from hybridnb.errors import BuildError
from hybridnb.images import store
from hybridnb.images.builder import ensure_build, recipe_key
from hybridnb.images.recipes import ensure_image, list_images
from tests.images.recipes import PG, recipe

pytestmark = pytest.mark.real
ROOT = Path(__file__).resolve().parents[2]


def test_second_build_is_a_cache_hit(built) -> None:
    first = built("pg")
    t0 = time.monotonic()
    again = ensure_build(recipe("pg"))
    hit = time.monotonic() - t0
    assert again == first and hit < 1.0, hit
    ensure_image(recipe("pg"), None, "vm")            # made now if the guest layer changed
    t0 = time.monotonic()
    vm = ensure_image(recipe("pg"), None, "vm")
    assert time.monotonic() - t0 < 1.0
    assert vm.disk.is_file() and vm.kernel.is_file() and vm.initrd.is_file()
    manifest = first.manifest
    assert manifest["installed"]["postgresql-15"] and manifest["size"] > 100 << 20
    listing = list_images()
    row = next(r for r in listing.records() if r["id"] == first.id)
    assert row["name"] == "pg" and row["vm"] != "-"
    assert first.id.split("-", 1)[1] in listing.to_text()
    print(f"\ncache hit in {hit * 1000:.1f} ms; pg rootfs {first.size >> 20} MiB, "
          f"built in {manifest['seconds']} s")


def test_rootfs_is_slim_and_has_no_jit(built) -> None:
    rootfs = built("pg").rootfs
    assert not [p for p in rootfs.glob("usr/share/man/*/*") if not p.is_symlink()]
    assert not list(rootfs.glob("usr/lib/x86_64-linux-gnu/libLLVM*"))
    assert (rootfs / "usr/share/doc/postgresql-15/copyright").exists()
    conf = next(rootfs.glob("etc/postgresql/*/main/conf.d/hybridnb.conf")).read_text()
    assert "jit = off" in conf and "listen_addresses = '*'" in conf
    assert not (rootfs / "usr/lib/hybridnb/init").exists()      # the guest layer is per shape


def test_container_shape(built, sandbox) -> None:
    target = sandbox.target()
    t0 = time.monotonic()
    ref = ensure_image(recipe("web"), target, "container")
    first = time.monotonic() - t0
    t0 = time.monotonic()
    assert ensure_image(recipe("web"), target, "container") == ref
    assert time.monotonic() - t0 < 1.0
    import docker

    client = docker.APIClient(base_url=target.docker_url, version="auto")
    try:
        info = client.inspect_image(ref.tag)
        cfg = info["Config"]
        assert cfg["Entrypoint"] == ["/usr/lib/hybridnb/init"]
        assert "GREETING=hi there" in cfg["Env"] and "80/tcp" in cfg["ExposedPorts"]
        assert cfg["Labels"]["hybridnb.image"] == ref.build
    finally:
        client.close()
    print(f"\nimported {ref.tag} in {first:.1f} s")


def test_unknown_packages_are_named_before_anything_is_built(built, tmp_path) -> None:
    bad = parse_recipe("typo", {"packages": ["curl", "postgresql-clinet", "nosuch-pkg"]})
    t0 = time.monotonic()
    with pytest.raises(BuildError) as err:
        ensure_build(bad)
    e = err.value
    assert (e.recipe, e.step) == ("typo", "resolve")
    assert "unknown packages in bookworm: nosuch-pkg, postgresql-clinet" in str(e)
    assert time.monotonic() - t0 < 30
    assert not store.builds(store.cache_root(), recipe_key=recipe_key(bad))


def test_disk_too_small_is_refused(built) -> None:
    small = parse_recipe("pg", {**PG, "disk": "128M"})
    with pytest.raises(BuildError) as err:
        ensure_image(small, None, "vm")                 # the rootfs is pg's: no rebuild
    e = err.value
    assert (e.recipe, e.step) == ("pg", "disk")
    assert "128 MiB is too small" in str(e) and "give disk:" in str(e)


def test_a_failing_build_command_names_the_step(built) -> None:
    bad = parse_recipe("failing", {"run": ["echo fine", "echo about to fail >&2; exit 7"]})
    with pytest.raises(BuildError) as err:
        ensure_build(bad)
    e = err.value
    assert (e.recipe, e.step) == ("failing", "run")
    assert "command 2: echo about to fail >&2; exit 7 exited with an error" in str(e)
    assert "about to fail" in e.log
    root = store.cache_root()
    assert not store.builds(root, recipe_key=recipe_key(bad))
    assert not list((root / "tmp").glob(f"rootfs-{recipe_key(bad)}.*"))


def _build_in_child(name: str, packages: list[str]) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import sys
        from hybridnb.core.recipe import parse_recipe
        from hybridnb.images.builder import ensure_build
        r = parse_recipe({name!r}, {{"packages": {packages!r}}})
        ensure_build(r, progress=lambda e: print(e.stage, flush=True))
    """)
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_stage(proc: subprocess.Popen, stage: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == stage:
            return
        assert time.monotonic() < deadline, "the build did not get that far"
    raise AssertionError(f"the build ended before {stage}: {proc.stderr.read()}")


def _processes_under(path: Path) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if str(path) in cmd or cwd.startswith(str(path)):
            found.append(int(pid))
    return found


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_an_interrupted_build_leaves_nothing_half_built(built, sig) -> None:
    name = f"halt-{sig.name.lower()}"
    packages = ["curl"] if sig == signal.SIGINT else ["tcpdump"]
    rkey = recipe_key(parse_recipe(name, {"packages": packages}))
    root = store.cache_root()
    proc = _build_in_child(name, packages)
    try:
        _wait_for_stage(proc, "unpack")
        temps = list((root / "tmp").glob(f"rootfs-{rkey}.*"))
        assert len(temps) == 1
        proc.send_signal(sig)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 20
        while _processes_under(temps[0]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _processes_under(temps[0]), "build processes outlived their caller"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not store.builds(root, recipe_key=rkey)
    assert not store._mounts_under(root)
    if sig == signal.SIGINT:               # the builder cleaned up after itself
        assert not temps[0].exists()
    else:                                  # killed: the next build (or prune) clears it
        assert temps[0].exists()
        with store.locked(root, f"rootfs-{rkey}"):
            assert store.clear_temps(root, f"rootfs-{rkey}") == temps
        assert not temps[0].exists()
