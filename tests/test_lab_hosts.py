"""A lab spread over hosts, through ``Lab`` (dry-run): the plan says which MTU and why, and
that placement is not applied yet; apply refuses it rather than make every endpoint here."""

from __future__ import annotations

import pytest

from hybridnb.errors import Unsupported
from hybridnb.lab import Lab

TWO = {"a": {"sandbox": "mha", "underlay": "192.168.250.1"},
       "b": {"sandbox": "mhb", "underlay": "192.168.250.2"}}


def test_a_spread_lab_plans_with_its_mtu_note_and_is_not_applied_yet(tmp_path):
    lab = Lab.from_dict({"name": "mhs", "hosts": TWO, "endpoints": {
        "h1": {"kind": "host"}, "h2": {"kind": "host", "host": "b"}}},
        backend="dry-run", state_dir=tmp_path)
    notes = {w.path: w.message for w in lab.plan().warnings}
    assert notes["network.mtu"].startswith("lab MTU 1450: VXLAN adds 50 bytes")
    assert "not applied yet" in notes["hosts"]
    with pytest.raises(Unsupported) as info:
        lab.apply()
    assert info.value.capability == "hosts" and "lab 'mhs'" in str(info.value)
    one = Lab.from_dict({"name": "mht", "hosts": {"a": {"engine": "local"}},
                         "endpoints": {"h1": {"kind": "host", "host": "a"}}},
                        backend="dry-run", state_dir=tmp_path)
    assert one.warnings() == [] and one.apply().ok
