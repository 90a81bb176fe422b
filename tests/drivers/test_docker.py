"""The Docker network and container drivers against the sandbox's private dockerd.

Every address used here is on a bridge the test made inside the sandbox namespace (no
default route); pings go only between two containers the test created.
"""

from __future__ import annotations

import ipaddress
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from hybridnb.core import naming
from hybridnb.core.kinds import CompileContext, get
from hybridnb.core.problems import Collector
from hybridnb.core.resource import Resource
from hybridnb.core.spec import NetworkSpec
from hybridnb.drivers.docker import ContainerDriver, NetworkDriver
from hybridnb.errors import ConflictError, EngineError, EngineUnavailable
from hybridnb.target import Target
from tests.helpers.privnet import unique


def network_res(lab: str, br, **over) -> Resource:
    spec = {"network": naming.docker_network(lab), "bridge": br.name, "subnet": br.subnet,
            "gateway": br.gateway, "ip_range": br.addr(96) + "/27",
            "aux_addresses": {"vmx": br.addr(100)}, "mtu": 1500}
    spec.update(over)
    return Resource("network", spec["network"], spec)


def container_res(lab: str, br, name: str, host: int, **fields) -> Resource:
    """A container resource as the container kind compiles it from lab-file ``fields``."""
    kind, c = get("container"), Collector()
    ep = kind.parse(c, name, {"kind": "container", "env": {"ROLE": name},
                              "labels": {"team": "net"}, **fields}, f"endpoints.{name}")
    assert ep is not None, c.problems
    net = NetworkSpec(bridge=br.name, subnet=ipaddress.IPv4Network(br.subnet),
                      gateway=ipaddress.IPv4Address(br.gateway))
    ctx = CompileContext(lab, net, {name: ipaddress.IPv4Address(br.addr(host))},
                         {name: "container"})
    return kind.compile(ep, ctx)


def running(observed) -> dict[str, str]:
    """``{name: fingerprint}`` of what runs (and nothing stopped)."""
    assert all(o.running for o in observed.values()), observed
    return {name: o.fingerprint for name, o in observed.items()}


@pytest.fixture
def drivers(sandbox_target):
    net, ctr = NetworkDriver(sandbox_target), ContainerDriver(sandbox_target)
    yield net, ctr
    net.close()
    ctr.close()


@pytest.fixture
def lab(drivers):
    """A lab name; whatever the test leaves of it is removed afterwards."""
    name = unique("dk")
    yield name
    net, ctr = drivers
    for ep in ctr.observe(name):
        ctr.delete(name, ep)
    for n in net.observe(name):
        net.delete(name, n)


def _ip_of(api, cname: str, network: str) -> str:
    return api.inspect_container(cname)["NetworkSettings"]["Networks"][network]["IPAddress"]


def _exec(api, cname: str, cmd: list[str]) -> tuple[int, str]:
    ex = api.exec_create(cname, cmd)
    out = api.exec_start(ex["Id"]).decode(errors="replace")
    return api.exec_inspect(ex["Id"])["ExitCode"], out


@pytest.mark.real
def test_network_on_existing_bridge_round_trip(drivers, lab, lab_bridge):
    net, _ = drivers
    br = lab_bridge(lab)
    res = network_res(lab, br)
    assert net.observe(lab) == {}
    net.create(lab, res)
    assert running(net.observe(lab)) == {res.name: res.fingerprint}
    info = net.api.inspect_network(res.name)
    assert info["Options"]["com.docker.network.bridge.name"] == br.name
    ipam = info["IPAM"]["Config"][0]
    assert (ipam["Subnet"], ipam["Gateway"], ipam["IPRange"]) == \
        (br.subnet, br.gateway, br.addr(96) + "/27")
    assert ipam["AuxiliaryAddresses"] == {"vmx": br.addr(100)}
    # the bridge kept its own address (Docker would replace a mismatching one)
    from hybridnb.drivers import nsutil
    with nsutil.iproute(br.netns) as ipr:
        idx = ipr.link_lookup(ifname=br.name)[0]
        addrs = [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=2, index=idx)]
    assert addrs == [br.gateway]
    net.create(lab, res)                       # a second create converges (replaces)
    assert running(net.observe(lab)) == {res.name: res.fingerprint}
    net.delete(lab, res.name)
    assert net.observe(lab) == {}
    with nsutil.iproute(br.netns) as ipr:      # the pre-existing bridge stays
        assert ipr.link_lookup(ifname=br.name)
    net.delete(lab, res.name)                  # already gone is fine


