"""The VXLAN fabric on two real sandboxes joined by an underlay (issue 17, the fabric slice).

Two sandboxes (``<test sandbox>a`` and ``<test sandbox>b``: their own namespaces and dockerd)
stand in for two machines; a veth pair between their namespaces, 192.168.250.0/30, stands in
for the network between them.  Each holds its part of one lab — the bridge, one namespace
host — applied through the sandbox backend, and the VXLAN driver joins the two bridges into
one segment.  Every packet goes to an address this test made, inside those namespaces.

Placement through ``Lab`` is not wired yet: each sandbox applies the slice of the lab that
lives on it (a lab of its own, so the two DNS servers and gateways do not collide), and the
VXLAN devices are compiled from the one multi-host lab file.
"""

from __future__ import annotations

import copy
import errno
from pathlib import Path
from typing import Any, Iterator

import pytest

from hybridnb.core import naming
from hybridnb.core.multihost import placement, vxlan_resource
from hybridnb.core.spec import parse_lab
from hybridnb.drivers import nsutil
from hybridnb.drivers.vxlan import ZERO_MAC, VxlanDriver, link_underlay, unlink_underlay
from hybridnb.lab import Lab
from hybridnb.sandbox import Sandbox
from tests.gating import require_real
from tests.helpers.hostsnap import diff, snapshot
from tests.helpers.privnet import icmp_ping
from tests.realengines import ENGINE_TOOLS, SANDBOX_NAME

pytestmark = pytest.mark.real

UNDERLAY = "192.168.250.0/30"
ULINK = ("hnbul0", "hnbul1")
LAB: dict[str, Any] = {
    "name": "mhv",
    "hosts": {"a": {"sandbox": f"{SANDBOX_NAME}a", "underlay": "192.168.250.1"},
              "b": {"sandbox": f"{SANDBOX_NAME}b", "underlay": "192.168.250.2"}},
    "network": {"subnet": "10.0.1.0/24", "vxlan": {"vni": 4242}, "dns": False},
    "endpoints": {"h1": {"kind": "host", "address": "10.0.1.10"},
                  "h2": {"kind": "host", "address": "10.0.1.11", "host": "b"}},
}


@pytest.fixture(scope="module")
def boxes() -> Iterator[dict[str, Sandbox]]:
    """The two sandboxes, up (Docker only: no VM here), taken down at the end."""
    require_real(tools=ENGINE_TOOLS)
    made = {h: Sandbox(LAB["hosts"][h]["sandbox"]) for h in ("a", "b")}
    try:
        for box in made.values():
            box.down()
            box.up(libvirt=False)
        yield made
    finally:
        for box in made.values():
            box.down()


def slice_of(doc: dict[str, Any], host: str) -> dict[str, Any]:
    """What one host applies: its endpoints, as a lab of its own (``mhv-a``); the gateway
    address on the primary only (the other bridge gets the subnet's last address)."""
    spec = parse_lab(doc)
    where = placement(spec)
    part = copy.deepcopy(doc)
    part.pop("hosts")
    part["name"] = f"{doc['name']}{host}"
    part["endpoints"] = {n: {k: v for k, v in e.items() if k != "host"}
                         for n, e in doc["endpoints"].items() if where[n] == host}
    part["network"] = dict(doc["network"], mtu=spec.network.mtu)
    part["network"].pop("vxlan")
    if host != spec.sections["hosts"].primary.name:
        part["network"]["gateway"] = str(spec.network.subnet.broadcast_address - 1)
    return part


def learned(box: Sandbox, device: str) -> dict[str, str]:
    """MAC -> underlay address the VXLAN device has learned (non-zero FDB entries)."""
    with nsutil.iproute(box.netns) as ipr:
        index = ipr.link_lookup(ifname=device)[0]
        return {e.get_attr("NDA_LLADDR"): e.get_attr("NDA_DST")
                for e in ipr.fdb("dump", ifindex=index)
                if e.get("ifindex") == index and e.get_attr("NDA_DST")
                and e.get_attr("NDA_LLADDR") != ZERO_MAC}


def test_two_sandboxes_share_one_lab_subnet_over_vxlan(boxes: dict[str, Sandbox],
                                                       tmp_path: Path) -> None:
    before = {h: snapshot(box.netns) for h, box in boxes.items()}
    spec = parse_lab(LAB)
    assert spec.network.mtu == 1450
    labs = {h: Lab.from_dict(slice_of(LAB, h), backend="sandbox", sandbox=box.name,
                             state_dir=tmp_path / h) for h, box in boxes.items()}
    drivers = {h: VxlanDriver(box.target()) for h, box in boxes.items()}
    devices = {h: vxlan_resource(spec, h) for h in boxes}
    try:
        assert link_underlay(boxes["a"].netns, boxes["b"].netns, UNDERLAY, names=ULINK) == \
            ("192.168.250.1", "192.168.250.2")
        for h, lab in labs.items():
            lab.apply()
            drivers[h].create(lab.name, devices[h])
        for h, other in (("a", "b"), ("b", "a")):
            res = devices[h]
            assert drivers[h].flood_list(res.name) == [LAB["hosts"][other]["underlay"]]
            seen = drivers[h].observe(labs[h].name)
            assert seen[res.name].fingerprint == res.fingerprint and seen[res.name].running
        h1, h2 = naming.object_name("mhva", "h1"), naming.object_name("mhvb", "h2")
        # across the VXLAN, both ways, by address
        assert icmp_ping(h1, "10.0.1.11") is not None
        assert icmp_ping(h2, "10.0.1.10") is not None
        # the MACs were learned behind the other host's underlay address
        assert learned(boxes["a"], devices["a"].name)[naming.mac_address("mhvb", "h2")] == \
            "192.168.250.2"
        assert learned(boxes["b"], devices["b"].name)[naming.mac_address("mhva", "h1")] == \
            "192.168.250.1"
        # path MTU: 1400-byte and full 1450-byte packets with DF set cross; 1451 cannot leave
        for size in (1400, 1450):
            assert icmp_ping(h1, "10.0.1.11", size=size, df=True) is not None, size
            assert icmp_ping(h2, "10.0.1.10", size=size, df=True) is not None, size
        with pytest.raises(OSError) as info:
            icmp_ping(h1, "10.0.1.11", size=1451, df=True, attempts=1)
        assert info.value.errno == errno.EMSGSIZE
        # applying the same device again changes nothing (same device, same FDB)
        with nsutil.iproute(boxes["a"].netns) as ipr:
            index = ipr.link_lookup(ifname=devices["a"].name)[0]
        drivers["a"].create(labs["a"].name, devices["a"])
        with nsutil.iproute(boxes["a"].netns) as ipr:
            assert ipr.link_lookup(ifname=devices["a"].name) == [index]
        assert drivers["a"].flood_list(devices["a"].name) == ["192.168.250.2"]
    finally:
        for h, lab in labs.items():
            drivers[h].delete(lab.name, devices[h].name)
            lab.destroy()
        unlink_underlay(boxes["a"].netns, ULINK[0])
    for h, box in boxes.items():
        assert drivers[h].observe(labs[h].name) == {}
        assert diff(before[h], snapshot(box.netns)) == [], h
