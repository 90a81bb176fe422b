"""Policies and link impairments on real engines (issue 15), through the lab file.

One lab in the sandbox — two containers, three namespace hosts and one test VM on one bridge,
with the lab's DOCKER-USER rule and Docker's own iptables chains in place — written as a lab
file with ``groups:``, ``policies:`` (12 rules, default deny) and ``expect:``, made with
``Lab.apply`` and probed with ``Lab.test``.  Each test changes the lab file (its policy, its
``links:``) and applies again, as a user would:

* the full probe matrix (ICMP, TCP, UDP, HTTP, DNS; every ordered pair, the gateway included,
  VM <-> container both ways) is ``ok`` or ``blocked`` exactly as the policy decides, nothing
  failed or leaked; ``validate`` holds the ``expect:`` lines (``blocked`` only when the policy
  blocks); ``Lab.policy()`` shows the rules' counters; status, topology and doctor show it;
* 20 policy changes (each one ``update policy``) under a continuous ping between an allowed
  pair and a denied pair: not one allowed echo lost, not one denied echo answered;
* ``loss: 20%`` on a container: 15-25 % of 500 echoes lost, changed in place without restarting
  it; ``rate: 10mbit`` on a host caps iperf3 within 10 % both ways; ``delay: 50ms`` on the VM
  (inside the guest: this host's kernel has no netem) shifts its probed RTTs by 50-60 ms and
  leaves other pairs alone, and changes in place without restarting it; ``delay`` on a
  container is refused before anything is made; ``mtu`` sets both ends and is restored;
* destroying the lab leaves no table, no qdisc, no IFB and the sandbox's namespace exactly as
  it was.

Every packet goes to an address of this lab, inside the sandbox namespace.
"""

from __future__ import annotations

import copy
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
import yaml

from hybridnb.drivers import nsutil
from hybridnb.drivers.impairments import ifb_name
from hybridnb.errors import EngineUnavailable
from hybridnb.lab import Lab
from tests.helpers import hostsnap
from tests.helpers.privnet import unique
from tests.realengines import SANDBOX_NAME

pytestmark = [pytest.mark.real, pytest.mark.vm]

LAB_YAML = """
name: {name}
network: {{bridge: {bridge}, subnet: 10.0.77.0/24}}
endpoints:
  c1: {{kind: container, labels: {{tier: web}}}}      # busybox httpd serves /www on port 80
  c2: {{kind: container, labels: {{tier: app}}}}
  h1: {{kind: host, labels: {{role: ops}}}}
  h2: {{kind: host}}
  h3: {{kind: host}}
  vm1: {{kind: vm, template: test, memory: 128}}     # httpd on 80, udp echo on 7
groups:
  ops: {{labels: {{role: ops}}}}
  web: [label:tier=web]
policies:
  default: deny
  rules:
    - {{from: ops, to: any, allow: [icmp]}}                                 # 1
    - {{from: web, to: vm1, allow: [http/80]}}                              # 2
    - {{from: vm1, to: containers, allow: [icmp, tcp/7]}}                   # 3
    - {{from: containers, to: vm1, allow: [icmp]}}                          # 4
    - {{from: label:tier=app, to: label:tier=web, allow: [tcp/7, udp/7]}}   # 5
    - {{from: h2, to: h3, allow: [udp]}}                                    # 6
    - {{from: h3, to: h2, deny: [udp/7]}}                                   # 7
    - {{from: hosts, to: c2, allow: [http/80]}}                             # 8
    - {{from: h2, to: any, deny: [icmp]}}                                   # 9
    - {{from: any, to: h1, allow: [tcp/7]}}                                 # 10
    - {{from: h3, to: any, allow: [icmp]}}                                  # 11
    - {{from: vm1, to: hosts, allow: [udp/7, icmp]}}                        # 12
expect:
  - c1 -> vm1 http ok
  - c2 -> vm1 http blocked
  - h1 -> vm1 icmp ok
  - h2 -> c1 icmp blocked
  - h3 -> c2 http ok
  - vm1 -> c1 http blocked
  - h2 -> c1 dns ok
"""


