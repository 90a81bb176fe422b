"""The agent image: a Debian minbase with python3, iproute2, nftables and iptables, plus hybridnb.

A remote host's bridge, VXLAN device, firewall rule and nftables table are made by hybridnb's
own drivers running *on that host*, in a container (:mod:`hybridnb.remote.agentbox`).  Its
image is built here, once, into the shared image cache (:mod:`hybridnb.images`):

* **The rootfs** is an ordinary image recipe (:data:`AGENT_RECIPE`) built by
  :func:`hybridnb.images.builder.ensure_build` with ``mmdebstrap --variant=minbase`` — cached
  by recipe and package versions like every recipe, about 40 s cold.  Debian 12's ``python3``
  is 3.11, the Python hybridnb supports.
* **The layer** is hybridnb's own package and the pure-Python packages its fabric drivers
  and its probe share import (:data:`LAYER_PACKAGES`: ``pyroute2``, ``dnslib``, and
  ``dpkt`` for the doctor's ARP sweep there), copied
  from this process's ``sys.path`` into ``/opt/hybridnb`` (on ``PYTHONPATH``).  Copying is
  safe because they are pure Python (``*.so``, ``*.c`` and ``__pycache__`` are left out).
  The one exception is hybridnb's C probe engine (``_fast*.so``, :func:`fast_extension`):
  it is copied only when the image's Python loads it — its file suffix (the ABI tag, e.g.
  ``.cpython-311-x86_64-linux-gnu.so``) is the one of the image's ``lib-dynload`` modules
  and the image's C library is not older than this machine's.  Otherwise the share on the
  remote host probes with the portable pure-Python engine (``auto`` picks it; the matrix
  says which engine each host's share ran).  When the image's Python is this one's minor
  version, the layer is byte-compiled before the import (:func:`compile_layer`).  The agent
  uses nftables through ``libnftables`` (ctypes, from the image's ``nftables`` package) and
  iptables' binary.
* **The tag** ``hybridnb/agent:<rootfs build>-<layer key>`` names exactly one rootfs build
  and one layer (a content hash of the copied files), so a present tag is a hit: the image
  is imported into an engine (``docker import`` streamed through the Docker API) only when
  that engine lacks it.  Images carry the label ``hybridnb.agent``; :func:`remove_images`
  removes them from an engine.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from hybridnb.core.recipe import Recipe, parse_recipe

#: The label every agent image and container carries (value: the tag / the image tag).
LABEL = "hybridnb.agent"
REPOSITORY = "hybridnb/agent"
#: Debian packages of the agent's rootfs.
PACKAGES = ("python3", "iproute2", "nftables", "iptables")
#: Pure-Python packages the agent (fabric drivers, probe share, the doctor's ARP sweep)
#: imports besides hybridnb, copied from ``sys.path``.
LAYER_PACKAGES = ("pyroute2", "dnslib", "dpkt")
LAYER_DIR = "opt/hybridnb"
_SKIP = ("__pycache__", "*.so", "*.c", "*.pyc")

AGENT_RECIPE: Recipe = parse_recipe("hnb-agent", {
    "packages": list(PACKAGES),
    "description": "hybridnb's agent on a remote host: its fabric drivers "
                   "(bridge, VXLAN, iptables, nftables)"})


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        from hybridnb.errors import BuildError

        raise BuildError(f"the agent needs the Python package {name!r}, which is not "
                         "installed here", recipe=AGENT_RECIPE.name, step="layer",
                         hint=f"pip install {name}")
    return Path(list(spec.submodule_search_locations)[0])


def _glibc(text: str) -> tuple[int, ...]:
    """``(2, 36)`` from ``glibc 2.36`` or a Debian version ``2.36-9+deb12u14`` (() if none)."""
    import re

    found = re.search(r"(\d+)\.(\d+)", text)
    return (int(found.group(1)), int(found.group(2))) if found else ()


def image_glibc(rootfs: Path) -> tuple[int, ...]:
    """The C library version of a Debian rootfs (its ``libc6`` package), () if unknown."""
    try:
        status = (rootfs / "var/lib/dpkg/status").read_text(errors="replace")
    except OSError:
        return ()
    for block in status.split("\n\n"):
        if "\nPackage: libc6\n" in "\n" + block + "\n":
            for line in block.splitlines():
                if line.startswith("Version:"):
                    return _glibc(line.partition(":")[2])
    return ()


def fast_extension(rootfs: Path | None) -> Path | None:
    """This hybridnb's built C probe engine when the image's Python can load it: the file's
    suffix (ABI tag) is one the image's ``lib-dynload`` modules carry, and the image's C
    library is at least this machine's.  None otherwise (the portable engine runs there)."""
    import os
    import sysconfig

    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ""
    built = sorted((_package_dir("hybridnb") / "services" / "probe").glob(f"_fast{suffix}"))
    if rootfs is None or not suffix or not built:
        return None
    if not any((rootfs / "usr" / "lib").glob(f"python3*/lib-dynload/*{suffix}")):
        return None
    try:
        here = _glibc(os.confstr("CS_GNU_LIBC_VERSION") or "")
    except (ValueError, OSError):
        return None
    there = image_glibc(rootfs)
    return built[0] if here and there and there >= here else None


