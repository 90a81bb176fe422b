"""Drivers: one small protocol per capability, and the backends that implement them.

See :mod:`hybridnb.drivers.base` for the protocol and :mod:`hybridnb.drivers.dryrun` for the
in-memory backend.  Real drivers (pyroute2, docker SDK, libvirt-python, iptables) import their
libraries lazily, inside the functions that need them.
"""
