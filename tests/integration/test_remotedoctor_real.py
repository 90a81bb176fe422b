"""The doctor on a host reached only through its Docker API runs its checks there (issue 17).

Two sandboxes stand in for two machines, joined by a veth underlay (192.168.247.0/30), as in
``test_remotewatch_real.py`` (:mod:`tests.helpers.twohosts`).  Host ``a`` is ``sandbox:
<test sandbox>da``; host ``b`` is given **only by the Docker socket URL of sandbox
``<test sandbox>db``**: its kernel settings, firewall, routes, hybridnb marks and the ARP
sweep on its bridge are read by hybridnb's agent container there.  One container on each
host.  Checked:

* ``doctor`` of the healthy lab: no failure, no warning (exit 0), and on host b the kernel,
  firewall, route, ARP-sweep and leftovers checks ran (ok) — nothing ``not-checked``;
* ``net.ipv4.ip_forward=0`` set in b's sandbox namespace only: ``ip-forward`` warns, titled
  ``host b``, with the command to run on host b; a's stays ok; the value is restored;
* a rogue namespace made by the test, hung on b's lab bridge with c2's address:
  ``duplicate-address`` fails on host b naming the rogue's port (not a lab endpoint), found
  by the sweep the agent sent from b's bridge; removed again, the doctor is clean;
* hybridnb never entered b's namespace itself (no namespace worker of this process was asked
  for it: every read of b went through its agent); destroy leaves both sandboxes' snapshots
  as they were (the sysctl included).

The test changes b only with ``ip``/``sysctl`` under ``nsenter`` (outside hybridnb). Every
ARP request goes to an address of the lab's subnet, on the lab bridge in b's sandbox.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any, Iterator

import pytest

from hybridnb import multihost_apply
from hybridnb.drivers import nsutil
from hybridnb.lab import Lab
from tests.gating import require_real
from tests.helpers import hostsnap
from tests.helpers.twohosts import remote_pair, snapshots
from tests.integration.test_remote_real import namespaces_entered
from tests.realengines import ENGINE_TOOLS, SANDBOX_NAME

pytestmark = [pytest.mark.real]

UNDERLAY = "192.168.247.0/30"
ULINK = ("hnbrd0", "hnbrd1")
BOXES = {"a": f"{SANDBOX_NAME}da", "b": f"{SANDBOX_NAME}db"}
SUBNET = "10.0.57.0/24"
ROGUE_NS = "rdocrogue"                # the test's own namespace (removed at the end)
ROGUE_PORT = "rdlrogue0"
#: the checks the agent's reads let b run (besides docker, endpoint-state, bridge, mtu, vxlan)
THERE = ("forward-drop", "br-netfilter", "ip-forward", "neighbour-cap", "route-overlap",
         "duplicate-address", "endpoint-identity", "leftovers")


def ours(name: str) -> bool:
    return name.startswith("hnb-rdl")


def lab_dict(b_url: str) -> dict[str, Any]:
    return {"name": "rdl",
            "hosts": {"a": {"sandbox": BOXES["a"], "underlay": "192.168.247.1"},
                      "b": {"docker": b_url, "underlay": "192.168.247.2"}},
            "network": {"subnet": SUBNET, "vxlan": {"vni": 5757}},
            "endpoints": {"c1": {"kind": "container"},
                          "c2": {"kind": "container", "host": "b"}}}


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> Iterator[dict[str, Any]]:
    require_real(tools=ENGINE_TOOLS)
    with remote_pair(BOXES, UNDERLAY, ULINK, ours,
                     tmp_path_factory.mktemp("remotedoctor-state")) as two:
        yield two


def open_lab(two: dict[str, Any]) -> Lab:
    return Lab.from_dict(lab_dict(two["url"]), backend="sandbox", sandbox=BOXES["a"],
                         state_dir=two["state"])


def in_ns(netns: str, *argv: str) -> str:
    """A command in a namespace, outside hybridnb (``nsenter``)."""
    done = subprocess.run(["nsenter", f"--net={nsutil.netns_path(netns)}", *argv],
                          capture_output=True, text=True)
    assert done.returncode == 0, (argv, done.stderr)
    return done.stdout


def doctor(lab: Lab, label: str) -> tuple[Any, dict[str, Any]]:
    t0 = time.monotonic()
    report = lab.doctor()
    print(f"{label}: {time.monotonic() - t0:.2f}s: {report.headline()}")
    on_b = {f.check: f for f in report.findings if f.data.get("host") == "b"}
    return report, on_b


def test_the_doctor_of_a_remote_host_runs_its_checks_there(two) -> None:
    boxes = two["boxes"]
    b_ns = boxes["b"].netns
    b_key = nsutil._ns_key(nsutil.netns_path(b_ns))
    lab = open_lab(two)
    with namespaces_entered() as entered:
        try:
            t0 = time.monotonic()
            result = lab.apply()
            print(f"apply: {time.monotonic() - t0:.2f}s")
            assert result.ok, result
            c2 = str(lab.addresses()["c2"])
            out = lab.exec("c1", f"ping -c 1 -W 2 {c2}", timeout=20)
            assert out.exit_code == 0, out
            check_healthy(lab)
            check_sysctl_fault(lab, b_ns)             # (the test's own changes: nsenter)
            check_duplicate_on_b(lab, b_ns, c2)
        finally:
            subprocess.run(["ip", "netns", "del", ROGUE_NS], capture_output=True)
            done = open_lab(two).destroy()
            print(f"destroy: {done.seconds:.2f}s")
    assert b_key not in entered, "hybridnb entered b's namespace by itself"
    after = snapshots(boxes, ours)
    for h in boxes:
        assert hostsnap.diff(two["before"][h], after[h]) == [], h


def check_healthy(lab: Lab) -> None:
    report, on_b = doctor(lab, "doctor of the healthy lab")
    for f in sorted(on_b.values(), key=lambda f: f.check):
        print(f"  {f.status:4} {f.title}: {f.found}")
    assert report.exit_code == 0, report.to_text()
    assert report.counts() == {"ok": len(report.findings), "warn": 0, "fail": 0}
    assert "not-checked" not in {f.check for f in report.findings}, report.to_text()
    for check in (*THERE, "docker", "endpoint-state", "bridge", "mtu", "vxlan"):
        assert on_b[check].status == "ok", on_b[check]
        assert on_b[check].title.startswith("host b: "), on_b[check]
    assert "1 addresses answered ARP" in on_b["duplicate-address"].found
    b = multihost_apply.host_backend(lab, "b")
    assert multihost_apply.is_remote(b)
    # endpoint-identity looked inside c2 there: the agent reads its eth0 in c2's namespace
    c2_ns = b.drivers["container"].netns_paths_there("rdl")["c2"]      # type: ignore[attr-defined]
    c2 = f"{lab.addresses()['c2']}/{SUBNET.split('/')[1]}"
    assert b.drivers["bridge"].read_there("addresses", c2_ns, "eth0") == [c2]  # type: ignore


def check_sysctl_fault(lab: Lab, b_ns: str) -> None:
    """ip_forward off in b's sandbox namespace only: found on b, not on a; restored."""
    before = in_ns(b_ns, "sysctl", "-n", "net.ipv4.ip_forward").strip()
    assert before == "1", before
    in_ns(b_ns, "sysctl", "-qw", "net.ipv4.ip_forward=0")
    try:
        report, on_b = doctor(lab, "doctor with ip_forward=0 on b")
    finally:
        in_ns(b_ns, "sysctl", "-qw", f"net.ipv4.ip_forward={before}")
    f = on_b["ip-forward"]
    print(f"  {f.status} {f.title}: {f.found} (fix: {f.fix_command})")
    assert f.status == "warn" and f.title.startswith("host b: ") and "=0" in f.found, f
    assert f.fix_command == "on host b: sysctl -w net.ipv4.ip_forward=1" and not f.fixable
    on_a = next(x for x in report.findings
                if x.check == "ip-forward" and x.data.get("host") == "a")
    assert on_a.status == "ok", on_a
    assert report.exit_code == 1 and [x.check for x in report.problems()] == ["ip-forward"]


