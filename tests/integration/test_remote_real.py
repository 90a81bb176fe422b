"""A host reached only through its Docker API (issue 17): the agent container makes its fabric.

Two sandboxes stand in for two machines, joined by a veth underlay (192.168.252.0/30).  Host
``a`` is ``sandbox: <test sandbox>ra``; host ``b`` is given **only by the Docker socket URL of
sandbox ``<test sandbox>rb``** (``docker: unix:///…/docker.sock``), so hybridnb reaches b
through that Docker API alone: b's containers and Docker network by the Docker drivers, b's
bridge, VXLAN device, DOCKER-USER rule and policy table by hybridnb's agent container, which
it starts through that API in b's network namespace (dockerd's: ``network_mode=host``).
Checked:

* the agent answers from b's network namespace (its inode), never this process's;
* b's dockerd killed as b's VXLAN device is about to be made fails the apply with an
  error naming host b (a's share made); once dockerd is back, one apply converges (b's
  bridge has no lab address, its VXLAN device floods to a); containers
  on a and b reach each other by address and by name (``ping``/``nslookup`` run inside the
  containers through each host's Docker API); status sees b's share through the agent;
  the next plan is empty;
* ``Lab.test()`` gives the full default matrix (icmp, tcp, udp, http, dns) green across
  the hosts, both ways, by address and by name, b's share run by ``docker exec`` in b's
  agent container (its process reports b's network namespace and the agent container's
  mount namespace), a's in this process;
* hybridnb never entered b's namespace itself: b's backend has no namespace, and no
  namespace worker of this process was ever asked for b's namespace or c2's;
* destroy leaves b's (and a's) namespace snapshot as before and removes the agent
  container (the last lab on b is gone); the agent image stays cached in b's engine until
  :func:`hybridnb.remote.image.remove_images` removes it.

Every packet goes to an address this test made, inside those namespaces.
"""

from __future__ import annotations

import contextlib
import os
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
from tests.integration.test_multihost_real import apply_killing_dockerd, dockerd_restart_noise
from tests.realengines import ENGINE_TOOLS, SANDBOX_NAME

pytestmark = [pytest.mark.real]

UNDERLAY = "192.168.252.0/30"
ULINK = ("hnbra0", "hnbra1")
BOXES = {"a": f"{SANDBOX_NAME}ra", "b": f"{SANDBOX_NAME}rb"}


def ours(name: str) -> bool:
    return name.startswith("hnb-rml")


def lab_dict(b_url: str) -> dict[str, Any]:
    return {"name": "rml",
            "hosts": {"a": {"sandbox": BOXES["a"], "underlay": "192.168.252.1"},
                      "b": {"docker": b_url, "underlay": "192.168.252.2"}},
            "endpoints": {"c1": {"kind": "container"},
                          "c2": {"kind": "container", "host": "b"}}}


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> Iterator[dict[str, Any]]:
    require_real(tools=ENGINE_TOOLS)
    with two_sandboxes(BOXES, UNDERLAY, ULINK, ours) as (boxes, before):
        yield {"boxes": boxes, "before": before, "state": tmp_path_factory.mktemp("remote-state"),
               "url": boxes["b"].target().docker_url}


def open_lab(two: dict[str, Any]) -> Lab:
    return Lab.from_dict(lab_dict(two["url"]), backend="sandbox", sandbox=BOXES["a"],
                         state_dir=two["state"])


class Entered(set):
    """The namespaces this process's namespace workers were asked to enter while
    ``recording`` (the test's own sandbox work is left out)."""

    recording = True

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.recording = False
        try:
            yield
        finally:
            self.recording = True


