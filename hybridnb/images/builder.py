"""Build a recipe into a Debian root filesystem with mmdebstrap, cached by recipe and versions.

:func:`ensure_build` is the one entry: it returns a finished :class:`~hybridnb.images.store.Build`
of the recipe, building it only when needed.

* **Cache key.**  ``<name>-<recipe key>-<versions key>`` (the name of the recipe that built
  it first; another recipe with the same rootfs shares the build): the recipe key hashes
  what the rootfs depends on (:meth:`hybridnb.core.recipe.Recipe.rootfs_digest`: suite, packages,
  files, build commands, slimming) and this builder's format; the versions key hashes every
  installed package with its version.  A hit
  (same recipe, same versions) is decided from the private apt lists
  (:mod:`~hybridnb.images.aptindex`): while their fingerprint is one the build was checked
  under, it is a file read (milliseconds); after the lists change, one ``apt-get --simulate``
  (~1-2 s) says whether any version moved.
* **Build.**  ``mmdebstrap --variant=minbase --mode=unshare`` (its own mount namespace: an
  interrupted build leaves no mounts behind) with the recipe's packages, dpkg path-excludes
  for slimming and ``force-unsafe-io`` (no fsync per file: ~40 % faster here), then in the
  chroot: each service's setup, the recipe's files (templated ones also kept under
  ``/etc/hybridnb/templates``), the recipe's ``run`` commands.  The whole process tree runs in a PID namespace tied to this process
  (``unshare --pid --kill-child`` + parent-death signal), so a SIGKILL of the caller stops it.
* **Atomic.**  Everything happens in ``tmp/``; the finished directory is renamed into
  ``recipes/`` with its manifest, so the cache never holds a half build.
* **The guest layer.**  hybridnb's own files — the init (``/usr/lib/hybridnb/init``) and
  the services script generated from the recipe (``/etc/hybridnb/services.sh``) — are not
  part of the rootfs: each shape adds them (:func:`guest_files`, keyed by
  :func:`layer_key`), so a new hybridnb re-imports or re-makes a disk in seconds instead of
  rebuilding every rootfs.
* **Progress** goes to a callback as :class:`BuildEvent` (resolve, download, unpack,
  install, setup, files, run, finish, done / cached); **errors** are
  :class:`~hybridnb.errors.BuildError` naming the recipe and the step, with the log tail.
"""

from __future__ import annotations

import ctypes
import fnmatch
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from hybridnb.core.recipe import Recipe, services_script
from hybridnb.errors import BuildError, EngineError, EngineUnavailable
from hybridnb.images import store
from hybridnb.images.aptindex import AptIndex, UnknownPackages, sources

#: Bump when the rootfs layout this module makes changes (every recipe is rebuilt).
BUILDER_FORMAT = "hybridnb-rootfs-1"
INIT_SCRIPT = Path(__file__).with_name("guest") / "init.sh"
GUEST_INIT = "/usr/lib/hybridnb/init"


@dataclass(frozen=True)
class BuildEvent:
    """One step of making an image: ``stage`` and the ``fraction`` done (0..1)."""

    recipe: str
    stage: str
    fraction: float
    message: str = ""

    def __str__(self) -> str:
        return f"image {self.recipe}: {self.message or self.stage}"


Progress = Callable[[BuildEvent], None]

#: mmdebstrap's status lines → (stage, fraction, what to say)
_STAGES = (
    ("running apt-get update", "download", 0.08, "fetching package lists"),
    ("downloading packages", "download", 0.15, "downloading packages"),
    ("extracting archives", "unpack", 0.3, "unpacking the essential packages"),
    ("installing essential packages", "install", 0.45, "installing the essential packages"),
    ("installing remaining packages", "install", 0.6, "installing the recipe's packages"),
    ("cleaning package lists", "finish", 0.92, "cleaning up"),
)
_STEP = re.compile(r"^hnb-step: (\S+) (.*)$")


