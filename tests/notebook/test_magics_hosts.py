"""``%hybrid status`` and ``%hybrid graph`` of a lab file spread over two hosts (dry-run, not
applied): the status has its hosts, the graph a bridge per host."""

from __future__ import annotations

from pathlib import Path

TWO = Path(__file__).resolve().parents[1] / "golden" / "views" / "two-hosts.yaml"


def test_magic_status_of_a_two_host_lab_file(shell):
    from tests.notebook.conftest import run

    run(shell, f"%hybrid create {TWO}")
    st = run(shell, "%hybrid status")
    assert st.hosts and {e.host for e in st.endpoints} == {"a", "b"}
    topo = run(shell, "%hybrid graph")
    assert {n for n, d in topo.graph.nodes(data=True) if d["kind"] == "bridge"} == {
        "bridge", "bridge@b"}


def test_create_summary_has_a_host_column(shell):
    from tests.notebook.conftest import run

    summary = run(shell, f"%hybrid create {TWO}")
    lines = summary.to_text().splitlines()
    assert lines[1].split() == ["name", "kind", "host", "address", "details"]
    assert any(line.split()[:3] == ["db", "vm", "b"] for line in lines[3:])
    assert "<th>host</th>" in summary._repr_html_()
    run(shell, "%hybrid create --name onehost --subnet 10.0.5.0/24")
    one = run(shell, "%hybrid host h1")
    assert one.hosts == {} and one.to_text().splitlines()[1].split() == [
        "name", "kind", "address", "details"]


def test_live_topology_says_the_hosts_and_each_endpoints_host(tmp_path):
    from hybridnb.lab import Lab
    from hybridnb.notebook.topology_widget import TopologyWidget

    lab = Lab.load(TWO, backend="dry-run", state_dir=tmp_path)
    widget = TopologyWidget(lab, interval=60, autostart=False)
    widget.refresh()
    assert "4 endpoints over 2 hosts (mtu 1450)" in widget.caption.value
    assert widget.endpoint_details("db")["host"] == "b"
    widget.show_details("db")
    assert "<td>host</td><td><code>b</code>" in widget.details.value
