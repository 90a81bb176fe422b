"""The report's data: plain values, collected once, rendered three ways.

A :class:`ReportData` is what :func:`~hybridnb.render.report.collect.collect_report` gathers
from a lab and what every renderer reads — HTML, Markdown and JSON show the same sections
with the same values.  Each :class:`SectionData` carries JSON-able ``data`` (the records the
result objects export: ``LabStatus.records()``, ``Plan.records()``,
``ConnectivityMatrix.grid()``…), its pictures as :class:`Figure` (inline SVG, drawn from the
same objects), and a ``note`` saying why a section has nothing to show (the dry-run backend
sends no packets, the lab has no ``expect:`` lines…).

Only :attr:`ReportData.generated` depends on the clock: equal labs give equal reports but for
it (measurements, of course, are what they were when measured).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Version of the JSON document (``schema/report.schema.json``); bump it when a field changes
#: meaning or disappears, not when a section is added.
SCHEMA_VERSION = 1
SCHEMA_ID = "https://hybridnb.dev/schema/report-v1.json"


@dataclass(frozen=True)
class Figure:
    """One picture of a section: ``name`` is its file stem beside a Markdown report."""

    name: str
    title: str
    svg: str


@dataclass(frozen=True)
class SectionData:
    key: str
    title: str
    data: dict[str, Any] = field(default_factory=dict)
    figures: tuple[Figure, ...] = ()
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "note": self.note, "data": self.data,
                "figures": [{"name": f.name, "title": f.title} for f in self.figures]}


@dataclass(frozen=True)
class ReportData:
    """A lab's report: its name, when it was made, and its sections in order."""

    lab: str
    generated: str                       # ISO 8601, UTC — the one value the clock decides
    version: str                         # hybridnb's
    sections: tuple[SectionData, ...] = ()

    def section(self, key: str) -> SectionData | None:
        return next((s for s in self.sections if s.key == key), None)

    @property
    def keys(self) -> list[str]:
        return [s.key for s in self.sections]

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (see ``schema/report.schema.json``)."""
        return {"$schema": SCHEMA_ID, "schema_version": SCHEMA_VERSION, "lab": self.lab,
                "generated": self.generated, "hybridnb": self.version,
                "order": self.keys, "sections": {s.key: s.to_dict() for s in self.sections}}


__all__ = ["Figure", "SectionData", "ReportData", "SCHEMA_VERSION", "SCHEMA_ID"]
