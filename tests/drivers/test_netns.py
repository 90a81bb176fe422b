"""Namespace hosts against the real kernel, on a bridge inside a private namespace.

Every packet these tests send goes to an address they put on their own bridge or hosts."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from hybridnb.core import naming
from hybridnb.core.resource import Observation, Resource
from hybridnb.drivers import nsutil
from hybridnb.drivers.bridge import BridgeDriver
from hybridnb.drivers.links import CREATING_GROUP
from hybridnb.drivers.netns import NetnsHostDriver
from hybridnb.errors import ConflictError
from hybridnb.target import Target
from tests.gating import require_real
from tests.helpers.hostsnap import diff, snapshot
from tests.helpers.privnet import icmp_ping, private_netns, unique

pytestmark = pytest.mark.real

SUBNET, GW, BR = "10.79.0.0/24", "10.79.0.1", "hbt1"


def host_res(lab: str, name: str, address: str, dns: bool = False) -> Resource:
    veth, peer = naming.veth_pair(lab, name)
    return Resource("host", name, {
        "endpoint": name, "hostname": name, "address": address, "prefix": 24, "gateway": GW,
        "bridge": BR, "mtu": 1450, "dns": [GW] if dns else [], "domain": "hybrid.local",
        "netns": naming.object_name(lab, name), "veth": veth, "peer": peer,
        "mac": naming.mac_address(lab, name)})


@pytest.fixture
def lab():
    require_real()
    name = unique("t")
    with private_netns(lab=name) as ns:
        target = Target("t", netns=ns)
        bridge = BridgeDriver(target)
        hosts = NetnsHostDriver(target, etc_netns=f"/run/hnb-test-{name}/etc-netns")
        bridge.create(name, Resource("bridge", BR, {
            "bridge": BR, "address": f"{GW}/24", "subnet": SUBNET, "mtu": 1450,
            "adopt": False}))
        try:
            yield name, ns, bridge, hosts
        finally:
            hosts.close()
            import shutil
            shutil.rmtree(f"/run/hnb-test-{name}", ignore_errors=True)


def test_hosts_round_trip_and_ping_each_other(lab):
    name, ns, bridge, hosts = lab
    before = snapshot(ns, netns_filter=lambda e: name in e)
    a, b = host_res(name, "a", "10.79.0.10", dns=True), host_res(name, "b", "10.79.0.11")
    hosts.create(name, a)
    hosts.create(name, b)
    assert hosts.observe(name) == {"a": Observation(a.fingerprint),
                                   "b": Observation(b.fingerprint)}
    assert hosts.observe("someotherlab") == {}
    ns_a = a.spec["netns"]
    assert nsutil.netns_exists(ns_a)
    assert icmp_ping(ns_a, "10.79.0.11") is not None
    assert icmp_ping(b.spec["netns"], "10.79.0.10") is not None
    assert icmp_ping(ns_a, GW) is not None
    # inside: eth0 with the address and MTU, default route via the gateway, ping sysctl open
    with nsutil.iproute(ns_a) as ipr:
        eth0 = ipr.link("get", ifname="eth0")[0]
        assert eth0.get("mtu") == 1450
        assert [(x.get("address"), x["prefixlen"])
                for x in ipr.get_addr(family=2, index=eth0["index"])] == [("10.79.0.10", 24)]
        assert [r.get("gateway") for r in ipr.get_default_routes(family=2)] == [GW]
    assert nsutil.read_sysctl(ns_a, "net.ipv4.ping_group_range").split() == ["0", "2147483647"]
    resolv = open(os.path.join(hosts.etc_netns, ns_a, "resolv.conf")).read()
    assert resolv == f"search hybrid.local\nnameserver {GW}\n"
    hosts.delete(name, "a")
    hosts.delete(name, "a")                     # already gone is fine
    assert hosts.observe(name) == {"b": Observation(b.fingerprint)}
    assert not nsutil.netns_exists(ns_a)
    assert not os.path.exists(os.path.join(hosts.etc_netns, ns_a))
    hosts.delete(name, "b")
    assert hosts.observe(name) == {}
    assert diff(before, snapshot(ns, netns_filter=lambda e: name in e)) == []


def test_create_cleans_up_leftovers_of_a_crash(lab):
    name, ns, bridge, hosts = lab
    res = host_res(name, "c", "10.79.0.20")
    spec = res.spec
    # a crash after "netns add" and "link add", before the alias was written
    nsutil.create_netns(spec["netns"])
    with nsutil.iproute(ns) as ipr:
        ipr.link("add", ifname=spec["veth"], kind="veth", group=CREATING_GROUP,
                 peer={"ifname": spec["peer"]})
    assert hosts.observe(name) == {}
    hosts.create(name, res)
    assert hosts.observe(name) == {"c": Observation(res.fingerprint)}
    assert icmp_ping(spec["netns"], GW) is not None
    hosts.create(name, res)                     # re-create over a complete host converges too
    assert icmp_ping(spec["netns"], GW) is not None
    with nsutil.iproute(spec["netns"]) as ipr:  # with the same MAC: peers' ARP stays right
        eth0 = ipr.link("get", ifname="eth0")[0]
    assert eth0.get_attr("IFLA_ADDRESS") == spec["mac"]
    hosts.delete(name, "c")
    assert hosts.observe(name) == {}


def test_foreign_interface_with_our_name_is_refused(lab):
    name, ns, bridge, hosts = lab
    res = host_res(name, "d", "10.79.0.30")
    with nsutil.iproute(ns) as ipr:
        ipr.link("add", ifname=res.spec["veth"], kind="veth", peer={"ifname": "someone"})
    with pytest.raises(ConflictError, match="does not belong"):
        hosts.create(name, res)
    assert not nsutil.netns_exists(res.spec["netns"])


def test_many_hosts_concurrently(lab):
    name, ns, bridge, hosts = lab
    resources = [host_res(name, f"h{i}", f"10.79.0.{100 + i}") for i in range(20)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda r: hosts.create(name, r), resources))
    assert hosts.observe(name) == {r.name: Observation(r.fingerprint) for r in resources}
    first, last = resources[0].spec["netns"], resources[-1].spec["address"]
    assert icmp_ping(first, last) is not None
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda r: hosts.delete(name, r.name), resources))
    assert hosts.observe(name) == {}
    assert not [e for e in os.listdir(nsutil.NETNS_RUN_DIR) if e.startswith(f"hnb-{name}-")]


def test_root_namespace_is_untouched_by_a_whole_cycle():
    """Bridge + hosts made and destroyed in a private namespace leave the host's own
    namespace (links, addresses, routes, firewall, sysctls) exactly as it was."""
    require_real()
    name = unique("t")
    before = snapshot(None, netns_filter=lambda e: name in e)
    with private_netns(lab=name) as ns:
        before_ns = snapshot(ns, netns_filter=lambda e: name in e)
        target = Target("t", netns=ns)
        bridge, hosts = BridgeDriver(target), NetnsHostDriver(target)
        res = Resource("bridge", BR, {"bridge": BR, "address": f"{GW}/24", "subnet": SUBNET,
                                      "mtu": 1500, "adopt": False})
        bridge.check(name, res)
        bridge.create(name, res)
        for i in range(3):
            hosts.create(name, host_res(name, f"r{i}", f"10.79.0.{50 + i}", dns=True))
        assert icmp_ping(naming.object_name(name, "r0"), "10.79.0.52") is not None
        for i in range(3):
            hosts.delete(name, f"r{i}")
        bridge.delete(name, BR)
        hosts.close()
        assert diff(before_ns, snapshot(ns, netns_filter=lambda e: name in e)) == []
    assert diff(before, snapshot(None, netns_filter=lambda e: name in e)) == []


def test_delete_after_the_lab_host_is_gone_still_removes_the_namespace():
    require_real()
    name = unique("t")
    with private_netns(lab=name) as ns:
        target = Target("t", netns=ns)
        BridgeDriver(target).create(name, Resource("bridge", BR, {
            "bridge": BR, "address": f"{GW}/24", "subnet": SUBNET, "mtu": 1500,
            "adopt": False}))
        hosts = NetnsHostDriver(target, etc_netns=f"/run/hnb-test-{name}/etc-netns")
        hosts.create(name, host_res(name, "z", "10.79.0.90"))
        hosts.close()
    # the lab-host namespace is gone now (private_netns removed it, host namespace kept)
    nsutil.create_netns(naming.object_name(name, "z"))      # stands for the survivor
    hosts.delete(name, "z")
    assert not nsutil.netns_exists(naming.object_name(name, "z"))


def test_the_same_lab_on_another_lab_host_never_touches_this_ones_namespaces():
    """Host namespace names are machine-wide (``hnb-<lab>-<host>``): the same lab name
    applied on a second lab host (another sandbox) is refused before anything is made, and
    its destroy leaves the first one's host alone."""
    require_real()
    name = unique("t")
    br = {"bridge": BR, "address": f"{GW}/24", "subnet": SUBNET, "mtu": 1500, "adopt": False}
    with private_netns(lab=name) as ns_a, private_netns(lab=name + "b") as ns_b:
        a = NetnsHostDriver(Target("a", netns=ns_a), etc_netns=f"/run/hnb-test-{name}/a")
        b = NetnsHostDriver(Target("b", netns=ns_b), etc_netns=f"/run/hnb-test-{name}/b")
        for ns in (ns_a, ns_b):
            BridgeDriver(Target("x", netns=ns)).create(name, Resource("bridge", BR, br))
        res = host_res(name, "h1", "10.79.0.20")
        try:
            a.check(name, res)
            a.create(name, res)
            a.check(name, res)                               # its own: fine
            with pytest.raises(ConflictError) as err:
                b.check(name, res)
            assert "another lab host" in err.value.hint
            with pytest.raises(ConflictError):
                b.create(name, res)
            b.delete(name, "h1")                             # not b's: left alone
            assert a.observe(name) == {"h1": Observation(res.fingerprint)}
            assert icmp_ping(ns_a, "10.79.0.20") is not None
        finally:
            a.delete(name, "h1")
            a.close()
            b.close()
    assert not nsutil.netns_exists(naming.object_name(name, "h1"))