def docker_api(box):
    import docker

    return docker.APIClient(base_url=box.target().docker_url, version="auto")


@pytest.fixture(scope="module")
def env(sandbox, tmp_path_factory):
    """The lab, applied from its lab file; the sandbox snapshot taken before it."""
    api = docker_api(sandbox)                    # dockerd's own chains first (see test_lab_real)
    net = api.create_network("hnb-prime", driver="bridge",
                             options={"com.docker.network.bridge.name": "hnbprime0"})
    api.remove_network(net["Id"])
    target = sandbox.target()
    before = hostsnap.snapshot(target.netns)
    name = unique("pol")
    doc = yaml.safe_load(LAB_YAML.format(name=name, bridge=f"hpb{os.getpid() % 10000}"))
    state_dir = tmp_path_factory.mktemp("state")
    lab = Lab.from_dict(doc, backend="sandbox", sandbox=SANDBOX_NAME, state_dir=state_dir)
    t0 = time.monotonic()
    result = lab.apply()
    made = time.monotonic() - t0
    env = {"lab": lab, "doc": doc, "name": name, "target": target, "before": before,
           "state_dir": state_dir, "api": api, "apply": result, "apply_s": made,
           "links": lab.backend.driver("link"), "policies": lab.backend.driver("policy")}
    try:
        yield env
    finally:
        env["lab"].destroy()


def relab(env, **changes) -> Lab:
    """The lab file with top-level sections replaced (``None`` removes one), as a Lab on the
    same backend and state."""
    doc = copy.deepcopy(env["doc"])
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return Lab.from_dict(doc, backend=env["lab"].backend, state_dir=env["state_dir"])


@pytest.fixture(autouse=True)
def back_to_the_lab_file(env):
    """Whatever a test changed (or left half way), the next one starts from the lab file."""
    yield
    if not env.get("destroyed"):
        env["lab"] = relab(env)
        env["lab"].apply()


def eps(env):
    return {e.name: e for e in env["lab"].probe_endpoints()[0]}


def netns_of(env, endpoint):
    return eps(env)[endpoint].netns


def addr_of(env, endpoint):
    return eps(env)[endpoint].address


def res(lab: Lab, kind: str, name: str | None = None):
    return next(r for r in lab.resources() if r.kind == kind and name in (None, r.name))


def ops(result) -> list[tuple[str, str, str]]:
    return [(a.op, a.kind, a.name) for a in result.plan.actions]


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


