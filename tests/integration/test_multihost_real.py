"""One lab over two hosts through ``Lab`` (issue 17): two real sandboxes joined by an underlay.

Two sandboxes (``<test sandbox>a`` and ``<test sandbox>b``: their own namespaces, dockerd, and
libvirtd on b) stand in for two machines; a veth pair between their namespaces,
192.168.251.0/30, stands in for the network between them.  One lab file places a container on
a (the primary: the gateway address and the lab's DNS server) and a container and a test VM
on b; ``Lab.apply`` makes each host's share through its own backend, in parallel, and the
VXLAN devices join the two bridges into one segment.  Checked:

* one clean apply; the full matrix (ICMP, TCP, UDP, HTTP, DNS) is green between every pair, across hosts, both
  ways, gateway included; names resolve and answer from inside the containers and the VM on
  either host;
* 1400-byte pings with DF set cross the VXLAN both ways (the lab MTU is 1450);
* a whole-bridge capture captures on both hosts' bridges and merges them: a frame between two
  endpoints of b (which never crosses a's bridge) is in it, and a frame between hosts is seen
  on each bridge;
* the logs hold hybridnb's lines from both hosts' journals, each naming its host;
* destroy leaves both sandboxes' namespaces **exactly** as they were (``hostsnap``, taken
  before the lab, with the underlay already linked);
* then, a separate phase: killing b's dockerd in the middle of an apply fails it with an
  error naming host b, a stays made; after dockerd is back, one apply converges, the next
  plan is empty and the matrix is green; after destroy a is exactly as before, and b too
  except that the restarted dockerd may have re-added its own DOCKER-chain rules in another
  order (checked as sets there, and only there).

Every packet goes to an address this test made, inside those namespaces.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from hybridnb import multihost_apply
from hybridnb.errors import HybridError
from hybridnb.lab import Lab
from hybridnb.sandbox import Sandbox
from tests.gating import require_real
from tests.helpers import hostsnap
from tests.helpers.privnet import icmp_ping
from tests.helpers.twohosts import snapshots, two_sandboxes
from tests.realengines import ENGINE_TOOLS, SANDBOX_NAME

pytestmark = [pytest.mark.real, pytest.mark.vm]

UNDERLAY = "192.168.251.0/30"
ULINK = ("hnbml0", "hnbml1")
BOXES = {"a": f"{SANDBOX_NAME}a", "b": f"{SANDBOX_NAME}b"}
LAB: dict[str, Any] = {
    "name": "mhl",
    "hosts": {"a": {"sandbox": BOXES["a"], "underlay": "192.168.251.1"},
              "b": {"sandbox": BOXES["b"], "underlay": "192.168.251.2"}},
    "endpoints": {
        "c1": {"kind": "container", "services": ["http/80"]},
        "c2": {"kind": "container", "host": "b", "services": ["http/80"]},
        "v1": {"kind": "vm", "template": "test", "memory": 128, "host": "b"},
    },
}
CROSS = (("c1", "c2"), ("c2", "c1"), ("c1", "v1"), ("v1", "c1"), ("gateway", "c2"),
         ("gateway", "v1"), ("c2", "gateway"), ("v1", "gateway"))


def ours(name: str) -> bool:
    return name.startswith("hnb-mhl")


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Both sandboxes up (libvirtd on b only: the VM lives there), joined by the underlay,
    then snapshotted (what every destroy must give back); taken down at the end."""
    require_real(tools=ENGINE_TOOLS)
    with two_sandboxes(BOXES, UNDERLAY, ULINK, ours, libvirt=("b",)) as (boxes, before):
        yield {"boxes": boxes, "before": before,
               "state": tmp_path_factory.mktemp("multihost-state")}


def open_lab(state: Path) -> Lab:
    return Lab.from_dict(LAB, backend="sandbox", sandbox=BOXES["a"], state_dir=state)


def kill_dockerd(box: Sandbox) -> None:
    pid = box.daemon("dockerd").pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return
        time.sleep(0.05)
    raise AssertionError(f"dockerd {pid} did not die")


def destroyed(state: Path) -> None:
    """Destroy the lab; every host's journal and the lab's own state are gone."""
    lab = open_lab(state)
    done = lab.destroy()
    print(f"destroy: {done.seconds:.2f}s")
    assert done.ok, done
    assert not any(multihost_apply.host_store(lab, h).labs() for h in BOXES)
    assert not lab.store.labs()


