"""Names of the engine objects a lab makes, derived deterministically from lab + endpoint.

Linux interface names are at most 15 bytes, so per-endpoint interfaces get a short hash;
everything else carries the readable ``hnb-<lab>-<name>`` prefix so that a person looking at
``docker ps`` or ``virsh list`` sees which lab owns what.
"""

from __future__ import annotations

import hashlib

PREFIX = "hnb"


def _h(*parts: str, n: int = 8) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:n]


def object_name(lab: str, name: str) -> str:
    """Container, domain and namespace name of an endpoint: ``hnb-<lab>-<name>``."""
    return f"{PREFIX}-{lab}-{name}"


def docker_network(lab: str) -> str:
    return f"{PREFIX}-{lab}"


def veth_pair(lab: str, name: str) -> tuple[str, str]:
    """(bridge side, endpoint side before it is renamed to eth0) — both ≤ 15 bytes."""
    h = _h(lab, name, n=10)
    return (f"hv{h}", f"hv{h}p")


def mac_address(lab: str, name: str) -> str:
    """Stable locally administered MAC in QEMU's 52:54:00 range."""
    h = _h("mac", lab, name, n=6)
    return "52:54:00:" + ":".join(h[i:i + 2] for i in range(0, 6, 2))


def owner_tag(lab: str) -> str:
    """The ownership mark written on objects: labels, aliases, metadata, rule comments."""
    return f"hybridnb:{lab}"


def bridge_mac(lab: str, bridge: str, host: str | None = None) -> str:
    """Fixed, locally administered MAC of an owned lab bridge.

    A Linux bridge without an explicit address takes the lowest MAC among its ports, so it
    changes whenever a container is re-created; every neighbour's ARP entry for the gateway
    then points at a MAC nobody answers to until it expires.  A set address never changes.

    A lab spread over several hosts has one bridge per host on one VXLAN segment: each must
    have its own MAC (``host``: the non-primary host's name), else a bridge sees frames from
    another host's bridge with its own address as the source, and ARP across the VXLAN dies.
    The primary's bridge keeps the one-host MAC (``host=None``).
    """
    h = _h("bridge", lab, bridge, *((host,) if host else ()), n=10)
    return "02:" + ":".join(h[i:i + 2] for i in range(0, 10, 2))


def vxlan_device(lab: str) -> str:
    """The lab's VXLAN device on every host (≤ 15 bytes, the same name everywhere)."""
    return f"hx{_h('vxlan', lab, n=10)}"
