"""The report's section on policies and link impairments (``policy``), in its own module.

For a lab with a ``policies:`` or ``links:`` section it shows the policy's rules with the
packets each decided since the last change (``Lab.policy()``), the rules that never match
(warnings), the probes the policy blocked as it says and any that leaked through a deny (from
the report's connectivity matrix), and every impaired link with where it is applied and what
its loss dropped (``Lab.links()``).  A lab with neither has no such section.

Templates: ``templates/sections/policy.html.j2`` and ``policy.md.j2``.  The JSON data::

    {"policy": {"headline", "state", "default", "rules": [{rule, from, to, verdict, services,
                comment, packets, bytes}], "warnings": [...]} | null,
     "links": {"headline", "rows": [{endpoint, kind, impairments, state, where, dropped}]}
              | null,
     "judged": [{check, source, target, status: blocked|leak, rule}]}
"""

from __future__ import annotations

from typing import Any

from hybridnb.render.report.model import SectionData
from hybridnb.render.report.sections import Section

KEY = "policy"
TITLE = "Policies and impairments"


def _rules(table: Any) -> list[dict[str, Any]]:
    return [{"rule": r["rule"], "from": r["from"], "to": r["to"], "verdict": r["verdict"],
             "services": r["services"], "comment": r["comment"],
             "packets": r.get("packets"), "bytes": r.get("bytes")} for r in table.records()]


def collect_policy(ctx: Any) -> SectionData | None:
    sections = ctx.lab.spec.sections
    has_policy, has_links = sections.get("policies") is not None, bool(sections.get("links"))
    if not has_policy and not has_links:
        return None
    data: dict[str, Any] = {"policy": None, "links": None, "judged": []}
    notes = []
    if has_policy:
        table = ctx.ask("policy", ctx.lab.policy)
        if table is not None:
            data["policy"] = {"headline": table.headline(), "state": table.state,
                              "default": table.policy.default, "rules": _rules(table),
                              "warnings": table.warnings()}
        else:
            notes.append(f"policy: {ctx.why('policy')}")
    if has_links:
        links = ctx.ask("links", ctx.lab.links)
        if links is not None:
            data["links"] = {"headline": links.headline(), "rows": links.records()}
        else:
            notes.append(f"links: {ctx.why('links')}")
    matrix = ctx.matrix
    if matrix is not None:
        data["judged"] = [{"check": c, "source": s, "target": t, "status": st, "rule": rule}
                          for (c, s, t), (st, rule) in sorted(matrix.judged.items())]
    return SectionData(KEY, TITLE, data, note="; ".join(notes))


SECTION = Section(KEY, TITLE, 75, collect_policy)

__all__ = ["SECTION", "collect_policy"]
