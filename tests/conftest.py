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

