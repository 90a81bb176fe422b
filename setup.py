"""Build step beyond pyproject.toml: two C extensions.

* the lab name server's recvmmsg/sendmmsg batches (hybridnb/daemons/dns/_mmsg.c);
* the probe engine's socket work in C threads (hybridnb/services/probe/_fast.c).

Both optional: where they do not build (no C compiler or Python headers, not Linux), the
install goes on and the server uses its portable recvfrom/sendto loop
(hybridnb/daemons/dns/udp.py), the probes the portable engine (hybridnb/services/probe/engine.py).
"""

import sys

from setuptools import Extension, setup

ext_modules = []
if sys.platform.startswith("linux"):
    ext_modules.append(Extension("hybridnb.daemons.dns._mmsg",
                                 sources=["hybridnb/daemons/dns/_mmsg.c"], optional=True))
    ext_modules.append(Extension("hybridnb.services.probe._fast",
                                 sources=["hybridnb/services/probe/_fast.c"],
                                 extra_compile_args=["-O2", "-pthread"],
                                 extra_link_args=["-pthread"], optional=True))

setup(ext_modules=ext_modules)
