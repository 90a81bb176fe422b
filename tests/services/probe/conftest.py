"""Both probe engines: every real engine test runs with the fast (C) engine and the portable
one, where the fast one is built (a build that should have it and does not fails
test_fast.py::test_the_extension_is_built_on_linux)."""

from __future__ import annotations

import pytest

from hybridnb.services.probe import fast

ENGINES = ["fast", "portable"] if fast.available() else ["portable"]


@pytest.fixture(params=ENGINES)
def probe_engine(request, monkeypatch):
    """The engine ``probe_matrix``/``run_plan`` use in this test (``auto`` picks it up from
    HYBRIDNB_PROBE_ENGINE, as do subprocesses)."""
    monkeypatch.setenv("HYBRIDNB_PROBE_ENGINE", request.param)
    return request.param
