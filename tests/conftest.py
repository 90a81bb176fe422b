"""Shared test configuration.

The plugins in ``pytest_plugins`` hold what every test module may use: the gating rule
(:mod:`tests.gating`: ``require_real``, the ``extra`` mark) and the real-engine fixtures
(:mod:`tests.realengines`: the session's ``sandbox``, ``sandbox_target``, ``lab_bridge``).
Test modules import plain helpers from those modules, not from this file.
"""

from __future__ import annotations

import pytest

pytest_plugins = ("tests.gating", "tests.realengines", "pytester")


@pytest.fixture
def state_dir(tmp_path):
    d = tmp_path / "state"
    d.mkdir()
    return d


def __getattr__(name: str) -> object:
    """``IN_CI`` and ``require_real`` for modules that still import them from here (those in
    tests/services/probe); new code imports them from :mod:`tests.gating`."""
    if name in ("IN_CI", "require_real"):
        import tests.gating

        return getattr(tests.gating, name)
    raise AttributeError(name)
