"""Top-level sections of a lab file beyond the built-in ones, registered by module.

A lab file is a mapping of sections.  ``name``, ``network``, ``endpoints`` and ``expect`` are
built in (:mod:`hybridnb.core.spec`); each module in this package that defines ``SECTION`` (a
:class:`Section`) adds one more — ``images:``, ``policies:``, ``hosts:`` — without editing the
parser.  A section

* parses its value, reporting every problem to the collector (``parse``);
* checks it against the whole lab once every section is parsed (``check``: e.g. that an
  endpoint's ``image:`` names a recipe of the ``images:`` section);
* may fill in what endpoints leave to it once the lab is valid (``complete``: e.g. the
  services an endpoint offers when it runs an image recipe and declares none);
* writes it back (``dump``; ``None`` leaves the key out);
* may compile resources of its own kinds (``compile``), whose places in the creation order
  it declares in ``stages`` (bridge 10, firewall 20, Docker network 30, hosts 40,
  containers 50, VMs 60, DNS 90), and which other kinds each of them ``needs`` (a replaced
  resource of a needed kind replaces them too: impairments live on the endpoints' ports);
* describes itself for the generated lab-file reference (``value``, ``help`` or its
  docstring, and ``reference_rows()`` for the keys inside it).

Parsed values of these sections are in ``LabSpec.sections[key]``.  :func:`register` adds a
section at run time (tests, plugins); :func:`unregister` takes it away again.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from hybridnb.core.kinds.base import CompileContext
    from hybridnb.core.problems import Collector
    from hybridnb.core.resource import Resource
    from hybridnb.core.spec import LabSpec


class Section:
    """One top-level key of a lab file."""

    key: ClassVar[str]
    #: parse order among sections (built-ins: name 0, network 10, endpoints 20, expect 30)
    order: ClassVar[int] = 50
    #: resource kinds this section compiles, with their place in the creation order
    stages: ClassVar[Mapping[str, int]] = {}
    #: per resource kind of this section, the kinds whose replacement replaces it too
    needs: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    #: what ``parse`` receives when the key is absent (a key written empty gives ``None``)
    absent: ClassVar[Any] = None
    #: for the lab-file reference (``docs/lab-file.md``): what the key holds (``mapping``,
    #: ``list of strings``…) and what it means (default: the class docstring's first line)
    value: ClassVar[str] = "mapping"
    help: ClassVar[str] = ""

    def describe(self) -> str:
        """What the key means, in one line (for the lab-file reference)."""
        doc = (type(self).__doc__ or "").strip()
        return self.help or (doc.splitlines()[0] if doc else "")

    def reference_rows(self) -> tuple[tuple[str, str, str, str], ...]:
        """The keys inside the section's value, for the lab-file reference: ``(key, type,
        default, meaning)`` each (none: the reference shows the section's own line only)."""
        return ()

    def parse(self, c: Collector, raw: Any, parsed: Mapping[str, Any]) -> Any:
        """The section's value from ``raw`` (:attr:`absent` when the key is absent);
        ``parsed`` holds the values of the sections parsed before this one."""
        raise NotImplementedError

    def check(self, c: Collector, lab: LabSpec) -> None:
        """Rules that need the whole lab."""

    def complete(self, lab: LabSpec) -> LabSpec:
        """The lab with what this section decides for its endpoints filled in (called once
        the whole lab is valid; default: unchanged)."""
        return lab

    def dump(self, value: Any) -> Any:
        """The YAML form of the value (``None``: leave the key out)."""
        return value

    def compile(self, lab: LabSpec, ctx: CompileContext) -> list[Resource]:
        return []


_REGISTERED: dict[str, Section] = {}
_generation = [0]


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        section = vars(module).get("SECTION")
        if isinstance(section, Section):
            register(section)


def register(section: Section) -> None:
    _REGISTERED[section.key] = section
    _generation[0] += 1


def unregister(key: str) -> None:
    if _REGISTERED.pop(key, None) is not None:
        _generation[0] += 1


def extra_sections() -> tuple[Section, ...]:
    """The registered sections, in parse order."""
    return tuple(sorted(_REGISTERED.values(), key=lambda s: (s.order, s.key)))


def generation() -> int:
    """Changes whenever a section is registered or unregistered (for caches)."""
    return _generation[0]


_discover()

__all__ = ["Section", "extra_sections", "generation", "register", "unregister"]
