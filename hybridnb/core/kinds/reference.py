"""The reference of endpoint kinds and their fields, generated from the registry.

``hybridnb kinds`` and ``%hybrid kinds`` show it: for each kind, every YAML key with its type,
default, the ``%hybrid KIND NAME --option`` that sets it, and its help.  Nothing here is
written by hand, so the reference is true for every field a kind module declares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from hybridnb.core.kinds import get, kinds

COLUMNS = ["kind", "key", "type", "default", "option", "help"]


@dataclass(frozen=True)
class KindReference:
    """Every field of the chosen kinds (renders as text and as an HTML table)."""

    rows: tuple[tuple[str, str, str, str, str, str], ...] = field(default=())
    descriptions: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, names: Iterable[str] | None = None) -> KindReference:
        chosen = [get(n) for n in names] if names else list(kinds())
        rows = []
        for kind in chosen:
            for f in kind.fields():
                repeat = " (repeatable)" if f.type.repeat else ""
                rows.append((kind.name, f.name, f.type.describe(), f.describe_default(),
                             f"{f.option} {f.metavar}{repeat}", f.help))
        return cls(tuple(rows), tuple((k.name, k.description) for k in chosen))

    def headline(self) -> str:
        kinds_text = "; ".join(f"{name}: {text}" for name, text in self.descriptions)
        return f"Endpoint kinds — {kinds_text}"

    def to_text(self) -> str:
        from hybridnb.core.tables import text_table

        return self.headline() + "\n" + text_table(COLUMNS, [list(r) for r in self.rows])

    __repr__ = to_text
    __str__ = to_text

    def _repr_html_(self) -> str:
        from hybridnb.core.tables import table

        return table(COLUMNS, [list(r) for r in self.rows], caption=self.headline())


__all__ = ["KindReference"]
