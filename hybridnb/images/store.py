"""The image cache on disk: finished builds, their manifests, locks and half-made leftovers.

Layout under :func:`~hybridnb.images.testvm.cache_dir` (``/var/cache/hybridnb/images`` for
root)::

    recipes/<name>-<recipe key>-<versions key>/   one finished build of a recipe
        manifest.json                              recipe, installed package versions, ...
        rootfs/                                    the Debian root filesystem
        vm-<kernel bundle>/disk.img, manifest.json the VM shape of it (ext4, sparse)
    vmkernel-<kernel version>-<format>/            kernel, initramfs, modules, guest agent
    apt/<suite>-<mirror hash>/                     the builder's own apt lists
    locks/                                         one flock file per recipe key
    tmp/                                           builds in progress (owner pid in the name)

A build becomes visible only by the ``rename`` of a complete directory (manifest written
last), so nothing half-built is ever taken for a build — also after SIGINT or SIGKILL.  What
an interrupted build leaves in ``tmp/`` is removed by the next build of that recipe (under
its lock) or by :func:`prune`.  Removal never crosses into a mount point (a leftover with
something mounted in it is refused, not recursed into).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from hybridnb.errors import EngineError

MANIFEST = "manifest.json"


def cache_root(cache: Path | str | None = None) -> Path:
    if cache is not None:
        return Path(cache)
    from hybridnb.images.testvm import cache_dir

    return cache_dir()


@dataclass(frozen=True)
class Build:
    """A finished build of a recipe: its directory and manifest."""

    path: Path
    manifest: dict[str, Any] = field(compare=False, repr=False)

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def id(self) -> str:
        """``<name>-<recipe key>-<versions key>`` (the directory name)."""
        return self.path.name

    @property
    def recipe_key(self) -> str:
        return str(self.manifest["recipe_key"])

    @property
    def versions_key(self) -> str:
        return str(self.manifest["versions_key"])

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def installed(self) -> dict[str, str]:
        return dict(self.manifest.get("installed") or {})

    @property
    def built(self) -> float:
        return float(self.manifest.get("built", 0.0))

    @property
    def size(self) -> int:
        return int(self.manifest.get("size", 0))

    def vm_images(self) -> list[Path]:
        return sorted(p.parent for p in self.path.glob(f"vm-*/{MANIFEST}"))


def recipes_dir(root: Path) -> Path:
    return root / "recipes"


def read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def builds(root: Path, name: str | None = None, recipe_key: str | None = None) -> list[Build]:
    """Finished builds, newest first (optionally of one recipe name / recipe key)."""
    out = []
    pattern = f"{name or '*'}-{recipe_key or '*'}-*"
    for d in recipes_dir(root).glob(pattern):
        data = read_manifest(d)
        if data is None or (name and data.get("name") != name) \
                or (recipe_key and data.get("recipe_key") != recipe_key):
            continue
        out.append(Build(d, data))
    return sorted(out, key=lambda b: (-b.built, b.id))


@contextlib.contextmanager
def locked(root: Path, key: str, on_wait: Any = None) -> Iterator[None]:
    """Hold the lock of ``key`` (one build of a recipe at a time, across processes)."""
    d = root / "locks"
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f"{key}.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def temp_dir(root: Path, key: str) -> Path:
    """A fresh directory for a build in progress (``tmp/<key>.<pid>.<time>``)."""
    d = root / "tmp"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{key}.{os.getpid()}.{time.monotonic_ns()}"
    path.mkdir()
    return path


def clear_temps(root: Path, key: str | None = None) -> list[Path]:
    """Remove leftovers of interrupted builds (of ``key``, or of every key whose owner
    process is gone).  Call with the key's lock held."""
    removed = []
    for d in sorted((root / "tmp").glob(f"{key}.*" if key else "*")):
        if key is None:
            try:
                pid = int(d.name.split(".")[-2])
            except (ValueError, IndexError):
                pid = 0
            if pid and _alive(pid):
                continue
        remove_tree(d)
        removed.append(d)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mounts_under(path: Path) -> list[str]:
    real = os.path.realpath(path)
    out = []
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                point = line.split()[4].replace("\\040", " ")
                if point == real or point.startswith(real.rstrip("/") + "/"):
                    out.append(point)
    except OSError:
        pass
    return out


def remove_tree(path: Path) -> None:
    """``rm -rf path``, refusing when anything is mounted inside it."""
    if not os.path.lexists(path):
        return
    mounts = _mounts_under(path)
    if mounts:
        raise EngineError(f"refusing to remove {path}: {len(mounts)} mount(s) inside, e.g. "
                          f"{mounts[0]}", engine="images",
                          hint=f"unmount them first (umount -R {path})")
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    shutil.rmtree(path)


def tree_size(path: Path) -> int:
    """Bytes the files below ``path`` occupy (allocated blocks; hard links counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, n))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total
