"""Build step beyond pyproject.toml: the lab name server's recvmmsg/sendmmsg extension.

Optional: where it does not build (no C compiler or Python headers, not Linux), the install
goes on and the server uses its portable recvfrom/sendto loop (hybridnb/daemons/dns/udp.py).
"""

import sys

from setuptools import Extension, setup

ext_modules = []
if sys.platform.startswith("linux"):
    ext_modules.append(Extension("hybridnb.daemons.dns._mmsg",
                                 sources=["hybridnb/daemons/dns/_mmsg.c"], optional=True))

setup(ext_modules=ext_modules)
