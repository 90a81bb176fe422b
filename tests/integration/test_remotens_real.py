"""Namespace hosts and link impairments on a host reached only through its Docker API (issue 17).

Two sandboxes stand in for two machines, joined by a veth underlay (192.168.246.0/30).  Host
``a`` is ``sandbox: <test sandbox>na``; host ``b`` is given **only by the Docker socket URL of
sandbox ``<test sandbox>nb``**.  The lab: a container ``c1`` on a; a namespace host ``h2``
(``mtu: 1400`` on its link) and a container ``c3`` (``rate: 10mbit`` on its link) on b.
b's agent container makes h2 (its namespace ``hnb-rnsl-h2`` mounted on the host's
``/run/netns`` through the agent's shared bind) and c3's tbf qdiscs and IFB device (c3's
bridge port found inside c3's namespace, named by b's Docker API).  This machine's kernel
has no ``sch_netem`` (docs: engines-here), so a ``delay`` on c3 is what b's agent refuses
here, naming host b, before anything changes; on a kernel with netem the same step applies
it and checks that the round trips through c3's link take it.  Checked:

* the plan puts ``host h2`` and ``link c3`` on b; b's backend has no namespace and nothing
  that opens one here;
* after apply, h2's namespace is a mount of the machine's ``/run/netns`` (outside the agent
  container), its ``eth0`` carries h2's address at MTU 1400 and its ``ping_group_range``
  is open, its ``resolv.conf`` is in the machine's ``/etc/netns``; c3's bridge port on b
  has a root tbf and an ingress qdisc;
* the next plan is empty — also after b's agent container was removed and made anew (the
  namespace outlived it, and the new agent sees it);
* ``Lab.test()``: every check green both ways by address and by name, b's share (h2's and
  c3's probes and responders) in b's agent container; the ICMP round trips through c3's
  link take the delay (measured with a tolerance), those not through it do not;
* a capture of h2's bridge port on b through the agent;
* hybridnb never entered b's, h2's or c3's namespace from this process;
* destroy removes h2's namespace and resolv.conf, c3's qdisc and the agent container; both
  sandboxes' snapshots are as before.

Every packet goes to an address this test made, inside those namespaces.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any, Iterator

import pytest

from hybridnb import multihost_apply
from hybridnb.drivers import nsutil
from hybridnb.drivers.base import NamespaceSource
from hybridnb.lab import Lab
from tests.gating import require_real
from tests.helpers import hostsnap
from tests.helpers.twohosts import snapshots, two_sandboxes
from tests.integration.test_remote_real import namespaces_entered
from tests.realengines import ENGINE_TOOLS, SANDBOX_NAME

pytestmark = [pytest.mark.real]

UNDERLAY = "192.168.246.0/30"
ULINK = ("hnbns0", "hnbns1")
BOXES = {"a": f"{SANDBOX_NAME}na", "b": f"{SANDBOX_NAME}nb"}
LAB = "rnsl"
H2_NS = f"hnb-{LAB}-h2"
DELAY_MS = 20
RATE = 10_000_000


def ours(name: str) -> bool:
    return name.startswith(f"hnb-{LAB}")


def lab_dict(b_url: str) -> dict[str, Any]:
    return {"name": LAB,
            "hosts": {"a": {"sandbox": BOXES["a"], "underlay": "192.168.246.1"},
                      "b": {"docker": b_url, "underlay": "192.168.246.2"}},
            "endpoints": {"c1": {"kind": "container"},
                          "h2": {"kind": "host", "host": "b"},
                          "c3": {"kind": "container", "host": "b"}},
            "links": {"h2": {"mtu": 1400}, "c3": {"rate": "10mbit"}}}


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> Iterator[dict[str, Any]]:
    require_real(tools=ENGINE_TOOLS)
    with two_sandboxes(BOXES, UNDERLAY, ULINK, ours) as (boxes, before):
        yield {"boxes": boxes, "before": before, "state": tmp_path_factory.mktemp("rns-state"),
               "url": boxes["b"].target().docker_url}


def open_lab(two: dict[str, Any], **links: Any) -> Lab:
    data = lab_dict(two["url"])
    data["links"].update(links)
    return Lab.from_dict(data, backend="sandbox", sandbox=BOXES["a"], state_dir=two["state"])


def ip_json(netns_path: str, *args: str, tool: str = "ip") -> Any:
    """``ip -j ARGS`` (or ``tc -j``) inside a namespace, by nsenter (the test's own look,
    not hybridnb's)."""
    out = subprocess.run(["nsenter", f"--net={netns_path}", tool, "-j", *args], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out or "[]")


def mounted_here(name: str) -> bool:
    """``/run/netns/NAME`` is an nsfs mount of this machine's mount namespace."""
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == f"/run/netns/{name}" and " nsfs " in line
                   for line in fh)


