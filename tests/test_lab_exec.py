"""``Lab.exec``: a command inside an endpoint, through its driver's GuestExec capability (the
real runs are the scenario notebooks' and the container driver test's)."""

from __future__ import annotations

import pytest

from hybridnb.errors import EngineError, NotFoundError, Unsupported
from hybridnb.lab import ExecOutput, Lab


def test_dry_run_cannot_exec_and_unknown_endpoints_are_named(tmp_path) -> None:
    lab = Lab("ex", backend="dry-run", state_dir=tmp_path).add_container("c")
    with pytest.raises(Unsupported, match="cannot run a command in c: its container driver "
                                          "cannot run commands inside its endpoints"):
        lab.exec("c", "true")
    with pytest.raises(NotFoundError, match="lab ex has no endpoint 'd'"):
        lab.exec("d", "true")


def test_the_result_renders_and_checks() -> None:
    ok = ExecOutput("c", ("/bin/sh", "-c", "echo hi"), 0, "hi\n", "")
    assert ok.ok and ok.check() is ok and ok.command == "echo hi"
    assert repr(ok) == "c$ echo hi  (exit 0)\nhi"
    assert "exit 0" in ok._repr_html_() and "echo hi" in ok._repr_html_()
    bad = ExecOutput("c", ("false", "x"), 1, "", "boom <b>\n")
    assert bad.command == "false x" and "&lt;b&gt;" in bad._repr_html_()
    with pytest.raises(EngineError, match="false x in c exited 1: boom"):
        bad.check()
