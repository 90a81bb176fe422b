"""Topology drawing: stable ring layout, colours by kind and state, failed pairs in red,
deterministic output, and 200 endpoints drawn (and PNG-encoded) in under a second."""

from __future__ import annotations

import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hybridnb.lab import EndpointStatus, LabStatus
from hybridnb.render.topology import (FAILED_COLOUR, KIND_COLOURS, RingLayout, draw_topology,
                                      topology_graph)

ROOT = Path(__file__).resolve().parents[2]


def status_of(n_containers=2, n_vms=1, n_hosts=1, state="up", **states) -> LabStatus:
    eps = []
    i = 10
    for kind, n, prefix in (("container", n_containers, "c"), ("vm", n_vms, "v"),
                            ("host", n_hosts, "h")):
        for k in range(n):
            name = f"{prefix}{k:03d}"
            eps.append(EndpointStatus(name, kind, f"10.0.{i // 250}.{i % 250 + 2}",
                                      f"{name}.hybrid.local", states.get(name, state)))
            i += 1
    infra = (("bridge", "hybr0", state), ("dns", "t", state))
    return LabStatus("t", "dry-run", "hybr0", "10.0.0.0/22", "10.0.0.1",
                     tuple(sorted(eps, key=lambda e: e.name)), infra, 0)


def matrix_with_failures(pairs):
    from hybridnb.services.probe import ConnectivityMatrix, ProbeResult

    results = [ProbeResult("icmp", a, b, False, "timeout", sent=1) for a, b in pairs]
    results.append(ProbeResult("icmp", "c000", "h000", True, rtts=(1e-4,), sent=1, received=1))
    return ConnectivityMatrix.from_results(results)


@pytest.mark.extra("notebook")
def test_graph_nodes_edges_and_attributes():
    st = status_of(v000="missing", h000="not applied")
    g = topology_graph(st, matrix_with_failures([("c000", "v000"), ("v000", "c000"),
                                                 ("h000", "gateway")]))
    assert set(g.nodes) == {"bridge", "gateway", "ep:c000", "ep:c001", "ep:v000", "ep:h000"}
    assert g.nodes["ep:v000"]["state"] == "missing" and g.nodes["ep:c001"]["kind"] == "container"
    assert g.nodes["ep:c000"]["label"] == "c000\n10.0.0.12"
    assert "DNS" in g.nodes["gateway"]["label"]
    failed = {tuple(sorted((u, v))) for u, v, d in g.edges(data=True) if d["kind"] == "failed"}
    assert failed == {("ep:c000", "ep:v000"), ("ep:h000", "gateway")}   # both directions → one


def test_layout_is_stable_when_nodes_come_and_go():
    layout = RingLayout()
    first = layout.positions([("web", "container"), ("db", "container"), ("vm1", "vm")])
    second = layout.positions([("web", "container"), ("db", "container"), ("vm1", "vm"),
                               ("api", "container"), ("h1", "host")])
    assert all(second[k] == v for k, v in first.items())          # nobody moved
    third = layout.positions([("web", "container"), ("vm1", "vm"), ("h1", "host")])
    assert all(third[k] == second[k] for k in third)              # removing db moved no one
    back = layout.positions([("web", "container"), ("db", "container")])
    assert back["db"] == first["db"]                              # db got its old spot back
    # a fresh layout fed the same set gives the same places, whatever the order
    fresh = RingLayout().positions([("vm1", "vm"), ("db", "container"), ("web", "container")])
    assert fresh == first
    # no two endpoints share a spot, even over several rings
    many = RingLayout().positions([(f"n{i}", k) for i in range(150)
                                   for k in ("container", "vm", "host")][:300])
    assert len(set(many.values())) == len(many)


@pytest.mark.extra("notebook")
def test_colours_by_kind_and_state_and_failed_pairs_red():
    from matplotlib.colors import to_hex, to_rgba

    st = status_of(c001="missing")
    topo = draw_topology(st, matrix_with_failures([("c000", "v000")]))
    ax = topo.figure.axes[0]
    scatters = [c for c in ax.collections if hasattr(c, "get_offsets")
                and c.get_offsets().shape[0] and c.get_facecolors().shape[0]]
    colours = {to_hex(c.get_facecolors()[0], keep_alpha=False) for c in scatters}
    assert {KIND_COLOURS[k] for k in ("container", "vm", "host", "gateway")} <= colours
    container = next(c for c in scatters
                     if to_hex(c.get_facecolors()[0], keep_alpha=False) == KIND_COLOURS["container"])
    # c000 is up (opaque, thin dark border); c001 is missing (faded, thick red border)
    assert container.get_facecolors()[0][3] == 1.0 and container.get_facecolors()[1][3] < 1.0
    assert list(container.get_linewidths()) == [0.8, 2.2]
    lines = [c for c in ax.collections if c.__class__.__name__ == "LineCollection"]
    red = [c for c in lines if tuple(c.get_colors()[0][:3]) == to_rgba(FAILED_COLOUR)[:3]]
    assert len(red) == 1 and len(red[0].get_segments()) == 1
    assert topo.failed == [("c000", "v000")]
    assert "1 failed pair" in topo.figure._suptitle.get_text()


@pytest.mark.extra("notebook")
def test_drawing_is_deterministic():
    st = status_of(5, 3, 4)
    a = draw_topology(st).to_png()
    b = draw_topology(st).to_png()
    assert a == b and a[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.extra("notebook")
def test_200_nodes_render():
    png = draw_topology(status_of(70, 60, 70)).to_png()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000


@pytest.mark.real                       # wall-clock time: measured on the real machine only
@pytest.mark.extra("notebook")
def test_200_nodes_render_under_a_second(capsys):
    import matplotlib.figure  # noqa: F401  (imports are not rendering)
    import networkx  # noqa: F401

    st = status_of(70, 60, 70)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        png = draw_topology(st).to_png()
        times.append(time.perf_counter() - t)
    with capsys.disabled():
        print(f"\n200-node topology draw+PNG: first {times[0] * 1000:.0f} ms, median "
              f"{statistics.median(times) * 1000:.0f} ms ({len(png) // 1024} KiB)")
    assert statistics.median(times) < 1.0


@pytest.mark.extra("notebook")
def test_headless_without_pyplot_or_display():
    """Drawing needs no GUI backend and never imports pyplot (safe in threads and CI)."""
    code = textwrap.dedent("""\
        import sys
        from tests.render.test_topology import status_of
        from hybridnb.render.topology import draw_topology
        png = draw_topology(status_of()).to_png()
        print(len(png) > 1000, "matplotlib.pyplot" in sys.modules)
        """)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "MPLBACKEND": "TkAgg"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["True", "False"]