def test_namespace_host_and_impaired_link_on_a_remote_host(two) -> None:
    boxes = two["boxes"]
    b_ns = nsutil._ns_key(nsutil.netns_path(boxes["b"].netns))
    lab = open_lab(two)
    keys: dict[str, Any] = {}
    with namespaces_entered() as entered:
        try:
            t0 = time.monotonic()
            plan = lab.plan()
            print(f"first plan (agent image into b, agent started): "
                  f"{time.monotonic() - t0:.2f}s")
            print(plan.to_text())
            on_b = {(a.kind, a.name) for a in dict(plan.hosts)["b"].actions}
            assert {("host", "h2"), ("link", "c3"), ("container", "c3")} <= on_b, on_b
            assert not {a.kind for a in dict(plan.hosts)["a"].actions} & {"host", "link"}
            backend = multihost_apply.host_backend(lab, "b")
            assert backend.name == "remote" and backend.target.netns is None
            assert not backend.having(NamespaceSource), backend.having(NamespaceSource)
            t0 = time.monotonic()
            result = lab.apply()
            print(f"apply: {time.monotonic() - t0:.2f}s")
            assert result.ok, result
            keys = check_made(two, lab)
            check_again(two, lab)
            check_matrix(two, lab)
            check_rate(two, lab)
            check_delay(two, lab)
            check_capture(lab)
            check_doctor(lab)
        finally:
            done = open_lab(two).destroy()
            print(f"destroy: {done.seconds:.2f}s")
    assert b_ns not in entered, "hybridnb entered b's namespace by itself"
    for name, key in keys.items():
        assert key not in entered, f"this process entered {name}'s namespace"
    check_gone(two, lab)


def check_made(two: dict[str, Any], lab: Lab) -> dict[str, Any]:
    """h2's namespace is the machine's (mounted outside the agent container), wired to b's
    bridge with its address; c3's bridge port on b has its netem qdisc.  Returns the
    namespace keys of h2 and c3 (this process must never enter them)."""
    import docker

    addresses = {n: str(a) for n, a in lab.addresses().items()}
    assert mounted_here(H2_NS), f"{H2_NS} is not a mount of this machine's /run/netns"
    path = f"/run/netns/{H2_NS}"
    eth0 = {ln["ifname"]: ln for ln in ip_json(path, "addr", "show")}["eth0"]
    assert [a["local"] for a in eth0["addr_info"] if a["family"] == "inet"] == [
        addresses["h2"]], eth0
    assert eth0["mtu"] == 1400, eth0
    pgr = subprocess.run(["nsenter", f"--net={path}", "cat",
                          "/proc/sys/net/ipv4/ping_group_range"], check=True,
                         capture_output=True, text=True).stdout.split()
    assert pgr == ["0", "2147483647"], pgr
    with open(f"/etc/netns/{H2_NS}/resolv.conf") as fh:
        assert "nameserver 10.0.1.1" in fh.read()
    b_path = nsutil.netns_path(two["boxes"]["b"].netns)
    links = {ln["ifname"]: ln for ln in ip_json(b_path, "-d", "link", "show")}
    bridge_ports = {n for n, ln in links.items() if ln.get("master") == "hybr0"}
    h2_veth = next(r.spec["veth"] for r in lab.resources() if r.name == "h2")
    assert h2_veth in bridge_ports, (h2_veth, bridge_ports)
    api = docker.APIClient(base_url=two["url"], version="auto")
    try:
        c3_pid = api.inspect_container(f"hnb-{LAB}-c3")["State"]["Pid"]
    finally:
        api.close()
    c3_ns = f"/proc/{c3_pid}/ns/net"
    port = c3_port(b_path, c3_ns)
    kinds = sorted(q["kind"] for q in ip_json(b_path, "qdisc", "show", "dev", port, tool="tc"))
    assert kinds == ["ingress", "tbf"], kinds
    assert links[h2_veth]["mtu"] == 1400, links[h2_veth]
    print(f"h2: namespace {H2_NS} on the machine's /run/netns, eth0 {addresses['h2']} mtu "
          f"1400, port {h2_veth} on b's hybr0; c3: {kinds} on its port {port} on b")
    return {"h2": nsutil._ns_key(path), "c3": nsutil._ns_key(c3_ns)}


