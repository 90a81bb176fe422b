"""The lab's DNS service as the lab sees it: what ``Lab.dns()`` and ``Lab.dns_logs()`` return
(:mod:`.results`).

The name server itself — its process, wire format, query log and the contract for running
it — is :mod:`hybridnb.daemons.dns`; the ``dns`` driver (:mod:`hybridnb.drivers.dns`) runs
one per lab.
"""
