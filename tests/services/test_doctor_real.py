"""``doctor`` on a real lab (issue 14), through the public surface — ``hybridnb doctor`` and
``Lab.doctor``: all ok when healthy, each induced fault named, the fixable ones mended by
``--fix``, the rest by the command it printed, then all ok again.

The lab (module scope, in the session sandbox): two namespace hosts and a test VM on the lab
bridge with the lab DNS — no container, so Docker's own accept rule for the bridge does not
exist and the FORWARD pitfall bites as it does for VMs.  Faults are induced only inside the
sandbox (its namespace, its dockerd and libvirtd): the lab's DOCKER-USER rule deleted (FORWARD
policy DROP, bridge-nf-call-iptables=1), a rogue namespace host answering for a lab address, a
port with a smaller MTU, the DNS server killed, a container with hybridnb's labels that no
lab owns, the VM stopped, a route overlapping the subnet; and, on a second lab, more
endpoints than the machine's neighbour table (gc_thresh3) holds.  The machine's own sysctls
are read, never written.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time

import pytest

from hybridnb.cli import main
from hybridnb.drivers.nsutil import read_sysctl
from hybridnb.lab import Lab
from tests.realengines import SANDBOX_NAME

pytestmark = [pytest.mark.real, pytest.mark.vm]
BRIDGE = "hnbow3"
SUBNET = "10.61.3.0/24"


def cli_doctor(capsys, lab: Lab, *extra: str) -> tuple[int, dict]:
    """``hybridnb doctor LAB --json`` (the lab by name, from its state) and its report."""
    capsys.readouterr()
    code = main(["doctor", lab.name, "--backend", "sandbox", "--sandbox", SANDBOX_NAME,
                 "--state-dir", str(lab.store.dir), "--json", *extra])
    out = capsys.readouterr().out
    print(out)
    return code, json.loads(out)


def found(report: dict, check: str) -> dict:
    return next(f for f in report["findings"] if f["check"] == check)


def ns(box, *argv: str) -> None:
    subprocess.run(["ip", "-n", box.netns, *argv], check=True, capture_output=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("doctor-state")


@pytest.fixture(scope="module")
def doc(sandbox, store):
    lab = Lab("owdoc", backend="sandbox", sandbox=SANDBOX_NAME, state_dir=store,
              subnet=SUBNET, bridge=BRIDGE)
    lab.add_host("a").add_host("b").add_vm("v1", memory=128)
    try:
        assert lab.apply().ok
        yield lab, sandbox
    finally:
        lab.destroy()


def test_a_healthy_lab_is_all_ok(doc, capsys):
    lab, _ = doc
    report = lab.doctor()
    print(report)
    assert report.exit_code == 0, report.to_text()
    ids = {f.check for f in report.findings}
    assert {"forward-drop", "br-netfilter", "ip-forward", "neighbour-cap", "bridge", "mtu",
            "route-overlap", "duplicate-address", "endpoint-identity", "endpoint-state",
            "dns-server", "dns-answers", "docker", "libvirt", "virtualization",
            "leftovers"} <= ids
    assert "TCG" in report.get("virtualization").found
    assert report.to_dict()["exit_code"] == 0
    code, data = cli_doctor(capsys, lab)
    assert code == 0 and data["counts"]["fail"] == data["counts"]["warn"] == 0
    # without a lab: the host-level checks (engines, KVM/TCG, leftovers)
    capsys.readouterr()
    assert main(["doctor", "--backend", "sandbox", "--sandbox", SANDBOX_NAME,
                 "--state-dir", str(lab.store.dir)]) == 0
    out = capsys.readouterr().out
    assert "doctor for this host on sandbox:" in out and "leftovers" in out
    assert "forward-drop" not in out


def test_faults_are_named_fixed_and_a_second_run_is_all_ok(doc, capsys):
    import docker

    lab, box = doc
    target = lab.backend.target
    specs = {r.name: r.spec for r in lab.resources()}
    a, b = specs["a"], specs["b"]
    rogue_ns = f"hnb-{SANDBOX_NAME}-rogue"
    api = docker.APIClient(base_url=target.docker_url, version="auto")
    thresh_before = read_sysctl(None, "net.ipv4.neigh.default.gc_thresh3")
    try:
        # 1. FORWARD policy DROP (dockerd's) and the lab's accept rule gone
        lab.backend.driver("firewall").delete(lab.name, BRIDGE)
        # 2. a rogue namespace host on the bridge with host a's address
        subprocess.run(["ip", "netns", "add", rogue_ns], check=True)
        ns(box, "link", "add", "owrogue0", "type", "veth", "peer", "name", "eth0", "netns",
           rogue_ns)
        ns(box, "link", "set", "owrogue0", "master", BRIDGE, "up")
        subprocess.run(["ip", "-n", rogue_ns, "addr", "add", f"{a['address']}/24", "dev",
                        "eth0"], check=True)
        subprocess.run(["ip", "-n", rogue_ns, "link", "set", "eth0", "up"], check=True)
        # 3. a port with a smaller MTU
        ns(box, "link", "set", "dev", b["veth"], "mtu", "1400")
        # 4. the DNS server killed
        dns = lab.backend.driver("dns")
        os.kill(dns.status(lab.name)["pid"], signal.SIGKILL)
        # 5. a leftover container with hybridnb's labels
        ghost = api.create_container(
            "busybox", ["sleep", "3600"], name="hnb-owghost-x",
            labels={"hybridnb.lab": "owghost", "hybridnb.endpoint": "x",
                    "hybridnb.name": "x"},
            host_config=api.create_host_config(network_mode="none", init=True))
        api.start(ghost["Id"])
        # 6. the VM stopped
        lab.backend.driver("vm").stop(lab.name, "v1")
        # 7. a route overlapping the lab subnet (on another interface of the lab host)
        ns(box, "link", "add", "owroute0", "type", "bridge")
        ns(box, "link", "set", "owroute0", "up")
        ns(box, "route", "add", "10.61.3.128/25", "dev", "owroute0")
        time.sleep(0.3)

        code, report = cli_doctor(capsys, lab)
        assert code == 2 and report["exit_code"] == 2
        expect = {
            "forward-drop": f"frames between ports of {BRIDGE} are dropped (FORWARD policy DROP)",
            "duplicate-address": f"{a['address']} (a) is answered by",
            "mtu": f"port {b['veth']} (b) has MTU 1400",
            "dns-server": "no DNS server is running for lab owdoc",
            "leftovers": "container x of lab owghost",
            "endpoint-state": "vm v1 is stopped",
            "route-overlap": "overlaps 10.61.3.128/25 dev owroute0",
        }
        for check, words in expect.items():
            f = found(report, check)
            assert f["status"] != "ok" and words in f["found"], (check, f)
            assert f["fix_command"], check
        assert "owrogue0 (not a lab endpoint)" in found(report, "duplicate-address")["found"]
        assert not found(report, "route-overlap")["fixable"]

        code, fixed = cli_doctor(capsys, lab, "--fix")
        assert {o["check"] for o in fixed["fixes"] if o["ok"]} == {
            "forward-drop", "duplicate-address", "mtu", "dns-server", "leftovers",
            "endpoint-state"}, fixed["fixes"]
        left = [f for f in fixed["findings"] if f["status"] != "ok"]
        assert [f["check"] for f in left] == ["route-overlap"], left
        assert code == {"warn": 1, "fail": 2}[left[0]["status"]]
        assert {f["check"] for f in fixed["before"] if f["status"] != "ok"} >= set(expect)
        journal = [e["name"] for e in lab.store.read(lab.name)["journal"]
                   if e["op"] == "doctor --fix"]
        assert set(journal) == {o["check"] for o in fixed["fixes"]}
        subprocess.run(left[0]["fix_command"], shell=True, check=True)   # the printed command
        again = lab.doctor()
        print(again)
        assert again.exit_code == 0, again.to_text()
        # the mends are real: the hosts and the VM reach each other (FORWARD accepts again)
        ns(box, "neigh", "flush", "dev", BRIDGE)
        m = lab.test(("icmp",), count=1, timeout=2.0)
        assert m.ok, m.to_text()
    finally:
        subprocess.run(["ip", "-n", box.netns, "link", "del", "owroute0"], capture_output=True)
        subprocess.run(["ip", "-n", box.netns, "link", "del", "owrogue0"], capture_output=True)
        subprocess.run(["ip", "netns", "del", rogue_ns], capture_output=True)
        try:
            api.remove_container("hnb-owghost-x", force=True)
        except docker.errors.NotFound:
            pass
        api.close()
    assert read_sysctl(None, "net.ipv4.neigh.default.gc_thresh3") == thresh_before


def test_a_lab_bigger_than_the_neighbour_table(sandbox, store):
    cap = int(read_sysctl(None, "net.ipv4.neigh.default.gc_thresh3"))
    hosts = math.isqrt(cap) + 2                       # (hosts + 1) * hosts > cap
    assert hosts <= 130, f"gc_thresh3={cap}: this machine's table is too big to overflow here"
    lab = Lab("owbig", backend="sandbox", sandbox=SANDBOX_NAME, state_dir=store,
              subnet="10.61.4.0/24", bridge="hnbow4")
    for i in range(hosts):
        lab.add_host(f"h{i:03d}")
    try:
        assert lab.apply().ok
        report = lab.doctor()
        f = report.get("neighbour-cap")
        assert f.status == "warn" and "smaller than the lab needs" in f.found, f
        assert f"gc_thresh3 is {cap}" in f.found and "gc_thresh3=" in f.fix_command
        assert not f.fixable                            # machine-wide: printed, never applied
        assert report.exit_code == 1, report.to_text()
    finally:
        lab.destroy()
    assert int(read_sysctl(None, "net.ipv4.neigh.default.gc_thresh3")) == cap
