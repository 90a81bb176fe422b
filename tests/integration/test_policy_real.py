"""Policies and link impairments on real engines (issue 15), at the driver level.

One lab in the sandbox — two containers, three namespace hosts and one test VM on one bridge,
with the lab's DOCKER-USER rule and Docker's own iptables chains in place — made with ``Lab``;
the ``policy`` and ``link`` drivers are then driven directly (the lab file does not know these
sections yet):

* a 12-rule default-deny policy: the full probe matrix (ICMP, TCP, UDP, HTTP, DNS; every
  ordered pair, the gateway included, VM <-> container both ways) is ``ok`` or ``blocked``
  exactly as the policy decides, nothing ``failed`` or leaked;
* 20 policy changes under a continuous ping between an allowed pair and a denied pair: not
  one allowed echo lost, not one denied echo answered;
* ``loss: 20%`` on a container: 15-25 % of 500 echoes lost; ``rate: 10mbit`` on a host caps
  iperf3 within 10 % both ways; ``delay: 50ms`` on the VM (inside the guest: this host's
  kernel has no netem) shifts its RTT by 50-60 ms and leaves other pairs alone, and changes in
  place without restarting it; ``delay`` on a container is refused before anything is made;
  ``mtu`` sets both ends and is restored;
* removing them leaves no table, no qdisc, no IFB; destroying the lab leaves the sandbox's
  namespace exactly as it was.

Every packet goes to an address of this lab, inside the sandbox namespace.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from hybridnb.core import nftables as nftjson
from hybridnb.core.impairments import Impairment, link_resource
from hybridnb.core.nftables import policy_resource
from hybridnb.core.policy import members_of, parse_policy
from hybridnb.drivers import nsutil
from hybridnb.drivers.impairments import LinkDriver, ifb_name
from hybridnb.drivers.nftables import PolicyDriver
from hybridnb.errors import EngineUnavailable
from hybridnb.lab import Lab
from hybridnb.services.policyview import classify
from tests.helpers import hostsnap
from tests.helpers.privnet import unique
from tests.realengines import SANDBOX_NAME

pytestmark = [pytest.mark.real, pytest.mark.vm]

LAB_YAML = """
name: {name}
network: {{bridge: {bridge}, subnet: 10.0.77.0/24}}
endpoints:
  c1: {{kind: container, labels: {{tier: web}}}}          # the image serves /www on port 80
  c2: {{kind: container, labels: {{tier: app}}}}
  h1: {{kind: host}}
  h2: {{kind: host}}
  h3: {{kind: host}}
  vm1: {{kind: vm, template: test, memory: 128}}