def apply_killing_dockerd(lab: Lab, box: Sandbox, host: str,
                          action: tuple[str, str | None]) -> HybridError:
    """Apply ``lab``, SIGKILLing ``box``'s dockerd as ``host``'s ``action`` (kind, name or
    None: any) starts; the apply must fail, the other hosts' shares made.  The error."""
    killed: list[str] = []

    def progress(event: Any) -> None:
        act = event.action
        if event.phase == "start" and act is not None and act.kind == action[0] \
                and action[1] in (None, act.name) and getattr(event, "host", host) == host \
                and not killed:
            kill_dockerd(box)
            killed.append(host)

    with pytest.raises(HybridError) as info:
        lab.apply(progress=progress)
    print(f"apply with {host}'s dockerd killed: {info.value}")
    assert killed == [host]
    partial = info.value.result
    assert all(r.ok for h, r in partial.hosts.items() if h != host), partial
    return info.value


def test_one_lab_over_two_sandboxes(two) -> None:
    """One clean apply, the whole matrix, watching; destroy gives back both sandboxes'
    snapshots exactly."""
    boxes, state = two["boxes"], two["state"]
    lab = open_lab(state)
    plan = lab.plan()
    assert [h for h, _ in plan.hosts] == ["a", "b"], plan
    by = {h: {(a.kind, a.name) for a in p.actions} for h, p in plan.hosts}
    assert ("dns", "mhl") in by["a"] and ("dns", "mhl") not in by["b"]
    assert ("vm", "v1") in by["b"] and ("container", "c2") in by["b"]
    try:
        result = lab.apply()
        assert result.ok, result
        assert set(result.hosts) == {"a", "b"}, result
        left = open_lab(state).plan()
        assert left.empty, left.to_text()
        print(f"apply: {result.seconds:.2f}s")
        check_bridges(boxes)
        check_the_lab(lab)
        check_watching(lab)
        check_capture(lab)
        check_leftovers(state)
    finally:
        destroyed(state)
    after = snapshots(boxes, ours)
    for h in ("a", "b"):                    # exactly: order and multiplicity included
        assert hostsnap.diff(two["before"][h], after[h]) == [], h
        assert two["before"][h].sections == after[h].sections, h
    print("after destroy: both sandboxes' snapshots identical to before")


def test_a_recipe_runs_on_both_hosts_imported_into_each_engine(two) -> None:
    """A lab spread over two hosts running one image recipe (the examples' ``web``, already
    in the image cache after ``make images``) on both: the plan names each host the image
    is still to be imported into, apply imports it into each host's own dockerd, and each
    container serves its own templated page, fetched by name from the other host."""
    import copy

    import docker
    import yaml

    web = yaml.safe_load((Path(__file__).parents[2] / "examples" / "recipes.yaml")
                         .read_text())["images"]["web"]
    doc = copy.deepcopy(LAB)
    doc.update(name="mhlr", images={"web": web}, endpoints={
        "w1": {"kind": "container", "image": "web"},
        "w2": {"kind": "container", "image": "web", "host": "b"}})
    boxes, state = two["boxes"], two["state"]
    lab = Lab.from_dict(doc, backend="sandbox", sandbox=BOXES["a"], state_dir=state)
    for box in boxes.values():                  # the image is imported by this lab's apply
        api = docker.APIClient(base_url=box.target().docker_url, version="auto")
        for image in api.images(name="hybridnb/web"):
            api.remove_image(image["Id"], force=True)
        api.close()
        assert web_tags(box) == []
    start = snapshots(boxes, ours)     # as this test finds them: exactly as before the lab
    t0 = time.monotonic()              # (it runs before the dockerd restart below)
    try:
        plan = lab.plan()
        print(plan.to_text())
        assert {f"host {h}: image web: will be imported into the engine"
                for h in ("a", "b")} <= set(plan.notes), plan.notes
        result = lab.apply()
        assert result.ok, result
        print(f"apply with the image imported into both engines: {result.seconds:.2f}s "
              f"(whole {time.monotonic() - t0:.1f}s)")
        tags = {h: web_tags(box) for h, box in boxes.items()}
        assert tags["a"] and tags["a"] == tags["b"], tags
        again = Lab.from_dict(doc, backend="sandbox", sandbox=BOXES["a"], state_dir=state)
        left = again.plan()
        assert left.empty and not left.notes, left.to_text()
        status = again.status()
        assert status.up, status
        for src, dst in (("w1", "w2"), ("w2", "w1")):
            out = again.exec(src, f"curl -sf --max-time 5 http://{dst}.hybrid.local/").check()
            print(f"{src} -> {dst}: {out.stdout.strip()}")
            assert out.stdout.startswith(f"hello from {dst} at "), out.stdout
    finally:
        done = Lab.from_dict(doc, backend="sandbox", sandbox=BOXES["a"],
                             state_dir=state).destroy()
        assert done.ok, done
    after = snapshots(boxes, ours)
    for h in ("a", "b"):
        assert hostsnap.diff(start[h], after[h]) == [], h


