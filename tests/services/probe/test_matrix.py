"""The connectivity matrix as plain data: stats, lookup, text/HTML, records, plots."""

from __future__ import annotations

import json

import pytest

from hybridnb.core.expect import evaluate, parse_expectations
from hybridnb.services.probe.matrix import ConnectivityMatrix, ProbeResult, median, percentile


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
