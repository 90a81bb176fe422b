"""The DOCKER-USER firewall driver against real iptables, only inside namespaces we made.

The round trips prove the driver leaves ``iptables-save`` of the namespace exactly as it
found it; the traffic test proves the rule is what lets two non-Docker ports of the lab bridge
talk when dockerd's FORWARD policy is DROP.  Pings go only between two namespaces the test
created, on the test's own bridge inside the sandbox.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from hybridnb.core.resource import Observation, Resource
from hybridnb.drivers import nsutil
from hybridnb.drivers.firewall import FirewallDriver
from hybridnb.target import Target
from tests.helpers.hostsnap import diff, snapshot
from tests.helpers.privnet import icmp_ping, private_netns, unique
from tests.gating import require_real
from tests.realengines import ENGINE_TOOLS

pytestmark = pytest.mark.real
_COUNTERS = re.compile(r"\[\d+:\d+\]")


def fw_res(bridge: str) -> Resource:
    return Resource("firewall", bridge, {"bridge": bridge, "chain": "DOCKER-USER"})


def saved(drv: FirewallDriver) -> list[str]:
    """``iptables-save`` without comments and counters (what must be identical)."""
    return [_COUNTERS.sub("[*]", line) for line in drv.save().splitlines()
            if line and not line.startswith("#")]


def chain(drv: FirewallDriver, name: str) -> list[str]:
    done = drv._run("-S", name, check=False)
    return done.stdout.splitlines() if done.returncode == 0 else []


def test_round_trip_in_the_sandbox_leaves_iptables_identical(sandbox, lab_bridge):
    from hybridnb.core import naming
    from hybridnb.drivers.docker import NetworkDriver

    drv = FirewallDriver(sandbox.target())
    lab = unique("fw")
    br, other = lab_bridge(lab), lab_bridge(lab)
    # a docker network makes dockerd put DOCKER-USER and its FORWARD jump in place
    nets = NetworkDriver(sandbox.target())
    net = Resource("network", naming.docker_network(lab), {
        "network": naming.docker_network(lab), "bridge": other.name, "subnet": other.subnet,
        "gateway": other.gateway, "ip_range": None, "aux_addresses": {}, "mtu": 1500})
    nets.create(lab, net)
    try:
        before, snap = saved(drv), snapshot(sandbox.netns)
        assert "-A FORWARD -j DOCKER-USER" in before
        res = fw_res(br.name)
        drv.create(lab, res)
        assert drv.observe(lab) == {br.name: Observation(res.fingerprint)}
        rules = chain(drv, "DOCKER-USER")
        assert rules[1] == (f'-A DOCKER-USER -i {br.name} -o {br.name} -m comment --comment '
                            f'"hybridnb:{lab} {res.fingerprint}" -j ACCEPT'), rules
        assert not [r for r in chain(drv, "FORWARD") if "hybridnb:" in r], "docker jumps"
        drv.create(lab, res)                         # converges: still exactly one rule
        assert sum(br.name in r for r in chain(drv, "DOCKER-USER")) == 1
        assert drv.observe(unique("other")) == {}    # another lab does not see it
        drv.delete(lab, br.name)
        assert drv.observe(lab) == {}
        drv.delete(lab, br.name)                     # already gone is fine
        assert saved(drv) == before
        assert diff(snap, snapshot(sandbox.netns)) == []
    finally:
        nets.delete(lab, net.name)


def test_missing_chain_is_created_and_removed_again():
    require_real(tools=ENGINE_TOOLS)
    with private_netns() as ns:
        drv = FirewallDriver(Target("t", netns=ns))
        before = saved(drv)
        assert chain(drv, "DOCKER-USER") == []
        lab, res = unique("fw"), fw_res("hbtfw0")
        drv.create(lab, res)
        assert chain(drv, "DOCKER-USER")[0] == "-N DOCKER-USER"
        assert drv.observe(lab) == {"hbtfw0": Observation(res.fingerprint)}
        # nothing else jumps to the new chain: our own tagged jump does
        assert chain(drv, "FORWARD")[1] == (f'-A FORWARD -m comment --comment "hybridnb:{lab} '
                                            f'{res.fingerprint} jump:hbtfw0" -j DOCKER-USER')
        drv.create(lab, res)
        assert len(chain(drv, "FORWARD")) == 2 and len(chain(drv, "DOCKER-USER")) == 2
        drv.delete(lab, "hbtfw0")
        assert chain(drv, "DOCKER-USER") == []
        assert saved(drv) == before


def test_foreign_rules_and_chains_are_kept():
    require_real(tools=ENGINE_TOOLS)
    with private_netns() as ns:
        drv = FirewallDriver(Target("t", netns=ns))
        drv._run("-N", "DOCKER-USER")
        drv._run("-A", "FORWARD", "-j", "DOCKER-USER")
        drv._run("-A", "DOCKER-USER", "-i", "hbtfw0", "-j", "DROP")
        before = saved(drv)
        lab, res = unique("fw"), fw_res("hbtfw0")
        drv.create(lab, res)
        assert len(chain(drv, "DOCKER-USER")) == 3
        assert not [r for r in chain(drv, "FORWARD") if "hybridnb:" in r]
        drv.delete(lab, "hbtfw0")
        assert saved(drv) == before


def _host(sbx: str, bridge: str, address: str) -> str:
    """A namespace with one veth on ``bridge`` (inside the sandbox) holding ``address``."""
    name = f"hnb-{unique('fh')}"
    nsutil.create_netns(name)
    veth = f"v{unique('')}"[:15]
    for argv in (["ip", "-n", sbx, "link", "add", veth, "type", "veth", "peer", "name", "eth0",
                  "netns", name],
                 ["ip", "-n", sbx, "link", "set", veth, "master", bridge, "up"],
                 ["ip", "-n", name, "addr", "add", address, "dev", "eth0"],
                 ["ip", "-n", name, "link", "set", "eth0", "up"],
                 ["ip", "-n", name, "link", "set", "lo", "up"]):
        subprocess.run(argv, check=True, capture_output=True)
    return name


def test_rule_lets_bridged_traffic_pass_forward_drop(sandbox, lab_bridge):
    ns = sandbox.netns
    if nsutil.read_sysctl(ns, "net.bridge.bridge-nf-call-iptables") != "1":
        pytest.skip("bridged frames bypass iptables here (bridge-nf-call-iptables=0)")
    drv = FirewallDriver(sandbox.target())
    assert "-P FORWARD DROP" in drv._run("-S", "FORWARD").stdout
    lab = unique("fw")
    br = lab_bridge(lab)
    hosts = []
    try:
        hosts = [_host(ns, br.name, br.addr(11) + "/24"), _host(ns, br.name, br.addr(12) + "/24")]
        icmp_ping(hosts[0], br.addr(12), timeout=0.5)   # let the neighbours resolve
        assert icmp_ping(hosts[0], br.addr(12), timeout=0.5) is None, "FORWARD DROP lets it by"
        drv.create(lab, fw_res(br.name))
        assert icmp_ping(hosts[0], br.addr(12), timeout=2.0) is not None
        drv.delete(lab, br.name)
        assert icmp_ping(hosts[0], br.addr(12), timeout=0.5) is None
    finally:
        drv.delete(lab, br.name)
        for h in hosts:
            nsutil.delete_netns(h)
