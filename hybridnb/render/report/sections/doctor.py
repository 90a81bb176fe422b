"""Section ``doctor``: what the lab's doctor finds — every check, problems first, each with
what was found, why it matters and the command that fixes it.

The data is the doctor report's own (``DoctorReport.to_dict()``: headline, counts, exit code
and the findings with their check ids), asked from the lab's ``doctor()`` once (or handed in
as ``doctor=``).  The doctor looks only — it never fixes from a report — and it sends ARP and
DNS queries inside the lab, so ``probe=False`` leaves it out.  The troubleshooting page of
the user guide has one entry per check id (``docs/troubleshooting.md#check-ID``).
"""

from __future__ import annotations

import json
from typing import Any

from hybridnb.render.report.model import SectionData
from hybridnb.render.report.sections import Section

KEY, TITLE = "doctor", "Doctor findings"
STATUSES = ("fail", "warn", "ok")


def _finding(f: dict[str, Any]) -> dict[str, Any]:
    return {"check": str(f["check"]), "title": str(f.get("title", "")),
            "group": str(f.get("group", "")), "status": str(f["status"]),
            "found": str(f.get("found", "")), "why": str(f.get("why", "")),
            "fix": str(f.get("fix_command", "")), "fixable": bool(f.get("fixable")),
            # what the check measured, as it says it (versions, counts…): JSON as is
            "data": json.loads(json.dumps(dict(f.get("data") or {}), default=str))}


def collect(ctx: Any) -> SectionData | None:
    if not ctx.offers("doctor"):
        return None                                    # no doctor in this hybridnb
    report = ctx.doctor
    if report is None:
        return SectionData(KEY, TITLE, {}, note=ctx.why("doctor"))
    doc = report.to_dict()
    findings = [_finding(f) for f in doc["findings"]]
    counts = {s: sum(f["status"] == s for f in findings) for s in STATUSES}
    return SectionData(KEY, TITLE, {
        "headline": report.headline(), "where": str(doc.get("where") or ""),
        "exit_code": int(doc["exit_code"]), "counts": counts, "findings": findings})


_FINDING = {
    "type": "object",
    "properties": {
        "check": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]*$",
                  "description": "the check's id (docs/troubleshooting.md#check-ID)"},
        "title": {"type": "string"},
        "group": {"type": "string"},
        "status": {"enum": list(STATUSES)},
        "found": {"type": "string"},
        "why": {"type": "string", "description": "why it matters"},
        "fix": {"type": "string", "description": "the command that fixes it (or empty)"},
        "fixable": {"type": "boolean", "description": "whether doctor --fix applies it"},
        "data": {"type": "object", "description": "what the check measured"},
    },
    "required": ["check", "title", "group", "status", "found", "why", "fix", "fixable",
                 "data"],
    "additionalProperties": False,
}

SCHEMA = {
    "type": "object",
    "properties": {
        "headline": {"type": "string"},
        "where": {"type": "string", "description": "the target the doctor looked at"},
        "exit_code": {"enum": [0, 1, 2], "description": "0 all ok, 1 warnings, 2 failures"},
        "counts": {"type": "object",
                   "properties": {s: {"type": "integer", "minimum": 0} for s in STATUSES},
                   "required": list(STATUSES), "additionalProperties": False},
        "findings": {"type": "array", "items": _FINDING},
    },
    "required": ["headline", "where", "exit_code", "counts", "findings"],
    "additionalProperties": False,
}

SECTION = Section(KEY, TITLE, 100, collect, schema=SCHEMA)

__all__ = ["SECTION", "SCHEMA", "collect"]
