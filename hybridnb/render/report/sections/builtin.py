"""The sections every lab has: overview, environment, lab file and plan, topology, endpoints,
connectivity and latency, DNS, expectations, and what apply did.

Each is rendered by its own templates (``templates/sections/<key>.*.j2``) and described in
``schema/report.schema.json`` under ``$defs/<key>``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hybridnb.render.report.model import Figure, SectionData
from hybridnb.render.report.sections import Section


def _overview(ctx: Any) -> SectionData:
    status, matrix, validation = ctx.status, ctx.matrix, ctx.validation
    data: dict[str, Any] = {"lab": ctx.lab.name, "backend": None, "headline": None,
                            "up": None, "pending": None, "endpoints": {},
                            "probes": None, "probes_ok": None,
                            "expectations": None, "expectations_ok": None}
    if status is not None:
        data.update(backend=status.backend, headline=status.headline(), up=status.up,
                    pending=status.pending,
                    endpoints=dict(sorted(Counter(e.kind for e in status.endpoints).items())))
    if matrix is not None:
        data.update(probes=matrix.summary(), probes_ok=matrix.ok)
    if validation is not None:
        data.update(expectations=validation.summary(), expectations_ok=validation.ok)
    # failures the lab file expects ("blocked") are no reason for concern: when there are
    # expectations, they judge the probes
    judged = data["expectations_ok"] if validation is not None else data["probes_ok"]
    verdicts = [v for v in (data["up"], judged) if v is not None]
    data["verdict"] = "ok" if verdicts and all(verdicts) else "attention"
    return SectionData("overview", "Overview", data, note=ctx.why("status"))


def _environment(ctx: Any) -> SectionData:
    from hybridnb.render.report.environment import environment_facts

    facts = [{"name": k, "value": v} for k, v in environment_facts(ctx.lab)]
    return SectionData("environment", "Environment", {"facts": facts})


def _lab_file(ctx: Any) -> SectionData:
    plan = ctx.plan
    data: dict[str, Any] = {"source": ctx.lab.source, "yaml": ctx.lab.to_yaml(),
                            "plan": None}
    if plan is not None:
        data["plan"] = {"headline": plan.headline(), "empty": plan.empty,
                        "unchanged": plan.unchanged, "actions": plan.records()}
    return SectionData("lab", "Lab file and plan", data, note=ctx.why("plan"))


def _topology(ctx: Any) -> SectionData:
    status = ctx.status
    if status is None:
        return SectionData("topology", "Topology", {}, note=ctx.why("status"))
    from hybridnb.render.topology import draw_topology

    drawing = draw_topology(status, ctx.matrix)
    data = {"counts": drawing.counts(), "failed_pairs": [list(p) for p in drawing.failed]}
    return SectionData("topology", "Topology", data,
                       (Figure("topology", f"Lab {status.lab}", drawing.to_svg()),))


def _macs(ctx: Any) -> dict[str, str]:
    """MAC addresses: hybridnb assigns those of hosts and VMs (in the resources); Docker
    assigns the containers' (its driver's ``state()`` reports them)."""
    macs = {r.name: r.spec["mac"] for r in ctx.resources if r.spec.get("mac")}
    try:
        driver = ctx.lab.backend.drivers.get("container")
    except Exception:  # noqa: BLE001 — no backend: the resources are all we know
        return macs
    state = getattr(driver, "state", None)
    if state is not None:
        seen = ctx.ask("container_state", lambda: state(ctx.lab.name)) or {}
        macs.update({name: info["mac"] for name, info in seen.items() if info.get("mac")})
    return macs


def _endpoints(ctx: Any) -> SectionData:
    status = ctx.status
    if status is None:
        return SectionData("endpoints", "Endpoints", {"endpoints": [], "infra": []},
                           note=ctx.why("status"))
    what = {r.name: r.summary for r in ctx.resources if r.kind in ("host", "container", "vm")}
    macs = _macs(ctx)
    rows = [{**rec, "mac": macs.get(rec["name"]), "what": what.get(rec["name"], "")}
            for rec in status.records()]
    infra = [{"kind": k, "name": n, "state": s} for k, n, s in status.infra]
    return SectionData("endpoints", "Endpoints", {
        "bridge": status.bridge, "subnet": status.subnet, "gateway": status.gateway,
        "endpoints": rows, "infra": infra})


def _rtt_stats(matrix: Any, check: str) -> dict[str, Any]:
    medians = sorted(r.rtt_median for r in matrix.of(check) if r.rtt_median is not None)

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000.0, 4)
    if not medians:
        return {"check": check, "pairs": 0, "min_ms": None, "median_ms": None, "max_ms": None}
    return {"check": check, "pairs": len(medians), "min_ms": ms(medians[0]),
            "median_ms": ms(medians[len(medians) // 2]), "max_ms": ms(medians[-1])}


def _connectivity(ctx: Any) -> SectionData:
    m = ctx.matrix
    if m is None:
        return SectionData("connectivity", "Connectivity and latency", {},
                           note=ctx.why("matrix"))
    from hybridnb.render.figures import to_svg

    figures = []
    timed = [c for c in m.checks if any(r.rtts for r in m.of(c))]
    for check in timed:
        slug = check.replace("/", "-")
        figures.append(Figure(f"latency-{slug}-heatmap", f"{check}: median RTT per pair",
                              to_svg(m.heatmap(check), prefix=f"hm-{slug}")))
    if timed:
        first = "icmp" if "icmp" in timed else timed[0]
        slug = first.replace("/", "-")
        figures.append(Figure(f"latency-{slug}-distribution",
                              f"{first}: RTT samples per pair",
                              to_svg(m.distribution(first), prefix=f"dist-{slug}")))
    data = {"summary": m.summary(), "ok": m.ok, "duration_s": round(m.duration, 6),
            "timeout_s": m.timeout, "count": m.count, "checks": list(m.checks),
            "stats": [_rtt_stats(m, c) for c in m.checks],
            "grids": [m.grid(c) for c in m.checks],
            "failures": [r.to_record() for r in m.failures()],
            "results": m.records()}
    return SectionData("connectivity", "Connectivity and latency", data, tuple(figures))


def _dns(ctx: Any) -> SectionData:
    dns = ctx.dns
    if dns is None:
        return SectionData("dns", "DNS", {}, note=ctx.why("dns"))
    log = ctx.dns_log
    data = {"headline": dns.headline(), "domain": dns.domain, "server": dns.server,
            "records": dns.records_list(),
            "log": log.summary() if log is not None else None}
    note = "" if log is not None else f"query log unavailable: {ctx.why('dns_log')}"
    return SectionData("dns", "DNS", data, note=note)


def _expectations(ctx: Any) -> SectionData:
    report = ctx.validation
    if report is None:
        return SectionData("expectations", "Expectations", {}, note=ctx.why("validation"))
    return SectionData("expectations", "Expectations", {
        "summary": report.summary(), "ok": report.ok, "results": report.records()})


def _timeline(ctx: Any) -> SectionData:
    record = ctx.last_apply
    if record is None:
        return SectionData("timeline", "What apply did", {}, note=ctx.why("apply"))
    return SectionData("timeline", "What apply did", dict(record))


SECTIONS = (
    Section("overview", "Overview", 10, _overview),
    Section("environment", "Environment", 20, _environment),
    Section("lab", "Lab file and plan", 30, _lab_file),
    Section("topology", "Topology", 40, _topology),
    Section("endpoints", "Endpoints", 50, _endpoints),
    Section("connectivity", "Connectivity and latency", 60, _connectivity),
    Section("dns", "DNS", 70, _dns),
    Section("expectations", "Expectations", 80, _expectations),
    Section("timeline", "What apply did", 90, _timeline),
)

__all__ = ["SECTIONS"]
