"""The ``links:`` section: impairments of an endpoint's link to the lab bridge.

::

    links:
      db:  {delay: 20ms, jitter: 5ms, loss: 1%, rate: 100mbit}
      web: {mtu: 1400}

Read strictly when the file is read (:func:`hybridnb.core.impairments.parse_links`: units
required, every problem with its path and a hint).  Each impaired endpoint compiles to one
resource of kind ``link`` named after it (:func:`hybridnb.core.impairments.link_resource`),
made after the endpoints (stage 70: it needs their bridge ports) and deleted before them.
A changed impairment is an update in place (the link driver's ``update``): the endpoint is
never re-created for it.  A link resource ``needs`` its endpoint's kind: when an endpoint is
re-created its port is new, so the impairments are applied again.

What this host can give (netem for delay, tbf/IFB for rate, nftables for loss) is decided by
the link driver's ``check`` before anything is made, with the reason for what it cannot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from hybridnb.core.kinds import KINDS
from hybridnb.core.problems import Collector
from hybridnb.core.sections import Section
from hybridnb.errors import ValidationError

if TYPE_CHECKING:  # pragma: no cover
    from hybridnb.core.impairments import Impairment
    from hybridnb.core.kinds.base import CompileContext
    from hybridnb.core.resource import Resource
    from hybridnb.core.spec import LabSpec

#: After every endpoint kind (hosts 40, containers 50, VMs 60), before DNS (90).
STAGE = 70


class LinksSection(Section):
    key = "links"
    help = ("impairments per endpoint: `delay`, `jitter` (`us`/`ms`/`s`), `loss` (`%`), `rate` "
            "(`kbit`/`mbit`/`gbit`), `mtu`; changed in place; what this host cannot give is "
            "refused before anything is made")
    order = 42
    stages = {"link": STAGE}
    needs = {"link": KINDS}

    def parse(self, c: Collector, raw: Any,
              parsed: Mapping[str, Any]) -> dict[str, Impairment] | None:
        from hybridnb.core.impairments import parse_links

        if raw is None:
            return None
        names = [ep.name for ep in parsed.get("endpoints") or ()]
        try:
            return parse_links(raw, names) or None
        except ValidationError as exc:
            c.problems.extend(exc.problems)
            return None

    def dump(self, value: Mapping[str, Impairment] | None) -> Any:
        if not value:
            return None
        return {name: imp.to_yaml() for name, imp in sorted(value.items())}

    def compile(self, lab: LabSpec, ctx: CompileContext) -> list[Resource]:
        from hybridnb.core.impairments import link_resource
        from hybridnb.core.kinds import get

        out = []
        for name, imp in sorted((lab.sections.get(self.key) or {}).items()):
            ep = lab.endpoint(name)
            endpoint = get(ep.kind).compile(ep, ctx)
            out.append(link_resource(lab.name, {**endpoint.spec, "kind": ep.kind}, imp,
                                     bridge=ctx.network.bridge, default_mtu=ctx.network.mtu,
                                     guest_netem=ep.kind == "vm"))
        return out


def impairments_of(lab: LabSpec) -> dict[str, Impairment]:
    """The lab's impairments by endpoint ({} without a ``links:`` section)."""
    return dict(lab.sections.get("links") or {})


SECTION = LinksSection()
