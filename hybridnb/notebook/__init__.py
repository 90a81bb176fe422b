"""The Jupyter face of hybridnb: ``%hybrid`` magics, ipywidgets forms, a live topology view.

Everything here is a thin adapter over :class:`hybridnb.Lab`: parse what the user typed or
clicked, call the Lab, hand back an object that renders itself.  ``%load_ext hybridnb`` loads
only :mod:`.magics` (IPython is already imported by then); the forms, the live widget and the
plots import ipywidgets, matplotlib and networkx when they are first used.

    %load_ext hybridnb
    %config HybridMagics.backend = "dry-run"
    %hybrid create --name demo
    %hybrid container web --image busybox
    %hybrid apply

:func:`current_lab` returns the lab the magics are working on, so Python cells and forms can
pick it up.
"""

from __future__ import annotations

from typing import Any


def current_lab() -> Any:
    """The lab the ``%hybrid`` magics of the running IPython shell work on (or ``None``)."""
    from hybridnb.notebook.magics import active_magics

    magics = active_magics()
    return magics.current_lab if magics is not None else None


__all__ = ["current_lab"]