def write_layer(root: Path, rootfs: Path | None = None) -> str:
    """Copy hybridnb and :data:`LAYER_PACKAGES` under ``root/opt/hybridnb`` (and the C probe
    engine when the image at ``rootfs`` can load it: :func:`fast_extension`); their content
    key (a hash over every copied path and its bytes)."""
    digest = hashlib.sha256()
    dest = root / LAYER_DIR
    for name in ("hybridnb", *LAYER_PACKAGES):
        src = _package_dir(name)
        shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns(*_SKIP))
    fast = fast_extension(rootfs)
    if fast is not None:
        shutil.copy2(fast, dest / "hybridnb" / "services" / "probe" / fast.name)
    for path in sorted(p for p in dest.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(dest)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def compile_layer(root: Path, rootfs: Path | None) -> bool:
    """Byte-compile the layer under ``root`` for the image's Python when it is this
    interpreter's minor version (the ``.pyc`` format is fixed within a minor release), so
    each ``docker exec`` of the agent or a probe share imports without compiling (~50 ms
    less a start).  Hash-checked ``.pyc`` files (no source times), made only when the image
    is imported: the layer's key is its sources'.  True when compiled."""
    import compileall
    import py_compile
    import sys

    minor = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    if rootfs is None or not (rootfs / "usr" / "lib" / minor).is_dir():
        return False
    return bool(compileall.compile_dir(
        str(root / LAYER_DIR), ddir=f"/{LAYER_DIR}", quiet=1,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH))


def changes(build_id: str, tag: str) -> list[str]:
    """The image configuration given to the import."""
    return ["WORKDIR /", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            f"ENV PYTHONPATH=/{LAYER_DIR}", "ENV PYTHONDONTWRITEBYTECODE=1",
            f'ENTRYPOINT {json.dumps(["python3", "-m", "hybridnb.remote.agent", "--hold"])}',
            f"LABEL {LABEL}={tag}", f"LABEL hybridnb.image={build_id}"]


def ensure_agent_image(client: Any, *, cache: Path | str | None = None,
                       progress: Callable[[str], None] | None = None) -> str:
    """The agent image's tag in the engine of ``client`` (a ``docker.APIClient``), built into
    the image cache and imported first when missing."""
    import docker.errors

    from hybridnb.images import builder
    from hybridnb.images.container import _tar_stream

    build = builder.ensure_build(AGENT_RECIPE, cache=cache)
    with tempfile.TemporaryDirectory(prefix="hnb-agent-layer-") as tmp:
        key = write_layer(Path(tmp), build.rootfs)
        tag = f"{REPOSITORY}:{build.recipe_key}-{build.versions_key}-{key}"
        try:
            client.inspect_image(tag)
            return tag
        except docker.errors.ImageNotFound:
            pass
        if progress:
            progress(f"importing the agent image {tag} ({build.size / 2**20:.0f} MiB)")
        t0, counter = time.monotonic(), [0]
        compile_layer(Path(tmp), build.rootfs)
        repo, _, version = tag.rpartition(":")
        client.import_image_from_data(_tar_stream(build, Path(tmp), [LAYER_DIR], counter),
                                      repository=repo, tag=version,
                                      changes=changes(build.id, tag))
        client.inspect_image(tag)
        drop_stale(client, tag)
        if progress:
            progress(f"imported {tag} ({counter[0] / 2**20:.0f} MiB) in "
                     f"{time.monotonic() - t0:.1f} s")
        return tag


def drop_stale(client: Any, keep: str) -> None:
    """Remove the engine's other agent images (an older hybridnb's) that no container
    uses; one in use stays (the engine refuses)."""
    import docker.errors

    for image in client.images(filters={"label": LABEL}):
        for tag in image.get("RepoTags") or ():
            if tag != keep:
                try:
                    client.remove_image(tag)
                except docker.errors.APIError:
                    pass


def remove_images(client: Any) -> list[str]:
    """Remove every agent image from the engine of ``client`` (containers first: see
    :func:`hybridnb.remote.agentbox.remove_agents`); the tags removed."""
    out = []
    for image in client.images(filters={"label": LABEL}):
        for tag in image.get("RepoTags") or [image["Id"]]:
            client.remove_image(tag, force=False)
            out.append(tag)
    return sorted(out)
