"""The container shape of a build: its rootfs imported into a Docker engine (``docker import``).

The rootfs directory is streamed as a tar archive (GNU ``tar`` on the host, numeric owners)
straight into the engine's import endpoint with chunked transfer — nothing is held in
memory — followed by hybridnb's guest files (init and services script,
:func:`~hybridnb.images.builder.guest_files`), and tagged
``hybridnb/<recipe>:<recipe key>-<versions key>-<layer key>``, so a tag names exactly one
build and guest layer, and a present tag is a hit (one inspect call).  The image's configuration:

* ``ENTRYPOINT ["/usr/lib/hybridnb/init"]`` — hybridnb's init renders the templated files
  with the container's name/address/domain, starts the recipe's services, waits until they
  accept connections, prints ``HYBRIDNB-READY ...`` on stdout, then ``exec``\\ s the command;
* ``CMD`` — the recipe's ``command`` (none: the init keeps the services up), which a lab
  endpoint's ``command:`` replaces;
* the recipe's ``env``, ``EXPOSE`` for its services' ports, labels naming recipe and build.

Containers are run with Docker's init (``init: true`` in the container driver), which
forwards signals to hybridnb's init, so a stop takes a fraction of a second.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from hybridnb.errors import BuildError, EngineUnavailable
from hybridnb.images import store
from hybridnb.core.recipe import Recipe
from hybridnb.images.builder import GUEST_INIT, BuildEvent, layer_key, write_guest_files

LABEL_IMAGE = "hybridnb.image"
LABEL_RECIPE = "hybridnb.recipe"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CHUNK = 1 << 20


def image_tag(build: store.Build, recipe: Recipe) -> str:
    return f"hybridnb/{build.name}:{build.recipe_key}-{build.versions_key}-{layer_key(recipe)}"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def changes(build: store.Build, recipe: Recipe) -> list[str]:
    """The Dockerfile-style instructions given to the import."""
    out = [f"ENTRYPOINT {json.dumps([GUEST_INIT])}", "WORKDIR /", f"ENV PATH={PATH}",
           f"LABEL {LABEL_IMAGE}={build.id}", f"LABEL {LABEL_RECIPE}={recipe.name}"]
    if recipe.command:
        out.append(f"CMD {json.dumps(list(recipe.command))}")
    for key, value in recipe.env:
        out.append(f"ENV {key}={_quote(value)}")
    for _service, port in recipe.service_ports():
        out.append(f"EXPOSE {port}/tcp")
    return out


def _tar_stream(build: store.Build, layer: Path, files: list[str],
                counter: list[int]) -> Iterator[bytes]:
    """The rootfs, then hybridnb's guest files (later entries win on import)."""
    proc = subprocess.Popen(["tar", "--numeric-owner", "--xattrs", "-cf", "-",
                             "-C", str(build.rootfs), ".", "-C", str(layer), *files],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        while chunk := proc.stdout.read(_CHUNK):
            counter[0] += len(chunk)
            yield chunk
    finally:
        proc.stdout.close()
        if proc.wait() != 0:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise BuildError(f"tar of {build.rootfs} failed: {err.strip()[-300:]}",
                             recipe=build.name, step="import")


def ensure_container_image(build: store.Build, recipe: Recipe, docker_url: str,
                           progress: Callable[[BuildEvent], None] | None = None) -> str:
    """The tag of ``build`` (of ``recipe``) in the engine at ``docker_url``, imported first
    if missing."""
    import docker
    import docker.errors

    from hybridnb.drivers.docker import docker_errors

    tag = image_tag(build, recipe)
    if not docker_url:
        raise EngineUnavailable("no Docker engine to import the image into", engine="docker",
                                hint="hybridnb sandbox up")
    with docker_errors(f"import image {tag}"):
        client = docker.APIClient(base_url=docker_url, version="auto", timeout=600)
        try:
            try:
                client.inspect_image(tag)
                if progress:
                    progress(BuildEvent(build.name, "cached", 1.0, f"image {tag} present"))
                return tag
            except docker.errors.ImageNotFound:
                pass
            if progress:
                progress(BuildEvent(build.name, "import", 0.0,
                                    f"importing {build.size / 2**20:.0f} MiB as {tag}"))
            t0 = time.monotonic()
            repo, _, version = tag.rpartition(":")
            counter = [0]
            with tempfile.TemporaryDirectory(prefix="hnb-layer-") as layer:
                files = write_guest_files(recipe, Path(layer))
                client.import_image_from_data(_tar_stream(build, Path(layer), files, counter),
                                              repository=repo, tag=version,
                                              changes=changes(build, recipe))
            client.inspect_image(tag)
            if progress:
                progress(BuildEvent(build.name, "import", 1.0,
                                    f"imported {tag} ({counter[0] / 2**20:.0f} MiB) in "
                                    f"{time.monotonic() - t0:.1f} s"))
            return tag
        finally:
            client.close()