@contextlib.contextmanager
def namespaces_entered() -> Iterator[Entered]:
    """Every namespace this process's namespace workers are asked to enter meanwhile."""
    pool = nsutil.workers()
    seen = Entered()
    real = pool.submit

    def submit(netns: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if seen.recording:
            seen.add(nsutil._ns_key(nsutil.netns_path(netns)))
        return real(netns, fn, *args, **kwargs)

    pool.submit = submit               # type: ignore[method-assign]
    try:
        yield seen
    finally:
        del pool.submit


def in_container(api: Any, name: str, command: str) -> str:
    run = api.exec_create(name, ["sh", "-c", command])
    out = api.exec_start(run["Id"]).decode(errors="replace")
    code = api.exec_inspect(run["Id"])["ExitCode"]
    assert code == 0, (name, command, out)
    return out


def test_host_given_only_by_its_docker_url(two) -> None:
    import docker

    from hybridnb.remote import agentbox, image

    boxes = two["boxes"]
    b_ns = nsutil._ns_key(nsutil.netns_path(boxes["b"].netns))
    lab = open_lab(two)
    with namespaces_entered() as entered:
        t0 = time.monotonic()
        plan = lab.plan()
        print(f"first plan (imports the agent image into b, starts the agent): "
              f"{time.monotonic() - t0:.2f}s")
        print(plan.to_text())
        where_b = dict(plan.where)["b"]
        assert where_b == f"docker {two['url']}", plan.where
        kinds_b = {a.kind for a in dict(plan.hosts)["b"].actions}
        assert {"bridge", "vxlan", "firewall", "network", "container"} <= kinds_b, kinds_b
        assert kinds_b <= {"bridge", "vxlan", "firewall", "network", "container", "policy"}
        backend = multihost_apply.host_backend(lab, "b")
        assert backend.name == "remote" and backend.target.netns is None
        assert not backend.having(NamespaceSource), backend.having(NamespaceSource)
        hello = backend.extras["agent"].hello()
        print(f"agent: {hello}")
        assert hello["netns"] == b_ns[1] and hello["netns"] != os.stat("/proc/self/ns/net").st_ino
        try:
            # b's dockerd dies as b's VXLAN device is about to be made: the agent's stream
            # goes with it; the error names host b, a's share is made
            error = apply_killing_dockerd(lab, boxes["b"], "b", ("vxlan", None))
            assert str(error).startswith(f"host b (docker {two['url']}): "), error
            with entered.paused():
                boxes["b"].up(libvirt=False)
            again = open_lab(two)
            result = again.apply()               # starts the stopped agent container again
            print(f"apply after dockerd returned: {result.seconds:.2f}s")
            assert result.ok, result
            left = again.plan()
            assert left.empty, left.to_text()
            status = again.status()
            print(status)
            assert status.up and {e.name: e.state for e in status.endpoints} == {
                "c1": "up", "c2": "up"}, status
            check_reach(two, again)
            c2_ns = check_matrix(two, again)
            check_down(two, again)
        finally:
            done = open_lab(two).destroy()
            print(f"destroy: {done.seconds:.2f}s")
    assert b_ns not in entered, "hybridnb entered b's namespace by itself"
    assert c2_ns not in entered, "this process entered c2's namespace: b's share ran here"
    api_b = docker.APIClient(base_url=two["url"], version="auto")
    try:
        assert agentbox.agents(api_b) == [], "the agent container outlived the last lab on b"
        after = snapshots(boxes, ours)
        assert hostsnap.diff(two["before"]["a"], after["a"]) == []
        # dockerd was killed and restarted on b: it re-adds its own DOCKER-chain jumps in
        # another order (see test_multihost_real) — nothing of the lab
        noisy = dockerd_restart_noise(two["before"]["b"], after["b"])
        print(f"b: sections only reordered by dockerd's restart: {sorted(noisy)}")
        assert [d for d in hostsnap.diff(two["before"]["b"], after["b"])
                if d.partition(":")[0] not in noisy] == []
        check_runner(api_b)
        removed = agentbox.remove_from(two["url"])     # `hybridnb images prune --docker URL`
        print(f"removed from b: {removed}")
        assert removed and api_b.images(filters={"label": image.LABEL}) == []
        assert agentbox.agents(api_b) == []
    finally:
        api_b.close()
    assert not multihost_apply.host_store(lab, "b").labs() and not lab.store.labs()


def check_runner(api: Any) -> None:
    """The runner runs any module on the host with stdio attached (here ``json.tool`` in a
    fresh agent container) and kills one that does not end by itself."""
    from hybridnb.remote import agentbox
    from hybridnb.drivers.runner import DockerExecRunner

    cid = agentbox.ensure_agent(api)
    info = api.inspect_container(cid)
    assert info["HostConfig"]["NetworkMode"] == "host" and not info["HostConfig"]["Privileged"]
    assert info["HostConfig"]["PidMode"] == "host", info["HostConfig"]
    assert sorted(c.removeprefix("CAP_") for c in info["HostConfig"]["CapAdd"]) == [
        "NET_ADMIN", "NET_RAW", "SYS_ADMIN"], info["HostConfig"]
    runner = DockerExecRunner(api, cid)
    proc = runner.run_module("json.tool", ["--compact"])
    proc.stdin.write(b'{"a": [1, 2]}')
    proc.stdin.close()
    assert proc.stdout.read() == b'{"a":[1,2]}\n' and proc.wait(10) == 0
    stuck = runner.run_module("hybridnb.remote.agent", ["--hold"])
    t0 = time.monotonic()
    stuck.kill()
    assert stuck.wait(10) != 0, "killed module reported success"
    print(f"runner: json.tool through docker exec ok; an idle module killed in "
          f"{time.monotonic() - t0:.2f}s")


def check_matrix(two: dict[str, Any], lab: Lab) -> tuple[int, int]:
    """``Lab.test()``: the full default matrix (icmp, tcp, udp, http, dns) green across the
    hosts, both ways, by address and by name (dns: each name asked from each endpoint,
    answered with its address), b's share run by ``docker exec`` in b's agent container
    (its process reports b's network namespace and the agent container's mount namespace)
    and a's in this process.  Returns c2's namespace key (this process must never enter
    it)."""
    import docker

    from hybridnb.images import builder
    from hybridnb.remote import agentbox, image

    t0 = time.monotonic()
    matrix = lab.test()
    print(f"Lab.test(): {time.monotonic() - t0:.2f}s")
    print(matrix.summary())
    print("\n".join(matrix.host_lines()))
    assert matrix.checks == ["icmp", "tcp", "udp", "http", "dns"], matrix.checks
    assert set(matrix.sources) == set(matrix.targets) == {"c1", "c2", "gateway"}, matrix
    bad = [r for r in matrix.results if not r.ok]
    assert not bad, bad
    addresses = {n: str(a) for n, a in lab.addresses().items()}
    for check in matrix.checks:
        for src, dst in (("c1", "c2"), ("c2", "c1"), ("c2", "gateway")):
            r = matrix.get(check, src, dst)
            assert r is not None and r.ok, (check, src, dst, r)
            if check == "dns" and dst != "gateway":          # by name: the answer
                assert addresses[dst] in r.detail, r
    assert matrix.across_hosts()["a -> b"] and matrix.across_hosts()["b -> a"]
    shares = matrix.shares
    assert shares["a"]["where"] == "this process", shares
    assert shares["b"]["where"] == "the agent container hnb-agent on host b", shares
    api = docker.APIClient(base_url=two["url"], version="auto")
    try:
        agent = api.inspect_container(agentbox.NAME)["State"]["Pid"]
        c2_pid = api.inspect_container("hnb-rml-c2")["State"]["Pid"]
    finally:
        api.close()
    proc = shares["b"]["process"]
    b_ns = nsutil._ns_key(nsutil.netns_path(two["boxes"]["b"].netns))
    assert proc["netns"] == b_ns[1] != os.stat("/proc/self/ns/net").st_ino, proc
    assert proc["mntns"] == os.stat(f"/proc/{agent}/ns/mnt").st_ino != \
        os.stat("/proc/self/ns/mnt").st_ino, (proc, agent)
    build = builder.ensure_build(image.AGENT_RECIPE)
    want = "fast" if image.fast_extension(build.rootfs) is not None else "portable"
    assert shares["b"]["engine"] == want, (shares, want)
    print(f"b's share: pid {proc['pid']} in the agent container (mnt ns {proc['mntns']}), "
          f"Python {proc['python']}, {shares['b']['engine']} engine")
    # the portable engine, what b's share runs with when the image's Python cannot load
    # the C engine: the same verdicts
    eps, gateway = lab.probe_endpoints()
    net = lab.spec.network
    t0 = time.monotonic()
    portable = multihost_apply.prober(lab)(eps + [gateway], matrix.checks, domain=net.domain,
                                           dns_server=str(net.gateway), engine="portable")
    print(f"portable engine on both hosts: {time.monotonic() - t0:.2f}s, {portable.summary()}")
    assert {h: i["engine"] for h, i in portable.shares.items()} == {"a": "portable",
                                                                   "b": "portable"}
    assert [(r.check, r.source, r.target, r.ok) for r in portable.results] == [
        (r.check, r.source, r.target, r.ok) for r in matrix.results]
    return nsutil._ns_key(f"/proc/{c2_pid}/ns/net")


def check_down(two: dict[str, Any], lab: Lab) -> None:
    """c2 stopped on b (through b's Docker API): b's share has no source left, c2's rows
    fail as not running and probes to it fail, everything else stays green."""
    import docker

    api = docker.APIClient(base_url=two["url"], version="auto")
    try:
        api.stop("hnb-rml-c2", timeout=1)
        t0 = time.monotonic()
        matrix = lab.test(("icmp", "tcp", "dns"))
        print(f"c2 stopped: {time.monotonic() - t0:.2f}s, {matrix.summary()}")
    finally:
        api.start("hnb-rml-c2")
        api.close()
    for r in matrix.results:
        if "c2" in (r.source, r.target) and not (r.check == "dns" and r.target == "c2"):
            assert not r.ok, r                      # (a name resolves while c2 is down)
        else:
            assert r.ok, r
    assert {r.reason for r in matrix.results if r.source == "c2"} == {"c2 is not running"}


def check_reach(two: dict[str, Any], lab: Lab) -> None:
    """b's fabric is there (checked from the test, after the fact), and containers on a and
    b reach each other by address and by name, through each host's Docker API."""
    import docker

    boxes = two["boxes"]
    import json
    import subprocess

    # the test looks into b with ip(8) under nsenter, not through hybridnb's namespace workers
    links = json.loads(subprocess.run(
        ["nsenter", f"--net={nsutil.netns_path(boxes['b'].netns)}", "ip", "-j", "-d",
         "addr", "show"], check=True, capture_output=True, text=True).stdout)
    by = {ln["ifname"]: ln for ln in links}
    assert [a for a in by["hybr0"]["addr_info"] if a["family"] == "inet"] == [], by["hybr0"]
    vx = [ln for ln in links if (ln.get("linkinfo") or {}).get("info_kind") == "vxlan"]
    assert len(vx) == 1 and vx[0].get("master") == "hybr0", vx
    addresses = {n: str(a) for n, a in lab.addresses().items()}
    apis = {"a": docker.APIClient(base_url=boxes["a"].target().docker_url, version="auto"),
            "b": docker.APIClient(base_url=two["url"], version="auto")}
    try:
        for src, dst, host in (("c1", "c2", "a"), ("c2", "c1", "b")):
            name = f"hnb-rml-{src}"
            in_container(apis[host], name, f"ping -c1 -W2 {addresses[dst]}")
            out = in_container(apis[host], name, f"nslookup {dst}.hybrid.local")
            assert addresses[dst] in out, out
            in_container(apis[host], name, f"ping -c1 -W2 {dst}.hybrid.local")
            in_container(apis[host], name, "ping -c1 -W2 10.0.1.1")      # the gateway on a
        # and through Lab.exec, which runs in c2 by b's Docker API (docker exec)
        out = lab.exec("c2", "nslookup c1.hybrid.local").check()
        assert addresses["c1"] in out.stdout, out
        print(f"c1 ({addresses['c1']}, a) <-> c2 ({addresses['c2']}, b): by address and "
              "by name, both ways")
    finally:
        for api in apis.values():
            api.close()
