"""Connectivity and latency probes: every endpoint against every other, in one round trip.

* :func:`probe_matrix` (:mod:`.engine`) — runs the checks and returns a matrix;
* :class:`ProbeEndpoint`, :class:`Executor` (:mod:`.endpoint`) — what is probed, and how;
* :class:`ConnectivityMatrix`, :class:`ProbeResult` (:mod:`.matrix`) — the results, which
  render themselves and export records/JSON.

Importing this package is cheap: sockets, threads and dnslib are touched only when probing.
"""

from hybridnb.services.probe.endpoint import DEFAULT_PORTS, Executor, ProbeEndpoint
from hybridnb.services.probe.matrix import ConnectivityMatrix, ProbeResult

__all__ = ["DEFAULT_PORTS", "ConnectivityMatrix", "Executor", "ProbeEndpoint", "ProbeResult",
           "probe_matrix"]


def probe_matrix(*args, **kwargs):  # type: ignore[no-untyped-def]
    """See :func:`hybridnb.services.probe.engine.probe_matrix`."""
    from hybridnb.services.probe.engine import probe_matrix as run

    return run(*args, **kwargs)