@pytest.mark.real
def test_only_one_docker_network_per_bridge(drivers, lab, lab_bridge):
    net, _ = drivers
    br = lab_bridge(lab)
    net.create(lab, network_res(lab, br))
    other = unique("dk")
    with pytest.raises(ConflictError, match="already uses bridge"):
        net.create(other, network_res(other, br))
    assert net.observe(other) == {}


@pytest.mark.real
def test_containers_get_their_address_and_reach_each_other(drivers, lab, lab_bridge):  # noqa: F811,E501
    net, ctr = drivers
    br = lab_bridge(lab)
    net.create(lab, network_res(lab, br))
    a, b = container_res(lab, br, "a", 97), container_res(lab, br, "b", 98)
    t0 = time.monotonic()
    ctr.create(lab, a)
    created = time.monotonic() - t0
    ctr.create(lab, b)
    assert running(ctr.observe(lab)) == {"a": a.fingerprint, "b": b.fingerprint}
    api, network = ctr.api, naming.docker_network(lab)
    assert _ip_of(api, a.spec["container"], network) == br.addr(97)
    assert _ip_of(api, b.spec["container"], network) == br.addr(98)
    info = api.inspect_container(a.spec["container"])
    assert info["HostConfig"]["Init"] is True
    assert info["Config"]["Hostname"] == "a"
    assert info["HostConfig"]["Dns"] == [br.gateway]
    assert info["HostConfig"]["DnsSearch"] == ["hybrid.local"]
    assert "ROLE=a" in info["Config"]["Env"]
    labels = info["Config"]["Labels"]
    assert labels["team"] == "net" and labels["hybridnb.lab"] == lab
    assert labels["hybridnb.endpoint"] == "a" and labels["hybridnb.fingerprint"] == a.fingerprint
    code, out = _exec(api, a.spec["container"], ["ping", "-c1", "-W2", br.addr(98)])
    assert code == 0, out
    code, out = _exec(api, b.spec["container"], ["wget", "-qO-", f"http://{br.addr(97)}/"])
    assert code == 0 and "hybridnb busybox" in out, out
    assert created < 5.0


@pytest.mark.real
def test_observe_create_delete_idempotence(drivers, lab, lab_bridge):
    net, ctr = drivers
    br = lab_bridge(lab)
    net.create(lab, network_res(lab, br))
    a = container_res(lab, br, "a", 97, command=["sleep", "3600"])
    ctr.create(lab, a)
    ctr.create(lab, a)                         # leftover of the same name is replaced
    assert running(ctr.observe(lab)) == {"a": a.fingerprint}
    assert len(ctr.api.containers(all=True, filters={"label": f"hybridnb.lab={lab}"})) == 1
    changed = container_res(lab, br, "a", 99, command=["sleep", "3600"])
    assert changed.fingerprint != a.fingerprint
    ctr.create(lab, changed)
    assert running(ctr.observe(lab)) == {"a": changed.fingerprint}
    ctr.delete(lab, "a")
    ctr.delete(lab, "a")                       # already gone is not an error
    assert ctr.observe(lab) == {}


@pytest.mark.real
def test_container_removed_behind_our_back_is_missing(drivers, lab, lab_bridge):
    net, ctr = drivers
    br = lab_bridge(lab)
    net.create(lab, network_res(lab, br))
    a = container_res(lab, br, "a", 97)
    ctr.create(lab, a)
    ctr.api.remove_container(a.spec["container"], force=True)
    assert ctr.observe(lab) == {}
    ctr.create(lab, a)
    assert running(ctr.observe(lab)) == {"a": a.fingerprint}


