"""The busybox container image, built locally from Debian's ``busybox-static``.

Labs say ``image: busybox``; the sandbox cannot reach a registry, so the image is made here:
a root filesystem holding the static ``/bin/busybox``, a symlink for every applet at the
path ``busybox --list-full`` names (what ``busybox --install -s`` would make), ``/etc/passwd``
and ``/etc/group``, and a ``/www/index.html``.  It is streamed as a tar archive straight into
the engine's import endpoint (``docker import``), tagged ``hybridnb/busybox:latest`` and
``busybox:latest``.  The image's default command serves ``/www`` over HTTP on port 80
(``httpd -f``), so a container started without a command stays up and answers the lab's HTTP
probes; ``sh``, ``ping``, ``nc``, ``wget`` and the rest are there for ``docker exec``.

:func:`ensure_busybox_image` is idempotent and cheap when the tags exist (one API call per tag).
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import tarfile
import time
from typing import Callable, Iterable

from hybridnb.errors import EngineError, EngineUnavailable

BUSYBOX = "/bin/busybox"
DEFAULT_TAGS = ("hybridnb/busybox:latest", "busybox:latest")
LABEL = "hybridnb.image"
#: Bumped whenever the image content changes: an older import is replaced.
VERSION = "busybox-2"
INDEX_HTML = ("<!doctype html>\n<html><head><title>hybridnb busybox</title></head>\n"
              "<body><h1>hybridnb busybox</h1><p>served by busybox httpd</p></body></html>\n")
CHANGES = (
    'CMD ["httpd", "-f", "-p", "80", "-h", "/www"]',
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "WORKDIR /",
    "EXPOSE 80/tcp",
    f"LABEL {LABEL}={VERSION}",
)


def is_static(path: str) -> bool:
    """True when the ELF executable at ``path`` has no program interpreter (statically linked)."""
    with open(path, "rb") as fh:
        head = fh.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:        # 64-bit ELF only
            return False
        endian = "<" if head[5] == 1 else ">"
        phoff, = struct.unpack_from(endian + "Q", head, 0x20)
        phentsize, phnum = struct.unpack_from(endian + "HH", head, 0x36)
        fh.seek(phoff)
        table = fh.read(phentsize * phnum)
    for i in range(phnum):
        ptype, = struct.unpack_from(endian + "I", table, i * phentsize)
        if ptype == 3:                                   # PT_INTERP
            return False
    return True


def applets(busybox: str = BUSYBOX) -> list[str]:
    """The applet paths (``usr/bin/wget`` ...) the binary provides, sorted."""
    out = subprocess.run([busybox, "--list-full"], check=True, capture_output=True, text=True)
    return sorted({line.strip().lstrip("/") for line in out.stdout.splitlines() if line.strip()})


def rootfs_tar(busybox: str = BUSYBOX) -> bytes:
    """The image's root filesystem as an uncompressed tar archive (deterministic content)."""
    if not os.path.exists(busybox):
        raise EngineUnavailable(f"{busybox} is missing", hint="apt-get install busybox-static")
    if not is_static(busybox):
        raise EngineUnavailable(f"{busybox} is not statically linked",
                                hint="apt-get install busybox-static (the busybox package "
                                     "installs a dynamically linked binary)")
    buf = io.BytesIO()
    mtime = 0

    def add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, mtime
        tar.addfile(info)

    def add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), mode, mtime
        tar.addfile(info, io.BytesIO(data))

    links = [a for a in applets(busybox) if a != "bin/busybox"]
    dirs = {"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "www", "root", "proc", "sys",
            "dev", "var", "var/log", "home"}
    dirs.update(os.path.dirname(a) for a in links)
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for d in sorted(x for x in dirs if x):
            add_dir(tar, d, 0o700 if d == "root" else 0o755)
        add_dir(tar, "tmp", 0o1777)
        with open(busybox, "rb") as fh:
            add_file(tar, "bin/busybox", fh.read(), 0o755)
        for link in links:
            info = tarfile.TarInfo(link)
            info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, "/bin/busybox", \
                0o777, mtime
            tar.addfile(info)
        add_file(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
                                    b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
        add_file(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n")
        add_file(tar, "www/index.html", INDEX_HTML.encode())
    return buf.getvalue()


def ensure_busybox_image(docker_url: str, tags: Iterable[str] = DEFAULT_TAGS,
                         progress: Callable[[str], None] | None = None) -> str:
    """Make sure every tag in ``tags`` names the busybox image in the engine at ``docker_url``;
    import it from the local busybox-static if none of them exists.  Returns the image id."""
    import docker
    import docker.errors

    import requests.exceptions

    tags = [t if ":" in t.rsplit("/", 1)[-1] else t + ":latest" for t in tags]
    try:
        client = docker.APIClient(base_url=docker_url, version="auto", timeout=60)
    except docker.errors.DockerException as exc:
        raise EngineUnavailable(f"cannot reach the Docker engine at {docker_url}: {exc}",
                                engine="docker", hint="hybridnb sandbox up") from exc
    try:
        found: dict[str, str] = {}
        stale: set[str] = set()
        for tag in tags:
            try:
                info = client.inspect_image(tag)
            except docker.errors.ImageNotFound:
                continue
            if ((info.get("Config") or {}).get("Labels") or {}).get(LABEL) == VERSION:
                found[tag] = info["Id"]
            else:
                stale.add(info["Id"])
        ours = [i for t, i in found.items() if t == tags[0]] or list(found.values())
        if ours:
            image_id = ours[0]
        else:
            t0 = time.monotonic()
            repo, _, tag = tags[0].rpartition(":")
            client.import_image_from_data(rootfs_tar(), repository=repo, tag=tag,
                                        changes=list(CHANGES))
            image_id = client.inspect_image(tags[0])["Id"]
            if progress:
                progress(f"imported {tags[0]} from {BUSYBOX} in {time.monotonic() - t0:.2f} s"
                         f" ({image_id[:19]})")
        for tag in tags:
            if found.get(tag) is None:
                repo, _, t = tag.rpartition(":")
                client.tag(image_id, repo, t)
        for old in sorted(stale - {image_id}):          # an older version, now untagged
            try:
                client.remove_image(old)
            except docker.errors.APIError:
                pass                                    # still used by a container: keep
        return image_id
    except docker.errors.APIError as exc:
        raise EngineError(f"cannot import the busybox image: {exc.explanation or exc}",
                          engine="docker") from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise EngineUnavailable(f"cannot reach the Docker engine at {docker_url}: {exc}",
                                engine="docker", hint="hybridnb sandbox up") from exc
    finally:
        client.close()