def c3_port(b_path: str, c3_ns: str) -> str:
    """c3's bridge port on b: the peer of its eth0."""
    peer = next(ln for ln in ip_json(c3_ns, "link", "show") if ln["ifname"] == "eth0")
    return next(ln["ifname"] for ln in ip_json(b_path, "link", "show")
                if ln["ifindex"] == peer["link_index"])


def check_again(two: dict[str, Any], lab: Lab) -> None:
    """The next plan is empty (observed on b through its agent) — also once the agent
    container was removed and made anew: h2's namespace outlived it."""
    import docker

    from hybridnb.remote import agentbox

    left = open_lab(two).plan()
    assert left.empty, left.to_text()
    status = open_lab(two).status()
    print(status)
    assert status.up and {e.name: e.state for e in status.endpoints} == {
        "c1": "up", "h2": "up", "c3": "up"}, status
    api = docker.APIClient(base_url=two["url"], version="auto")
    try:
        multihost_apply.host_backend(lab, "b").extras["agent"].close()
        assert agentbox.remove_agents(api) == [agentbox.NAME]
        assert mounted_here(H2_NS), "h2's namespace went with the agent container"
        t0 = time.monotonic()
        again = open_lab(two).plan()           # a new agent, made by this plan
        print(f"plan with a new agent container: {time.monotonic() - t0:.2f}s")
        assert again.empty, again.to_text()
        assert [r["Names"] for r in agentbox.agents(api)] == [[f"/{agentbox.NAME}"]]
        info = api.inspect_container(agentbox.NAME)
        mounts = {m["Destination"]: m for m in info["Mounts"]}
        assert mounts["/run/netns"]["Source"] == "/run/netns" and \
            mounts["/run/netns"]["Propagation"] == "rshared", mounts
        assert "HYBRIDNB_AGENT_NETNS=host" in info["Config"]["Env"], info["Config"]["Env"]
        assert "/proc/sys" not in info["HostConfig"]["ReadonlyPaths"], info["HostConfig"]
    finally:
        api.close()


