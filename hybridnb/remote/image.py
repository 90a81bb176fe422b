"""The agent image: a Debian minbase with python3, iproute2, nftables and iptables, plus hybridnb.

A remote host's bridge, VXLAN device, firewall rule and nftables table are made by hybridnb's
own drivers running *on that host*, in a container (:mod:`hybridnb.remote.agentbox`).  Its
image is built here, once, into the shared image cache (:mod:`hybridnb.images`):

* **The rootfs** is an ordinary image recipe (:data:`AGENT_RECIPE`) built by
  :func:`hybridnb.images.builder.ensure_build` with ``mmdebstrap --variant=minbase`` — cached
  by recipe and package versions like every recipe, about 40 s cold.  Debian 12's ``python3``
  is 3.11, the Python hybridnb supports.
* **The layer** is hybridnb's own package and the pure-Python packages its fabric drivers
  import (:data:`LAYER_PACKAGES`: ``pyroute2``), copied from this process's ``sys.path``
  into ``/opt/hybridnb`` (on ``PYTHONPATH``).  Copying is safe because they are pure Python
  (no C extension: nothing depends on the ABI of this venv's interpreter); hybridnb's C
  probe engine (``_fast*.so``) and ``__pycache__`` are left out, so the layer is the same
  bytes whatever interpreter built the venv.  The agent uses nftables through
  ``libnftables`` (ctypes, from the image's ``nftables`` package) and iptables' binary.
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
#: Pure-Python packages the agent imports besides hybridnb, copied from ``sys.path``.
LAYER_PACKAGES = ("pyroute2",)
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


def write_layer(root: Path) -> str:
    """Copy hybridnb and :data:`LAYER_PACKAGES` under ``root/opt/hybridnb``; their content
    key (a hash over every copied path and its bytes)."""
    digest = hashlib.sha256()
    dest = root / LAYER_DIR
    for name in ("hybridnb", *LAYER_PACKAGES):
        src = _package_dir(name)
        shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns(*_SKIP))
    for path in sorted(p for p in dest.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(dest)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


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
        key = write_layer(Path(tmp))
        tag = f"{REPOSITORY}:{build.recipe_key}-{build.versions_key}-{key}"
        try:
            client.inspect_image(tag)
            return tag
        except docker.errors.ImageNotFound:
            pass
        if progress:
            progress(f"importing the agent image {tag} ({build.size / 2**20:.0f} MiB)")
        t0, counter = time.monotonic(), [0]
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
