"""Connectivity and latency probes: every endpoint against every other, in one round trip.

* :func:`probe_matrix` (:mod:`.engine`) — plans and runs the checks, returns a matrix;
* :func:`plan_probes` (:mod:`.plan`) — the pure plan: pairs, sockets, responders;
* :class:`ProbeEndpoint`, :class:`Executor`, :func:`lab_probe_endpoints` (:mod:`.endpoint`) —
  what is probed, and how to reach inside it;
* :class:`ConnectivityMatrix`, :class:`ProbeResult` (:mod:`.matrix`) — the results, which
  render themselves and export records/JSON.

The engine's parts: :mod:`.schedule` (the file-descriptor window), :mod:`.clients` (one per
socket), :mod:`.responders`, :mod:`.wire` (sockets in namespaces, the loop), :mod:`.script`
(VM sources), :mod:`.neighbours` (pinned ARP entries for big meshes).

One matrix over several hosts: :mod:`.share` (a host's share — its responders, its sources —
in this process or as ``python -m hybridnb.services.probe.share`` over JSON lines),
:mod:`.coordinate` (runs every host's share, two-phase, and merges the results),
:mod:`.runner` (how a share is started on a host this process cannot enter).

Importing this package is cheap: sockets, threads and dnslib are touched only when probing.
"""

from hybridnb.services.probe.endpoint import (DEFAULT_PORTS, Executor, ProbeEndpoint,
                                              lab_probe_endpoints, service_checks)
from hybridnb.services.probe.matrix import ConnectivityMatrix, ProbeResult
from hybridnb.services.probe.plan import Check, PairSpec, ProbePlan, plan_probes

__all__ = ["DEFAULT_PORTS", "Check", "ConnectivityMatrix", "Executor", "PairSpec",
           "ProbeEndpoint", "ProbePlan", "ProbeResult", "lab_probe_endpoints", "plan_probes",
           "probe_matrix", "service_checks"]


def probe_matrix(*args, **kwargs):  # type: ignore[no-untyped-def]
    """See :func:`hybridnb.services.probe.engine.probe_matrix`."""
    from hybridnb.services.probe.engine import probe_matrix as run

    return run(*args, **kwargs)