def check_matrix(two: dict[str, Any], lab: Lab) -> None:
    """The whole default matrix green both ways by address and by name, b's share in its
    agent; ICMP round trips through c3's link take the delay, the others do not."""
    t0 = time.monotonic()
    matrix = lab.test()
    print(f"Lab.test(): {time.monotonic() - t0:.2f}s")
    print(matrix.summary())
    print("\n".join(matrix.host_lines()))
    assert set(matrix.sources) == set(matrix.targets) == {"c1", "h2", "c3", "gateway"}
    bad = [r for r in matrix.results if not r.ok]
    assert not bad, bad
    addresses = {n: str(a) for n, a in lab.addresses().items()}
    for check in matrix.checks:
        for src, dst in (("c1", "h2"), ("h2", "c1"), ("c1", "c3"), ("c3", "c1"),
                         ("h2", "c3"), ("c3", "h2"), ("h2", "gateway")):
            r = matrix.get(check, src, dst)
            assert r is not None and r.ok, (check, src, dst, r)
            if check == "dns" and dst != "gateway":          # by name: the answer
                assert addresses[dst] in r.detail, r
    assert matrix.shares["b"]["where"] == "the agent container hnb-agent on host b"
    assert matrix.shares["a"]["where"] == "this process"


def icmp_rtts(lab: Lab, pairs: Any) -> dict[tuple[str, str], float]:
    """The smallest ICMP round trip of each (source, target) by ``Lab.test``."""
    matrix = lab.test(("icmp",))
    out = {}
    for src, dst in pairs:
        r = matrix.get("icmp", src, dst)
        assert r is not None and r.ok and r.rtts, r
        out[(src, dst)] = r.rtt_min
    return out