@pytest.mark.real
def test_stopped_container_is_observed_differently_and_stops_fast(drivers, lab, lab_bridge):  # noqa: F811,E501
    net, ctr = drivers
    br = lab_bridge(lab)
    net.create(lab, network_res(lab, br))
    # `sleep` as PID 1 would ignore SIGTERM; init forwards it, so the stop is immediate
    a = container_res(lab, br, "a", 97, command=["sleep", "3600"])
    ctr.create(lab, a)
    t0 = time.monotonic()
    ctr.api.stop(a.spec["container"], timeout=10)
    stop_s = time.monotonic() - t0
    assert stop_s < 2.0, f"stop took {stop_s:.2f} s (init missing?)"
    seen = ctr.observe(lab)["a"]
    assert (seen.fingerprint, seen.running) == (a.fingerprint, False)
    assert seen.reason.startswith("Exited"), seen             # Docker's own words
    ctr.create(lab, a)                         # the planner's replace
    assert running(ctr.observe(lab)) == {"a": a.fingerprint}


@pytest.mark.real
def test_published_port_and_concurrent_creates(drivers, lab, lab_bridge):
    net, ctr = drivers
    br = lab_bridge(lab)
    net.create(lab, network_res(lab, br))
    web = container_res(lab, br, "web", 97, ports=["18080:80/tcp"])
    rest = [container_res(lab, br, f"c{i}", 101 + i) for i in range(3)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda r: ctr.create(lab, r), [web, *rest]))
    assert running(ctr.observe(lab)) == {r.name: r.fingerprint for r in [web, *rest]}
    ports = ctr.api.inspect_container(web.spec["container"])["NetworkSettings"]["Ports"]
    assert ports["80/tcp"][0]["HostPort"] == "18080"
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda r: ctr.delete(lab, r.name), [web, *rest]))
    assert ctr.observe(lab) == {}


@pytest.mark.real
def test_workdir_reaches_the_container(drivers, lab, lab_bridge):
    net, ctr = drivers
    br = lab_bridge(lab)
    net.create(lab, network_res(lab, br))
    a = container_res(lab, br, "a", 97, workdir="/srv/app", command=["sleep", "3600"])
    ctr.create(lab, a)
    info = ctr.api.inspect_container(a.spec["container"])
    assert info["Config"]["WorkingDir"] == "/srv/app"
    code, out = _exec(ctr.api, a.spec["container"], ["pwd"])
    assert (code, out.strip()) == (0, "/srv/app")


@pytest.mark.real
def test_missing_image_says_how_to_get_it(drivers, lab, lab_bridge):
    net, ctr = drivers
    br = lab_bridge(lab)
    net.create(lab, network_res(lab, br))
    bad = container_res(lab, br, "a", 97, image="hybridnb/no-such-image:1")
    t0 = time.monotonic()
    with pytest.raises(EngineError) as err:
        ctr.create(lab, bad)
    assert "no-such-image" in err.value.message
    assert "hybridnb sandbox up" in (err.value.hint or "")
    assert time.monotonic() - t0 < 20
    assert ctr.observe(lab) == {}


@pytest.mark.real
def test_foreign_container_with_our_name_is_a_conflict(drivers, lab, lab_bridge):
    net, ctr = drivers
    br = lab_bridge(lab)
    net.create(lab, network_res(lab, br))
    a = container_res(lab, br, "a", 97)
    foreign = ctr.api.create_container("busybox", name=a.spec["container"],
                                       command=["true"])
    try:
        with pytest.raises(ConflictError, match="does not belong"):
            ctr.create(lab, a)
    finally:
        ctr.api.remove_container(foreign["Id"], force=True)


@pytest.mark.extra("docker")
def test_unreachable_engine_is_engine_unavailable(tmp_path):
    drv = ContainerDriver(Target("nowhere", docker_url=f"unix://{tmp_path}/none.sock"))
    with pytest.raises(EngineUnavailable):
        drv.observe("x")
    with pytest.raises(EngineUnavailable):
        ContainerDriver(Target("none", docker_url=None))
