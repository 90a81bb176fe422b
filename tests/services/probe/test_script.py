"""The probe script a VM source runs: its UDP part (hnb-udp) written, run and read back.

The generation and parsing tests are pure.  The end-to-end ones run the script with ``sh`` on
this host as a stand-in guest, against a compiled ``hnb-udp`` echoing on 127.0.0.1 — no root,
nothing leaves loopback; they need gcc (FAIL under CI=true without it).
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from hybridnb.errors import EngineUnavailable
from hybridnb.images import testvm
from hybridnb.services.probe import ProbeEndpoint, probe_matrix, script
from tests.gating import IN_CI


def test_udp_probe_line_quotes_and_uses_the_helper():
    text = script.build_script([script.ScriptProbe(4, "udp", "10.0.1.100", 7)],
                               timeout=1.5, count=3, udp_helper="/opt/x y/hnb-udp")
    assert "p_udp 4 10.0.1.100 7 &" in text
    assert "U='/opt/x y/hnb-udp'" in text and "TM=1500" in text and "C=3" in text
    assert '"$U" probe "$2" "$3" "$C" "$TM"' in text
    assert text.rstrip().endswith("wait")
    subprocess.run(["sh", "-n"], input=text, text=True, check=True)     # valid shell


def test_parse_output_ok_fail_skip_and_noise():
    out = script.parse_output(
        "garbage\n"
        "R 0 ok 0.250,0.500 -\n"
        "R 1 fail - refused (port unreachable)\n"
        "R 2 skip - UDP probes need /bin/hnb-udp in the guest\n"
        "R 3 ok - HTTP_200\n"
        "R x ok - -\n")
    assert out == {0: (True, (0.00025, 0.0005), ""),
                   1: (False, (), "refused (port unreachable)"),
                   2: (None, (), "UDP probes need /bin/hnb-udp in the guest"),
                   3: (True, (), "HTTP 200")}


@pytest.mark.parametrize("helper_out, expected", [
    ("reply 0 1500\ntimeout 1\nreply 2 250\n", (True, (0.0015, 0.00025), "")),
    ("timeout 0\ntimeout 1\n", (False, (), "timeout")),
    ("refused 0\nrefused 1\n", (False, (), "refused (port unreachable)")),
    ("error - Network is unreachable\n", (False, (), "Network is unreachable")),
    ("", (False, (), "timeout")),
])
def test_script_folds_helper_lines_into_one_result(tmp_path, helper_out, expected):
    """The shell side alone, with a fake helper printing fixed lines (no packets)."""
    fake = tmp_path / "fake-udp"
    (tmp_path / "out").write_text(helper_out)
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/args\ncat {tmp_path}/out\n")
    fake.chmod(0o755)
    text = script.build_script([script.ScriptProbe(0, "udp", "10.0.1.5", 7)], timeout=0.25,
                               count=2, udp_helper=str(fake))
    out = subprocess.run(["sh", "-c", text], capture_output=True, text=True, timeout=10)
    assert script.parse_output(out.stdout) == {0: expected}, out
    assert (tmp_path / "args").read_text().split() == ["probe", "10.0.1.5", "7", "2", "250"]


# ----------------------------------------------------------------- end to end on loopback

@pytest.fixture(scope="module")
def helper(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("hnb-udp")
    try:
        testvm.compile_udp_helper(work)
    except EngineUnavailable as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    return work / "hnb-udp"


class LocalShell:
    """An executor that runs the guest script with this host's sh (a stand-in guest)."""

    def __call__(self, argv, timeout):
        r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
        return r.returncode, r.stdout, r.stderr


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def matrix(targets: dict[str, int], **kw):
    """UDP from a script source to one declared-UDP target per entry, all on 127.0.0.1."""
    src = ProbeEndpoint("vm", "127.0.0.1", executor=LocalShell(), kind="vm")
    eps = [src] + [ProbeEndpoint(name, "127.0.0.1", kind="vm", services=(f"udp/{port}",))
                   for name, port in targets.items()]
    return probe_matrix(eps, ("udp",), timeout=kw.pop("timeout", 0.5),
                        count=kw.pop("count", 3), **kw)


def test_vm_source_udp_rtts_refused_and_timeout(helper, monkeypatch):
    monkeypatch.setattr(script, "UDP_HELPER", str(helper))
    echo_port = free_port()
    echo = subprocess.Popen([str(helper), "echo", str(echo_port)])
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        time.sleep(0.05)
        m = matrix({"echo": echo_port, "closed": free_port(),
                    "silent": silent.getsockname()[1]})
    finally:
        echo.kill()
        echo.wait()
        silent.close()
    r = m.get("udp", "vm", "echo")
    assert r.ok, r
    assert (r.sent, r.received, len(r.rtts)) == (3, 3, 3)
    assert all(0 < t < 0.5 for t in r.rtts)
    r = m.get("udp", "vm", "closed")
    assert r.ok is False and r.reason == "refused (port unreachable)", r
    r = m.get("udp", "vm", "silent")
    assert r.ok is False and r.reason == "timeout", r


def test_vm_source_without_the_helper_is_skipped(monkeypatch, tmp_path):
    monkeypatch.setattr(script, "UDP_HELPER", str(tmp_path / "no-such-helper"))
    r = matrix({"echo": free_port()}).get("udp", "vm", "echo")
    assert r.ok is None and "no-such-helper in the guest" in r.reason, r
