"""The pure core imports nothing that touches the host, the notebook or plotting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import hybridnb.core

FORBIDDEN = ("pyroute2", "docker", "libvirt", "libvirt_qemu", "IPython", "ipywidgets",
             "matplotlib", "networkx", "socket", "subprocess", "dnslib", "jinja2",
             "hybridnb.drivers", "hybridnb.services", "hybridnb.lab", "hybridnb.notebook",
             "hybridnb.render", "hybridnb.sandbox", "hybridnb.daemons")
CORE = Path(hybridnb.core.__file__).parent


def test_core_modules_import_nothing_forbidden():
    modules = sorted("hybridnb.core." + ".".join(p.relative_to(CORE).with_suffix("").parts)
                     .removesuffix(".__init__") for p in CORE.rglob("*.py"))
    assert "hybridnb.core.kinds.container" in modules      # the kinds registry is covered
    code = (
        "import sys\n"
        f"for m in {modules!r}:\n"
        "    __import__(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r} "
        f"or any(m == f or m.startswith(f + '.') for f in {FORBIDDEN!r}))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the pure core pulled in: {out.stdout.strip()}"


def test_import_hybridnb_is_light():
    code = ("import sys, hybridnb\n"
            "heavy = ('docker', 'libvirt', 'pyroute2', 'matplotlib', 'networkx', 'IPython', 'yaml')\n"
            "print(','.join(m for m in heavy if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
