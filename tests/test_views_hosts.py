"""Views of a lab spread over hosts (issue 17): ``status``, ``test``, ``graph``, monitor and the
report say which host each endpoint lives on and which MTU the lab has, and why.

The host of an endpoint comes from the lab file (:func:`hybridnb.core.hostview.host_of`), so
all of it is shown on the dry-run backend without applying (a lab over two hosts or more is
not applied by ``Lab`` yet).  A one-machine lab keeps its views, plus its MTU in the status
headline.  Golden files: ``tests/golden/views/`` (``UPDATE_GOLDEN=1`` rewrites them).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybridnb.core.hostview import (bridge_mtu_drift, cross_host_counts, host_of, host_rows,
                                    mtu_reason, mtu_why, vxlan_line)
from hybridnb.lab import Lab, LabStatus
from tests.golden import check_golden

GOLDEN = Path(__file__).parent / "golden" / "views"
TWO = GOLDEN / "two-hosts.yaml"


@pytest.fixture
def lab(tmp_path):
    return Lab.load(TWO, backend="dry-run", state_dir=tmp_path / "state")


def matrix_for(lab, fail=(("db", "web", "tcp"),)):
    """A full icmp/tcp mesh over the lab's endpoints and the gateway (as a probe run returns
    it), with ``fail`` failing; the hosts set as ``Lab.test`` sets them."""
    from hybridnb.services.probe import ConnectivityMatrix, ProbeResult

    names = [e.name for e in lab.spec.endpoints]
    results = []
    for check in ("icmp", "tcp"):
        for i, src in enumerate(names):
            for j, dst in enumerate(names + ["gateway"]):
                if src == dst:
                    continue
                if (src, dst, check) in fail:
                    results.append(ProbeResult(check, src, dst, False, "timeout", sent=3))
                    continue
                rtt = 0.0001 * (1 + i + j)
                results.append(ProbeResult(check, src, dst, True, rtts=(rtt, rtt, rtt),
                                           sent=3, received=3))
    m = ConnectivityMatrix.from_results(results, sources=names, targets=names + ["gateway"],
                                        duration=0.5, timeout=1.0, count=3)
    m.hosts = host_of(lab.spec)
    return m


# ------------------------------------------------------------------------ the pure core

def test_where_each_endpoint_lives_comes_from_the_lab_file(lab):
    assert host_of(lab.spec) == {"web": "a", "probe": "a", "api": "b", "db": "b",
                                 "gateway": "a"}
    rows = host_rows(lab.spec)
    assert [(r.name, r.primary, r.reached, r.underlay, r.underlay_mtu, r.endpoints)
            for r in rows] == [("a", True, "sandbox", "192.168.250.1", 1500, 2),
                               ("b", False, "docker ssh, libvirt ssh", "192.168.250.2", 1500,
                                2)]
    assert mtu_reason(lab.spec) == "VXLAN headroom"
    assert mtu_why(lab.spec).startswith("lab MTU 1450: VXLAN adds 50 bytes")
    assert vxlan_line(lab.spec) == ("VXLAN vni 4242 udp/4789 joins 2 hosts' hybr0 bridges "
                                    "over the underlay (a=192.168.250.1, b=192.168.250.2)")


def test_one_machine_labs_have_no_hosts_and_their_own_mtu(tmp_path):
    one = Lab.from_dict({"name": "one", "network": {"mtu": 9000},
                         "endpoints": {"h1": {"kind": "host"}}}, backend="dry-run",
                        state_dir=tmp_path)
    assert host_of(one.spec) == {} and host_rows(one.spec) == () and vxlan_line(one.spec) == ""
    assert mtu_reason(one.spec) == "network.mtu"
    assert mtu_why(one.spec).startswith("lab MTU 9000: the network's own")
    # a written MTU below what VXLAN leaves is the network's own, said so
    low = Lab.from_dict({"name": "low", "network": {"mtu": 1400},
                         "hosts": {"a": {"engine": "local", "underlay": "192.168.250.1"},
                                   "b": {"sandbox": "x", "underlay": "192.168.250.2"}},
                         "endpoints": {"h1": {"kind": "host", "host": "b"}}},
                        backend="dry-run", state_dir=tmp_path)
    assert mtu_reason(low.spec) == "network.mtu, under VXLAN's"
    assert mtu_why(low.spec).startswith("lab MTU 1400, as written")
    jumbo = Lab.from_dict({"name": "jumbo",
                           "hosts": {"a": {"engine": "local", "underlay": "192.168.250.1",
                                           "mtu": 9000},
                                     "b": {"sandbox": "x", "underlay": "192.168.250.2",
                                           "mtu": 1600}},
                           "endpoints": {"h1": {"kind": "host"}}},
                          backend="dry-run", state_dir=tmp_path)
    assert jumbo.spec.network.mtu == 1550 and mtu_reason(jumbo.spec) == "VXLAN headroom"
    assert "jumbo frames" in mtu_why(jumbo.spec)


def test_bridge_mtu_drift_is_said_only_when_it_differs():
    assert bridge_mtu_drift("hybr0", 1450, None) == ""
    assert bridge_mtu_drift("hybr0", 1450, 1450) == ""
    assert bridge_mtu_drift("hybr0", 1450, 1400).startswith(
        "bridge hybr0 has MTU 1400, not the lab's 1450: a port with a smaller MTU joined it")
    assert "changed by hand" in bridge_mtu_drift("hybr0", 1450, 1500)


def test_cross_host_counts_split_same_host_and_cross_host_pairs(lab):
    m = matrix_for(lab)
    counts = cross_host_counts(m.results, m.hosts)
    assert list(counts) == ["same host", "cross host", "a -> b", "b -> a"]
    # 4 endpoints + gateway, 2 checks: a has web, probe, gateway; b has api, db
    assert counts["same host"] == {"ok": 2 * (2 * 2 + 2), "fail": 0, "skip": 0}
    assert counts["b -> a"] == {"ok": 2 * 2 * 3 - 1, "fail": 1, "skip": 0}
    assert counts["a -> b"]["ok"] == 2 * 2 * 2
    assert cross_host_counts(m.results, {}) == {}


# ------------------------------------------------------------------------------- status

def test_status_of_a_two_host_lab_before_apply(lab):
    st = lab.status()
    assert isinstance(st, LabStatus) and not st.up
    assert st.mtu == 1450 and st.mtu_reason == "VXLAN headroom" and st.bridge_mtu is None
    assert {e.name: e.host for e in st.endpoints} == {"api": "b", "db": "b", "probe": "a",
                                                     "web": "a"}
    check_golden(GOLDEN / "two-hosts.status", st.to_text())
    check_golden(GOLDEN / "two-hosts.status.json", json.dumps(st.to_dict(), indent=2))
    html = st._repr_html_()
    assert "<th>host</th>" in html and "<caption>hosts</caption>" in html
    assert "over 2 hosts" in html and "mtu 1450 (VXLAN headroom)" in html
    assert "VXLAN vni 4242" in html and "lab MTU 1450: VXLAN adds 50 bytes" in html


def test_a_one_machine_lab_keeps_its_columns_and_shows_its_mtu(tmp_path):
    one = Lab.from_dict({"name": "one", "endpoints": {"h1": {"kind": "host"}}},
                        backend="dry-run", state_dir=tmp_path)
    one.apply()
    st = one.status()
    assert st.headline() == ("Lab one on dry-run: bridge hybr0 10.0.1.0/24 gateway 10.0.1.1 "
                             "mtu 1500 (network.mtu) — up")
    assert st.to_text().splitlines()[1].split() == ["name", "kind", "address", "fqdn",
                                                    "state"]
    assert "host" not in st.records()[0] and st.to_dict()["hosts"] == []
    assert st.host_lines() == [] and "<th>host</th>" not in st._repr_html_()


def test_an_observed_bridge_mtu_that_drifted_is_flagged():
    st = LabStatus("d", "sandbox", "hybr0", "10.0.1.0/24", "10.0.1.1", mtu=1450,
                   mtu_reason="VXLAN headroom", bridge_mtu=1400)
    assert st.host_lines() == [
        "drift: " + bridge_mtu_drift("hybr0", 1450, 1400)]
    assert "drift: bridge hybr0 has MTU 1400" in st.to_text()
    assert "drift: bridge hybr0 has MTU 1400" in st._repr_html_()
    assert st.to_dict()["bridge_mtu"] == 1400


def test_cli_status_of_a_two_host_lab_file(capsys, tmp_path):
    from hybridnb.cli import main

    common = ["--dry-run", "--state-dir", str(tmp_path)]
    assert main(["status", str(TWO), *common]) == 1           # nothing applied: pending
    out = capsys.readouterr().out
    assert out.startswith("Lab mhv on dry-run over 2 hosts:") and "mtu 1450" in out
    assert "host b: docker ssh://lab@b" in out
    assert main(["status", str(TWO), *common, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["mtu"] == 1450 and [h["name"] for h in doc["hosts"]] == ["a", "b"]
    assert {e["name"]: e["host"] for e in doc["endpoints"]}["db"] == "b"


# ------------------------------------------------------------------------------ test (matrix)

def test_matrix_says_where_each_end_lives_and_counts_probes_across_hosts(lab):
    m = matrix_for(lab)
    assert m.spread
    check_golden(GOLDEN / "two-hosts.matrix", m.to_text())
    doc = json.loads(m.to_json())
    assert doc["hosts"]["db"] == "b" and doc["across_hosts"]["cross host"]["fail"] == 1
    html = m._repr_html_()
    assert "<th>db@b</th>" in html and "cross host: 19 ok, 1 failed" in html
    labels = [t.get_text() for t in m.heatmap("tcp").axes[0].get_xticklabels()]
    assert labels == ["api@b", "db@b", "probe@a", "web@a", "gateway@a"]
    ticks = [t.get_text() for t in m.distribution("icmp").axes[0].get_yticklabels()]
    assert ticks and all(t.count("@") == 2 for t in ticks)
    one = matrix_for(lab)
    one.hosts = {}
    assert not one.spread and one.host_lines() == [] and "@" not in one.to_text()
    assert "hosts" not in json.loads(one.to_json())


def test_lab_test_sets_the_hosts_of_the_matrix(lab, monkeypatch):
    """``Lab.test`` hands the matrix the placement (the probe run itself is stubbed: the
    dry-run backend has no lab host to probe from)."""
    import hybridnb.services.probe as probe

    made = matrix_for(lab)
    made.hosts = {}
    monkeypatch.setattr(Lab, "probe_endpoints", lambda self: ([], None))
    monkeypatch.setattr(probe, "probe_matrix", lambda *a, **kw: made)
    got = lab.test(("icmp",))
    assert got is made and got.hosts == host_of(lab.spec)


# ------------------------------------------------------------------------------- graph

def test_graph_draws_each_host_as_a_group_joined_by_vxlan(lab):
    from hybridnb.render.topology import RingLayout, draw_topology, topology_graph

    st = lab.status()
    g = topology_graph(st)
    assert g.nodes["bridge"]["host"] == "a" and g.nodes["gateway"]["host"] == "a"
    assert g.nodes["bridge@b"]["label"] == "hybr0@b\n10.0.8.0/24"
    assert {n: d["host"] for n, d in g.nodes(data=True) if n.startswith("ep:")} == {
        "ep:web": "a", "ep:probe": "a", "ep:api": "b", "ep:db": "b"}
    assert g.has_edge("ep:db", "bridge@b") and not g.has_edge("ep:db", "bridge")
    assert [(u, v) for u, v, k in g.edges(data="kind") if k == "vxlan"] == [
        ("bridge", "bridge@b")]
    layout = RingLayout()
    topo = draw_topology(st, layout=layout)
    xs = {n: p[0] for n, p in topo.positions.items()}
    # a's group left of b's: every node of a left of every node of b
    assert max(xs[n] for n in ("bridge", "gateway", "ep:web", "ep:probe")) < min(
        xs[n] for n in ("bridge@b", "ep:api", "ep:db"))
    again = draw_topology(lab.status(), layout=layout)
    assert again.positions == topo.positions
    assert topo.to_svg() == draw_topology(lab.status()).to_svg()      # deterministic
    assert "over 2 hosts, mtu 1450" in topo.figure._suptitle.get_text()


def test_graph_of_a_one_machine_lab_is_unchanged(tmp_path):
    from hybridnb.render.topology import topology_graph

    one = Lab.from_dict({"name": "one", "hosts": {"a": {"engine": "local"}},
                         "endpoints": {"h1": {"kind": "host"}}}, backend="dry-run",
                        state_dir=tmp_path)
    g = topology_graph(one.status())
    assert sorted(g.nodes) == ["bridge", "ep:h1", "gateway"]
    assert "host" not in g.nodes["ep:h1"]


# ---------------------------------------------------------------------------- monitor

def test_traffic_rows_carry_the_host_of_each_endpoint():
    from tests.render.reportlab import sample_traffic
    from hybridnb.services.monitor import TrafficReport
    import dataclasses

    plain = sample_traffic(["web", "api"])
    hosts = {"web": "a", "api": "b", "gateway": "a"}
    report = TrafficReport(plain.lab, plain.bridge, tuple(
        dataclasses.replace(s, hosts=hosts) for s in plain.samples))
    sample = report.samples[-1]
    assert sample.to_text().splitlines()[1].split()[:4] == ["endpoint", "kind", "host", "port"]
    assert [r["host"] for r in sample.records()] == ["a", "a", "b"]      # gateway first
    assert {r["endpoint"]: r["host"] for r in report.records()} == hosts
    assert report.to_text().splitlines()[1].split()[:3] == ["endpoint", "kind", "host"]
    assert "<th>host</th>" in report._repr_html_()
    assert "host" not in plain.records()[0] and "host" not in plain.samples[0].to_dict()[
        "ports"][0]


def test_the_lab_view_knows_the_hosts(lab):
    assert lab.view().hosts == host_of(lab.spec)


# ------------------------------------------------------------------------------ report

def test_report_has_a_hosts_section_and_endpoint_hosts(lab):
    from hybridnb.render.report import collect_report, render_json, render_markdown, schema

    jsonschema = pytest.importorskip("jsonschema")
    data = collect_report(lab, generated="2026-01-01T00:00:00+00:00", matrix=matrix_for(lab),
                          sections=["hosts", "endpoints"])
    hosts = data.section("hosts").data
    assert hosts["mtu"] == 1450 and hosts["probes"][1] == {"where": "cross host", "ok": 19,
                                                          "fail": 1, "skip": 0}
    check_golden(GOLDEN / "two-hosts.report-hosts.json", json.dumps(hosts, indent=2))
    rows = {r["name"]: r["host"] for r in data.section("endpoints").data["endpoints"]}
    assert rows == {"api": "b", "db": "b", "probe": "a", "web": "a"}
    doc = json.loads(render_json(data))
    jsonschema.Draft202012Validator(schema()).validate(doc)
    md, _ = render_markdown(data)
    section = md[md.index("## Hosts"):md.index("## Endpoints")]
    check_golden(GOLDEN / "two-hosts.report-hosts.md", section)
    assert "| name | kind | host | address |" in md


def test_report_of_a_one_machine_lab_has_no_hosts_section(tmp_path):
    from tests.render.reportlab import dry_lab
    from hybridnb.render.report import collect_report

    data = collect_report(dry_lab(tmp_path), generated="2026-01-01T00:00:00+00:00",
                          probe=False)
    assert "hosts" not in data.keys
    assert all("host" not in r for r in data.section("endpoints").data["endpoints"])


def test_cli_report_of_a_two_host_lab_file(capsys, tmp_path):
    from hybridnb.cli import main

    out = tmp_path / "mhv.json"
    assert main(["report", str(TWO), "--dry-run", "--state-dir", str(tmp_path / "s"),
                 "--no-probe", "-o", str(out), "-q"]) == 0
    doc = json.loads(out.read_text())
    assert doc["sections"]["hosts"]["data"]["hosts"][1]["reached"] == "docker ssh, libvirt ssh"
    assert "over 2 hosts" in doc["sections"]["overview"]["data"]["headline"]