def test_dockerd_killed_mid_apply_names_the_host_and_one_apply_converges(two) -> None:
    """b's dockerd dies just before b's container is made: the apply fails naming host b,
    a's share stays made; once dockerd is back, one apply converges."""
    boxes, state = two["boxes"], two["state"]
    lab = open_lab(state)
    t0 = time.monotonic()
    try:
        # 1. b's dockerd dies just before b's container is made: the error names host b
        error = apply_killing_dockerd(lab, boxes["b"], "b", ("container", "c2"))
        assert str(error).startswith(f"host b (sandbox {BOXES['b']}): "), error
        # dockerd comes back; one apply converges, and then nothing is left to do
        boxes["b"].up(libvirt=True)
        again = open_lab(state)
        result = again.apply()
        assert result.ok, result
        left = again.plan()
        assert left.empty, left.to_text()
        print(f"apply after dockerd returned: {result.seconds:.2f}s; "
              f"whole bring-up {time.monotonic() - t0:.1f}s")
        m = again.test(("icmp", "tcp"), timeout=2.0)
        print(f"matrix after converging: {m.summary()}")
        assert m.ok and all(m.get(c, s, d).ok for c in ("icmp", "tcp") for s, d in CROSS), \
            m.to_text()
    finally:
        destroyed(state)
    after = snapshots(boxes, ours)
    assert hostsnap.diff(two["before"]["a"], after["a"]) == []
    # after a dockerd restart, dockerd's own rules may reorder: the restarted dockerd re-adds
    # its own jumps to its DOCKER chains (same rules, another order) — nothing of the lab.
    # Here, and only here, b's firewall sections are compared as sets; everything else exactly
    noisy = dockerd_restart_noise(two["before"]["b"], after["b"])
    print(f"b after a dockerd restart: sections only reordered by dockerd: {sorted(noisy)}")
    assert [d for d in hostsnap.diff(two["before"]["b"], after["b"])
            if d.partition(":")[0] not in noisy] == []


def web_tags(box: Sandbox) -> list[str]:
    """The tags of the ``web`` recipe's images in ``box``'s dockerd."""
    import docker

    api = docker.APIClient(base_url=box.target().docker_url, version="auto")
    try:
        return sorted(t for i in api.images(name="hybridnb/web") for t in i["RepoTags"])
    finally:
        api.close()


def dockerd_restart_noise(before: Any, after: Any) -> set[str]:
    """The firewall sections (``iptables``, ``nft``) that hold the same rules as before, only
    in another order or with dockerd's own jumps to its DOCKER chains repeated — what a
    killed and restarted dockerd does by itself.  A rule that is new or gone is never
    noise."""
    from collections import Counter

    noisy = set()
    for name in ("iptables", "nft"):
        old, new = before.sections.get(name, ()), after.sections.get(name, ())
        if set(old) != set(new):
            continue
        grown = (Counter(new) - Counter(old)) + (Counter(old) - Counter(new))
        if all("DOCKER" in line for line in grown):
            noisy.add(name)
    return noisy


def check_bridges(boxes: dict[str, Sandbox]) -> None:
    """The gateway address on a's bridge only (Docker's network on b was told not to put it
    there); each bridge with a MAC of its own."""
    from hybridnb.core import naming
    from hybridnb.drivers import nsutil

    for h, box in boxes.items():
        with nsutil.iproute(box.netns) as ipr:
            link = ipr.link("get", ifname="hybr0")[0]
            addrs = [a.get_attr("IFA_ADDRESS") for a in
                     ipr.get_addr(family=2, index=link["index"])]
        mac = link.get_attr("IFLA_ADDRESS")
        if h == "a":
            assert addrs == ["10.0.1.1"] and mac == naming.bridge_mac("mhl", "hybr0"), addrs
        else:
            assert addrs == [] and mac == naming.bridge_mac("mhl", "hybr0", h), (addrs, mac)


