"""A lab to report on without engines: the dry-run backend, plus a connectivity matrix and an
expectation report built from the real result classes (as a probe run would return them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

LAB = {
    "name": "rpt",
    "network": {"subnet": "10.0.7.0/24", "bridge": "hnbrpt0"},
    "endpoints": {
        "web": {"kind": "container", "image": "busybox", "services": ["http/80"]},
        "db": {"kind": "vm", "template": "test", "memory": 128},
        "probe": {"kind": "host"},
    },
    "expect": ["web -> db icmp ok", "probe -> web tcp/80 ok", "probe -> db tcp/5432 blocked"],
}


def sample_matrix(names: list[str]) -> Any:
    """A full mesh of icmp/tcp/dns results over ``names`` + gateway, one pair failing."""
    from hybridnb.services.probe import ConnectivityMatrix, ProbeResult

    targets = names + ["gateway"]
    results = []
    for check in ("icmp", "tcp", "dns"):
        for i, src in enumerate(names):
            for j, dst in enumerate(targets):
                if src == dst:
                    continue
                base = 0.00002 * (1 + i + 2 * j) * (40 if "db" in (src, dst) else 1)
                if check == "tcp" and (src, dst) == ("probe", "db"):
                    results.append(ProbeResult(check, src, dst, False, "refused", sent=3,
                                               port=5432, address="10.0.7.200"))
                    continue
                rtts = tuple(base * (1 + k / 10) for k in range(3))
                results.append(ProbeResult(check, src, dst, True, rtts=rtts, sent=3,
                                           received=3, port=80 if check == "tcp" else None,
                                           address="10.0.7.1", detail="HTTP 200"
                                           if check == "tcp" else ""))
    return ConnectivityMatrix.from_results(results, sources=names, targets=targets,
                                           duration=0.8125, timeout=1.0, count=3)


def dry_lab(state_dir: Path, applied: bool = True) -> Any:
    from hybridnb.lab import Lab

    lab = Lab.from_dict(LAB, backend="dry-run", state_dir=state_dir)
    if applied:
        lab.apply()
    return lab


def results_for(lab: Any) -> dict[str, Any]:
    """``matrix`` and ``validation`` keywords for :func:`collect_report`."""
    from hybridnb.core.expect import evaluate, parse_expectations

    matrix = sample_matrix(sorted(e.name for e in lab.spec.endpoints))
    exps = parse_expectations(lab.spec.expect, names=[e.name for e in lab.spec.endpoints])
    return {"matrix": matrix, "validation": evaluate(exps, matrix)}
