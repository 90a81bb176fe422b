"""Shared test configuration.

Real-engine tests are marked ``real``.  Locally they skip when the machine cannot run them
(not root, an engine missing); under ``CI=true`` the same condition is a failure, because CI
must prove the real thing.  Use :func:`require_real` at the top of such a fixture or test.
"""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI") == "true"


def require_real(reason: str | None = None, *, tools: tuple[str, ...] = ()) -> None:
    """Skip (locally) or fail (CI) unless we are root and every tool in ``tools`` exists."""
    missing = [t for t in tools if shutil.which(t) is None]
    why = reason
    if os.geteuid() != 0:
        why = "needs root"
    elif missing:
        why = f"missing tools: {', '.join(missing)}"
    if why is None:
        return
    if IN_CI:
        pytest.fail(f"real-engine test cannot run under CI: {why}")
    pytest.skip(why)


@pytest.fixture
def state_dir(tmp_path):
    d = tmp_path / "state"
    d.mkdir()
    return d


# the session sandbox and the other real-engine fixtures, for every test module
from tests.realengines import lab_bridge, sandbox, sandbox_target  # noqa: E402,F401
