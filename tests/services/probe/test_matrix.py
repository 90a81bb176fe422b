"""The connectivity matrix as plain data: stats, lookup, text/HTML, records, plots."""

from __future__ import annotations

import json

import pytest

from hybridnb.core.expect import evaluate, parse_expectations
from hybridnb.services.probe.matrix import ConnectivityMatrix, ProbeResult, median, percentile
from tests.helpers.matrices import mesh


def sample() -> ConnectivityMatrix:
    rs = [
        ProbeResult("icmp", "web", "db", True, rtts=(0.00002, 0.00001, 0.00003), sent=3,
                    received=3, address="10.0.1.3"),
        ProbeResult("icmp", "db", "web", False, "timeout", sent=3, address="10.0.1.2"),
        ProbeResult("icmp", "web", "gateway", True, rtts=(0.001,), sent=1, received=1),
        ProbeResult("tcp", "web", "db", True, rtts=(0.0002,), sent=1, received=1, port=5432),
        ProbeResult("tcp", "db", "web", None, "no responder", port=7),
    ]
    return ConnectivityMatrix(rs, sources=["db", "web"], targets=["db", "web", "gateway"],
                              checks=["icmp", "tcp"], duration=0.012, timeout=1.0, count=3)


def test_stats():
    r = sample().get("icmp", "web", "db")
    assert (r.rtt_min, r.rtt_median, r.rtt_p99) == (0.00001, 0.00002, 0.00003)
    assert r.loss == 0.0 and r.status == "ok"
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5 and median([]) is None
    assert percentile(list(range(1, 101)), 99) == 99 and percentile([5.0], 99) == 5.0


def test_lookup_by_protocol_and_port():
    m = sample()
    assert m.lookup("tcp", "web", "db", 5432).ok is True
    assert m.lookup("tcp", "web", "db", 22) is None
    assert m.lookup("icmp", "db", "web").reason == "timeout"
    report = evaluate(parse_expectations(["web -> db tcp/5432 ok", "db -> web icmp blocked",
                                          "db -> web tcp/7 ok"]), m)
    assert [r.observed for r in report.results] == ["ok", "fail", "skip"]
    assert report.exit_code == 1


def test_counts_and_failures():
    m = sample()
    assert m.counts() == {"ok": 3, "fail": 1, "skip": 1}
    assert [(r.source, r.target) for r in m.failures()] == [("db", "web")]
    assert not m.ok
    assert m.summary() == "5 probes over 2 checks in 12 ms: 3 ok, 1 failed, 1 skipped"


def test_text_grid():
    text = sample().to_text()
    assert "icmp: 2 ok, 1 failed, 0 skipped" in text
    lines = text.splitlines()
    row = next(l for l in lines if l.startswith("web ") and "0.020" in l)
    assert row.split() == ["web", "0.020", ".", "1.0"]
    assert "FAIL" in next(l for l in lines if l.startswith("db ") and "FAIL" in l)
    assert "icmp      db -> web: fail (timeout)" in text
    assert "tcp       db -> web: skip (no responder)" in text
    assert repr(sample()) == text


def test_html_grid_colours_and_tooltips():
    html = sample()._repr_html_()
    assert html.count('<table class="hnb">') == 2
    assert 'class="ok"' in html and 'class="fail"' in html and ">skip<" in html
    assert "db → web: timeout" in html
    assert "<th>gateway</th>" in html


def test_records_and_json_roundtrip():
    m = sample()
    rec = m.records()[0]
    assert rec == {"check": "icmp", "protocol": "icmp", "port": None, "source": "web",
                   "target": "db", "address": "10.0.1.3", "status": "ok", "ok": True,
                   "reason": "", "sent": 3, "received": 3, "rtt_min_ms": 0.01,
                   "rtt_median_ms": 0.02, "rtt_p99_ms": 0.03,
                   "rtts_ms": [0.02, 0.01, 0.03], "detail": ""}
    doc = json.loads(m.to_json())
    assert doc["checks"] == ["icmp", "tcp"] and len(doc["results"]) == 5
    assert m.to_json() == sample().to_json()          # deterministic


