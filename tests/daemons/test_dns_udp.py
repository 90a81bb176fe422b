"""The name server's batch I/O (hybridnb.daemons.dns.udp) on loopback sockets: the
recvmmsg/sendmmsg extension and the portable fallback behave the same — batches, senders,
replies to the right sender, no reply where asked, truncation, signals during the wait."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time

import pytest

from hybridnb.daemons.dns import udp

IOS = ["mmsg", "portable"] if sys.platform.startswith("linux") else ["portable"]


@pytest.fixture
def server_sock():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    yield s
    s.close()


def client() -> socket.socket:
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.bind(("127.0.0.1", 0))
    c.settimeout(2)
    return c


def test_the_extension_is_built_on_linux():
    """pip install builds it (gcc and Python headers are in the Makefile's packages); a
    broken build must show, not silently fall back."""
    if sys.platform.startswith("linux"):
        assert udp.mmsg_available()
    assert udp.open_batch(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), "portable")
    with pytest.raises(ValueError):
        udp.open_batch(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), "fast")


@pytest.mark.parametrize("io", IOS)
def test_batch_round_trip(server_sock, io):
    """Datagrams from two clients come in order, in batches of at most the batch size;
    each reply goes to the sender of its datagram; ``None`` sends nothing."""
    io_ = udp.open_batch(server_sock, io, size=8)
    a, b = client(), client()
    with a, b:
        port = server_sock.getsockname()[1]
        sent = [(b if i % 3 == 0 else a, b"q%02d" % i) for i in range(20)]
        for c, msg in sent:
            c.sendto(msg, ("127.0.0.1", port))
        got: list[bytes] = []
        sizes = []
        while len(got) < len(sent):
            datas, ips = io_.recv()
            sizes.append(len(datas))
            assert ips == ["127.0.0.1"] * len(datas)
            assert [io_.addr(k) for k in range(len(datas))] == \
                [c.getsockname() for c, _ in sent[len(got):len(got) + len(datas)]]
            replies = [None if int(d[1:]) % 4 == 2 else d.upper() for d in datas]
            assert io_.send(replies) == sum(r is not None for r in replies)
            got += datas
        assert got == [m for _, m in sent] and max(sizes) <= 8
        if io == "mmsg":
            assert sizes[0] == 8                        # all were queued: a full batch
        for c in (a, b):
            want = [m.upper() for s, m in sent if s is c and int(m[1:]) % 4 != 2]
            assert [c.recv(100) for _ in want] == want
            c.settimeout(0.1)
            with pytest.raises(socket.timeout):
                c.recv(100)                             # nothing for the skipped ones


@pytest.mark.parametrize("io", IOS)
def test_long_datagrams_are_truncated_and_signals_do_not_end_the_wait(server_sock, io):
    io_ = udp.open_batch(server_sock, io)
    seen: list[int] = []
    old = signal.signal(signal.SIGUSR1, lambda s, f: seen.append(s))
    try:
        port = server_sock.getsockname()[1]
        with client() as c:
            def later() -> None:
                time.sleep(0.2)
                os.kill(os.getpid(), signal.SIGUSR1)     # interrupts the wait
                time.sleep(0.2)
                c.sendto(b"x" * 5000, ("127.0.0.1", port))
            t = threading.Thread(target=later)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
            try:
                t.start()                                # the signal goes to this thread
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
            datas, _ = io_.recv()
            t.join()
        assert seen == [signal.SIGUSR1]                  # the handler ran, the wait went on
        assert datas == [b"x" * udp.BUFSIZE]
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_extension_refuses_bad_use(server_sock):
    from hybridnb.daemons.dns._mmsg import Batch

    for kw in ({"size": 0}, {"size": 5000}, {"bufsize": 5}):
        with pytest.raises(ValueError):
            Batch(server_sock.fileno(), **kw)
    batch = Batch(server_sock.fileno(), 4)
    with pytest.raises(ValueError):
        batch.send([b"x"])                        # no datagram received yet
    with pytest.raises(IndexError):
        batch.addr(0)
    with client() as c:
        c.sendto(b"hello", server_sock.getsockname())
        datas, ips = batch.recv()
        with pytest.raises(TypeError):
            batch.send(["text"])
        with pytest.raises(TypeError):
            batch.send((b"x",))
        assert batch.send([b"world"]) == 1 and c.recv(10) == b"world"
