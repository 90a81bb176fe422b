"""A real IPython shell with ``%load_ext hybridnb`` on the dry-run backend, state under tmp."""

from __future__ import annotations

import pytest


@pytest.fixture
def shell(tmp_path, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.setenv("HYBRIDNB_STATE_DIR", str(tmp_path / "state"))
    ip = InteractiveShell.instance()
    from hybridnb.notebook.magics import load_ipython_extension

    load_ipython_extension(ip)          # a fresh HybridMagics (no current lab) per test
    ip.run_cell('%config HybridMagics.backend = "dry-run"')
    ip.run_cell(f'%config HybridMagics.state_dir = "{tmp_path / "state"}"')
    yield ip
    magics = ip.magics_manager.registry.get("HybridMagics")
    if magics is not None:
        magics.current_lab = None
        magics.last_matrix = None
    for name in [k for k in ip.user_ns if k.startswith("hnb_")]:
        del ip.user_ns[name]


def run(ip, source):
    """Run a cell; return its value, re-raising whatever it raised."""
    result = ip.run_cell(source)
    if result.error_before_exec is not None:
        raise result.error_before_exec
    if result.error_in_exec is not None:
        raise result.error_in_exec
    return result.result
