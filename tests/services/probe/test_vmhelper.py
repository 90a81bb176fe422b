"""The VM probe helper's wire format and the VM source's choice of path.

The format tests are pure.  The end-to-end ones compile ``hnb-probe`` (gcc, FAIL under
CI=true without it) and serve it on a unix socket in a temporary directory, as QEMU serves
the VM's virtio-serial port, in ``stdio`` mode (this host as a stand-in guest); its echoes go
to 127.0.0.1 only, from a raw socket (root: skipped otherwise, FAIL under CI).
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from hybridnb.errors import EngineUnavailable
from hybridnb.images import testvm
from hybridnb.services.probe import ProbeEndpoint, plan_probes, vmhelper
from hybridnb.services.probe.matrix import ProbeResult
from tests.gating import IN_CI


def test_encode_batch_one_line_per_pair():
    data = vmhelper.encode_batch("ab12", 3, 1.5, [(0, "icmp", "10.0.1.5", None),
                                                  (7, "tcp", "10.0.1.9", 5432)])
    assert data == b"BATCH ab12 3 1500\nICMP 0 10.0.1.5\nTCP 7 10.0.1.9 5432\nEND\n"


@pytest.mark.parametrize("count, probes", [
    (0, [(0, "icmp", "10.0.1.5", None)]), (17, [(0, "icmp", "10.0.1.5", None)]),
    (1, [(0, "icmp", "10.0.1.5 x", None)]), (1, [(0, "icmp", "", None)]),
    (1, [(0, "tcp", "10.0.1.5", None)]), (1, [(0, "tcp", "10.0.1.5", 70000)]),
    (1, [(0, "udp", "10.0.1.5", 7)])])
def test_encode_batch_refuses_what_the_helper_cannot_read(count, probes):
    with pytest.raises(ValueError):
        vmhelper.encode_batch("b", count, 1.0, probes)


def test_parse_replies_keeps_only_its_batch_and_sees_done():
    text = ("HELLO n hnb-probe 1 icmp\n"
            "R old 0 ok 5 -\n"                          # a batch given up on
            "R b1 0 ok 250000,500000 -\n"
            "R b1 1 fail - unreach:1\n"
            "R b1 2 fail - timeout\n"
            "R b1 x ok 1 -\n"
            "DONE old\n")
    got, done = vmhelper.parse_replies(text, "b1")
    assert not done
    assert got == {0: (True, (0.00025, 0.0005), ""), 1: (False, (), "unreach:1"),
                   2: (False, (), "timeout")}
    assert vmhelper.parse_replies(text + "DONE b1\n", "b1")[1]


@pytest.mark.parametrize("code, text", [
    ("timeout", "timeout"), ("unreach:1", "host unreachable"),
    ("unreach:3", "port unreachable"), ("unreach:5", "unreachable (code 5)"),
    ("ttl", "TTL exceeded"), ("errno:101", "network unreachable"),
    ("errno:1", "blocked (EPERM)"), ("bad-address", "not an IPv4 address")])
def test_reason_codes_read_as_the_engine_words(code, text):
    assert vmhelper.reason_text(code) == text


# ----------------------------------------------------------------- the path a VM source takes

class Guest:
    """A stand-in VM executor: records the script's pairs, answers every pair ok; with
    ``channel`` it also names a helper socket."""

    def __init__(self, channel: str | None = None) -> None:
        self.channel = channel
        self.scripted: list[str] = []

    def __call__(self, argv, timeout):
        lines = [ln.split() for ln in argv[-1].splitlines()
                 if ln.startswith("p_") and ln.endswith("&")]
        self.scripted += [f"{ln[0][2:]}:{ln[1]}" for ln in lines]
        return 0, "".join(f"R {ln[1]} ok 1.5 -\n" for ln in lines), ""

    def probe_channel(self) -> str | None:
        return self.channel


def vm_pairs(guest: Guest, checks=("icmp", "tcp"), port: int = 7):
    src = ProbeEndpoint("vm", "127.0.0.1", executor=guest, kind="vm")
    declared = (f"tcp/{port}", "udp/7")
    eps = [src, ProbeEndpoint("a", "127.0.0.1", kind="vm", services=declared),
           ProbeEndpoint("b", "127.0.0.1", kind="vm", services=declared)]
    plan = plan_probes(eps, checks, count=2)
    source = next(s for s in plan.scripts if s.src.name == "vm")
    return source.src, [plan.pairs[i] for i in source.pairs]


def run(src, pairs, timeout=0.5):
    return vmhelper.run_vm_source(src, pairs, timeout=timeout, count=2, domain="hybrid.local")


def test_without_a_channel_everything_goes_through_the_script_and_says_so(monkeypatch):
    monkeypatch.delenv(vmhelper.MODE_ENV, raising=False)
    guest = Guest()
    src, pairs = vm_pairs(guest)
    out = run(src, pairs)
    assert sorted(guest.scripted) == ["icmp:0", "icmp:1", "tcp:2", "tcp:3"]
    assert {r.detail for r in out.values()} == {vmhelper.VIA_SCRIPT}
    assert all(r.ok for r in out.values())


def test_forced_helper_without_one_fails_its_pairs_with_the_reason(monkeypatch):
    monkeypatch.setenv(vmhelper.MODE_ENV, "helper")
    guest = Guest()
    src, pairs = vm_pairs(guest, ("icmp", "tcp", "udp"))
    out = run(src, pairs)
    assert sorted(guest.scripted) == ["udp:0", "udp:1"]       # the rest still runs
    fast = [r for r in out.values() if r.check in ("icmp", "tcp")]
    assert len(fast) == 4 and all(r.ok is False for r in fast)
    assert all(r.reason == "probe helper unavailable: no helper channel" for r in fast)


def test_a_channel_nobody_answers_falls_back_to_the_script(monkeypatch, tmp_path):
    monkeypatch.delenv(vmhelper.MODE_ENV, raising=False)
    monkeypatch.setattr(vmhelper, "HELLO_TIMEOUT", 0.2)
    path = str(tmp_path / "probe.sock")
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute.bind(path)
    mute.listen(1)                                   # accepted by the kernel, never answered
    try:
        guest = Guest(path)
        src, pairs = vm_pairs(guest)
        out = run(src, pairs)
    finally:
        mute.close()
    assert sorted(guest.scripted) == ["icmp:0", "icmp:1", "tcp:2", "tcp:3"]
    assert all(r.ok for r in out.values())


def test_a_helper_that_dies_midway_hands_only_its_pairs_to_the_script(monkeypatch, tmp_path):
    """HELLO answered, then the port closes during the batch: the ICMP pairs are scripted
    once, the rest (already scripted beside the batch) not again."""
    monkeypatch.delenv(vmhelper.MODE_ENV, raising=False)
    path = str(tmp_path / "probe.sock")
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(1)

    def serve() -> None:
        conn, _ = lsock.accept()
        with conn:
            nonce = conn.recv(100).split()[1]
            conn.sendall(b"HELLO " + nonce + b" hnb-probe 1 icmp\n")
            conn.recv(4096)                                  # the batch: then gone

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        guest = Guest(path)
        src, pairs = vm_pairs(guest)
        out = run(src, pairs)
    finally:
        t.join(5)
        lsock.close()
    assert sorted(guest.scripted) == ["icmp:0", "icmp:1", "tcp:0", "tcp:1"]
    assert len(out) == 4 and all(r.ok for r in out.values())
    assert {r.detail for r in out.values() if r.check == "icmp"} == {vmhelper.VIA_SCRIPT}


# ----------------------------------------------------------------- the real helper, end to end

@pytest.fixture(scope="module")
def prober(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("hnb-probe")
    try:
        data = testvm.compile_probe_helper(work)
    except EngineUnavailable as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    assert data[:4] == b"\x7fELF"
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("the probe helper's raw ICMP socket needs root")
        pytest.skip("the probe helper's raw ICMP socket needs root")
    return work / "hnb-probe"


def test_compiles_without_warnings():
    out = subprocess.run(["gcc", "-Os", "-Wall", "-Wextra", "-Werror", "-c", "-o", "/dev/null",
                          str(testvm.PROBE_HELPER_SOURCE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.fixture
def served(prober, tmp_path):
    """A unix socket whose every connection talks to a fresh ``hnb-probe stdio``."""
    path = str(tmp_path / "probe.sock")
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(4)
    procs: list[subprocess.Popen] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            with conn:
                procs.append(subprocess.Popen([str(prober), "stdio"], stdin=conn.fileno(),
                                              stdout=conn.fileno()))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield path
    finally:
        lsock.shutdown(socket.SHUT_RDWR)
        lsock.close()
        t.join(2)
        for p in procs:
            p.kill()
            p.wait()


def test_helper_answers_hello_and_a_batch_with_kernel_rtts(served):
    with vmhelper.HelperConnection(served) as conn:
        assert conn.version == "hnb-probe 1 icmp tcp"
        assert conn.capabilities == {"icmp", "tcp"}
        got = conn.batch([(0, "icmp", "127.0.0.1", None), (5, "icmp", "127.0.0.2", None),
                          (9, "icmp", "300.1.1.1", None)], count=3, timeout=0.5)
    assert set(got) == {0, 5, 9}
    for i in (0, 5):
        assert got[i].ok and len(got[i].rtts) == 3
        assert all(0 < r < 0.05 for r in got[i].rtts), got[i]
    assert got[9] == (False, (), "bad-address")


def test_helper_tcp_connects_rtt_refused_and_bad_port(served):
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))                     # bound, not listening: refused
    try:
        with vmhelper.HelperConnection(served) as conn:
            got = conn.batch([(0, "tcp", "127.0.0.1", ls.getsockname()[1]),
                              (1, "tcp", "127.0.0.1", closed.getsockname()[1]),
                              (2, "icmp", "127.0.0.1", None)], count=2, timeout=0.5)
    finally:
        ls.close()
        closed.close()
    assert got[0].ok and len(got[0].rtts) == 1 and 0 < got[0].rtts[0] < 0.05, got[0]
    assert got[1] == (False, (), "errno:111")
    assert vmhelper.reason_text(got[1].reason) == "refused"
    assert got[2].ok and len(got[2].rtts) == 2


def test_vm_source_icmp_and_tcp_through_the_helper_the_rest_through_the_script(
        monkeypatch, served):
    monkeypatch.delenv(vmhelper.MODE_ENV, raising=False)
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    try:
        guest = Guest(served)
        src, pairs = vm_pairs(guest, ("icmp", "tcp", "udp"), port=ls.getsockname()[1])
        out = run(src, pairs)
    finally:
        ls.close()
    assert sorted(guest.scripted) == ["udp:0", "udp:1"]
    fast = [r for r in out.values() if r.check in ("icmp", "tcp")]
    assert len(fast) == 4
    for r in fast:
        assert isinstance(r, ProbeResult)
        want = (2, 2) if r.check == "icmp" else (1, 1)
        assert r.ok and r.detail == vmhelper.VIA_HELPER and (r.sent, r.received) == want, r
        assert len(r.rtts) == want[1]
    assert all(r.ok for r in out.values())
