"""Real-engine test support: the session's sandbox (the isolated lab host), as a pytest plugin.

* ``sandbox`` (session scope) — one :class:`~hybridnb.sandbox.Sandbox` per test session
  (name ``test``, or ``$HYBRIDNB_TEST_SANDBOX``), brought up afresh at first use (one an
  earlier, killed run left up is taken down first) and taken down when the session ends (the
  image cache in its data directory is kept).  Gated by :func:`tests.gating.require_real`
  with :data:`ENGINE_TOOLS`.
* ``sandbox_target`` — its :class:`~hybridnb.target.Target`.
* ``lab_bridge`` — a factory making a lab bridge (with the gateway address) inside the
  sandbox namespace through the bridge driver, removed after the test; each call gets its own
  bridge name and /24, so tests never share addresses.

``tests/conftest.py`` registers this module with ``pytest_plugins``, so every test module can
ask for the fixtures by name; modules import only the plain names (``SANDBOX_NAME``,
``ENGINE_TOOLS``) from here.  The sandbox is a per-session singleton kept on the pytest config.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Callable, Iterator

import pytest

from hybridnb.core.resource import Resource
from hybridnb.sandbox import Sandbox
from hybridnb.target import Target
from tests.gating import require_real

ENGINE_TOOLS = ("dockerd", "containerd", "nsenter", "iptables", "iptables-save", "ip")
SANDBOX_NAME = os.environ.get("HYBRIDNB_TEST_SANDBOX", "test")
_KEY = pytest.StashKey[dict]()
_subnets = itertools.count(0)


@pytest.fixture(scope="session")
def sandbox(request: pytest.FixtureRequest) -> Sandbox:
    """The session's sandbox, up (dockerd + busybox image, libvirtd when available)."""
    require_real(tools=ENGINE_TOOLS)
    slot = request.config.stash.setdefault(_KEY, {})
    if "box" not in slot:
        box = Sandbox(SANDBOX_NAME)
        slot["box"] = box
        request.config.add_cleanup(lambda: box.down())  # also after a failed up
        try:
            box.down()                    # what a killed earlier run left up starts over
            box.up()
        except Exception as exc:
            slot["error"] = exc
    if "error" in slot:
        raise slot["error"]
    return slot["box"]


@pytest.fixture(scope="session")
def sandbox_target(sandbox: Sandbox) -> Target:
    return sandbox.target()


@dataclass(frozen=True)
class LabBridge:
    """A bridge made for one test: name, subnet, gateway (the bridge's address), prefix."""

    name: str
    subnet: str
    gateway: str
    prefix: int
    netns: str

    def addr(self, host: int) -> str:
        return self.subnet.rsplit(".", 1)[0] + f".{host}"


@pytest.fixture
def lab_bridge(sandbox: Sandbox) -> Iterator[Callable[[str], LabBridge]]:
    """``make(lab)`` → a fresh bridge in the sandbox namespace owned by ``lab``."""
    from hybridnb.drivers.bridge import BridgeDriver

    drv = BridgeDriver(sandbox.target())
    made: list[tuple[str, str]] = []

    def make(lab: str) -> LabBridge:
        n = next(_subnets)
        name = f"hbt{os.getpid() % 10000}x{n}"
        subnet = f"10.{200 + n // 250}.{n % 250}.0"
        res = Resource("bridge", name, {"bridge": name, "address": subnet[:-1] + "1/24",
                                        "subnet": subnet + "/24", "mtu": 1500, "adopt": False})
        drv.create(lab, res)
        made.append((lab, name))
        return LabBridge(name, subnet + "/24", subnet[:-1] + "1", 24, sandbox.netns)

    yield make
    for lab, name in reversed(made):
        drv.delete(lab, name)
