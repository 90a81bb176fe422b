"""The whole stack on real engines: ``Lab`` → plan/apply → pyroute2, docker, iptables in the
sandbox (issue 3's acceptance).

One lab with two containers and two namespace hosts on one bridge: every pair reaches every
other by ICMP and TCP both ways; a second apply does nothing; a container removed behind
hybridnb's back is recreated; destroy leaves the sandbox namespace and the host exactly as they
were; a lab whose subnet collides with a route is refused before anything is made; and a
killed ``apply`` (at random points, 20 times) always converges on re-apply and destroys clean.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hybridnb.errors import ConflictError
from hybridnb.lab import Lab
from tests.helpers import hostsnap
from tests.helpers.labs import LabsMade
from tests.realengines import SANDBOX_NAME

pytestmark = pytest.mark.real
ROOT = Path(__file__).resolve().parents[2]


def ours(name: str) -> bool:
    return name.startswith("hnb-it")


_made = LabsMade()


@pytest.fixture(autouse=True)
def _destroy_labs_afterwards():
    """Whatever a test leaves (it failed half way), its labs are destroyed afterwards."""
    yield
    _made.destroy_all()


def make_lab(state_dir: Path, name: str = "it", subnet: str = "10.0.1.0/24") -> Lab:
    lab = Lab(name, subnet=subnet, backend="sandbox", sandbox=SANDBOX_NAME, state_dir=state_dir)
    _made.append(lab)
    lab._edit(lambda doc: doc["network"].update({"dns": False}))
    lab.add_container("web", command=["httpd", "-f", "-p", "80", "-h", "/www"])
    lab.add_container("c2", command=["sleep", "3600"])
    lab.add_host("h1").add_host("h2")
    return lab


def docker_api(box):
    import docker

    return docker.APIClient(base_url=box.target().docker_url, version="auto")


@pytest.fixture
def primed(sandbox):
    """The sandbox after dockerd has set up its own iptables chains (it does so once, at its
    first network — that is dockerd's doing, not the lab's, so snapshots start after it)."""
    api = docker_api(sandbox)
    net = api.create_network("hnb-prime", driver="bridge",
                             options={"com.docker.network.bridge.name": "hnbprime0"})
    api.remove_network(net["Id"])
    return sandbox


def test_two_containers_two_hosts_full_cycle(primed, state_dir):
    sandbox = primed
    root_before = hostsnap.snapshot(None, netns_filter=ours)
    box_before = hostsnap.snapshot(sandbox.netns, netns_filter=ours)
    lab = make_lab(state_dir)
    result = lab.apply()
    assert result.ok and result.plan.count("create") == 7

    matrix = lab.test(("icmp", "tcp"), timeout=1.0, count=2)
    assert matrix.ok, matrix.to_text()
    names = {"web", "c2", "h1", "h2"}
    for check in ("icmp", "tcp"):
        pairs = {(r.source, r.target) for r in matrix.of(check) if r.ok}
        assert {(a, b) for a in names for b in names if a != b} <= pairs

    t0 = time.perf_counter()
    again = lab.apply()
    noop_s = time.perf_counter() - t0
    assert again.plan.empty, again.plan.to_text()
    assert noop_s < 2.0                          # goal < 200 ms; generous under a loaded CI

    api = docker_api(sandbox)
    api.remove_container("hnb-it-web", force=True)
    assert [(a.op, a.name) for a in lab.plan().actions] == [("create", "web")]
    lab.apply()
    assert lab.status().up
    assert lab.test(("icmp",), timeout=1.0, count=1).ok

    lab.destroy()
    assert hostsnap.diff(box_before, hostsnap.snapshot(sandbox.netns, netns_filter=ours)) == []
    assert hostsnap.diff(root_before, hostsnap.snapshot(None, netns_filter=ours)) == []
    assert api.containers(all=True, filters={"label": "hybridnb.lab=it"}) == []


def test_subnet_colliding_with_a_route_is_refused_before_anything(sandbox, state_dir):
    ns = sandbox.netns
    subprocess.run(["ip", "-n", ns, "link", "add", "hnbcollide0", "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "addr", "add", "10.77.0.1/16", "dev", "hnbcollide0"],
                       check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "hnbcollide0", "up"], check=True)
        before = hostsnap.snapshot(ns, netns_filter=ours)
        lab = make_lab(state_dir, name="itcol", subnet="10.77.3.0/24")
        with pytest.raises(ConflictError) as info:
            lab.apply()
        assert "10.77.0.0/16" in str(info.value)
        assert hostsnap.diff(before, hostsnap.snapshot(ns, netns_filter=ours)) == []
        assert all(not v for v in lab._observe().values())
    finally:
        subprocess.run(["ip", "-n", ns, "link", "del", "hnbcollide0"], check=False)


def test_killed_apply_converges(primed, state_dir, tmp_path):
    sandbox = primed
    """SIGKILL the applying process at random points; re-apply converges, destroy is clean."""
    lab_file = tmp_path / "kill.yaml"
    lab_file.write_text(
        "name: itkill\nnetwork: {subnet: 10.0.9.0/24, dns: false}\nendpoints:\n"
        "  k1: {kind: container, command: [sleep, '3600']}\n"
        "  k2: {kind: container, command: [sleep, '3600']}\n"
        "  h1: {kind: host}\n  h2: {kind: host}\n  h3: {kind: host}\n")
    box_before = hostsnap.snapshot(sandbox.netns, netns_filter=ours)
    rng = random.Random(int(os.environ.get("HYBRIDNB_KILL_SEED", "11")))
    env = dict(os.environ, HYBRIDNB_STATE_DIR=str(state_dir), PYTHONPATH=str(ROOT))
    api = docker_api(sandbox)
    killed_mid_apply = 0
    for trial in range(20):
        proc = subprocess.Popen([sys.executable, "-m", "hybridnb.cli", "apply", str(lab_file),
                                 "--backend", "sandbox", "--sandbox", SANDBOX_NAME, "-q"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.15, 1.2))
        if proc.poll() is None:
            killed_mid_apply += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        lab = Lab.load(lab_file, backend="sandbox", sandbox=SANDBOX_NAME, state_dir=state_dir)
        _made.append(lab)
        if trial % 2 == 0:
            lab.apply()
            assert lab.plan().empty, f"trial {trial}: {lab.plan().to_text()}"
            assert lab.status().up
        lab.destroy()
        assert api.containers(all=True, filters={"label": "hybridnb.lab=itkill"}) == []
        # a network dockerd was still creating for the killed client counts too: left behind,
        # dockerd re-creates its bridge, unlabelled, when it next starts
        assert api.networks(filters={"label": "hybridnb.lab=itkill"}) == [], f"trial {trial}"
        assert hostsnap.diff(box_before, hostsnap.snapshot(sandbox.netns, netns_filter=ours)) == [], f"trial {trial}"
        assert not [n for n in os.listdir("/run/netns") if n.startswith("hnb-itkill")]
    assert killed_mid_apply >= 5, "the kills never landed inside an apply"


def test_lab_works_inside_a_running_event_loop(primed, state_dir):
    """A Jupyter kernel runs cells inside an asyncio loop; pyroute2 drives a loop of its own
    and fails there unless Lab moves the engine calls off the loop thread."""
    async def cell() -> None:
        lab = Lab("itloop", subnet="10.0.5.0/24", backend="sandbox", sandbox=SANDBOX_NAME,
                  state_dir=state_dir)
        _made.append(lab)
        lab._edit(lambda doc: doc["network"].update({"dns": False}))
        lab.add_host("a").add_host("b")
        assert lab.apply().ok
        assert lab.status().up
        assert lab.test(("icmp",), timeout=1.0, count=1).ok
        lab.destroy()
    asyncio.run(cell())


def _bare_image(api) -> str:
    """An image with the busybox binary and nothing else: no ping, no wget, no nc in PATH."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add("/bin/busybox", arcname="bin/busybox")
    api.import_image_from_data(buf.getvalue(), repository="hnb-test/bare", tag="latest",
                               changes=['CMD ["/bin/busybox", "sleep", "3600"]'])
    return "hnb-test/bare:latest"


def test_probing_an_image_without_any_tools(primed, state_dir):
    """The probes open sockets inside the container's namespace: nothing runs in the image."""
    api = docker_api(primed)
    image = _bare_image(api)
    lab = Lab("itbare", subnet="10.0.6.0/24", backend="sandbox", sandbox=SANDBOX_NAME,
              state_dir=state_dir)
    _made.append(lab)
    lab._edit(lambda doc: doc["network"].update({"dns": False}))
    lab.add_container("bare", image=image).add_container("bare2", image=image).add_host("h")
    lab.apply()
    for tool in (["ping", "-c1", "10.0.6.1"], ["wget", "http://10.0.6.1/"], ["nc"]):
        ex = api.exec_create("hnb-itbare-bare", tool)
        api.exec_start(ex["Id"])
        assert api.exec_inspect(ex["Id"])["ExitCode"] != 0, f"{tool[0]} exists in the image"
    m = lab.test(("icmp", "tcp", "udp", "http"), timeout=1.0, count=2)
    assert m.ok and m.counts()["skip"] == 0, m.to_text()
    lab.destroy()
