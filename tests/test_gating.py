"""The gating rule itself (tests/gating.py), run on a tiny suite with pytester: a test that
needs a missing extra is skipped — unless it is a real test under CI=true, which fails; a real
test missing a tool likewise skips locally and fails under CI."""

from __future__ import annotations

import pytest

import tests.gating as gating

SUITE = """
    import pytest
    from tests.gating import require_real

    @pytest.mark.extra("notebook")
    def test_unit_needs_notebook():
        pass

    @pytest.mark.real
    @pytest.mark.extra("notebook")
    def test_real_needs_notebook():
        pass

    @pytest.mark.extra("dns")
    def test_unit_needs_dns():
        pass

    @pytest.mark.real
    def test_real_needs_a_tool():
        require_real(tools=("hnb-no-such-tool",))
"""


@pytest.mark.parametrize("ci", [False, True], ids=["local", "ci"])
def test_missing_extras_and_tools(pytester, monkeypatch, ci):
    monkeypatch.setattr(gating, "missing_distributions",
                        lambda extra: ("matplotlib",) if extra == "notebook" else ())
    monkeypatch.setattr(gating, "IN_CI", ci)
    monkeypatch.setattr(gating.os, "geteuid", lambda: 0)        # the tool is what is missing
    pytester.makepyfile(SUITE)
    result = pytester.runpytest_inprocess("-p", "tests.gating", "-p", "no:cacheprovider",
                                          "-W", "ignore::pytest.PytestUnknownMarkWarning")
    outcomes = {r.nodeid.split("::")[1]: r.outcome for r in
                result.reprec.getreports("pytest_runtest_logreport") if r.when != "teardown"
                and (r.when == "call" or r.outcome != "passed")}
    assert outcomes == {
        "test_unit_needs_notebook": "skipped",
        "test_real_needs_notebook": "failed" if ci else "skipped",
        "test_unit_needs_dns": "passed",
        "test_real_needs_a_tool": "failed" if ci else "skipped",
    }
