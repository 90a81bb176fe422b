"""Rendering a :class:`~hybridnb.render.report.model.ReportData`: HTML, Markdown and JSON.

* **HTML** — one self-contained document: the stylesheet inline, every picture an inline
  ``<svg>`` (raster parts of a plot are ``data:`` URIs inside it), no script, no link to
  anything outside the file.  The styles are scoped under ``.hnb-report``, so the same body
  shows inside a notebook (:func:`render_html` with ``standalone=False``).  It reads on a
  phone (wide tables scroll in their own box, pictures shrink) and prints (no navigation,
  no breaks inside a table row or a picture).
* **Markdown** — the same sections in the same order; pictures are SVG files in a folder
  beside the document (``REPORT_files/``), linked relatively.
* **JSON** — :meth:`ReportData.to_dict`, checked against :func:`schema`: the file
  ``schema/report.schema.json`` (the document and the built-in sections) plus the ``schema``
  each registered custom section carries.

Templates are Jinja2 files in ``templates/`` (package data): ``report.html.j2`` and
``report.md.j2`` lay the page out and include one template per section
(``sections/<key>.html.j2``/``.md.j2``, or the shared ``sections/_table.*`` for sections
with ``layout="table"``).  Undefined values are errors, not blanks.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from hybridnb.core.tables import format_ms
from hybridnb.errors import HybridError
from hybridnb.render.report.model import ReportData

FORMATS = {".html": "html", ".htm": "html", ".md": "markdown", ".markdown": "markdown",
           ".json": "json"}


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return _dt.datetime.fromtimestamp(float(ts), _dt.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def _mdcell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _join(value: Any, sep: str = " ") -> str:
    if isinstance(value, (list, tuple)):
        return sep.join(str(v) for v in value)
    return "" if value is None else str(value)


def _rows(records: Any, *keys: str) -> list[list[Any]]:
    """Table rows from records: the values of ``keys``, in that order."""
    return [[r.get(k) for k in keys] for r in records or []]


def _pluck(records: Any, key: str) -> list[Any]:
    return [r.get(key) for r in records or []]


@lru_cache(maxsize=1)
def environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("hybridnb.render.report", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",),
                                            default_for_string=False),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True)
    from hybridnb.render.traffic import rate, size

    env.filters.update(ms=format_ms, iso=_iso, mdcell=_mdcell, join_words=_join, rows=_rows,
                       pluck=_pluck, rate=rate, size=size)
    return env


def _sections(data: ReportData, fmt: str) -> list[tuple[Any, str]]:
    from hybridnb.render.report.sections import layout_of

    ext = {"html": "html.j2", "markdown": "md.j2"}[fmt]
    return [(s, f"sections/{'_table' if layout_of(s.key) == 'table' else s.key}.{ext}")
            for s in data.sections]


def render_html(data: ReportData, *, standalone: bool = True) -> str:
    """The report as one HTML document (``standalone=False``: the ``<style>`` and body to
    show inside a page, e.g. a notebook)."""
    template = environment().get_template("report.html.j2")
    return template.render(r=data, sections=_sections(data, "html"), standalone=standalone)


def render_markdown(data: ReportData,
                    files_dir: str = "report_files") -> tuple[str, dict[str, str]]:
    """The report as Markdown, and the pictures it links: ``{relative path: svg text}``."""
    template = environment().get_template("report.md.j2")
    files = {f"{files_dir}/{f.name}.svg": f.svg for s in data.sections for f in s.figures}
    text = template.render(r=data, sections=_sections(data, "markdown"), files_dir=files_dir)
    return text, files


def render_json(data: ReportData) -> str:
    return json.dumps(data.to_dict(), indent=2, ensure_ascii=False) + "\n"


def schema() -> dict[str, Any]:
    """The JSON Schema every JSON report validates against: ``schema/report.schema.json``,
    and ``$defs/<key>`` for each registered section that carries its own ``schema`` (the
    JSON Schema of its data)."""
    from importlib.resources import files

    from hybridnb.render.report.sections import registered

    doc = json.loads(files("hybridnb.render.report").joinpath(
        "schema/report.schema.json").read_text())
    described = doc["properties"]["sections"]["properties"]
    for section in registered():
        if section.schema is None or section.key in described:
            continue
        doc["$defs"][section.key] = {
            "description": f"the {section.key} section",
            "allOf": [{"$ref": "#/$defs/section"},
                      {"properties": {"data": {"anyOf": [
                          {"type": "object", "maxProperties": 0},
                          json.loads(json.dumps(section.schema))]}}}]}
        described[section.key] = {"$ref": f"#/$defs/{section.key}"}
    return doc


class UnknownFormat(HybridError):
    """A report was asked for in a format there is none of (a usage error: exit code 2)."""

    exit_code = 2


def format_for(path: str | os.PathLike[str], fmt: str | None = None) -> str:
    """``html``, ``markdown`` or ``json``: ``fmt``, else what the file's suffix says."""
    if fmt is not None:
        if fmt not in ("html", "markdown", "json"):
            raise UnknownFormat(f"unknown report format {fmt!r}",
                                hint="use html, markdown or json")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise UnknownFormat(f"cannot tell the report format from {str(path)!r}",
                            hint="name the file .html, .md or .json")
    return FORMATS[suffix]


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(data: ReportData, path: str | os.PathLike[str],
                 fmt: str | None = None) -> list[Path]:
    """Write the report to ``path`` in the format its suffix names (or ``fmt``); returns
    the files written (a Markdown report's pictures go to ``<stem>_files/`` beside it)."""
    target = Path(path)
    kind = format_for(target, fmt)
    target.parent.mkdir(parents=True, exist_ok=True)
    if kind == "html":
        _write(target, render_html(data))
        return [target]
    if kind == "json":
        _write(target, render_json(data))
        return [target]
    text, files = render_markdown(data, f"{target.stem}_files")
    written = [target]
    for rel, svg in files.items():
        out = target.parent / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        _write(out, svg)
        written.append(out)
    _write(target, text)
    return written


__all__ = ["render_html", "render_markdown", "render_json", "write_report", "schema",
           "format_for", "FORMATS", "UnknownFormat"]
