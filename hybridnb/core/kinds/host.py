"""Kind ``host``: a plain network namespace with a veth on the lab bridge.

The cheapest endpoint a lab can have — no daemon, no image, about a millisecond to make —
which is why tests and scale experiments use them.  The resource spec carries the common
network facts plus the namespace name, the veth pair and a stable MAC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from hybridnb.core import naming
from hybridnb.core.kinds.base import CompileContext, EndpointSpec, KeyValues, Kind, spec_field
from hybridnb.core.problems import text_value


@dataclass(frozen=True)
class HostSpec(EndpointSpec):
    kind: str = "host"
    labels: Mapping[str, str] = spec_field(
        KeyValues(check=lambda k, v: text_value(v)), default={}, option="label",
        help="labels that policy groups and label:K=V selectors match (nothing else reads "
             "them)")


class HostKind(Kind):
    name = "host"
    spec = HostSpec
    title = "host"
    plural = "hosts"
    description = "a plain network namespace with a veth on the bridge (cheap: tests, scale)"
    rank = 3
    stage = 40
    pool_offset = 10
    colour = "#2ca02c"
    names = {("netns",): "name", ("veth",): "name", ("peer",): "name", ("mac",): "name",
             ("hostname",): "name"}

    def base_spec(self, ep: EndpointSpec, ctx: CompileContext) -> dict[str, Any]:
        spec = ctx.common(ep)
        veth, peer = naming.veth_pair(ctx.lab, ep.name)
        spec.update({"netns": naming.object_name(ctx.lab, ep.name), "veth": veth, "peer": peer,
                     "mac": naming.mac_address(ctx.lab, ep.name)})
        return spec

    def summary(self, ep: EndpointSpec, spec: Mapping[str, Any]) -> str:
        return f"{spec['address']} netns {spec['netns']}"

    def details(self, ep: EndpointSpec) -> str:
        return "network namespace"


KIND = HostKind()
