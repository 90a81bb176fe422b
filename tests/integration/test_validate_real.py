"""``expect:`` lines checked against a real probe run: ``hybridnb validate`` exits 0 when all
hold, 1 when some fail, 2 when the lab is not up (issue 6's acceptance, real engines)."""

from __future__ import annotations

import pytest

from hybridnb.cli import main
from tests.realengines import SANDBOX_NAME

pytestmark = pytest.mark.real

LAB = """
name: itval
network: {{subnet: 10.0.7.0/24, dns: false}}
endpoints:
  h1: {{kind: host}}
  h2: {{kind: host, services: [postgresql/5432]}}
expect:
{expect}
"""


def write(tmp_path, *lines):
    path = tmp_path / "val.yaml"
    path.write_text(LAB.format(expect="\n".join(f"  - {line}" for line in lines)))
    return str(path)


def test_validate_exit_codes(sandbox, tmp_path, state_dir, capsys):
    common = ["--backend", "sandbox", "--sandbox", SANDBOX_NAME, "--state-dir", str(state_dir),
              "-q"]
    holds = write(tmp_path, "h1 -> h2 icmp ok", "h2 -> h1 icmp ok", "h1 -> gateway icmp ok",
                  "h1 -> h2 tcp/5432 blocked")          # declared, but nothing listens
    assert main(["validate", holds, *common]) == 2           # not applied yet: lab not up
    assert "not up" in capsys.readouterr().err
    try:
        assert main(["apply", holds, *common]) == 0
        assert main(["validate", holds, *common]) == 0
        out = capsys.readouterr().out
        assert "4 of 4" in out or "hold" in out, out
        fails = write(tmp_path, "h1 -> h2 icmp ok", "h1 -> h2 tcp/5432 ok")
        assert main(["validate", fails, *common]) == 1
        out = capsys.readouterr().out
        assert "tcp/5432" in out
        assert main(["test", holds, *common, "--checks", "icmp"]) == 0
        # h2 declares postgresql/5432 and nothing listens: the tcp matrix is not all green
        assert main(["test", holds, *common, "--checks", "icmp,tcp"]) == 1
    finally:
        main(["destroy", holds, *common])