def check_duplicate_on_b(lab: Lab, b_ns: str, c2: str) -> None:
    """A rogue namespace with c2's address on b's bridge: the sweep there finds it."""
    prefix = SUBNET.split("/")[1]
    subprocess.run(["ip", "netns", "add", ROGUE_NS], check=True)
    in_ns(b_ns, "ip", "link", "add", ROGUE_PORT, "mtu", "1450", "type", "veth", "peer", "name",
          "eth0", "mtu", "1450", "netns", ROGUE_NS)
    in_ns(ROGUE_NS, "ip", "addr", "add", f"{c2}/{prefix}", "dev", "eth0")
    in_ns(ROGUE_NS, "ip", "link", "set", "eth0", "up")
    in_ns(b_ns, "ip", "link", "set", ROGUE_PORT, "master", "hybr0", "up")
    try:
        report, on_b = doctor(lab, "doctor with a duplicate of c2 on b's bridge")
    finally:
        in_ns(b_ns, "ip", "link", "del", ROGUE_PORT)
        subprocess.run(["ip", "netns", "del", ROGUE_NS], check=True)
    f = on_b["duplicate-address"]
    print(f"  {f.status} {f.title}: {f.found}\n    fix: {f.fix_command}")
    assert f.status == "fail" and f.title.startswith("host b: "), f
    assert f"{c2} (c2) is answered by" in f.found, f
    assert f"on port {ROGUE_PORT} (not a lab endpoint)" in f.found, f
    assert f.fix_command == f"on host b: ip link set dev {ROGUE_PORT} nomaster", f
    assert report.exit_code == 2
    report, _ = doctor(lab, "doctor after the rogue is gone")
    assert report.exit_code == 0, report.to_text()
