"""Result objects the magics return where the Lab API itself has none to give.

* :class:`LabSummary` — the lab *as described* (not as the engines see it): network and one
  row per endpoint with the address it has or will get and its details (as its kind module
  renders them).  Editing commands (``create``,
  ``container``, ``vm``, ``host``, ``remove``) return it; it needs no engine.
* :class:`HelpText` — ``%hybrid help`` (usage lines generated from the parsers).

Each renders as text (``repr``) and as HTML (``_repr_html_``), like every hybridnb result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any, Mapping


@dataclass(frozen=True)
class LabSummary:
    lab: str
    bridge: str
    subnet: str
    gateway: str
    domain: str
    rows: tuple[tuple[str, str, str, str], ...] = ()     # name, kind, address, details
    note: str = ""
    #: endpoint → host, for a lab with ``hosts:`` (a ``host`` column)
    hosts: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, lab: Any, note: str = "") -> "LabSummary":
        spec = lab.spec
        net = spec.network
        try:
            addresses = {k: str(v) for k, v in lab.addresses().items()}
        except Exception:  # an exhausted pool: show what we have
            addresses = {}
        from hybridnb.core.kinds import get

        rows = [(ep.name, ep.kind, addresses.get(ep.name, "?"), get(ep.kind).details(ep))
                for ep in spec.endpoints]
        from hybridnb.core.multihost import placement

        return cls(spec.name, net.bridge, str(net.subnet), str(net.gateway), net.domain,
                   tuple(rows), note, placement(spec))

    def _table(self) -> tuple[list[str], list[list[str]]]:
        """Columns and cells: with a ``host`` column after ``kind`` for a lab with hosts."""
        if not self.hosts:
            return ["name", "kind", "address", "details"], [list(r) for r in self.rows]
        return (["name", "kind", "host", "address", "details"],
                [[r[0], r[1], self.hosts.get(r[0], ""), r[2], r[3]] for r in self.rows])

    def headline(self) -> str:
        n = len(self.rows)
        head = (f"Lab {self.lab}: bridge {self.bridge} {self.subnet}, gateway {self.gateway}, "
                f"domain {self.domain}, {n} endpoint{'s' if n != 1 else ''}")
        return f"{head} — {self.note}" if self.note else head

    def to_text(self) -> str:
        from hybridnb.core.tables import text_table

        text = self.headline()
        if self.rows:
            text += "\n" + text_table(*self._table())
        return text

    __repr__ = to_text
    __str__ = to_text

    def _repr_html_(self) -> str:
        from hybridnb.core.tables import table

        return table(*self._table(), caption=self.headline())


@dataclass(frozen=True)
class HelpText:
    usage: tuple[tuple[str, str], ...] = field(default=())

    def to_text(self) -> str:
        lines = ["%hybrid SUBCOMMAND [options]   (add -h to any subcommand for its options)"]
        for u, h in self.usage:
            lines += [f"  {u}", f"      {h}"]
        lines.append("Options: %config HybridMagics.backend / .lab / .state_dir / .sandbox;"
                     " -o NAME stores the result in NAME; %%hybrid [--apply] takes a YAML lab.")
        return "\n".join(lines)

    __repr__ = to_text
    __str__ = to_text

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td><code>%hybrid {escape(u)}</code></td><td>{escape(h)}</td></tr>"
                       for u, h in self.usage)
        return (f'<table class="hnb"><caption>%hybrid — add -h to any subcommand</caption>'
                f"{rows}</table>")
