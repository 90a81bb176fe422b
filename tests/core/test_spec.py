"""The lab model: defaults, parsing, round trips, and collecting every problem at once."""

from __future__ import annotations

import ipaddress

import pytest

from hybridnb.core.kinds.container import ContainerSpec
from hybridnb.core.kinds.vm import VMSpec
from hybridnb.core.spec import lab_to_dict, parse_lab
from hybridnb.errors import ValidationError


def test_defaults_mirror_the_seed():
    spec = parse_lab({})
    net = spec.network
    assert (net.bridge, str(net.subnet), str(net.gateway), net.domain, net.mtu) == \
        ("hybr0", "10.0.1.0/24", "10.0.1.1", "hybrid.local", 1500)
    assert spec.name == "hybrid" and spec.endpoints == ()


def test_gateway_defaults_to_first_address():
    assert str(parse_lab({"network": {"subnet": "172.16.5.0/24"}}).network.gateway) == "172.16.5.1"


def test_endpoints_sorted_and_typed():
    spec = parse_lab({"endpoints": {"web": {"kind": "container", "command": "httpd -f"},
                                    "db": {"kind": "vm", "memory": 512}}})
    assert [e.name for e in spec.endpoints] == ["db", "web"]
    assert isinstance(spec.endpoint("web"), ContainerSpec)
    assert spec.endpoint("web").command == ("httpd", "-f")
    assert isinstance(spec.endpoint("db"), VMSpec) and spec.endpoint("db").memory == 512


def test_round_trip_through_dict():
    data = {"name": "rt", "network": {"subnet": "10.5.0.0/16", "mtu": 1450, "upstream": ["10.5.0.53"]},
            "endpoints": {"a": {"kind": "container", "image": "nginx", "ports": ["8080:80/tcp"],
                                "env": {"X": "1"}, "labels": {"t": "v"}},
                          "b": {"kind": "vm", "template": "base", "image": "/x.qcow2"},
                          "c": {"kind": "host", "address": "10.5.0.9"}},
            "expect": ["a -> b icmp ok"]}
    spec = parse_lab(data)
    assert parse_lab(lab_to_dict(spec)) == spec


def test_all_problems_reported_together():
    with pytest.raises(ValidationError) as info:
        parse_lab({"network": {"mtu": 5, "subnet": "nope"},
                   "endpoints": {"x": {"kind": "vm", "memory": 1}, "Y": {"kind": "host"}}})
    paths = [p.path for p in info.value.problems]
    assert paths == sorted(paths)
    assert {"network.mtu", "network.subnet", "endpoints.x.memory", "endpoints.Y"} <= set(paths)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("addr", ["10.0.1.0", "10.0.1.255", "10.0.1.1", "10.0.2.3"])
def test_bad_addresses(addr):
    with pytest.raises(ValidationError):
        parse_lab({"endpoints": {"a": {"kind": "host", "address": addr}}})


def test_did_you_mean_on_unknown_key():
    with pytest.raises(ValidationError) as info:
        parse_lab({"endpoints": {"a": {"kind": "vm", "memroy": 128}}})
    assert "did you mean 'memory'" in str(info.value)


def test_address_type():
    spec = parse_lab({"endpoints": {"a": {"kind": "host", "address": "10.0.1.7"}}})
    assert spec.endpoint("a").address == ipaddress.IPv4Address("10.0.1.7")