def iperf(server_ns: str, client_ns: str, address: str, reverse: bool) -> float:
    """Bits per second iperf3 received (the test's own processes, by nsenter, by pid)."""
    srv = subprocess.Popen(["nsenter", f"--net={server_ns}", "iperf3", "-s", "-1", "-B",
                            address], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = subprocess.run(["nsenter", f"--net={client_ns}", "iperf3", "-c", address, "-t",
                              "2", "-O", "1", "-J", *(["-R"] if reverse else [])],
                             capture_output=True, text=True, timeout=30)
        return float(json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"])
    finally:
        try:
            srv.wait(timeout=5)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()


def check_rate(two: dict[str, Any], lab: Lab) -> None:
    """iperf3 between the gateway's namespace on a and c3's on b: 10 Mbit/s both ways."""
    import docker

    api = docker.APIClient(base_url=two["url"], version="auto")
    try:
        c3_ns = f"/proc/{api.inspect_container(f'hnb-{LAB}-c3')['State']['Pid']}/ns/net"
    finally:
        api.close()
    gateway_ns = str(nsutil.netns_path(two["boxes"]["a"].netns))
    c3 = str(lab.addresses()["c3"])
    for _ in range(2):        # a second measurement if a loaded machine's timers lagged
        t0 = time.monotonic()
        to_c3 = iperf(c3_ns, gateway_ns, c3, reverse=False) / RATE
        from_c3 = iperf(c3_ns, gateway_ns, c3, reverse=True) / RATE
        print(f"rate 10mbit on c3 (on b): to it {to_c3:.3f}, from it {from_c3:.3f} of the "
              f"rate ({time.monotonic() - t0:.1f}s)")
        if 0.88 <= to_c3 <= 1.12 and 0.88 <= from_c3 <= 1.12:
            break
    assert 0.88 <= to_c3 <= 1.12 and 0.88 <= from_c3 <= 1.12, (to_c3, from_c3)


def check_delay(two: dict[str, Any], lab: Lab) -> None:
    """``delay: 20ms`` on c3: b's agent judges it by b's kernel — refused naming host b
    before anything changes when it has no netem (this machine), else applied in place and
    taken by the round trips through c3's link, not by the others."""
    from hybridnb.drivers.impairments import capabilities_of, tc_features
    from hybridnb.errors import EngineUnavailable

    netem = capabilities_of(tc_features()).netem       # b's kernel is this machine's
    delayed = open_lab(two, c3={"delay": f"{DELAY_MS}ms", "rate": "10mbit"})
    plan = delayed.plan()
    assert [(h, a.op, a.kind, a.name) for h, p in plan.hosts for a in p.actions] == [
        ("b", "update", "link", "c3")], plan.to_text()
    if not netem:
        with pytest.raises(EngineUnavailable) as info:
            delayed.apply()
        print(f"delay on c3 refused: {info.value}")
        assert info.value.message.startswith(f"host b (docker {two['url']}): cannot impair "
                                          "'c3' here: links.c3.delay: this host's kernel has "
                                          "no netem"), info.value
        assert open_lab(two).plan().empty                 # nothing changed on b
        return
    pairs = (("c1", "c3"), ("c3", "c1"), ("h2", "c3"), ("c1", "h2"), ("h2", "c1"))
    assert delayed.apply().ok
    rtt = icmp_rtts(delayed, pairs)
    print("icmp rtt (min): " + ", ".join(f"{s}->{d} {v * 1000:.2f} ms"
                                          for (s, d), v in rtt.items()))
    delay = DELAY_MS / 1000
    for pair in pairs[:3]:                                  # through c3's link
        assert 0.95 * delay <= rtt[pair] <= delay + 0.015, (pair, rtt[pair])
    for pair in pairs[3:]:                                  # not through it
        assert rtt[pair] < delay / 2, (pair, rtt[pair])
    assert open_lab(two).apply().ok                         # back to the rate only


def check_doctor(lab: Lab) -> None:
    """The doctor reads b's namespace host and impaired container through b's agent too."""
    report = lab.doctor()
    print(report.headline())
    bad = [f"{f.status} {f.title}: {f.found}" for f in report.findings if f.status != "ok"]
    assert bad == [], bad
    on_b = {f.check for f in report.findings if f.data.get("host") == "b"}
    assert {"endpoint-state", "duplicate-address", "endpoint-identity", "mtu",
            "link-kernel"} <= on_b, on_b


def check_capture(lab: Lab) -> None:
    """h2's and c3's bridge ports on b found as monitor finds them (b's links dumped by the
    agent); a capture of h2's port on b, by the agent: c1's pings to h2 cross it."""
    from hybridnb.services.ports import resolve_ports

    view_b = next(v for v in multihost_apply.host_views(lab) if v.host == "b")
    ports = resolve_ports(view_b)
    print(f"ports on b: { {n: p.ifname for n, p in ports.ports.items()} }, "
          f"missing {ports.missing}")
    assert set(ports.ports) == {"h2", "c3"} and not ports.missing, ports
    links = lab.links()                          # where: read on b by its agent
    print(links)
    rows = {r.endpoint: r for r in links.rows}
    assert rows["c3"].state == rows["h2"].state == "up", rows
    assert rows["c3"].where and rows["h2"].where, rows
    t0 = time.monotonic()
    h2 = str(lab.addresses()["h2"])
    with lab.capturing("h2", bpf="icmp", count=4) as one:
        out = lab.exec("c1", f"ping -c 2 -i 0.1 -W 2 {h2}", timeout=20)
        assert out.exit_code == 0, out
        one.wait(10)
    assert one.result is not None
    print(f"capture on h2's port (host b): {time.monotonic() - t0:.2f}s: "
          f"{one.result.headline()}")
    assert one.result.captured == 4 and one.result.address == h2


def check_gone(two: dict[str, Any], lab: Lab) -> None:
    """Destroy removed h2's namespace and resolv.conf, c3's qdisc with its container and
    the agent container; both sandboxes are as before."""
    import docker

    from hybridnb.remote import agentbox

    assert not os.path.lexists(f"/run/netns/{H2_NS}") and not mounted_here(H2_NS)
    assert not os.path.exists(f"/etc/netns/{H2_NS}")
    api = docker.APIClient(base_url=two["url"], version="auto")
    try:
        assert agentbox.agents(api) == [], "the agent container outlived the last lab on b"
    finally:
        api.close()
    after = snapshots(two["boxes"], ours)
    for h in two["boxes"]:
        assert hostsnap.diff(two["before"][h], after[h]) == [], h
    assert not multihost_apply.host_store(lab, "b").labs() and not lab.store.labs()
