"""Shared fixtures of the image tests: the built recipes (once per session, through the
image cache), and a place for the labs' driver state."""

from __future__ import annotations

import time

import pytest

from tests.gating import require_real

BUILD_TOOLS = ("mmdebstrap", "unshare", "mkfs.ext4", "depmod", "qemu-img", "apt-get",
               "dpkg-deb", "tar")
_TIMES: dict[str, float] = {}


@pytest.fixture(scope="session")
def built():
    """``get(name, shape)`` → the image of a test recipe, built on first use (the cache
    keeps it for the next session); the build times are printed at the end."""
    from hybridnb.images.recipes import ensure_image
    from tests.images.recipes import recipe

    require_real(tools=BUILD_TOOLS)
    cache: dict[tuple[str, str], object] = {}

    def get(name: str, shape: str = "rootfs", target=None):
        key = (name, shape if shape != "container" else f"container@{target.name}")
        if key not in cache:
            t0 = time.monotonic()
            cache[key] = ensure_image(recipe(name), target, shape)
            _TIMES[f"{name} ({shape})"] = time.monotonic() - t0
        return cache[key]

    yield get
    if _TIMES:
        print("\nimage times this session: " + ", ".join(
            f"{k} {v:.1f} s" for k, v in sorted(_TIMES.items())))
