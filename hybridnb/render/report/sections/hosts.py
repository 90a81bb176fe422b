"""The report's section on the machines a lab is spread over (``hosts``), in its own module.

For a lab with a ``hosts:`` section it shows one row per host — primary or not, its engines and
how they are reached (local, a sandbox, ``ssh``/``tls``/``tcp`` URLs), its underlay address
and MTU, how many endpoints run there — the VXLAN segment joining them, the lab MTU and why
(:mod:`hybridnb.core.hostview`), the bridge's observed MTU when it drifted, and, with a probe
run, the probes within a host and across hosts (per ordered pair of hosts).  All of it but the
observed MTU and the probes comes from the lab file, so it reads the same before apply.  A lab
without ``hosts:`` has no such section (its MTU is in the overview's headline).

Templates: ``templates/sections/hosts.html.j2`` and ``hosts.md.j2``.  The JSON data::

    {"hosts": [{name, primary, engines, reached, underlay, underlay_mtu, endpoints}],
     "mtu": int, "mtu_reason": str, "mtu_why": str, "bridge_mtu": int | null,
     "drift": str, "vxlan": str,
     "probes": [{where, ok, fail, skip, blocked?}]}
"""

from __future__ import annotations

from typing import Any

from hybridnb.core.hostview import (bridge_mtu_drift, host_rows, mtu_reason, mtu_why,
                                    vxlan_line)
from hybridnb.render.report.model import SectionData
from hybridnb.render.report.sections import Section

KEY = "hosts"
TITLE = "Hosts"


def collect_hosts(ctx: Any) -> SectionData | None:
    spec = ctx.lab.spec
    rows = host_rows(spec)
    if not rows:
        return None
    net, status, matrix = spec.network, ctx.status, ctx.matrix
    observed = getattr(status, "bridge_mtu", None) if status is not None else None
    probes = []
    if matrix is not None and hasattr(matrix, "across_hosts"):
        probes = [{"where": where, **counts} for where, counts in matrix.across_hosts().items()]
    data = {"hosts": [r.record() for r in rows], "mtu": net.mtu, "mtu_reason": mtu_reason(spec),
            "mtu_why": mtu_why(spec), "bridge_mtu": observed,
            "drift": bridge_mtu_drift(net.bridge, net.mtu, observed),
            "vxlan": vxlan_line(spec), "probes": probes}
    note = "" if matrix is not None else f"probes across hosts: {ctx.why('matrix')}"
    return SectionData(KEY, TITLE, data, note=note)


_COUNT = {"type": "integer", "minimum": 0}
SCHEMA = {
    "type": "object",
    "properties": {
        "hosts": {"type": "array", "items": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "primary": {"type": "boolean"},
                           "engines": {"type": "string"},
                           "reached": {"type": "string",
                                       "description": "local, sandbox, or the URLs' "
                                                      "transports (docker ssh, libvirt tls)"},
                           "underlay": {"type": "string"},
                           "underlay_mtu": {"type": "integer", "minimum": 576},
                           "endpoints": _COUNT},
            "required": ["name", "primary", "engines", "reached", "underlay", "underlay_mtu",
                         "endpoints"],
            "additionalProperties": False}},
        "mtu": {"type": "integer", "minimum": 576},
        "mtu_reason": {"type": "string"},
        "mtu_why": {"type": "string"},
        "bridge_mtu": {"type": ["integer", "null"],
                       "description": "the bridge's MTU as observed (null: not observed)"},
        "drift": {"type": "string", "description": "why the observed MTU is not the lab's"},
        "vxlan": {"type": "string"},
        "probes": {"type": "array", "items": {
            "type": "object",
            "properties": {"where": {"type": "string",
                                     "description": "same host, cross host, or A -> B"},
                           "ok": _COUNT, "fail": _COUNT, "skip": _COUNT, "blocked": _COUNT},
            "required": ["where", "ok", "fail", "skip"], "additionalProperties": False}},
    },
    "required": ["hosts", "mtu", "mtu_reason", "mtu_why", "bridge_mtu", "drift", "vxlan",
                 "probes"],
    "additionalProperties": False,
}

SECTION = Section(KEY, TITLE, 45, collect_hosts, schema=SCHEMA)

__all__ = ["SECTION", "collect_hosts"]
