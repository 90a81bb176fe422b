"""Issue 11's acceptance property on the real sandbox: from random valid labs (namespace hosts,
containers, now and then a test VM), random valid edits of any field of the network and of
each kind (drawn from the kinds registry's declarations: ``tests/helpers/edits.py``) each
converge with one apply, and what the engines then hold is the lab asked for:

* the plan is empty and every endpoint is up;
* read from the engines themselves, not from our fingerprints: the bridge's address and MTU
  (netlink), each host's address and MTU inside its namespace, each container's address,
  image, command, environment, labels, working directory and published ports (Docker), each
  VM's memory, vCPUs and MAC (libvirt);
* the probe matrix is the expected one: every endpoint reaches every other and the gateway
  by ICMP, every name resolves to its address when the lab has DNS, and TCP port 80 answers
  exactly on the endpoints running a server there (and is refused everywhere else).

Sequences are seeded (``HYBRIDNB_EDIT_SEED`` moves the first seed; a failure names its seed
and every step), so a run is reproducible.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from hybridnb.lab import Lab
from tests.helpers import edits
from tests.realengines import SANDBOX_NAME

pytestmark = pytest.mark.real
SEQUENCES, EDITS = 30, 2
FIRST_SEED = int(os.environ.get("HYBRIDNB_EDIT_SEED", "7000"))


def ip_json(netns: str, dev: str) -> dict:
    out = subprocess.run(["ip", "-n", netns, "-j", "addr", "show", "dev", dev],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]


def ipv4(link: dict) -> set[str]:
    return {f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
            if a.get("family") == "inet"}


class Engines:
    """What the sandbox's engines hold, read with their own tools."""

    def __init__(self, box) -> None:
        import docker

        self.box = box
        self.docker = docker.APIClient(base_url=box.target().docker_url, version="auto")

    def check(self, lab: Lab, doc: dict) -> None:
        net = lab.spec.network
        prefix = net.subnet.prefixlen
        addresses = {n: str(a) for n, a in lab.addresses().items()}
        bridge = ip_json(self.box.netns, net.bridge)
        assert ipv4(bridge) == {f"{net.gateway}/{prefix}"} and bridge["mtu"] == net.mtu, bridge
        for ep in lab.spec.endpoints:
            getattr(self, f"_{ep.kind}")(lab, ep, addresses[ep.name], prefix, net)

    def _host(self, lab, ep, address, prefix, net) -> None:
        eth0 = ip_json(f"hnb-{lab.name}-{ep.name}", "eth0")
        assert ipv4(eth0) == {f"{address}/{prefix}"} and eth0["mtu"] == net.mtu, eth0

    def _container(self, lab, ep, address, prefix, net) -> None:
        info = self.docker.inspect_container(f"hnb-{lab.name}-{ep.name}")
        cfg, host = info["Config"], info["HostConfig"]
        assert info["State"]["Running"]
        assert info["NetworkSettings"]["Networks"][f"hnb-{lab.name}"]["IPAddress"] == address
        assert cfg["Image"] == ep.image
        if ep.command is not None:
            assert cfg["Cmd"] == list(ep.command)
        assert {f"{k}={v}" for k, v in ep.env.items()} <= set(cfg["Env"] or [])
        assert dict(ep.labels).items() <= (cfg["Labels"] or {}).items()
        assert cfg["WorkingDir"] in ((ep.workdir,) if ep.workdir else ("", "/"))
        assert set(host["PortBindings"] or {}) == {f"{p.container}/{p.protocol}"
                                                  for p in ep.ports}
        assert (host["Dns"] or []) == ([str(net.gateway)] if net.dns else [])

    def _vm(self, lab, ep, address, prefix, net) -> None:
        import xml.etree.ElementTree as ET

        import libvirt

        conn = libvirt.open(self.box.target().libvirt_uri)
        try:
            root = ET.fromstring(conn.lookupByName(f"hnb-{lab.name}-{ep.name}").XMLDesc(0))
        finally:
            conn.close()
        assert int(root.findtext("memory")) == ep.memory * 1024
        assert int(root.findtext("vcpu")) == ep.vcpus
        assert root.find(".//interface/source").get("bridge") == net.bridge


def check_probes(lab: Lab, doc: dict) -> None:
    """ICMP everywhere, DNS names when on, TCP 80 exactly where a server listens."""
    net = lab.spec.network
    checks = ("icmp", "tcp/80") + (("dns",) if net.dns else ())
    m = lab.test(checks, timeout=1.0, count=2)
    bad = [r for r in m.of("icmp") + (m.of("dns") if net.dns else []) if not r.ok]
    assert not bad, m.to_text(verbose=True)
    serving = edits.listens(doc, 80)
    for r in m.of("tcp/80"):
        assert r.ok == (r.target in serving), (r, sorted(serving))


@pytest.fixture(scope="module")
def engines(sandbox):
    from hybridnb.images import testvm

    e = Engines(sandbox)
    e.docker.tag("busybox:latest", *edits.ALT_IMAGE.split(":"))
    image = testvm.find()
    return e, (str(image.kernel), str(image.initrd))


def test_random_edits_of_any_field_converge_on_the_sandbox(engines, tmp_path):
    e, kernel = engines
    state = tmp_path / "state"

    def check(lab: Lab, doc: dict) -> None:
        assert lab.plan().empty, lab.plan().to_text()
        status = lab.status()
        assert status.up, status.to_text()
        e.check(lab, doc)
        check_probes(lab, doc)

    t0 = time.perf_counter()
    done = [edits.run_sequence(
        FIRST_SEED + i, edits=EDITS, vm_chance=6, kernel=kernel, name="cvgp",
        make_lab=lambda doc: Lab.from_dict(doc, backend="sandbox", sandbox=SANDBOX_NAME,
                                           state_dir=state),
        check=check) for i in range(SEQUENCES)]
    seconds = time.perf_counter() - t0
    steps = sum(len(s.steps) - 1 for s in done)
    vms = sum("'vm'" in s.steps[0] for s in done)
    print(f"\n{SEQUENCES} sequences, {steps} edits ({vms} labs with a VM) in {seconds:.0f} s; "
          f"slowest {max(s.seconds for s in done):.1f} s")
    assert len(done) == SEQUENCES and steps == SEQUENCES * EDITS
