"""The report's sections: a registry, filled by the modules of this package.

A :class:`Section` is a key, a title, an order and a ``collect(ctx)`` function that turns
the lab's results (through a :class:`~hybridnb.render.report.collect.Context`) into a
:class:`~hybridnb.render.report.model.SectionData` — or ``None`` when the section does not
apply to this lab (it is then left out).

Every module of this package that defines ``SECTION`` (or ``SECTIONS``, a tuple) is found
when the registry is first read, the way :mod:`hybridnb.core.kinds` finds the endpoint
kinds: :mod:`.builtin` (overview, environment, lab file and plan, topology, endpoints,
connectivity and latency, DNS, expectations, what apply did), :mod:`.policy` (policies and
link impairments, for a lab that has them), :mod:`.doctor` (doctor findings),
:mod:`.traffic` (traffic summary).  A later feature adds its section as one new
module here — nothing else to edit:

* ``layout="table"``: any result with ``records()`` (and ``summary()`` or ``headline()``)
  renders through the shared table templates (:func:`table_section`), and its JSON follows
  ``$defs/table`` of the schema — no template, no schema to write::

      SECTION = Section("policies", "Policies", 110, layout="table",
                        collect=lambda ctx: table_section(
                            "policies", "Policies", ctx.offer("policy"), why=ctx.why("policy")))

* ``layout="custom"``: the section's own templates ``templates/sections/<key>.html.j2`` and
  ``<key>.md.j2``, and ``schema=`` — the JSON Schema of its ``data`` — which
  :func:`~hybridnb.render.report.render.schema` adds to the report's schema as
  ``$defs/<key>`` (the built-in sections are described in ``schema/report.schema.json``
  itself).

:func:`register` adds a section at run time (tests, plugins); :func:`unregister` takes it away.
Data comes from the result objects' own data methods (``records()``, ``grid()``,
``summary()``, ``to_dict()``), never by re-deriving what they already say.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from hybridnb.render.report.model import SectionData

Collect = Callable[[Any], "SectionData | None"]


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    order: int
    collect: Collect
    layout: str = "custom"            # "custom": sections/<key>.*.j2; "table": sections/_table
    #: JSON Schema of the section's ``data`` (custom sections not described in the file)
    schema: Mapping[str, Any] | None = None


_REGISTRY: dict[str, Section] = {}
_discovered = [False]


def _discover() -> None:
    """Register the sections the modules of this package define (once)."""
    if _discovered[0]:
        return
    _discovered[0] = True
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found = vars(module).get("SECTIONS", ())
        single = vars(module).get("SECTION")
        for section in (*found, *((single,) if single is not None else ())):
            if isinstance(section, Section) and section.key not in _REGISTRY:
                _REGISTRY[section.key] = section


def register(section: Section) -> Section:
    """Add (or replace) a section; sections render in ``order``, then by key."""
    _discover()
    _REGISTRY[section.key] = section
    return section


def unregister(key: str) -> None:
    _discover()
    _REGISTRY.pop(key, None)


def registered() -> list[Section]:
    _discover()
    return sorted(_REGISTRY.values(), key=lambda s: (s.order, s.key))


def layout_of(key: str) -> str:
    _discover()
    section = _REGISTRY.get(key)
    return section.layout if section is not None else "custom"


def table_section(key: str, title: str, result: Any, *, why: str = "",
                  columns: list[str] | None = None) -> SectionData | None:
    """A ``layout="table"`` section from any result with ``records()`` (and optionally
    ``summary()`` or ``headline()``): its records become the rows.  None when there is no
    result and no reason to show (the feature is absent)."""
    if result is None:
        return SectionData(key, title, {"summary": "", "columns": [], "rows": []},
                           note=why) if why else None
    records = list(result.records())
    cols = columns or list(dict.fromkeys(k for r in records for k in r))
    text = ""
    for name in ("summary", "headline"):
        got = getattr(result, name, None)
        if callable(got):
            value = got()
            if isinstance(value, str):
                text = value
                break
    rows = [[_plain(r.get(c)) for c in cols] for r in records]
    return SectionData(key, title, {"summary": text, "columns": cols, "rows": rows})


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


__all__ = ["Section", "register", "unregister", "registered", "table_section", "layout_of"]