"""

GROUPS = {"ops": ["h1"], "web": {"labels": {"tier": "web"}}}
RULES = [
    {"from": "ops", "to": "any", "allow": ["icmp"]},                               # 1
    {"from": "web", "to": "vm1", "allow": ["http/80"]},                            # 2
    {"from": "vm1", "to": "containers", "allow": ["icmp", "tcp/7"]},               # 3
    {"from": "containers", "to": "vm1", "allow": ["icmp"]},                        # 4
    {"from": "label:tier=app", "to": "label:tier=web", "allow": ["tcp/7", "udp/7"]},  # 5
    {"from": "h2", "to": "h3", "allow": ["udp"]},                                  # 6
    {"from": "h3", "to": "h2", "deny": ["udp/7"]},                                 # 7
    {"from": "hosts", "to": "c2", "allow": ["http/80"]},                           # 8
    {"from": "h2", "to": "any", "deny": ["icmp"]},                                 # 9
    {"from": "any", "to": "h1", "allow": ["tcp/7"]},                               # 10
    {"from": "h3", "to": "any", "allow": ["icmp"]},                                # 11
    {"from": "vm1", "to": "hosts", "allow": ["udp/7", "icmp"]},                    # 12
]


def docker_api(box):
    import docker

    return docker.APIClient(base_url=box.target().docker_url, version="auto")


@pytest.fixture(scope="module")
def env(sandbox, tmp_path_factory):
    """The lab, up; the policy and link drivers; the sandbox snapshot taken before it."""
    api = docker_api(sandbox)                    # dockerd's own chains first (see test_lab_real)
    net = api.create_network("hnb-prime", driver="bridge",
                             options={"com.docker.network.bridge.name": "hnbprime0"})
    api.remove_network(net["Id"])
    target = sandbox.target()
    before = hostsnap.snapshot(target.netns)
    name = unique("pol")
    lab = Lab.from_yaml(LAB_YAML.format(name=name, bridge=f"hpb{os.getpid() % 10000}"),
                        backend="sandbox", sandbox=SANDBOX_NAME,
                        state_dir=tmp_path_factory.mktemp("state"))
    lab.apply()
    backend = lab.backend
    policies = PolicyDriver(target)
    links = LinkDriver(target, container_netns=backend.driver("container").netns_paths,
                       guest_exec=backend.driver("vm").guest_exec)
    eps, gateway = lab.probe_endpoints()
    env = {"lab": lab, "name": name, "target": target, "before": before, "policies": policies,
           "links": links, "eps": {e.name: e for e in eps}, "gateway": gateway,
           "res": {r.name: r for r in lab.resources() if r.kind in ("host", "container", "vm")}}
    try:
        yield env
    finally:
        for ep in list(links.records(name)):
            links.delete(name, ep)
        policies.delete(name, name)
        links.close()
        lab.destroy()


@pytest.fixture(autouse=True)
def clean(env):
    """Whatever a test leaves (it failed half way), the next one starts without it."""
    yield
    links, name = env["links"], env["name"]
    for ep in list(links.records(name)):
        links.delete(name, ep)
    env["policies"].delete(name, name)


def policy_res(env, rules, default="deny", groups=GROUPS):
    lab = env["lab"]
    members = members_of(lab.spec.endpoints, lab.addresses())
    policy = parse_policy(groups, {"default": default, "rules": rules}, members)
    net = lab.spec.network
    body = nftjson.policy_body(policy, lab=env["name"], bridge=net.bridge,
                               gateway=str(net.gateway))
    return policy, policy_resource(env["name"], body, bridge=net.bridge,
                                   gateway=str(net.gateway), rules=len(policy.rules),
                                   default=policy.default)


def link_res(env, endpoint, **imp):
    res = env["res"][endpoint]
    return link_resource(env["name"], {**res.spec, "kind": res.kind},
                         Impairment(endpoint, **imp), bridge=env["lab"].spec.network.bridge,
                         default_mtu=1500,
                         guest_netem=res.kind == "vm")


def netns_of(env, endpoint):
    return env["eps"][endpoint].netns


def addr_of(env, endpoint):
    return env["eps"][endpoint].address


# ------------------------------------------------------------------------------ pinging

_ids = itertools.count(1)


def _echo(ident: int, seq: int, payload: bytes = b"hybridnb-policy") -> bytes:
    def csum(data: bytes) -> int:
        data += b"\0" * (len(data) % 2)
        s = sum(struct.unpack(f"!{len(data) // 2}H", data))
        s = (s >> 16) + (s & 0xFFFF)
        return ~(s + (s >> 16)) & 0xFFFF
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, csum(head + payload), ident, seq) + payload


def burst(netns: str, dst: str, n: int, interval: float = 0.001,
          wait: float = 1.0) -> dict[int, float]:
    """Send ``n`` echoes ``interval`` apart; {seq: rtt} of those answered within ``wait``."""
    sock = nsutil.socket_in_netns(netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = (os.getpid() * 7 + next(_ids)) & 0xFFFF
    sent: dict[int, float] = {}
    got: dict[int, float] = {}
    stop = threading.Event()

    def receive() -> None:
        sock.settimeout(0.05)
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(2048)
            except socket.timeout:
                continue
            now = time.perf_counter()
            ihl = (data[0] & 0x0F) * 4
            kind, _, _, rid, seq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if kind == 0 and rid == ident and addr[0] == dst and seq in sent:
                got.setdefault(seq, now - sent[seq])

    t = threading.Thread(target=receive)
    t.start()
    try:
        for seq in range(1, n + 1):
            sent[seq] = time.perf_counter()
            sock.sendto(_echo(ident, seq), (dst, 0))
            time.sleep(interval)
        time.sleep(wait)
    finally:
        stop.set()
        t.join()
        sock.close()
    return got


def rtts(netns: str, dst: str, n: int = 15, interval: float = 0.1) -> list[float]:
    got = burst(netns, dst, n, interval=interval, wait=0.5)
    return sorted(got.values())


# ------------------------------------------------------------------------------ policies

def test_policy_matrix_matches_the_rules_exactly(env):
    policies, name = env["policies"], env["name"]
    policy, res = policy_res(env, RULES)
    assert policy.warnings == ()
    assert len(policy.rules) >= 10
    policies.check(name, res)
    t0 = time.monotonic()
    policies.create(name, res)
    applied = time.monotonic() - t0
    assert policies.observe(name) == {name: res.fingerprint}
    matrix = env["lab"].test(("icmp", "tcp", "udp", "http", "dns"), timeout=1.0, count=2)
    judged = classify(matrix, policy)
    print(f"\npolicy applied in {applied * 1000:.1f} ms; {judged.summary()}")
    assert judged.unexpected() == [], judged.to_text()
    counts = judged.counts()
    assert counts["ok"] >= 90 and counts["blocked"] >= 100 and counts["skip"] == 0
    # VM <-> container, both ways, each way both allowed and blocked checks
    for a, b in (("vm1", "c1"), ("c1", "vm1"), ("vm1", "c2"), ("c2", "vm1")):
        statuses = {v.status for v in judged.verdicts
                    if (v.result.source, v.result.target) == (a, b)}
        assert statuses == {"ok", "blocked"}, (a, b, statuses)
    # the rules that decided something were hit, the default too
    hits = policies.counters(name)
    for key in ("rule 1", "rule 2", "rule 3", "rule 5", "rule 9", "rule 12", "default", "dns"):
        assert hits.get(key, (0, 0))[0] > 0, (key, hits)
    row = policy.to_text(hits).splitlines()[3].split()       # rule 1, with its packets
    assert row[0] == "1" and row[4] == str(hits["rule 1"][0])
    policies.delete(name, name)
    assert policies.observe(name) == {}


def test_twenty_changes_under_load_are_atomic(env):
    """An allowed pair pings non-stop (one conntrack entry: the same ICMP id throughout),
    a denied pair too, while the policy is replaced 20 times."""
    policies, name = env["policies"], env["name"]
    h1, h2, c1 = netns_of(env, "h1"), netns_of(env, "h2"), addr_of(env, "c1")
    variants = []
    for i in range(20):
        rules = [{"from": "h1", "to": "c1", "allow": ["icmp"]},
                 {"from": "h2", "to": "c1", "deny": ["icmp"]}]
        rules += [{"from": "h3", "to": "any", "allow": [f"tcp/{1000 + i}"]}]
        rules += RULES[2:2 + i % 7]
        variants.append(policy_res(env, rules, default="allow" if i % 2 else "deny")[1])
    assert len({v.fingerprint for v in variants}) == 20
    policies.create(name, variants[-1])
    results: dict[str, dict[int, float]] = {}
    sent: dict[str, int] = {}
    n = 3000

    def loop(label: str, ns: str) -> None:
        got = burst(ns, c1, n, interval=0.0005, wait=0.5)
        results[label], sent[label] = got, n

    threads = [threading.Thread(target=loop, args=("allowed", h1)),
               threading.Thread(target=loop, args=("denied", h2))]
    for t in threads:
        t.start()
    time.sleep(0.2)
    times = []
    for v in variants:
        t0 = time.perf_counter()
        policies.update(name, v)
        times.append(time.perf_counter() - t0)
        time.sleep(0.05)
    for t in threads:
        t.join()
    print(f"\n20 changes, {statistics.median(times) * 1000:.1f} ms median each; allowed "
          f"{len(results['allowed'])}/{n} answered, denied {len(results['denied'])}/{n}")
    assert len(results["allowed"]) == n, "an allowed echo was lost during a change"
    assert results["denied"] == {}, "a denied echo got through during a change"
    policies.delete(name, name)


# ------------------------------------------------------------------------------ impairments

def test_loss_on_a_container(env):
    links, name = env["links"], env["name"]
    res = link_res(env, "c2", loss=2000)
    links.check(name, res)
    links.create(name, res)
    assert links.observe(name) == {"c2": res.fingerprint}
    h1, c2 = netns_of(env, "h1"), addr_of(env, "c2")
    burst(h1, c2, 20, interval=0.01)                     # neighbours resolved, warm
    got = burst(h1, c2, 500, interval=0.002)
    lost = 1 - len(got) / 500
    dropped = links.loss_counters(name)["c2"][0]
    print(f"\nloss 20% on c2: {lost:.1%} of 500 echoes lost, {dropped} frames dropped")
    assert 0.15 <= lost <= 0.25
    links.delete(name, "c2")
    assert links.records(name) == {}
    got = burst(h1, c2, 200, interval=0.002)
    assert len(got) == 200


def iperf(env, client: str, server: str, reverse: bool) -> float:
    srv = subprocess.Popen(["ip", "netns", "exec", netns_of(env, server).rsplit("/", 1)[-1],
                            "iperf3", "-s", "-1", "-B", addr_of(env, server)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = subprocess.run(["ip", "netns", "exec", netns_of(env, client).rsplit("/", 1)[-1],
                              "iperf3", "-c", addr_of(env, server), "-t", "3", "-J",
                              *(["-R"] if reverse else [])],
                             capture_output=True, text=True, timeout=30)
        return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"]
    finally:
        try:
            srv.wait(timeout=5)
        except subprocess.TimeoutExpired:
            srv.kill()                           # the client never came: ours, by pid
            srv.wait()


def test_rate_caps_iperf3_both_ways(env):
    if shutil.which("iperf3") is None:
        from tests.gating import require_real
        require_real("iperf3 is not installed (apt-get install iperf3)")
    links, name = env["links"], env["name"]
    res = link_res(env, "h2", rate=10_000_000)
    links.create(name, res)
    to_h2 = iperf(env, "h1", "h2", reverse=False) / 10e6
    from_h2 = iperf(env, "h1", "h2", reverse=True) / 10e6
    print(f"\nrate 10mbit on h2: to it {to_h2:.3f}, from it {from_h2:.3f} of the rate")
    assert 0.9 <= to_h2 <= 1.1 and 0.9 <= from_h2 <= 1.1
    port = links.find_port(name, res.spec)
    assert [q[0] for q in links.qdiscs(port["index"])] == ["tbf", "ingress"]
    links.delete(name, "h2")
    assert [q[0] for q in links.qdiscs(port["index"])] == ["noqueue"]
    with nsutil.iproute(env["target"].netns) as ipr:
        assert not ipr.link_lookup(ifname=ifb_name(name, "h2"))


def test_delay_on_the_vm_in_place(env):
    links, name = env["links"], env["name"]
    vm = env["lab"].backend.driver("vm")
    domain_id = vm.connection().lookupByName(f"hnb-{name}-vm1").ID()
    h1, vm1, c1 = netns_of(env, "h1"), addr_of(env, "vm1"), addr_of(env, "c1")
    base_vm = statistics.median(rtts(h1, vm1))
    base_c1 = statistics.median(rtts(h1, c1))
    res = link_res(env, "vm1", delay_us=50_000)
    links.check(name, res)                    # the guest has tc + netem: accepted here
    links.create(name, res)
    delayed = statistics.median(rtts(h1, vm1))
    other = statistics.median(rtts(h1, c1))
    shift = (delayed - base_vm) * 1000
    print(f"\ndelay 50ms on vm1: RTT {base_vm * 1000:.2f} -> {delayed * 1000:.2f} ms "
          f"(shift {shift:.1f} ms); h1 -> c1 {base_c1 * 1000:.3f} -> {other * 1000:.3f} ms")
    assert 50 <= shift <= 60
    assert abs(other - base_c1) < 0.002
    links.update(name, link_res(env, "vm1", delay_us=20_000))
    shift = (statistics.median(rtts(h1, vm1)) - base_vm) * 1000
    assert 18 <= shift <= 30, shift
    assert vm.connection().lookupByName(f"hnb-{name}-vm1").ID() == domain_id   # not restarted
    links.delete(name, "vm1")
    code, out, _ = vm.guest_exec(name, "vm1", ["tc", "qdisc", "show", "dev", "eth0"])
    assert code == 0 and "netem" not in out
    assert statistics.median(rtts(h1, vm1)) < base_vm + 0.02


def test_delay_on_a_container_is_refused_before_anything_is_made(env):
    links, name = env["links"], env["name"]
    res = link_res(env, "c1", delay_us=50_000, loss=100)
    if links.capabilities.netem:                         # a kernel with netem: it is fine
        links.check(name, res)
        return
    with pytest.raises(EngineUnavailable) as err:
        links.check(name, res)
    assert "links.c1.delay: this host's kernel has no netem qdisc (sch_netem)" in str(err.value)
    assert "container shares the host's kernel" in str(err.value)
    with pytest.raises(EngineUnavailable):
        links.create(name, res)
    port = links.find_port(name, res.spec)
    assert [q[0] for q in links.qdiscs(port["index"])] == ["noqueue"]
    assert "c1" not in links.records(name)


def test_mtu_on_both_ends(env):
    links, name = env["links"], env["name"]
    res = link_res(env, "h3", mtu=1400)
    links.create(name, res)
    port = links.find_port(name, res.spec)
    inside = nsutil.run_in_netns(netns_of(env, "h3"), socket.if_nameindex)
    with nsutil.iproute(netns_of(env, "h3")) as ipr:
        eth0 = ipr.link("get", index=ipr.link_lookup(ifname="eth0")[0])[0]
    assert port["mtu"] == 1400 and eth0.get_attr("IFLA_MTU") == 1400 and inside
    links.delete(name, "h3")
    with nsutil.iproute(netns_of(env, "h3")) as ipr:
        eth0 = ipr.link("get", index=ipr.link_lookup(ifname="eth0")[0])[0]
    assert links.find_port(name, res.spec)["mtu"] == 1500 == eth0.get_attr("IFLA_MTU")


def test_destroy_leaves_nothing(env):
    """Last in the module: everything removed, then the lab destroyed."""
    links, policies, name = env["links"], env["policies"], env["name"]
    policies.create(name, policy_res(env, RULES)[1])
    links.create(name, link_res(env, "h1", loss=100, rate=1_000_000))
    links.create(name, link_res(env, "c1", rate=1_000_000))
    tables = {t for _, t in policies.nft.tables()}
    assert {f"hnb-{name}", f"hnb-{name}-links"} <= tables
    links.delete(name, "h1")
    links.delete(name, "c1")
    policies.delete(name, name)
    assert not [t for _, t in policies.nft.tables() if t.startswith(f"hnb-{name}")]
    for ep in ("h1", "c1"):
        port = links.find_port(name, link_res(env, ep).spec)
        assert [q[0] for q in links.qdiscs(port["index"])] == ["noqueue"]
    env["lab"].destroy()
    assert hostsnap.diff(env["before"], hostsnap.snapshot(env["target"].netns)) == []
    assert not Path(f"/run/netns/hnb-{name}-h1").exists()
