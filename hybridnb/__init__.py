"""hybridnb — Docker containers and libvirt VMs on one Linux bridge, from a notebook.

``import hybridnb`` is cheap: the public names are loaded on first use, and heavy libraries
(docker, libvirt, pyroute2, matplotlib, networkx, IPython) only when a feature needs them.

    from hybridnb import Lab
    lab = Lab("demo", backend="dry-run").add_container("web").add_vm("vm1")
    lab.plan()

In Jupyter: ``%load_ext hybridnb`` and then ``%hybrid help``.

``hybridnb.__version__`` comes from the installed package's metadata (read on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

_LAZY = {
    "Lab": "hybridnb.lab",
    "Sandbox": "hybridnb.sandbox",
    "Target": "hybridnb.target",
    "HybridError": "hybridnb.errors",
    "ValidationError": "hybridnb.errors",
}

if TYPE_CHECKING:  # pragma: no cover
    from hybridnb.errors import HybridError, ValidationError
    from hybridnb.lab import Lab
    from hybridnb.sandbox import Sandbox
    from hybridnb.target import Target


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from hybridnb.version import version

        value = version()
        globals()[name] = value
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hybridnb' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext hybridnb`` registers the ``%hybrid`` magics."""
    from hybridnb.notebook.magics import load_ipython_extension as _load

    _load(ipython)


__all__ = ["Lab", "Sandbox", "Target", "HybridError", "ValidationError",
           "load_ipython_extension", "__version__"]