def test_from_results_derives_order():
    m = ConnectivityMatrix.from_results(sample().results)
    assert m.sources == ["web", "db"] and m.checks == ["icmp", "tcp"]


def test_plots_render_headless():
    pytest.importorskip("matplotlib")
    m = sample()
    fig = m.heatmap("icmp")
    assert fig.axes[0].get_title() == "icmp: 2 ok, 1 failed"
    fig.savefig(__import__("io").BytesIO(), format="png")
    fig2 = m.distribution("icmp")
    labels = [t.get_text() for t in fig2.axes[0].get_yticklabels()]
    assert labels == ["web → gateway", "web → db"]
    fig2.savefig(__import__("io").BytesIO(), format="png")


# ------------------------------------------------------------------ readable at scale (#13)

def test_an_all_ok_50_endpoint_run_is_a_short_summary():
    m = mesh()
    text = m.to_text()
    lines = text.splitlines()
    assert len(lines) <= 10, text
    assert lines[0] == "5000 probes over 2 checks in 500 ms: 5000 ok, 0 failed, 0 skipped"
    assert "icmp   2500  0       0        0.040          0.040" in text
    assert "every probe answered (50 sources, 51 targets; --verbose: the grids" in text
    assert "from \\ to" not in text                           # no 51-column grids
    assert repr(m) == text
    verbose = m.to_text(verbose=True)
    assert verbose.count("from \\ to") == 2 and len(verbose.splitlines()) > 100
    import dataclasses
    assert repr(dataclasses.replace(m, verbose=True)) == verbose
    html = m._repr_html_()
    assert "<caption>per check</caption>" in html and html.count('<table class="hnb">') == 1


def test_failures_are_listed_in_full_and_grouped():
    odd = [ProbeResult("tcp/5432", "h00", "db", False, "refused", port=5432),
           ProbeResult("tcp/5432", "h01", "db", False, "refused", port=5432),
           ProbeResult("tcp/5432", "h02", "db", True, rtts=(0.001,), port=5432),
           ProbeResult("tcp/5432", "h03", "h04", False, "timeout", port=5432)]
    m = mesh(dead="h25", extra=odd)
    text = m.to_text()
    problems = text.split("not ok:\n", 1)[1].splitlines()
    assert problems == [
        "  icmp      h25 -> every target (50): fail (timeout)",
        "  icmp      every source (49) -> h25: fail (timeout)",
        "  tcp       h25 -> every target (50): fail (timeout)",
        "  tcp       every source (49) -> h25: fail (timeout)",
        "  tcp/5432  h00, h01 -> db: fail (refused)",
        "  tcp/5432  h03 -> h04: fail (timeout)",
    ], text
    assert "icmp      2401  99 " in text


def test_many_scattered_failures_are_capped_unless_verbose():
    rs = [ProbeResult("icmp", f"h{i:02d}", f"h{(i + 1) % 90:02d}", False, f"reason {i}")
          for i in range(90)]
    m = ConnectivityMatrix.from_results(rs)
    text = m.to_text()
    assert "… and 30 more lines" in text
    assert len(m.to_text(verbose=True).split("not ok:\n", 1)[1].splitlines()) == 90


def test_names_are_compacted_in_natural_order():
    from hybridnb.services.probe.matrix import compact_names

    assert compact_names([f"h{i:02d}" for i in range(12)] + ["web", "h14", "db"]) == \
        "db, h00..h11, h14, web"
    assert compact_names([f"h{i}" for i in range(1, 13)] + ["h15", "h16"]) == \
        "h1..h12, h15, h16"
    assert compact_names(["v2", "c1", "v1"]) == "c1, v1, v2"
