"""The VXLAN driver's own vocabulary, without a kernel: the ownership alias and underlay
addresses."""

from __future__ import annotations

import pytest

from hybridnb.drivers.vxlan import parse_vxlan_alias, resolve_underlay, vxlan_alias
from hybridnb.errors import EngineError


def test_the_alias_names_the_lab_and_the_fingerprint():
    alias = vxlan_alias("mhv", "0123abcd")
    assert alias == "hybridnb:mhv:vxlan:0123abcd"
    assert parse_vxlan_alias(alias) == ("mhv", "0123abcd")
    # a bridge's or a host veth's alias is not a VXLAN device's
    assert parse_vxlan_alias("hybridnb:mhv:0123abcd") is None
    assert parse_vxlan_alias("hybridnb:mhv:h1:0123abcd") is None
    assert parse_vxlan_alias("") is None


def test_underlay_addresses_pass_through_and_bad_names_say_so():
    assert resolve_underlay("192.168.250.2") == "192.168.250.2"
    assert resolve_underlay("localhost") == "127.0.0.1"          # /etc/hosts, no network
    with pytest.raises(EngineError) as info:
        resolve_underlay("no-such-host.invalid")
    assert "cannot resolve the underlay address 'no-such-host.invalid'" in str(info.value)