def check_the_lab(lab: Lab) -> None:
    # 2. the full matrix, across hosts, both ways, gateway included
    t0 = time.monotonic()
    m = lab.test(("icmp", "tcp", "udp", "http", "dns"), timeout=2.0, count=2)
    print(f"matrix in {time.monotonic() - t0:.2f}s: {m.summary()}")
    assert m.ok, m.to_text()
    for check in ("icmp", "tcp", "udp", "http", "dns"):
        counts = m.counts(check)
        assert counts["fail"] == 0 and counts["skip"] == 0, (check, m.to_text())
    for src, dst in CROSS:
        for check in ("icmp", "tcp", "udp"):
            r = m.get(check, src, dst)
            assert r is not None and r.ok, (check, src, dst, m.to_text())
    for src in ("c1", "c2", "v1"):
        for dst in ("c1", "c2", "v1"):
            if src != dst:
                assert m.get("http", src, dst).ok and m.get("dns", src, dst).ok, (src, dst)
    # status sees both hosts' shares as one lab
    status = lab.status()
    assert status.up and {e.name: e.state for e in status.endpoints} == {
        "c1": "up", "c2": "up", "v1": "up"}, status
    rtt = m.get("icmp", "c1", "c2").rtt_median
    print(f"c1 (a) -> c2 (b): icmp median {rtt * 1000:.3f} ms")
    # 3. by name, from inside the endpoints on either host (the DNS server is on a)
    addresses = {n: str(a) for n, a in lab.addresses().items()}
    for src, dst in (("c1", "c2"), ("c1", "v1"), ("c2", "c1"), ("v1", "c1"), ("v1", "c2")):
        out = lab.exec(src, f"nslookup {dst}.hybrid.local").check()
        assert addresses[dst] in out.stdout, out
        lab.exec(src, f"ping -c1 -W2 {dst}.hybrid.local").check()
    # the one DNS server (on a) answered the endpoints of b, over the VXLAN
    clients = {str(e.client).split("#")[0].rsplit(":", 1)[0]
               for e in lab.dns_query_log(500).entries}
    assert {addresses["c2"], addresses["v1"]} <= clients, clients
    # 4. path MTU: 1400-byte packets with DF set cross the VXLAN both ways
    eps, gateway = lab.probe_endpoints()
    ns = {e.name: e.netns for e in eps + [gateway]}
    for src, dst in (("c1", "c2"), ("c2", "c1"), ("c1", "v1"), ("gateway", "c2"),
                     ("c2", "gateway")):
        assert icmp_ping(ns[src], addresses.get(dst, "10.0.1.1"), timeout=2.0, size=1400,
                         df=True) is not None, (src, dst)


def check_watching(lab: Lab) -> None:
    """5. monitor and report watch every endpoint through its own host's lab host, while
    traffic crosses the VXLAN (c1 on a pings c2 and v1 on b)."""
    import json
    import threading

    got: dict[str, Any] = {}
    t0 = time.monotonic()
    watch = threading.Thread(target=lambda: got.update(
        report=lab.report(probe=False, monitor=3.0)))
    watch.start()
    rounds = 0
    while watch.is_alive() or not rounds:   # traffic for the whole monitor window, however
        rounds += 1                         # late the report starts watching
        for dst in ("c2", "v1"):
            lab.exec("c1", f"ping -c 4 -i 0.1 -s 1000 {dst}.hybrid.local").check()
        watch.join(0.01)
        assert time.monotonic() - t0 < 60, "the report's monitor did not end"
    report = got["report"]
    print(f"report with 3 s of monitor in {time.monotonic() - t0:.2f}s; {rounds} rounds of "
          "pings c1 -> c2, v1")
    traffic = report.data.section("traffic").data
    print(f"traffic: {traffic['headline']}; not watched: {traffic['not_watched']}")
    assert traffic["not_watched"] == [], traffic["not_watched"]
    rows = {r["endpoint"]: r for r in traffic["endpoints"]}
    assert {n: r["host"] for n, r in rows.items()} == {
        "c1": "a", "c2": "b", "v1": "b", "gateway": "a"}, rows
    for name in ("c1", "c2", "v1"):                 # counters of both hosts' ports moved
        print(f"  {name}@{rows[name]['host']}: tx {rows[name]['tx_bytes']} "
              f"rx {rows[name]['rx_bytes']} via {rows[name]['port']}")
        assert rows[name]["tx_bytes"] > 4 * 1000 and rows[name]["rx_bytes"] > 4 * 1000, rows
    hosts = report.data.section("hosts").data
    assert [h["name"] for h in hosts["hosts"]] == ["a", "b"], hosts
    eps = {r["name"]: r["host"] for r in report.data.section("endpoints").data["endpoints"]}
    assert eps == {"c1": "a", "c2": "b", "v1": "b"}, eps
    doc = json.loads(report.to_json())
    assert {"hosts", "endpoints", "traffic"} <= set(doc["sections"]), doc["order"]
    html, text = report.to_html(), report.to_text()
    assert "<th>host</th>" in html and "Hosts" in html and "Traffic" in html
    assert "Hosts" in text and "Traffic" in text, text
    # logs: each endpoint's output/console through its own host's engine, DNS from a's server
    logs = lab.logs()
    print(f"logs: {logs.headline()}; errors: {dict(logs.errors)}")
    assert logs.errors == () and {"container:c1", "container:c2", "vm:v1", "dns"} <= set(
        logs.sources), logs.sources
    askers = {ln.text.split(" asked ")[0] for ln in logs.of("dns")}
    assert {"c1", "c2", "v1"} <= askers, askers        # b's clients known by name on a
    # doctor: each host's share checked on that host, every finding names its host
    doc = lab.doctor()
    print(f"doctor: {doc.headline()}")
    for f in doc.problems():
        print(f"  {f.status} {f.title}: {f.found}")
    assert {f.data["host"] for f in doc.findings} == {"a", "b"}
    assert doc.exit_code < 2, doc.to_text()