def ping(netns: str, dst: str, *, n: int | None = None, stop: threading.Event | None = None,
         interval: float = 0.001, wait: float = 1.0) -> tuple[int, dict[int, float]]:
    """Send echoes ``interval`` apart — ``n`` of them, or until ``stop`` is set; (sent,
    {seq: rtt} of those answered within ``wait`` after the last)."""
    sock = nsutil.socket_in_netns(netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = (os.getpid() * 7 + next(_ids)) & 0xFFFF
    sent: dict[int, float] = {}
    got: dict[int, float] = {}
    done = threading.Event()

    def receive() -> None:
        sock.settimeout(0.05)
        while not done.is_set():
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
        seq = 0
        while (n is not None and seq < n) or (stop is not None and not stop.is_set()):
            seq += 1
            sent[seq] = time.perf_counter()
            sock.sendto(_echo(ident, seq & 0xFFFF), (dst, 0))
            time.sleep(interval)
        time.sleep(wait)
    finally:
        done.set()
        t.join()
        sock.close()
    return len(sent), got


def rtt(env, source: str, target: str, n: int = 15) -> float:
    """The median RTT (s) of ``n`` echoes 100 ms apart (the probe engine sends its echoes
    together, which a VM under TCG answers one after another: its medians carry that)."""
    _, got = ping(netns_of(env, source), addr_of(env, target), n=n, interval=0.1, wait=0.5)
    assert len(got) >= n - 1, got
    return statistics.median(got.values())


def probed(env, source: str, target: str) -> float:
    """The smallest RTT (s) ``Lab.test`` measured from ``source`` to ``target``."""
    r = env["lab"].test(("icmp",), count=5).get("icmp", source, target)
    assert r is not None and r.ok, r
    return r.rtt_min


# ------------------------------------------------------------------------------ policies

def test_the_probe_matrix_matches_the_policy_exactly(env):
    lab, name = env["lab"], env["name"]
    assert ("create", "policy", name) in ops(env["apply"])
    assert lab.warnings() == []
    assert len(lab.spec.sections["policies"].policy.rules) >= 10
    matrix = lab.test(("icmp", "tcp", "udp", "http", "dns"), timeout=1.0, count=2)
    counts = matrix.counts()
    print(f"\nlab applied in {env['apply_s']:.1f} s; {matrix.summary()}")
    assert matrix.ok and matrix.failures() == [] and matrix.leaks() == [], matrix.to_text()
    assert counts["ok"] >= 90 and counts["blocked"] >= 100 and counts["skip"] == 0
    policy = lab.spec.sections["policies"].policy
    from hybridnb.services.policyview import flow_of

    for r in matrix.results:                      # every probe exactly as the policy decides
        allowed = policy.decide(flow_of(r)).allowed
        assert matrix.status_of(r) == ("ok" if allowed else "blocked"), (r, allowed)
    for a, b in (("vm1", "c1"), ("c1", "vm1"), ("vm1", "c2"), ("c2", "vm1")):
        statuses = {matrix.status_of(r) for r in matrix.results if (r.source, r.target) == (a, b)}
        assert statuses == {"ok", "blocked"}, (a, b, statuses)
    blocked = matrix.get("icmp", "h2", "c1")
    assert matrix.mark(blocked) == ("blocked", "rule 9")
    text = matrix.to_text()
    assert "blocked by the policy, as it says:" in text and "blocked by rule 9" in text
    # the counters of the rules that decided something moved, the default's too
    table = lab.policy()
    hits = dict(table.counters)
    for key in ("rule 1", "rule 2", "rule 3", "rule 5", "rule 9", "rule 12", "default", "dns"):
        assert hits.get(key, (0, 0))[0] > 0, (key, hits)
    assert table.state == "up" and f"hnb-{name}" in table.headline()
    first = table.to_text().splitlines()[3].split()
    assert first[0] == "1" and first[4] == str(hits["rule 1"][0])
    assert str(lab.explain("h2", "c1", "icmp")).startswith("h2 -> c1 icmp: deny (decided by "
                                                          "rule 9")
    assert lab.explain("c1", "vm1", "http").allowed


def test_expectations_and_what_shows_the_policy(env):
    lab, name = env["lab"], env["name"]
    report = lab.validate()
    print(f"\n{report.to_text()}")
    assert report.ok, report.to_text()
    observed = {str(r.expectation): r.observed for r in report.results}
    assert observed["h2 -> c1 icmp blocked"] == "blocked"
    # blocked holds only when the policy blocks: tcp/7 to h1 is allowed (rule 10), and it
    # fails only because nothing listens there; "ok" of a blocked flow fails too
    other = relab(env, expect=["c1 -> h1 tcp/7 blocked", "c2 -> vm1 http ok"])
    bad = other.validate()
    assert [r.holds for r in bad.results] == [False, False]
    assert bad.results[0].observed == "fail" and "allows it (rule 10)" in bad.results[0].reason
    assert bad.results[1].observed == "blocked" and "default" in bad.results[1].reason
    # status, topology and doctor
    status = lab.status()
    assert status.policy == f"inet hnb-{name}: 12 rules, default deny — up"
    assert ("h2", "h3") not in status.denied and ("c1", "h2") in status.denied
    from hybridnb.render.topology import draw_topology

    drawing = draw_topology(status)
    assert ("c1", "h2") in drawing.denied and drawing.failed == []
    from hybridnb.services.doctor import DoctorContext, diagnose
    from hybridnb.services.doctor.policy import CHECKS
    from hybridnb.services.labview import LabView

    lab.test(("icmp",), count=1)                  # something for the deny rules to drop
    doctor = diagnose(DoctorContext.of(LabView.of(lab), {}), CHECKS)
    found = {f.check: f for f in doctor.findings}
    assert found["policy-kernel"].ok and found["policy-table"].ok, doctor.to_text()
    assert "the policy dropped" in found["policy-drops"].found
    assert "rule 9 (h2 -> any deny icmp)" in found["policy-drops"].found
    assert "link-kernel" not in found                 # the lab file has no links: yet


def test_twenty_changes_under_load_are_atomic(env):
    """An allowed pair pings non-stop (one conntrack entry: the same ICMP id throughout), a
    denied pair too, while the lab file's policy changes 20 times, each applied."""
    h1, h2, c1 = netns_of(env, "h1"), netns_of(env, "h2"), addr_of(env, "c1")
    base = env["doc"]["policies"]["rules"]
    variants = []
    for i in range(20):
        rules = [{"from": "h1", "to": "c1", "allow": ["icmp"]},
                 {"from": "h2", "to": "c1", "deny": ["icmp"]},
                 {"from": "h3", "to": "any", "allow": [f"tcp/{1000 + i}"]}] + base[2:2 + i % 7]
        variants.append(relab(env, policies={"default": "allow" if i % 2 else "deny",
                                             "rules": rules}))
    assert len({res(v, "policy").fingerprint for v in variants}) == 20
    results: dict[str, tuple[int, dict[int, float]]] = {}
    stop = threading.Event()

    def loop(label: str, ns: str) -> None:
        results[label] = ping(ns, c1, stop=stop, interval=0.0005, wait=0.5)

    variants[-1].apply()
    threads = [threading.Thread(target=loop, args=("allowed", h1)),
               threading.Thread(target=loop, args=("denied", h2))]
    for t in threads:
        t.start()
    time.sleep(0.2)
    times = []
    try:
        for lab in variants:
            t0 = time.perf_counter()
            result = lab.apply()
            times.append(time.perf_counter() - t0)
            assert ops(result) == [("update", "policy", env["name"])]
            time.sleep(0.05)
    finally:
        time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join()
    (sent_ok, ok), (sent_denied, denied) = results["allowed"], results["denied"]
    print(f"\n20 changes through Lab.apply, {statistics.median(times) * 1000:.0f} ms median "
          f"each; allowed {len(ok)}/{sent_ok} answered, denied {len(denied)}/{sent_denied}")
    assert sent_ok > 2000 and len(ok) == sent_ok, "an allowed echo was lost during a change"
    assert sent_denied > 2000 and denied == {}, "a denied echo got through during a change"


# ------------------------------------------------------------------------------ impairments

def started_at(env, container: str) -> str:
    return env["api"].inspect_container(f"hnb-{env['name']}-{container}")["State"]["StartedAt"]


def test_loss_on_a_container_changes_in_place(env):
    links, name = env["links"], env["name"]
    since = started_at(env, "c2")
    result = relab(env, links={"c2": {"loss": "20%"}}).apply()
    assert ops(result) == [("create", "link", "c2")]
    h1, c2 = netns_of(env, "h1"), addr_of(env, "c2")
    ping(h1, c2, n=20, interval=0.01)                    # neighbours resolved, warm
    sent, got = ping(h1, c2, n=500, interval=0.002)
    lost = 1 - len(got) / sent
    view = relab(env, links={"c2": {"loss": "20%"}}).links()
    (row,) = view.rows
    print(f"\nloss 20% on c2: {lost:.1%} of 500 echoes lost, {row.dropped} frames dropped")
    assert 0.15 <= lost <= 0.25
    assert row.state == "up" and row.dropped > 0 and row.where.startswith("port ")
    result = relab(env, links={"c2": {"loss": "1%"}}).apply()
    assert ops(result) == [("update", "link", "c2")]
    assert started_at(env, "c2") == since                 # not restarted
    assert links.records(name)["c2"].fingerprint == result.plan.actions[0].resource.fingerprint
    result = relab(env, links=None).apply()
    assert ops(result) == [("delete", "link", "c2")]
    assert links.records(name) == {}
    sent, got = ping(h1, c2, n=200, interval=0.002)
    assert len(got) == sent


def iperf(env, client: str, server: str, reverse: bool) -> float:
    srv = subprocess.Popen(["ip", "netns", "exec", netns_of(env, server).rsplit("/", 1)[-1],
                            "iperf3", "-s", "-1", "-B", addr_of(env, server)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = subprocess.run(["ip", "netns", "exec", netns_of(env, client).rsplit("/", 1)[-1],
                              "iperf3", "-c", addr_of(env, server), "-t", "3", "-O", "1",
                              "-J",
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
    # iperf3 talks TCP/5201: allowed for this test by the lab file's own policy
    rules = [{"from": "h1", "to": "h2", "allow": ["tcp/5201"]}] + env["doc"]["policies"]["rules"]
    lab = relab(env, links={"h2": {"rate": "10mbit"}},
                policies={"default": "deny", "rules": rules})
    assert sorted(ops(lab.apply())) == [("create", "link", "h2"),
                                        ("update", "policy", name)]
    for _ in range(2):      # a second measurement if a loaded machine's timers lagged
        to_h2 = iperf(env, "h1", "h2", reverse=False) / 10e6
        from_h2 = iperf(env, "h1", "h2", reverse=True) / 10e6
        print(f"\nrate 10mbit on h2: to it {to_h2:.3f}, from it {from_h2:.3f} of the rate")
        if 0.9 <= to_h2 <= 1.1 and 0.9 <= from_h2 <= 1.1:
            break
    assert 0.9 <= to_h2 <= 1.1 and 0.9 <= from_h2 <= 1.1
    port = links.find_port(name, res(lab, "link", "h2").spec)
    assert [q[0] for q in links.qdiscs(port["index"])] == ["tbf", "ingress"]
    relab(env, links=None).apply()
    assert [q[0] for q in links.qdiscs(port["index"])] == ["noqueue"]
    with nsutil.iproute(env["target"].netns) as ipr:
        assert not ipr.link_lookup(ifname=ifb_name(name, "h2"))


def test_delay_on_the_vm_shifts_its_rtts_and_changes_in_place(env):
    name = env["name"]
    vm = env["lab"].backend.driver("vm")
    domain_id = vm.connection().lookupByName(f"hnb-{name}-vm1").ID()
    base_vm, base_c1 = rtt(env, "h1", "vm1"), rtt(env, "h1", "c1")
    probed_vm = probed(env, "h1", "vm1")
    result = relab(env, links={"vm1": {"delay": "50ms"}}).apply()
    assert ops(result) == [("create", "link", "vm1")]
    delayed, other = rtt(env, "h1", "vm1"), rtt(env, "h1", "c1")
    probed_delayed, probed_back = probed(env, "h1", "vm1"), probed(env, "vm1", "h1")
    shift = (delayed - base_vm) * 1000
    print(f"\ndelay 50ms on vm1: RTT h1 -> vm1 {base_vm * 1000:.2f} -> {delayed * 1000:.2f} ms "
          f"(shift {shift:.1f} ms); Lab.test min h1 -> vm1 {probed_vm * 1000:.2f} -> "
          f"{probed_delayed * 1000:.2f} ms, vm1 -> h1 {probed_back * 1000:.2f} ms; "
          f"h1 -> c1 {base_c1 * 1000:.3f} -> {other * 1000:.3f} ms")
    assert 50 <= shift <= 60
    assert probed_delayed >= 0.050 and probed_back >= 0.050      # the probes see it both ways
    assert abs(other - base_c1) < 0.002
    (row,) = relab(env, links={"vm1": {"delay": "50ms"}}).links().rows
    assert "delay inside the guest" in row.where
    result = relab(env, links={"vm1": {"delay": "20ms"}}).apply()
    assert ops(result) == [("update", "link", "vm1")]
    shift = (rtt(env, "h1", "vm1") - base_vm) * 1000
    assert 18 <= shift <= 30, shift
    assert vm.connection().lookupByName(f"hnb-{name}-vm1").ID() == domain_id   # not restarted
    relab(env, links=None).apply()
    code, out, _ = vm.guest_exec(name, "vm1", ["tc", "qdisc", "show", "dev", "eth0"])
    assert code == 0 and "netem" not in out
    assert rtt(env, "h1", "vm1") < base_vm + 0.02


def test_delay_on_a_container_is_refused_before_anything_is_made(env):
    links, name = env["links"], env["name"]
    lab = relab(env, links={"c1": {"delay": "50ms"}, "h3": {"loss": "1%"}})
    if links.capabilities.netem:                     # a kernel with netem: it is fine here
        lab.apply()
        return
    assert [a.op for a in lab.plan().actions] == ["create", "create"]
    with pytest.raises(EngineUnavailable) as err:
        lab.apply()
    print(f"\nrefused: {err.value}")
    assert "links.c1.delay: this host's kernel has no netem qdisc (sch_netem)" in str(err.value)
    assert "container shares the host's kernel" in str(err.value)
    assert links.records(name) == {}                  # not even h3's loss was made
    for ep in ("c1", "h3"):
        port = links.find_port(name, res(lab, "link", ep).spec)
        assert [q[0] for q in links.qdiscs(port["index"])] == ["noqueue"]
    assert [row.state for row in lab.links().rows] == ["missing", "missing"]


def test_mtu_on_both_ends(env):
    links, name = env["links"], env["name"]
    lab = relab(env, links={"h3": {"mtu": 1400}})
    lab.apply()
    link = res(lab, "link", "h3")
    port = links.find_port(name, link.spec)
    with nsutil.iproute(netns_of(env, "h3")) as ipr:
        eth0 = ipr.link("get", index=ipr.link_lookup(ifname="eth0")[0])[0]
    assert port["mtu"] == 1400 and eth0.get_attr("IFLA_MTU") == 1400
    relab(env, links=None).apply()
    with nsutil.iproute(netns_of(env, "h3")) as ipr:
        eth0 = ipr.link("get", index=ipr.link_lookup(ifname="eth0")[0])[0]
    assert links.find_port(name, link.spec)["mtu"] == 1500 == eth0.get_attr("IFLA_MTU")


def test_destroy_leaves_nothing(env):
    """Last in the module: the lab with its policy and impairments, destroyed."""
    links, policies, name = env["links"], env["policies"], env["name"]
    lab = relab(env, links={"h1": {"loss": "1%", "rate": "1mbit"}, "c1": {"rate": "1mbit"}})
    lab.apply()
    tables = {t for _, t in policies.nft.tables()}
    assert {f"hnb-{name}", f"hnb-{name}-links"} <= tables
    ports = [links.find_port(name, r.spec)["name"] for r in lab.resources() if r.kind == "link"]
    result = lab.destroy()
    assert ("delete", "policy", name) in ops(result)
    assert not [t for _, t in policies.nft.tables() if t.startswith(f"hnb-{name}")]
    with nsutil.iproute(env["target"].netns) as ipr:
        assert not ipr.link_lookup(ifname=ifb_name(name, "h1"))
        assert not [p for p in ports if ipr.link_lookup(ifname=p)]
    assert hostsnap.diff(env["before"], hostsnap.snapshot(env["target"].netns)) == []
    assert not Path(f"/run/netns/hnb-{name}-h1").exists()
    env["lab"], env["destroyed"] = lab, True
