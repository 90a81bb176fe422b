"""Address management: pools, determinism, stickiness, /16, Docker's range."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings, strategies as st

from hybridnb.core.ipam import allocate_one, assign_addresses, docker_ipam, pools_for
from hybridnb.core.spec import parse_lab
from hybridnb.errors import ValidationError

A = ipaddress.IPv4Address


def lab(endpoints, **net):
    return parse_lab({"network": net, "endpoints": endpoints})


def test_default_pools_for_a_24():
    pools = pools_for(lab({}).network)
    assert (str(pools["host"].first), str(pools["container"].first), str(pools["vm"].first)) == \
        ("10.0.1.10", "10.0.1.100", "10.0.1.200")
    assert str(pools["container"].last) == "10.0.1.199"
    assert str(pools["vm"].last) == "10.0.1.254"


def test_slash16_scales_pools():
    pools = pools_for(lab({}, subnet="10.8.0.0/16").network)
    assert str(pools["container"].first) == "10.8.100.1"
    assert pools["vm"].size > 10000


def test_explicit_then_sticky_then_lowest_free():
    spec = lab({"a": {"kind": "container"}, "b": {"kind": "container", "address": "10.0.1.100"},
                "c": {"kind": "container"}})
    first = assign_addresses(spec)
    assert first == {"a": A("10.0.1.101"), "b": A("10.0.1.100"), "c": A("10.0.1.102")}
    # c keeps its address when a goes away; a new d takes the lowest free one
    spec2 = lab({"b": {"kind": "container", "address": "10.0.1.100"}, "c": {"kind": "container"},
                 "d": {"kind": "container"}})
    second = assign_addresses(spec2, {k: str(v) for k, v in first.items()})
    assert second["c"] == A("10.0.1.102") and second["d"] == A("10.0.1.101")


def test_explicit_beats_previous_holder():
    spec = lab({"a": {"kind": "host"}, "b": {"kind": "host", "address": "10.0.1.10"}})
    got = assign_addresses(spec, {"a": "10.0.1.10"})
    assert got["b"] == A("10.0.1.10") and got["a"] == A("10.0.1.11")


def test_pool_full_is_a_validation_error():
    eps = {f"v{i}": {"kind": "vm"} for i in range(56)}
    with pytest.raises(ValidationError) as info:
        assign_addresses(lab(eps))
    assert "pool" in str(info.value)


def test_docker_range_avoids_vm_pool():
    spec = lab({"c": {"kind": "container"}, "v": {"kind": "vm"}})
    addrs = assign_addresses(spec)
    rng, aux = docker_ipam(spec.network, addrs, {"c": "container", "v": "vm"}, kind="container")
    vm_pool = pools_for(spec.network)["vm"]
    assert all(a not in vm_pool for a in rng)
    assert str(rng) == "10.0.1.128/26" and aux == {}


def test_aux_reserves_non_containers_inside_range():
    spec = lab({"c": {"kind": "container"}, "v": {"kind": "vm", "address": "10.0.1.130"}})
    addrs = assign_addresses(spec)
    _, aux = docker_ipam(spec.network, addrs, {"c": "container", "v": "vm"}, kind="container")
    assert aux == {"v": "10.0.1.130"}


def test_allocate_one_skips_taken():
    net = lab({}).network
    assert allocate_one(net, "vm", [A("10.0.1.200")]) == A("10.0.1.201")


@settings(max_examples=60, deadline=None)
@given(n_hosts=st.integers(0, 30), n_cont=st.integers(0, 40), n_vms=st.integers(0, 20),
       prefix=st.sampled_from([16, 20, 24]))
def test_allocation_is_unique_deterministic_and_in_pool(n_hosts, n_cont, n_vms, prefix):
    subnet = {16: "10.20.0.0/16", 20: "10.30.0.0/20", 24: "10.0.1.0/24"}[prefix]
    eps = {}
    eps.update({f"h{i}": {"kind": "host"} for i in range(n_hosts)})
    eps.update({f"c{i}": {"kind": "container"} for i in range(n_cont)})
    eps.update({f"v{i}": {"kind": "vm"} for i in range(n_vms)})
    spec = lab(eps, subnet=subnet)
    got = assign_addresses(spec)
    assert got == assign_addresses(spec)
    assert len(set(got.values())) == len(got)
    pools = pools_for(spec.network)
    for ep in spec.endpoints:
        assert got[ep.name] in pools[ep.kind]
        assert got[ep.name] != spec.network.gateway
