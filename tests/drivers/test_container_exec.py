"""``Lab.exec`` in a container for real: ``docker exec`` with its exit code and both
streams, and a command outliving its timeout killed, not left running."""

from __future__ import annotations

import time

import pytest

from hybridnb.errors import EngineError
from hybridnb.lab import Lab


@pytest.mark.real
def test_exec_in_a_container(sandbox, tmp_path) -> None:
    doc = {"name": "scenexec", "network": {"bridge": "hscenx0", "subnet": "10.77.0.0/24"},
           "endpoints": {"c": {"kind": "container", "command": "sleep 3600"}}}
    lab = Lab.from_dict(doc, backend="sandbox", sandbox=sandbox.name,
                        state_dir=tmp_path / "state")
    try:
        lab.apply()
        out = lab.exec("c", "echo hi; echo oops >&2; exit 3")
        assert (out.exit_code, out.stdout, out.stderr) == (3, "hi\n", "oops\n")
        assert lab.exec("c", ["hostname"]).check().stdout == "c\n"
        t0 = time.monotonic()
        with pytest.raises(EngineError, match="did not finish within 1 s"):
            lab.exec("c", "sleep 30; echo late", timeout=1)
        assert time.monotonic() - t0 < 8
        assert "sleep 30" not in lab.exec("c", "ps -o args").check().stdout   # killed
    finally:
        lab.destroy()
