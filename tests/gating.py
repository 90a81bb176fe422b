"""When a test may run: the one gating rule of the suite (a pytest plugin).

* :func:`require_real` — call it at the top of a real-engine test or fixture: unless we are
  root and every tool in ``tools`` is on the PATH, the test is skipped locally and FAILS under
  ``CI=true`` (CI must prove the real thing).
* ``@pytest.mark.extra("notebook", ...)`` — the test needs those extras of hybridnb
  (``pip install hybridnb[notebook]``).  When one is not installed the test is skipped, so
  the unit suite passes with any subset of extras; a test that is also marked ``real`` fails
  instead under ``CI=true``, like any real test that cannot run.  A test that needs no mark
  must work with only the base install: that is what the subset runs check.

``tests/conftest.py`` registers this module with ``pytest_plugins``.
"""

from __future__ import annotations

import functools
import os
import shutil
from importlib import metadata

import pytest

IN_CI = os.environ.get("CI") == "true"


def _cannot_run(why: str, *, real: bool = True) -> None:
    if IN_CI and real:
        pytest.fail(f"real test cannot run under CI: {why}")
    pytest.skip(why)


def require_real(reason: str | None = None, *, tools: tuple[str, ...] = ()) -> None:
    """Skip (locally) or fail (CI) unless root and every tool in ``tools`` exists; a given
    ``reason`` means the caller already knows the test cannot run."""
    for extra in ("/usr/sbin", "/sbin"):          # engine tools live there; sudo may drop them
        if extra not in os.environ.get("PATH", "").split(":"):
            os.environ["PATH"] = os.environ.get("PATH", "") + ":" + extra
    missing = [t for t in tools if shutil.which(t) is None]
    why = reason
    if os.geteuid() != 0:
        why = "needs root"
    elif missing:
        why = f"missing tools: {', '.join(missing)}"
    if why is not None:
        _cannot_run(why)


@functools.cache
def missing_distributions(extra: str) -> tuple[str, ...]:
    """The distributions of ``hybridnb[extra]`` that are not installed (empty: usable)."""
    from packaging.requirements import Requirement

    try:
        requires = metadata.requires("hybridnb") or []
    except metadata.PackageNotFoundError:          # running from a bare checkout
        return ()
    missing = []
    for line in requires:
        req = Requirement(line)
        if req.marker is None or not req.marker.evaluate({"extra": extra}):
            continue
        try:
            metadata.version(req.name)
        except metadata.PackageNotFoundError:
            missing.append(req.name)
    return tuple(missing)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "extra(*names): needs these extras of hybridnb installed (skipped without "
        "them; a real test fails instead under CI=true)")


def _missing_extras(item: pytest.Item) -> str | None:
    for mark in item.iter_markers("extra"):
        for extra in mark.args:
            missing = missing_distributions(extra)
            if missing:
                return f"needs hybridnb[{extra}] ({', '.join(missing)} not installed)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip (as a mark, so -rs names the test) what needs a missing extra — except a real
    test under CI=true, which fails in setup below."""
    for item in items:
        why = _missing_extras(item)
        if why and not (IN_CI and item.get_closest_marker("real")):
            item.add_marker(pytest.mark.skip(reason=why))


def pytest_runtest_setup(item: pytest.Item) -> None:
    why = _missing_extras(item)
    if why:                                        # only a real test under CI gets here
        _cannot_run(why)
