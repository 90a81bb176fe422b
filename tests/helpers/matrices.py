"""Synthetic connectivity matrices for rendering tests (no probes, no root).

``mesh(n, dead=...)`` is what a run over ``n`` namespace hosts and the gateway returns for
``icmp`` and ``tcp``: every pair ok, or — for the ``dead`` endpoint — every pair to and from
it failed with ``timeout``; ``extra`` results are appended as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

from hybridnb.services.probe.matrix import ConnectivityMatrix, ProbeResult


def mesh(n: int = 50, dead: str | None = None,
         extra: Sequence[ProbeResult] = ()) -> ConnectivityMatrix:
    """``n`` hosts and the gateway, icmp and tcp between every pair; ``dead`` fails both ways."""
    names = [f"h{i:02d}" for i in range(n)]
    targets = names + ["gateway"]
    rs = []
    for check in ("icmp", "tcp"):
        for src in names:
            for dst in targets:
                if src == dst:
                    continue
                if dead in (src, dst):
                    rs.append(ProbeResult(check, src, dst, False, "timeout", sent=3))
                else:
                    rs.append(ProbeResult(check, src, dst, True, rtts=(0.00004,), sent=1,
                                          received=1, port=7 if check == "tcp" else None))
    rs += list(extra)
    return ConnectivityMatrix(rs, sources=names, targets=targets,
                              checks=list(dict.fromkeys(r.check for r in rs)), duration=0.5)
