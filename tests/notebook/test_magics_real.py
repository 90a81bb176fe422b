"""``%hybrid`` against the real engines in the session's sandbox: the subcommands that only
mean something there — test (the matrix), dns records from the running server, the dns query log,
graph with the matrix — plus apply/destroy."""

from __future__ import annotations

import time

import pytest

from tests.realengines import SANDBOX_NAME
from tests.notebook.conftest import run

pytestmark = pytest.mark.real


def test_magics_on_the_sandbox(sandbox, shell, tmp_path):  # noqa: F811
    run(shell, '%config HybridMagics.backend = "sandbox"')
    run(shell, f'%config HybridMagics.sandbox = "{SANDBOX_NAME}"')
    run(shell, "%hybrid create --name mgreal --subnet 10.0.63.0/24 --bridge hnbmg0")
    run(shell, "%hybrid host h1")
    run(shell, '%hybrid container web --command "httpd -f -p 80 -h /www"')
    try:
        assert run(shell, "%hybrid apply -q").ok
        assert run(shell, "%hybrid status").up
        matrix = run(shell, "%hybrid test --checks icmp,tcp,dns --timeout 2 -o hnb_m")
        assert shell.user_ns["hnb_m"] is matrix
        pairs = [r for r in matrix.results if r.source != "gateway"]
        assert pairs and all(r.ok for r in pairs), [r for r in pairs if not r.ok]
        records = run(shell, "%hybrid dns")
        assert records.lookup("web") == ["10.0.63.100"]
        deadline = time.monotonic() + 5          # the log is written in batches (~0.25 s)
        log = run(shell, "%hybrid dns query-log -n 20")
        while not log.entries and time.monotonic() < deadline:
            time.sleep(0.1)
            log = run(shell, "%hybrid dns query-log -n 20")
        assert any(e["name"].startswith(("web.", "h1.")) for e in log.entries), log
        topo = run(shell, "%hybrid graph")                  # marks the last test's failures
        assert topo.counts() == {"container": 1, "vm": 0, "host": 1}
    finally:
        run(shell, "%hybrid destroy -q")
    assert {e.state for e in run(shell, "%hybrid status").endpoints} == {"not applied"}
