"""The sandbox (isolated lab host with private engines): up/status/down/target, for real.

The session sandbox (``tests/realengines.py``) covers idempotence and the target;
fresh sandboxes with their run/data directories under ``tmp_path`` prove that two concurrent
``up`` start one engine, that another process can take a sandbox down, and that ``down``
leaves no process, mount, cgroup, namespace or directory behind — also after dockerd was
killed with containers running.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from hybridnb.daemons import dockerd, process
from hybridnb.drivers import nsutil
from hybridnb.images.busybox import DEFAULT_TAGS, ensure_busybox_image
from hybridnb.sandbox import Sandbox
from tests.helpers.privnet import unique
from tests.gating import require_real
from tests.realengines import ENGINE_TOOLS

pytestmark = pytest.mark.real
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh(monkeypatch):
    """A sandbox of its own whose run and data directories live in a fresh short directory
    (unix socket paths under the exec-root must stay below 108 bytes)."""
    require_real(tools=ENGINE_TOOLS)
    tmp_path = Path(tempfile.mkdtemp(prefix="hnbt"))
    monkeypatch.setenv("HYBRIDNB_SANDBOX_RUN", str(tmp_path / "run"))
    monkeypatch.setenv("HYBRIDNB_SANDBOX_DATA", str(tmp_path / "data"))
    box = Sandbox(unique("s"))
    yield box
    box.down(purge=True)
    shutil.rmtree(tmp_path, ignore_errors=True)


def _leftovers(box: Sandbox, record: dict) -> list[str]:
    """Everything of ``box`` that should be gone after down(purge=True)."""
    out = []
    exec_root = record["extra"]["exec_root"]
    out += [f"process {p} {process.cmdline(p)[:2]}" for p in process.find(exec_root)]
    out += [f"mount {m}" for m in process.mounts_under(box.run_dir.parent.parent)]
    out += [f"cgroup {d}" for d in process.cgroup_dirs(record["extra"]["cgroup_parent"])]
    if nsutil.netns_exists(box.netns):
        out.append(f"netns {box.netns}")
    out += [f"dir {d}" for d in (box.run_dir, box.data_dir) if d.exists()]
    return out


def test_session_sandbox_is_up_isolated_and_idempotent(sandbox):
    st = sandbox.status()
    assert st.up and st.netns_exists, st
    docker = st.daemon("dockerd")
    assert docker.alive and docker.pid > 0
    routes = subprocess.run(["ip", "-n", sandbox.netns, "route", "show", "default"],
                            capture_output=True, text=True, check=True).stdout
    assert routes.strip() == "", "the sandbox must have no default route"
    t0 = time.monotonic()
    again = sandbox.up()
    assert time.monotonic() - t0 < 2.0
    assert again.daemon("dockerd").pid == docker.pid
    assert "dockerd" in repr(again) and "<table>" in again._repr_html_()
    target = sandbox.target()
    assert target.netns == sandbox.netns
    assert dockerd.ping(target.docker_url.removeprefix("unix://"))
    lv = st.daemon("libvirtd")
    if lv.alive:
        assert target.libvirt_uri and "socket=" in target.libvirt_uri
    else:
        assert target.libvirt_uri is None and lv.note


def test_busybox_image_is_there_and_ensure_is_cheap(sandbox):
    import docker

    url = sandbox.target().docker_url
    t0 = time.monotonic()
    image_id = ensure_busybox_image(url)
    assert time.monotonic() - t0 < 1.0
    api = docker.APIClient(base_url=url, version="auto")
    try:
        for tag in DEFAULT_TAGS:
            assert api.inspect_image(tag)["Id"] == image_id
        assert api.inspect_image("busybox")["Config"]["Cmd"][0] == "httpd"
    finally:
        api.close()


def test_concurrent_up_starts_one_engine_and_another_process_stops_it(fresh):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = ("import sys, json; from hybridnb.sandbox import Sandbox; "
            "st = Sandbox(sys.argv[1]).up(libvirt=False); "
            "print(json.dumps(st.daemon('dockerd').pid))")
    procs = [subprocess.Popen([sys.executable, "-c", code, fresh.name], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    pids = {json.loads(out) for out, _ in outs}
    assert len(pids) == 1, f"two engines started: {pids}"
    record = json.loads((fresh.run_dir / "sandbox.json").read_text())["daemons"]["dockerd"]
    engines = [p for p in process.find(record["extra"]["exec_root"])
               if "dockerd" in " ".join(process.cmdline(p)[:3])]
    assert engines == [record["pid"]]
    # this process never started it, yet takes it down by the record
    st = fresh.down(purge=True)
    assert not st.up
    assert _leftovers(fresh, record) == []


def test_down_after_dockerd_was_killed_with_containers_running(fresh):
    import docker

    st = fresh.up(libvirt=False)
    record = fresh.daemon("dockerd").to_dict()
    api = docker.APIClient(base_url=fresh.target().docker_url, version="auto")
    try:
        for i in range(2):
            c = api.create_container("busybox", command=["sleep", "3600"], name=f"k{i}",
                                     host_config=api.create_host_config(init=True))
            api.start(c["Id"])
    finally:
        api.close()
    shims = [p for p in process.find(record["extra"]["exec_root"])
             if "shim" in " ".join(process.cmdline(p)[:1])]
    assert len(shims) == 2
    os.kill(st.daemon("dockerd").pid, signal.SIGKILL)       # a crash: nothing shuts down
    time.sleep(0.2)
    assert not fresh.status().up
    fresh.down(purge=True)
    assert _leftovers(fresh, record) == []


def test_up_starts_libvirtd_too_when_available(fresh):
    try:
        import hybridnb.daemons.libvirtd  # noqa: F401
    except ImportError:
        pytest.skip("hybridnb.daemons.libvirtd is not in the tree yet")
    if shutil.which("libvirtd") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("libvirtd is not installed")
        pytest.skip("libvirtd is not installed")
    st = fresh.up()
    assert st.daemon("dockerd").alive and st.daemon("libvirtd").alive, st
    target = fresh.target()
    assert target.libvirt_uri and str(fresh.run_dir) in target.libvirt_uri
    lv_pid = st.daemon("libvirtd").pid
    # a lab's VM defined when the sandbox goes down is not there after the next up
    import libvirt

    from hybridnb.core import vmxml
    from tests.core.vmlabs import vm_specs

    xml = vmxml.domain_xml("seed", vm_specs("seed")["vm1"], kernel="/nonexistent/vmlinux",
                           initrd="/nonexistent/initrd", console_log="/dev/null")
    conn = libvirt.open(target.libvirt_uri)
    try:
        conn.defineXML(xml)
        assert [d.name() for d in conn.listAllDomains(0)] == ["hnb-seed-vm1"]
    finally:
        conn.close()
    fresh.down()
    assert not process.alive(lv_pid)
    st = fresh.up()
    conn = libvirt.open(fresh.target().libvirt_uri)
    try:
        assert conn.listAllDomains(0) == []
    finally:
        conn.close()
    lv_pid = st.daemon("libvirtd").pid
    record = fresh.daemon("dockerd").to_dict()
    fresh.down(purge=True)
    assert not process.alive(lv_pid)
    assert _leftovers(fresh, record) == []


def test_a_lab_left_up_ends_with_down_and_is_rebuilt_after_up(fresh, tmp_path):
    """``down`` with a lab still applied ends it (its DNS server and host namespaces too);
    the next ``up`` starts from a clean engine although dockerd remembers the lab's network
    in its data directory (it would re-create the bridge by itself, unlabelled, and the lab
    could not claim it); and the lab applies again, on the same addresses."""
    import docker

    from hybridnb.lab import Lab

    fresh.up(libvirt=False)
    state = tmp_path / "state"
    lab = Lab("left", backend="sandbox", sandbox=fresh.name, state_dir=state)
    lab.add_container("c1").add_host("h1")
    lab.apply()
    addresses = {e.name: e.address for e in lab.status().endpoints}
    dns_pid = lab.backend.driver("dns").status("left")["pid"]
    assert process.alive(dns_pid)

    host_ns = next(r.spec["netns"] for r in lab.resources() if r.kind == "host")
    assert nsutil.netns_exists(host_ns)
    fresh.down()
    assert not process.alive(dns_pid), "the lab's DNS server outlived the sandbox"
    assert not nsutil.netns_exists(host_ns), "the lab's host namespace outlived the sandbox"
    fresh.up(libvirt=False)
    links = subprocess.run(["ip", "-n", fresh.netns, "-o", "link", "show"], capture_output=True,
                           text=True, check=True).stdout
    assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
    api = docker.APIClient(base_url=fresh.target().docker_url, version="auto")
    try:
        assert api.containers(all=True) == []
        assert sorted(n["Name"] for n in api.networks()) == ["host", "none"]
    finally:
        api.close()

    again = Lab.load("left", backend="sandbox", sandbox=fresh.name, state_dir=state)
    assert again.apply().ok
    status = again.status()
    assert status.up and {e.name: e.address for e in status.endpoints} == addresses
    assert again.test(("icmp", "dns"), timeout=1.0, count=1).ok
    again.destroy()