def recipe_key(recipe: Recipe) -> str:
    """The recipe half of the cache key (12 hex digits)."""
    h = hashlib.sha256()
    h.update(recipe.rootfs_digest().encode() + b"\0" + BUILDER_FORMAT.encode())
    return h.hexdigest()[:12]


def guest_files(recipe: Recipe) -> dict[str, tuple[bytes, int]]:
    """hybridnb's layer over a recipe's rootfs: ``{path: (content, mode)}``."""
    return {GUEST_INIT: (INIT_SCRIPT.read_bytes(), 0o755),
            "/etc/hybridnb/services.sh": (services_script(recipe).encode(), 0o644)}


def layer_key(recipe: Recipe) -> str:
    """Identity of what a shape adds to the rootfs: :func:`guest_files` and the recipe's
    start-time settings (command, env, disk size, cloud-init) (8 hex digits)."""
    h = hashlib.sha256()
    for path, (data, mode) in sorted(guest_files(recipe).items()):
        h.update(f"{path}\0{mode:o}\0".encode() + data + b"\0")
    full = recipe.to_dict()
    h.update(json.dumps({k: full[k] for k in ("command", "env", "disk", "memory", "cloud_init")},
                        sort_keys=True).encode())
    return h.hexdigest()[:8]


def write_guest_files(recipe: Recipe, root: Path) -> list[str]:
    """Write :func:`guest_files` under ``root``; the relative paths written."""
    out = []
    for path, (data, mode) in sorted(guest_files(recipe).items()):
        dest = root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        dest.chmod(mode)
        out.append(path.lstrip("/"))
    return out


