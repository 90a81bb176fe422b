"""The pure core: lab model, validation, IPAM, naming, DNS zone, plan.

Nothing under this package touches the host: no sockets, no subprocesses, no netlink, no
Docker, no libvirt, no IPython, no plotting.  ``tests/core/test_purity.py`` checks it.
"""
