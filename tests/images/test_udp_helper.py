"""hnb-udp, the test VM's UDP echo server and probe client, compiled here and run on loopback.

Needs gcc (with libc6-dev for the static link), not root: every datagram goes to 127.0.0.1.
Under CI=true a missing gcc fails instead of skipping (the image build depends on it).
"""

from __future__ import annotations

import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from hybridnb.errors import EngineUnavailable
from hybridnb.images import testvm
from tests.gating import IN_CI


@pytest.fixture(scope="module")
def helper(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("hnb-udp")
    try:
        data = testvm.compile_udp_helper(work)
    except EngineUnavailable as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    assert data[:4] == b"\x7fELF"
    return work / "hnb-udp"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def echo(helper):
    port = free_udp_port()
    proc = subprocess.Popen([str(helper), "echo", str(port)], stderr=subprocess.PIPE)
    try:
        time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        yield port
    finally:
        proc.kill()
        proc.wait()


def probe(helper: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(helper), "probe", *args], capture_output=True, text=True,
                          timeout=10)


def test_compiles_without_warnings_and_static(helper):
    out = subprocess.run(["gcc", "-Os", "-Wall", "-Wextra", "-Werror", "-c", "-o", "/dev/null",
                          str(testvm.UDP_HELPER_SOURCE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    elf = helper.read_bytes()
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    types = [struct.unpack_from("<I", elf, phoff + i * phentsize)[0] for i in range(phnum)]
    assert 3 not in types                                 # no PT_INTERP: runs without ld.so
    assert helper.stat().st_size < 1 << 20


def test_echo_answers_probe_with_one_reply_line_per_datagram(helper, echo):
    r = probe(helper, "127.0.0.1", str(echo), "5", "500")
    assert r.returncode == 0, r
    lines = [line.split() for line in r.stdout.splitlines()]
    assert [line[:2] for line in lines] == [["reply", str(i)] for i in range(5)]
    assert all(0 < int(line[2]) < 500_000 for line in lines)    # microseconds


def test_echo_returns_any_datagram_to_its_sender(echo):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(b"x" * 1400, ("127.0.0.1", echo))
        data, addr = s.recvfrom(2048)
    assert data == b"x" * 1400 and addr == ("127.0.0.1", echo)


def test_closed_port_is_refused(helper):
    r = probe(helper, "127.0.0.1", str(free_udp_port()), "3", "500")
    assert r.returncode == 1
    assert r.stdout.split("\n")[0] == "refused 0"
    assert all(line.startswith("refused") for line in r.stdout.splitlines())


def _probe_silent_port(helper: Path) -> tuple[subprocess.CompletedProcess, float]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:   # bound, never answers
        s.bind(("127.0.0.1", 0))
        t0 = time.monotonic()
        r = probe(helper, "127.0.0.1", str(s.getsockname()[1]), "2", "300")
        return r, time.monotonic() - t0


def test_silent_port_times_out_after_the_last_send(helper):
    r, _ = _probe_silent_port(helper)
    assert r.returncode == 1
    assert r.stdout.splitlines() == ["timeout 0", "timeout 1"]


@pytest.mark.real                       # wall-clock time: measured on the real machine only
def test_silent_port_timeout_is_timed(helper):
    r, elapsed = _probe_silent_port(helper)
    assert r.stdout.splitlines() == ["timeout 0", "timeout 1"]
    assert 0.45 < elapsed < 2.0          # one 200 ms gap, then 300 ms after the last send


def test_foreign_datagrams_are_ignored(helper):
    """A reply that is not an echo of this run's token does not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        proc = subprocess.Popen([str(helper), "probe", "127.0.0.1", str(s.getsockname()[1]),
                                 "1", "400"], stdout=subprocess.PIPE, text=True)
        data, addr = s.recvfrom(64)
        assert len(data) == 14 and data.startswith(b"hnbU")
        s.sendto(data[:4] + bytes(8) + data[12:], addr)     # wrong token
        s.sendto(data + b"extra", addr)                     # wrong length
        out, _ = proc.communicate(timeout=5)
    assert out.splitlines() == ["timeout 0"]


@pytest.mark.parametrize("args", [
    ["probe"], ["probe", "127.0.0.1", "7", "0", "100"], ["probe", "127.0.0.1", "70000", "1", "1"],
    ["probe", "not-an-ip", "7", "1", "100"], ["probe", "127.0.0.1", "7", "1", "10x"],
    ["echo", "0"], ["echo"], ["bogus"]])
def test_bad_usage_exits_2(helper, args):
    r = subprocess.run([str(helper), *args], capture_output=True, text=True, timeout=5)
    assert r.returncode == 2 and r.stdout == ""