def versions_key(installed: dict[str, str]) -> str:
    text = json.dumps(sorted(installed.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def ensure_build(recipe: Recipe, *, cache: Path | str | None = None,
                 progress: Progress | None = None, refresh: bool = False,
                 force: bool = False) -> store.Build:
    """The newest finished build of ``recipe`` whose package versions are current, built
    first if there is none.  ``refresh`` refreshes the apt lists whatever their age;
    ``force`` rebuilds even on a hit."""
    root = store.cache_root(cache)
    report = _reporter(recipe.name, progress)
    rkey = recipe_key(recipe)
    key = f"rootfs-{rkey}"
    with store.locked(root, key, on_wait=lambda: report("wait", 0.0, "waiting for another "
                                                        "build of this recipe")):
        store.clear_temps(root, key)
        index = AptIndex(root, recipe.suite)
        found = store.builds(root, recipe_key=rkey)     # any recipe with this very rootfs
        if found and not force:
            hit = _check_hit(recipe, found[0], index, refresh, report)
            if hit is not None:
                return hit
        elif refresh or force or index.stale():
            _refresh(recipe, index, report, must=True)
        report("resolve", 0.05, "resolving packages")
        try:
            index.resolve(recipe.all_packages())
        except UnknownPackages as exc:
            raise BuildError(exc.message, recipe=recipe.name, step="resolve",
                             hint=f"check the names on https://packages.debian.org/"
                                  f"{recipe.suite}/ (apt-cache policy NAME)") from exc
        return _build(recipe, root, rkey, index, report)


def _reporter(name: str, progress: Progress | None) -> Callable[[str, float, str], None]:
    def report(stage: str, fraction: float, message: str = "") -> None:
        if progress is not None:
            progress(BuildEvent(name, stage, fraction, message))
    return report


def _refresh(recipe: Recipe, index: AptIndex, report: Callable[[str, float, str], None],
             must: bool) -> bool:
    """Refresh the apt lists; offline is fine when ``must`` is false (a build exists)."""
    report("resolve", 0.02, f"refreshing the {recipe.suite} package lists")
    try:
        index.refresh()
        return True
    except EngineError as exc:
        if must:
            raise BuildError(exc.message, recipe=recipe.name, step="resolve",
                             hint=exc.hint) from exc
        report("resolve", 0.03, "package lists not refreshed (offline?): using the cached "
                                "build")
        return False


def _check_hit(recipe: Recipe, build: store.Build, index: AptIndex, refresh: bool,
               report: Callable[[str, float, str], None]) -> store.Build | None:
    """``build`` when its versions are still what apt would install, else None."""
    if refresh or index.stale():
        if not _refresh(recipe, index, report, must=False):
            report("cached", 1.0, f"cached ({build.id})")
            return build
    fp = index.fingerprint()
    if fp in build.manifest.get("index_fingerprints", []):
        report("cached", 1.0, f"cached ({build.id})")
        return build
    report("resolve", 0.04, "package lists changed: checking versions")
    try:
        want = index.resolve(set(build.installed) | set(recipe.all_packages()))
    except UnknownPackages:
        return None                      # a package went away: rebuild (and report it)
    if want != build.installed:
        moved = sorted(p for p in set(want) | set(build.installed)
                       if want.get(p) != build.installed.get(p))
        report("resolve", 0.05, f"{len(moved)} package version(s) changed ("
                                f"{', '.join(moved[:5])}{'...' if len(moved) > 5 else ''}): "
                                "rebuilding")
        return None
    manifest = dict(build.manifest)
    manifest["index_fingerprints"] = sorted(set(manifest.get("index_fingerprints", [])) | {fp})
    store.write_json_atomic(build.path / store.MANIFEST, manifest)
    report("cached", 1.0, f"cached ({build.id}, versions unchanged)")
    return store.Build(build.path, manifest)


# ------------------------------------------------------------------------------ the build

def _build(recipe: Recipe, root: Path, rkey: str, index: AptIndex,
           report: Callable[[str, float, str], None]) -> store.Build:
    t0 = time.monotonic()
    tmp = store.temp_dir(root, f"rootfs-{rkey}")
    try:
        work = tmp / "work"
        out = tmp / "build"
        out.mkdir()
        work.mkdir()
        slim = work / "dpkg-slim.cfg"
        slim.write_text("".join(f"path-exclude={p}\n" for p in recipe.path_excludes())
                        + "".join(f"path-include={p}\n" for p in recipe.path_includes()))
        argv = mmdebstrap_argv(recipe, out / "rootfs", _write_steps(recipe, work), slim)
        _run_mmdebstrap(recipe, argv, tmp / "build.log", report)
        remove_excluded(out / "rootfs", recipe.path_excludes(), recipe.path_includes())
        report("finish", 0.95, "recording package versions")
        installed = installed_packages(out / "rootfs")
        vkey = versions_key(installed)
        size = store.tree_size(out / "rootfs")
        manifest = {
            "name": recipe.name, "recipe_key": rkey, "versions_key": vkey,
            "recipe": recipe.to_dict(), "suite": recipe.suite, "installed": installed,
            "index_fingerprints": [index.fingerprint()], "built": time.time(),
            "seconds": round(time.monotonic() - t0, 1), "size": size,
            "builder": BUILDER_FORMAT, "sources": sources(recipe.suite)}
        store.write_json_atomic(out / store.MANIFEST, manifest)
        final = store.recipes_dir(root) / f"{recipe.name}-{rkey}-{vkey}"
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():                       # a forced rebuild of the same versions
            old = tmp / "replaced"
            os.rename(final, old)
        os.rename(out, final)
        report("done", 1.0, f"built {final.name} in {time.monotonic() - t0:.0f} s "
                            f"({size / 2**20:.0f} MiB, {len(installed)} packages)")
        return store.Build(final, manifest)
    finally:
        store.remove_tree(tmp)


def mmdebstrap_argv(recipe: Recipe, target: Path, hooks: list[str],
                    slim: Path | None = None) -> list[str]:
    """The mmdebstrap command line.  The slimming config (``slim``: dpkg path-exclude lines)
    is put in place by an extract hook rather than given as ``--dpkgopt``: mmdebstrap then
    filters its own extraction of the essential packages, which is five times slower (19 s
    instead of 4 s here); what that extraction leaves is removed afterwards
    (:func:`remove_excluded`)."""
    argv = ["unshare", "--pid", "--kill-child", "mmdebstrap", "--mode=unshare",
            "--variant=minbase", "--format=directory", "--dpkgopt=force-unsafe-io",
            "--aptopt=Acquire::Retries \"3\""]
    if slim is not None:
        q = shlex.quote(str(slim))
        argv.append(f"--extract-hook=mkdir -p \"$1/etc/dpkg/dpkg.cfg.d\" && cp {q} "
                    "\"$1/etc/dpkg/dpkg.cfg.d/99hybridnb-slim\"")
    packages = recipe.all_packages()
    if packages:
        argv.append("--include=" + ",".join(packages))
    argv += [f"--customize-hook={h}" for h in hooks]
    return argv + [recipe.suite, str(target), *sources(recipe.suite)]


def _chroot_hook(kind: str, what: str, script: Path) -> str:
    """A customize hook that runs ``script`` with sh -e inside the chroot."""
    q = shlex.quote(str(script))
    return (f"echo {shlex.quote(f'hnb-step: {kind} {what}')}; "
            f"cp {q} \"$1/tmp/hnb-step.sh\" && chroot \"$1\" /bin/sh -e /tmp/hnb-step.sh; "
            "rc=$?; rm -f \"$1/tmp/hnb-step.sh\"; exit $rc")


def _write_steps(recipe: Recipe, work: Path) -> list[str]:
    """The customize hooks: service setups, the files (and hybridnb's init), run commands."""
    hooks = []
    for i, (what, script) in enumerate(recipe.setup_steps()):
        path = work / f"setup-{i}.sh"
        path.write_text(script.strip() + "\n")
        hooks.append(_chroot_hook("setup", what, path))
    files = work / "files"
    files.mkdir()
    installs = []

    def put(data: str | bytes, dest: str, mode: int) -> None:
        n = len(installs)
        (files / str(n)).write_bytes(data.encode() if isinstance(data, str) else data)
        installs.append(f"install -D -m {mode:04o} /tmp/hnb-files/{n} {shlex.quote(dest)}")

    put(json.dumps(recipe.to_dict(), indent=1, sort_keys=True) + "\n",
        "/etc/hybridnb/recipe.json", 0o644)
    for f in recipe.files:
        if f.template:
            put(f.content, f"/etc/hybridnb/templates{f.path}", 0o644)
        put(f.content, f.path, f.mode)       # templated ones are rendered at every start
    installs.append("mkdir -p /usr/lib/hybridnb /var/log/hybridnb")
    (files / "install.sh").write_text("\n".join(installs) + "\n")
    q = shlex.quote(str(files))
    hooks.append(f"echo 'hnb-step: files {len(recipe.files)} file(s)'; "
                 f"cp -a {q} \"$1/tmp/hnb-files\" && chroot \"$1\" /bin/sh -e "
                 "/tmp/hnb-files/install.sh; rc=$?; rm -rf \"$1/tmp/hnb-files\"; exit $rc")
    for i, command in enumerate(recipe.run):
        path = work / f"run-{i}.sh"
        path.write_text(command.strip() + "\n")
        first = command.strip().splitlines()[0] if command.strip() else ""
        hooks.append(_chroot_hook("run", f"command {i + 1}: {first[:60]}", path))
    return hooks


def _parent_death_signal() -> None:
    """In the child before exec: die with SIGKILL when the parent (this process) dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)           # PR_SET_PDEATHSIG
    except OSError:
        pass


def _lines(proc: subprocess.Popen) -> Iterator[str]:
    assert proc.stdout is not None
    for raw in proc.stdout:
        yield raw.decode(errors="replace").rstrip("\n")


def _run_mmdebstrap(recipe: Recipe, argv: list[str], log_path: Path,
                    report: Callable[[str, float, str], None]) -> None:
    report("download", 0.06, f"mmdebstrap {recipe.suite} minbase + "
                             f"{len(recipe.all_packages())} packages")
    env = dict(os.environ, LC_ALL="C.UTF-8", DEBIAN_FRONTEND="noninteractive")
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env,
                                preexec_fn=_parent_death_signal)
    except FileNotFoundError as exc:
        raise EngineUnavailable(f"{exc.filename or argv[0]} not found", engine="images",
                                hint="apt-get install --no-install-recommends mmdebstrap "
                                     "util-linux") from exc
    tail: deque[str] = deque(maxlen=60)
    step, stage = ("download", "downloading"), 0.06
    try:
        with open(log_path, "w") as log:
            for line in _lines(proc):
                log.write(line + "\n")
                tail.append(line)
                m = _STEP.match(line)
                if m:
                    step = (m.group(1), m.group(2))
                    stage = max(stage, 0.8)
                    report(m.group(1), stage, m.group(2))
                    continue
                for needle, name, fraction, text in _STAGES:
                    if line.startswith("I: " + needle) and fraction > stage:
                        step, stage = (name, text), fraction
                        report(name, fraction, text)
        code = proc.wait()
    except BaseException:
        _stop(proc)
        raise
    if code != 0:
        raise _failure(recipe, step, list(tail), code)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()                      # unshare --kill-child takes the namespace with it
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass


def _failure(recipe: Recipe, step: tuple[str, str], tail: list[str], code: int) -> BuildError:
    errors = [ln[3:] for ln in tail if ln.startswith("E: ")]
    name, what = step
    hint = None
    if name in ("setup", "run", "files"):
        message = f"{what} exited with an error"
        hint = "the build log tail shows the command's output"
        tail = [ln for ln in tail if not ln.startswith(("E: ", "W: "))]
    elif errors:
        message = errors[0]
        if "Unable to locate package" in message or "no installation candidate" in message:
            name = "resolve"
    else:
        message = f"mmdebstrap exited with code {code}"
    if any("No space left" in ln for ln in tail):
        hint = "the cache's filesystem is full: `hybridnb images prune` frees old builds"
    return BuildError(message, recipe=recipe.name, step=name, log="\n".join(tail), hint=hint)


def remove_excluded(rootfs: Path, excludes: tuple[str, ...], includes: tuple[str, ...]) -> int:
    """Delete files under ``rootfs`` that dpkg's path-exclude rules would not have installed
    (``*`` matches ``/`` too, an include wins); returns how many.  Directories stay."""
    if not excludes:
        return 0
    tops = {p.split("*", 1)[0].rsplit("/", 1)[0] for p in excludes}
    removed = 0
    for top in sorted(tops):
        base = rootfs / top.lstrip("/")
        if not base.is_dir() or base.is_symlink():
            continue
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                full = os.path.join(dirpath, name)
                inside = "/" + os.path.relpath(full, rootfs)
                if any(fnmatch.fnmatchcase(inside, p) for p in excludes) and \
                        not any(fnmatch.fnmatchcase(inside, p) for p in includes):
                    os.unlink(full)
                    removed += 1
    return removed


# ------------------------------------------------------------------------------ dpkg status

def installed_packages(rootfs: Path) -> dict[str, str]:
    """``{package: version}`` of what dpkg installed in ``rootfs`` (arch-qualified when not
    the native architecture)."""
    out: dict[str, str] = {}
    text = (rootfs / "var/lib/dpkg/status").read_text(errors="replace")
    for para in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in para.splitlines():
            if line and not line[0].isspace() and ":" in line:
                k, v = line.split(":", 1)
                fields[k] = v.strip()
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            name = fields["Package"]
            arch = fields.get("Architecture", "")
            if arch not in ("", "all", "amd64", _native_arch()):
                name = f"{name}:{arch}"
            out[name] = fields.get("Version", "")
    return dict(sorted(out.items()))


def _native_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