def check_capture(lab: Lab) -> None:
    """6. ``Lab.capturing()`` without an endpoint: the bridge of every host, merged in time
    order.  c2 -> v1 (both on b) crosses only b's bridge; c1 (a) -> c2 (b) crosses both."""
    addr = {n: str(a) for n, a in lab.addresses().items()}
    t0 = time.monotonic()
    with lab.capturing(bpf="icmp") as cap:
        lab.exec("c2", f"ping -c 3 -i 0.2 {addr['v1']}").check()
        lab.exec("c1", f"ping -c 3 -i 0.2 {addr['c2']}").check()
    result = cap.result
    assert result is not None
    print(f"capture in {time.monotonic() - t0:.2f}s: {result.headline()}")
    assert [h for h, _ in result.hosts] == ["a", "b"], result.hosts

    def echoes(table: Any) -> set[tuple[str, str]]:
        return {(p.src, p.dst) for p in table.packets if p.protocol == "ICMP"}

    on = {h: echoes(result.host(h).packets()) for h in ("a", "b")}
    merged = result.packets()
    within_b = {(addr["c2"], addr["v1"]), (addr["v1"], addr["c2"])}
    across = {(addr["c1"], addr["c2"]), (addr["c2"], addr["c1"])}
    assert within_b <= on["b"] and not within_b & on["a"], on
    assert across <= on["a"] and across <= on["b"], on
    assert within_b | across <= echoes(merged)
    assert len(merged.packets) == sum(r.captured for _, r in result.hosts) == result.captured
    times = [p.time for p in merged.packets]
    assert times == sorted(times)
    # logs: hybridnb's own lines from both hosts' journals, each naming its host
    lines = [ln.text for ln in lab.logs(kinds=["hybridnb"]).of("hybridnb")]
    for h, made in (("a", "container c1"), ("b", "container c2"), ("b", "vm v1")):
        assert any(t.startswith(f"host {h}: create {made} ") for t in lines), (h, made, lines)


def check_leftovers(state: Path) -> None:
    """The machine's doctor (no lab) on sandbox a judges leftovers against every lab of the
    state directory, spread labs' shares on that sandbox included: none while the lab's
    record of host a is there; its bridge, VXLAN device and container once it is not."""
    from hybridnb.lab import host_doctor

    def leftovers() -> Any:
        report = host_doctor("sandbox", sandbox=BOXES["a"], state_dir=state,
                             checks=["leftovers"])
        return next(f for f in report.findings if f.check == "leftovers")

    found = leftovers()
    assert found.status == "ok", found
    record = state / "hosts" / "a" / "mhl.json"
    aside = record.with_name("_aside.json")
    record.rename(aside)
    try:
        found = leftovers()
    finally:
        aside.rename(record)
    print(f"leftovers with host a's record moved aside: {found.found}")
    kinds = {(k, lab) for k, lab, _ in found.data["leftovers"]}
    assert found.status == "warn" and {("bridge", "mhl"), ("vxlan", "mhl"),
                                       ("container", "mhl")} <= kinds, found
    assert "ip link del" in found.fix_command, found.fix_command
