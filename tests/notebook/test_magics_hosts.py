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
