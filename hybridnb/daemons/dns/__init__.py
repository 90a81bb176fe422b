"""The lab's name server: an authoritative DNS server for the lab domain on the gateway,
run as its own process.

* :mod:`.control`  its contract: files, launch, reload (SIGHUP), flush (SIGUSR1), stop, and
  reading its query log — the one module the ``dns`` driver and the benchmarks use
* :mod:`.server`   the process (``python -m hybridnb.daemons.dns.server``)
* :mod:`.wire`     pre-encoded answers, the batched hot path and the strict slow path
* :mod:`.udp`      datagram I/O a batch at a time (:mod:`._mmsg`: recvmmsg/sendmmsg in C,
  built by ``pip install``; a portable recvfrom/sendto fallback)
* :mod:`.forward`  relaying out-of-lab names to upstream resolvers
* :mod:`.querylog` the query log (batched, rotating, read with :func:`.querylog.read_log`)

Imports only :mod:`hybridnb.core` (the zone), :mod:`hybridnb.daemons` and the standard
library (dnslib lazily, to build answers).
"""
