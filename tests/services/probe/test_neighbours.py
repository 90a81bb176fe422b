"""Pinned neighbour entries: a matrix past the kernel's ARP cap stays green, nothing is left.

The kernel learns at most ``gc_thresh3`` neighbour entries machine-wide (1024 here); a full
mesh of N namespaces needs about N².  The engine pins permanent entries for such runs
(:mod:`hybridnb.services.probe.neighbours`); these tests show the overflow without it, the
green matrix with it, that only the entries it added are removed, and that the netlink
messages it packs by hand are what pyroute2 reads them to be.
"""

from __future__ import annotations

import math
import subprocess

import pytest

from hybridnb.services.probe import probe_matrix
from hybridnb.services.probe import neighbours
from tests.gating import require_real
from tests.services.probe.netlab import NetLab


def permanent(ns: str) -> list[str]:
    out = subprocess.run(["ip", "-n", ns, "-4", "neigh", "show", "nud", "permanent"],
                         capture_output=True, text=True, check=True).stdout
    return sorted(line.split()[0] + " " + line.split()[4] for line in out.splitlines())


@pytest.mark.extra("host")
def test_packed_messages_are_what_pyroute2_reads():
    from pyroute2.netlink.rtnl.ndmsg import ndmsg

    mac = bytes.fromhex("027700000001")
    data = neighbours._neigh_messages(neighbours._RTM_NEWNEIGH, 7,
                                      [("10.77.0.11", mac), ("10.77.0.12", mac)])
    assert len(data) == 96
    for seq, offset in ((1, 0), (2, 48)):
        msg = ndmsg(data[offset:offset + 48])
        msg.decode()
        assert msg["header"]["sequence_number"] == seq
        assert msg["header"]["type"] == neighbours._RTM_NEWNEIGH
        assert bool(msg["header"]["flags"] & 0x4) == (seq == 2)      # one ACK, on the last
        assert (msg["family"], msg["ifindex"], msg["state"]) == (2, 7, neighbours.NUD_PERMANENT)
        assert msg.get_attr("NDA_DST") == f"10.77.0.{10 + seq}"
        assert msg.get_attr("NDA_LLADDR") == "02:77:00:00:00:01"
    gone = ndmsg(neighbours._neigh_messages(neighbours._RTM_DELNEIGH, 7,
                                            [("10.77.0.11", b"")]))
    gone.decode()
    assert gone["header"]["type"] == neighbours._RTM_DELNEIGH
    assert gone.get_attr("NDA_DST") == "10.77.0.11" and gone.get_attr("NDA_LLADDR") is None


@pytest.mark.real
def test_a_mesh_past_the_kernels_cap_is_green_only_with_pinned_entries(monkeypatch):
    require_real(tools=("ip",))
    cap = neighbours.learned_budget() * 2
    n = min(int(math.sqrt(cap)) + 14, 120)          # 46 hosts for the default cap of 1024
    with NetLab(n) as lab:
        eps, gw = lab.endpoints(), lab.gateway_endpoint()
        notes: list[str] = []
        pinned = probe_matrix(eps, ("icmp",), gateway=gw, timeout=1.0, count=1,
                              progress=notes.append)
        assert pinned.ok, f"{len(pinned.failures())} of {len(pinned.results)} pairs failed"
        assert any(m.startswith(f"pinned {(n + 1) * n} ") for m in notes), notes  # + gateway
        assert permanent(lab.netns(0)) == [] and permanent(lab.lab) == [], "pins left behind"
        if n * n > cap:                             # the same run without pins overflows
            monkeypatch.setattr(neighbours, "learned_budget", lambda: 10 ** 9)
            bare = probe_matrix(eps, ("icmp",), gateway=gw, timeout=1.0, count=1)
            assert len(bare.failures()) > 0


@pytest.mark.real
def test_only_the_entries_it_added_are_removed():
    require_real(tools=("ip",))
    with NetLab(3) as lab:
        h0 = lab.netns(0)
        theirs = f"{lab.address(1)} 02:99:99:99:99:99"       # someone's own pinned entry
        subprocess.run(["ip", "-n", h0, "neigh", "add", lab.address(1), "lladdr",
                        "02:99:99:99:99:99", "dev", "eth0", "nud", "permanent"], check=True)
        eps = lab.endpoints() + [lab.gateway_endpoint()]
        with neighbours.pinned_neighbours(eps, budget=0) as count:
            assert count == 4 * 3 - 1                         # h0 -> h1 was already there
            during = permanent(h0)
            assert theirs in during and f"{lab.address(2)} {lab.mac(2)}" in during
            assert len(permanent(lab.lab)) == 3               # the gateway knows every host
        assert permanent(h0) == [theirs] and permanent(lab.lab) == []
