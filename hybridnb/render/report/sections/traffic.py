"""Section ``traffic``: what crossed the lab's bridge while the monitor watched.

The data is the monitor recording's own (``TrafficReport.to_dict()``): per endpoint (the
gateway too) the bytes sent and received, mean and peak rate, errors and drops — busiest
first — and, per sample, the bridge's total; the picture is the recording's plot (the busiest
endpoints' rates over time) as inline SVG.  The recording is the one handed in as
``traffic=`` (a notebook's live monitor, an earlier ``monitor()``), or ``monitor=SECONDS``
records one with the lab's ``monitor()`` while the report is made.
"""

from __future__ import annotations

from typing import Any

from hybridnb.render.report.model import Figure, SectionData
from hybridnb.render.report.sections import Section

KEY, TITLE = "traffic", "Traffic"


def collect(ctx: Any) -> SectionData | None:
    if not ctx.offers("monitor"):
        return None                                    # no monitor in this hybridnb
    report = ctx.traffic
    if report is None:
        return SectionData(KEY, TITLE, {}, note=ctx.why("monitor"))
    from hybridnb.render.traffic import report_headline

    doc = report.to_dict()
    samples = [{"time": s["time"], "interval": s["interval"],
                "total_bytes_s": s["total_bytes_s"], "total_packets_s": s["total_packets_s"]}
               for s in doc["samples"]]
    missing = sorted({(name, why) for s in report.samples for name, why in s.missing})
    data = {"headline": report_headline(report), "bridge": doc["bridge"],
            "duration_s": doc["duration"], "top": list(doc["top"]),
            "endpoints": doc["summary"], "samples": samples,
            "not_watched": [{"endpoint": n, "why": w} for n, w in missing]}
    figures: tuple[Figure, ...] = ()
    if report.samples:
        from hybridnb.render.figures import to_svg

        figures = (Figure("traffic", f"lab {report.lab}: traffic per endpoint",
                          to_svg(report.figure(), prefix="traffic")),)
    return SectionData(KEY, TITLE, data, figures)


_NUMBER = {"type": "number", "minimum": 0}
SCHEMA = {
    "type": "object",
    "properties": {
        "headline": {"type": "string"},
        "bridge": {"type": "string"},
        "duration_s": _NUMBER,
        "top": {"type": "array", "items": {"type": "string"},
                "description": "the busiest endpoints, busiest first"},
        "endpoints": {"type": "array", "items": {
            "type": "object",
            "properties": {"endpoint": {"type": "string"}, "kind": {"type": "string"},
                           "host": {"type": "string",
                                    "description": "the host it runs on (a lab with hosts:)"},
                           "port": {"type": "string"}, "tx_bytes": {"type": "integer"},
                           "rx_bytes": {"type": "integer"}, "mean_bytes_s": _NUMBER,
                           "peak_bytes_s": _NUMBER, "errors": _NUMBER, "drops": _NUMBER},
            "required": ["endpoint", "kind", "port", "tx_bytes", "rx_bytes", "mean_bytes_s",
                         "peak_bytes_s", "errors", "drops"],
            "additionalProperties": False}},
        "samples": {"type": "array", "items": {
            "type": "object",
            "properties": {"time": {"type": "number"}, "interval": _NUMBER,
                           "total_bytes_s": _NUMBER, "total_packets_s": _NUMBER},
            "required": ["time", "interval", "total_bytes_s", "total_packets_s"],
            "additionalProperties": False}},
        "not_watched": {"type": "array", "items": {
            "type": "object",
            "properties": {"endpoint": {"type": "string"}, "why": {"type": "string"}},
            "required": ["endpoint", "why"], "additionalProperties": False}},
    },
    "required": ["headline", "bridge", "duration_s", "top", "endpoints", "samples",
                 "not_watched"],
    "additionalProperties": False,
}

SECTION = Section(KEY, TITLE, 95, collect, schema=SCHEMA)

__all__ = ["SECTION", "SCHEMA", "collect"]
