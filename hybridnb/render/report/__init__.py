"""Lab reports: one self-contained document of a lab as it is now — HTML, Markdown or JSON.

    from hybridnb.render.report import report_of
    rep = report_of(lab)              # asks the lab: status, plan, test, validate, dns...
    rep                               # renders inline in Jupyter; a text summary elsewhere
    rep.save("lab.html")              # or lab.md (pictures in lab_files/), lab.json

Three steps, each its own module:

* :mod:`.collect` — :func:`collect_report` asks a Lab-like object (public API only) for its
  results, once each, and lets every registered section take what it needs;
* :mod:`.sections` — the sections (overview, environment, lab file and plan, topology,
  endpoints, connectivity and latency, DNS, expectations, what apply did) in a registry a
  later feature adds its own section to;
* :mod:`.render` — Jinja2 templates (package data) turn the plain
  :class:`~.model.ReportData` into HTML and Markdown; JSON is the data itself, versioned
  and described by ``schema/report.schema.json``.

The section data comes from the result objects' own data methods — the same objects the CLI
prints and the notebook shows — so the report never formats a second truth.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hybridnb.render.report.collect import collect_report
from hybridnb.render.report.model import SCHEMA_VERSION, Figure, ReportData, SectionData
from hybridnb.render.report.render import (render_html, render_json, render_markdown, schema,
                                           write_report)
from hybridnb.render.report.sections import Section, register, registered, table_section


class LabReport:
    """A collected report that renders itself (text, inline HTML) and saves to a file."""

    def __init__(self, data: ReportData) -> None:
        self.data = data
        #: the documents :meth:`save` wrote, in order
        self.saved: list[Path] = []

    @property
    def lab(self) -> str:
        return self.data.lab

    def to_html(self) -> str:
        return render_html(self.data)

    def to_markdown(self, files_dir: str = "report_files") -> tuple[str, dict[str, str]]:
        return render_markdown(self.data, files_dir)

    def to_json(self) -> str:
        return render_json(self.data)

    def to_dict(self) -> dict[str, Any]:
        return self.data.to_dict()

    def save(self, path: str | os.PathLike[str], fmt: str | None = None) -> list[Path]:
        """Write the report; the format follows the suffix (.html, .md, .json) or ``fmt``.
        Returns the files written (a Markdown report's pictures too)."""
        written = write_report(self.data, path, fmt)
        self.saved.append(written[0])
        return written

    def to_text(self) -> str:
        lines = [f"Report of lab {self.data.lab} (generated {self.data.generated}): "
                 f"{len(self.data.sections)} sections"]
        for s in self.data.sections:
            lines.append(f"  {s.title}" + (f" — {s.note}" if s.note else ""))
        lines += [f"saved: {p}" for p in self.saved]
        return "\n".join(lines)

    __repr__ = to_text
    __str__ = to_text

    def _repr_html_(self) -> str:
        from html import escape

        saved = "".join(f"<code>{escape(str(p))}</code> " for p in self.saved)
        return render_html(self.data, standalone=False) + (
            f'<p class="hnb-saved">saved: {saved.strip()}</p>' if saved else "")


def report_of(lab: Any, **kw: Any) -> LabReport:
    """Collect ``lab``'s report (see :func:`collect_report` for the keywords)."""
    return LabReport(collect_report(lab, **kw))


__all__ = ["LabReport", "report_of", "collect_report", "ReportData", "SectionData", "Figure",
           "Section", "register", "registered", "table_section", "render_html",
           "render_markdown", "render_json", "write_report", "schema", "SCHEMA_VERSION"]
