"""The lab's DNS service: an authoritative server for the lab domain on the gateway.

* :mod:`.wire`     pre-encoded answers, the hot path and the strict slow path
* :mod:`.querylog` the query log (batched, rotating, readable with :func:`read_log`)
* :mod:`.server`   the server process (``python -m hybridnb.services.dns.server``)

The process is managed by :mod:`hybridnb.drivers.dns`.
"""
