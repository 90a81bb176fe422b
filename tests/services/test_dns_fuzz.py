"""Hostile input for the lab's DNS server: it must never die and must keep answering right.

* in-process: hypothesis (structure-aware packets: bad label lengths, compression pointers and
  loops, huge section counts, odd flags/opcodes, broken OPT records) and a fast seeded random
  loop (truncations, byte flips, label corruption of valid queries, random bytes) against the
  hot path and the slow path — nothing raises, the fast path agrees byte for byte with the
  slow path, every reply parses, and a refused client never gets more bytes than it sent;
* over the network: >= 100k such packets sent in bursts to the real server process on the
  namespace's loopback; after every burst a sentinel query must get exactly the expected
  answer, and the process must still be alive at the end.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridnb.core.dnszone import Service, Zone
from hybridnb.daemons.dns import wire

from .netns_helpers import LabNetns, require_root

pytestmark = pytest.mark.extra("dns")

ZONE = Zone("hybrid.local", {f"h{i}": f"10.0.1.{10 + i}" for i in range(50)}, "10.0.1.1",
            services=[Service("http", "tcp", "h1", 1000 + i) for i in range(70)],
            subnet="10.0.1.0/24")
NAMES = [n for n in ZONE.names()] + ["nope.hybrid.local.", "example.com.", "."]
TYPES = [1, 2, 6, 12, 16, 28, 33, 41, 65, 252, 255, 0, 65535]


@pytest.fixture(scope="module")
def answers():
    return wire.Answers(ZONE)


def query(name: str, qtype: int, *, qid: int = 0x1234, flags: int = 0x0100, edns: bytes = b"",
          mix_case: random.Random | None = None) -> bytes:
    qn = wire.name_to_wire(name)
    if mix_case is not None:
        qn = bytes(c ^ 0x20 if 97 <= c <= 122 and mix_case.random() < 0.5 else c for c in qn)
    ar = 1 if edns else 0
    return struct.pack(">HHHHHH", qid, flags, 1, 0, 0, ar) + qn + struct.pack(">HH", qtype, 1) \
        + edns


def opt(payload: int = 1232, version: int = 0, do: bool = False, rdata: bytes = b"") -> bytes:
    return b"\x00\x00\x29" + struct.pack(">HBBHH", payload, 0, version, 0x8000 if do else 0,
                                         len(rdata)) + rdata


def check(answers: wire.Answers, data: bytes) -> None:
    """The properties every packet must satisfy."""
    import dns.message

    slow = wire.slow_answer(answers, data)
    fast = wire.fast_answer(answers, data)
    if fast is not None:
        assert fast[0] == slow.wire, data.hex()
        assert fast[1] == "\t".join((slow.name, slow.qtype, slow.rcode))
    plain = wire.plain_answer(answers.plain, data)
    if plain is not None:
        assert plain[0] == slow.wire, data.hex()
        assert plain[1] == "\t".join((slow.name, slow.qtype, slow.rcode))
    if slow.wire is not None:
        out = slow.wire
        assert len(out) >= 12 and out[:2] == data[:2] and out[2] & 0x80
        dns.message.from_wire(out)                            # a well-formed message
    refused = wire.slow_answer(answers, data, allowed=False)
    if refused.wire is not None:
        assert len(refused.wire) <= max(len(data), 12)
        assert not refused.wire[6:10].strip(b"\x00")          # no answers, no authority
    tcp = wire.answer(answers, data, tcp=True)
    if tcp.wire is not None:
        assert not tcp.wire[2] & 0x02                         # TCP is never truncated


# ---------------------------------------------------------------------- generators
def mutate(rng: random.Random, data: bytes) -> bytes:
    """One hostile variant of a valid query."""
    b = bytearray(data)
    kind = rng.randrange(10)
    if kind == 0:                                   # truncated
        return bytes(b[:rng.randrange(len(b))])
    if kind == 1:                                   # byte flips
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if kind == 2:                                   # bad label length
        b[12] = rng.choice([0, 63, 64, 127, 191, 255, len(b)])
        return bytes(b)
    if kind == 3:                                   # compression pointer / loop in the question
        pos = rng.randrange(12, max(13, len(b) - 4))
        b[pos:pos + 2] = struct.pack(">H", 0xC000 | rng.choice([12, pos, 0, 0x3FFF]))
        return bytes(b)
    if kind == 4:                                   # huge counts
        struct.pack_into(">HHHH", b, 4, *(rng.choice([0, 1, 2, 0xFFFF]) for _ in range(4)))
        return bytes(b)
    if kind == 5:                                   # flags: QR, opcodes, TC, Z, rcodes
        b[2], b[3] = rng.randrange(256), rng.randrange(256)
        return bytes(b)
    if kind == 6:                                   # garbage appended / additional records
        return bytes(b) + os.urandom(rng.randrange(1, 40))
    if kind == 7:                                   # pointer loop in an additional record
        struct.pack_into(">H", b, 10, 1)
        return bytes(b) + b"\xc0" + bytes([len(b)]) + os.urandom(rng.randrange(0, 12))
    if kind == 8:                                   # random bytes
        return os.urandom(rng.randrange(0, 600))
    return bytes(b[:12]) + os.urandom(rng.randrange(0, 300))     # valid header, random body


def valid(rng: random.Random) -> bytes:
    name = rng.choice(NAMES)
    edns = rng.choice([b"", opt(), opt(512, do=True), opt(4096), opt(1232, 1),
                       opt(1232, rdata=b"\x00\x0a\x00\x08" + os.urandom(8))])
    return query(name, rng.choice(TYPES), qid=rng.randrange(65536),
                 flags=rng.choice([0x0000, 0x0100, 0x0110, 0x0120]), edns=edns, mix_case=rng)


def packets(seed: int, count: int):
    rng = random.Random(seed)
    for _ in range(count):
        pkt = valid(rng)
        yield pkt if rng.random() < 0.1 else mutate(rng, pkt)


labels = st.one_of(
    st.binary(min_size=1, max_size=63).map(lambda b: bytes([len(b)]) + b),
    st.integers(64, 255).map(lambda n: bytes([n])),                        # bad length
    st.integers(0, 0x3FFF).map(lambda p: struct.pack(">H", 0xC000 | p)),  # pointer
    st.sampled_from([b"\x03web", b"\x02h1", b"\x06hybrid", b"\x05local", b"\x04_tcp"]),
)
hostile = st.builds(
    lambda qid, f2, f3, counts, labs, end, qtype, tail: struct.pack(
        ">HBBHHHH", qid, f2, f3, *counts) + b"".join(labs) + end + struct.pack(">H", qtype)
    + tail,
    st.integers(0, 65535), st.integers(0, 255), st.integers(0, 255),
    st.tuples(*[st.sampled_from([0, 1, 2, 255, 65535])] * 4),
    st.lists(labels, max_size=8), st.sampled_from([b"\x00", b"", b"\x00\x00"]),
    st.sampled_from(TYPES), st.one_of(
        st.just(b"\x00\x01"), st.binary(max_size=40),
        st.builds(lambda o: b"\x00\x01" + o,
                  st.builds(opt, st.integers(0, 65535), st.integers(0, 3), st.booleans(),
                            st.binary(max_size=12)))))


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=hostile)
def test_hypothesis_structured(answers, data):
    check(answers, data)


@settings(max_examples=1000, deadline=None)
@given(data=st.binary(max_size=700))
def test_hypothesis_random_bytes(answers, data):
    check(answers, data)


def test_random_loop_in_process(answers):
    n = 0
    for pkt in packets(seed=1, count=100_000):
        wire.answer(answers, pkt)
        n += 1
    for pkt in packets(seed=2, count=5_000):       # the full property set on a sample
        check(answers, pkt)
    assert n == 100_000


def test_fast_path_needs_exact_structure(answers):
    good = query("h1.hybrid.local.", 1)
    assert wire.fast_answer(answers, good) is not None
    assert wire.plain_answer(answers.plain, good) is not None
    assert wire.plain_answer(answers.plain, good + b"\x00") is None
    assert wire.plain_answer(answers.plain, good[:-1]) is None
    assert wire.plain_answer(answers.plain, good.replace(b"\x02h1", b"\x02H1")) is None  # fast
    assert wire.plain_answer(answers.plain, query("h1.hybrid.local.", 1, flags=0x0110)) is None
    big = query("_http._tcp.h1.hybrid.local.", 33)              # > 512 bytes: TC, slow path
    assert wire.plain_answer(answers.plain, big) is None and \
        wire.slow_answer(answers, big).rcode.endswith("+TC")
    assert wire.fast_answer(answers, good + b"\x00") is None          # trailing byte
    assert wire.fast_answer(answers, good[:-1]) is None
    assert wire.fast_answer(answers, query("h1.hybrid.local.", 1, flags=0x8100)) is None
    assert wire.fast_answer(answers, query("h1.hybrid.local.", 1, flags=0x0900)) is None
    assert wire.slow_answer(answers, query("h1.hybrid.local.", 1, flags=0x8100)).wire is None
    assert wire.slow_answer(answers, query("h1.hybrid.local.", 1, flags=0x2100)).rcode == "NOTIMP"
    assert wire.slow_answer(answers, good[:20]).rcode == "FORMERR"
    loop = good[:12] + b"\xc0\x0c" + b"\x00\x01\x00\x01"
    assert wire.slow_answer(answers, loop).rcode == "FORMERR"


def dig_query(name: str, qtype: int, rng: random.Random) -> bytes:
    """What dig sends by default: RD and AD set, EDNS0 with a 1232-byte payload and an 8-byte
    client COOKIE."""
    return query(name, qtype, qid=rng.randrange(65536), flags=0x0120,
                 edns=opt(1232, rdata=b"\x00\x0a\x00\x08" + rng.randbytes(8)))


def test_dig_style_queries_take_the_fast_path(answers):
    """EDNS queries with options (dig's cookie), any case, DO or not: answered by the hot
    path exactly as the slow path answers them."""
    rng = random.Random(5)
    names = ["h1.hybrid.local.", "H7.Hybrid.LOCAL.", "_http._tcp.h1.hybrid.local."]
    for name, qtype in [(n, t) for n in names for t in (1, 28, 33, 12)] + \
            [("11.1.0.10.in-addr.arpa.", 12)]:
        q = dig_query(name, qtype, rng)
        slow = wire.slow_answer(answers, q)
        if len(slow.wire) <= 1232 and not slow.rcode.endswith("+TC"):
            assert wire.fast_answer(answers, q) == (slow.wire, "\t".join(
                (slow.name, slow.qtype, slow.rcode))), (name, qtype)
    padded = query("h1.hybrid.local.", 1, edns=opt(1232, do=True, rdata=b"\x00\x0c\x00\x03abc"))
    assert wire.fast_answer(answers, padded)[0] == wire.slow_answer(answers, padded).wire
    # an OPT whose RDATA length does not reach the end, or runs past it: slow path
    short = query("h1.hybrid.local.", 1, edns=opt(1232, rdata=b"\x00\x0a\x00\x08" + bytes(8)))
    assert wire.fast_answer(answers, short + b"\x00") is None
    assert wire.fast_answer(answers, short[:-1]) is None
    assert wire.fast_answer(answers, query("h1.hybrid.local.", 1, edns=opt(1232, 1))) is None


def test_batches_agree_with_the_slow_path(answers):
    """The hot path over whole batches (allowed, refused and unknown senders mixed, the
    packets hostile and valid): every reply it gives is the slow path's, every position it
    leaves is listed for the slow path, and the log codes name each answered query's client
    and the slow path's name, type and rcode."""
    from hybridnb.daemons.dns.querylog import CLIENT_UNIT, text_of

    rng = random.Random(11)
    acl = {"10.0.1.5": CLIENT_UNIT, "10.0.1.6": 2 * CLIENT_UNIT, "192.0.2.1": 0.0}
    gen = packets(seed=4, count=30_000)
    done = 0
    while done < 30_000:
        size = rng.choice([1, 2, 7, 64])
        datas = [next(gen) if rng.random() < 0.5 else dig_query(rng.choice(NAMES),
                                                                 rng.choice(TYPES), rng)
                 for _ in range(size)]
        ips = [rng.choice(list(acl) + ["10.0.1.77"]) for _ in datas]
        codes: list[float] = []
        replies, slow = wire.answer_batch(answers, acl, datas, ips, codes)
        assert len(replies) == len(datas)
        assert slow == [i for i, r in enumerate(replies) if r is None]
        answered = [i for i, r in enumerate(replies) if r is not None]
        assert len(codes) == len(answered)
        for i, code in zip(answered, codes):
            ref = wire.slow_answer(answers, datas[i])
            assert replies[i] == ref.wire, datas[i].hex()
            assert acl[ips[i]] and int(code // CLIENT_UNIT) == int(acl[ips[i]] // CLIENT_UNIT)
            assert text_of(code % CLIENT_UNIT) == f"{ref.name}\t{ref.qtype}\t{ref.rcode}"
        done += size


# --------------------------------------------------------------------- network fuzz
@pytest.mark.real
@pytest.mark.parametrize("io", ["mmsg", "portable"])
def test_network_fuzz_server_survives(tmp_path, io):
    """100k hostile packets in bursts of 1000 to the real server process (batched I/O and the
    portable loop): it stays up, loses nothing, and its whole reply stream is byte for byte
    what the in-process hot and slow paths say, in order."""
    require_root("nsenter", "ip")
    ns = LabNetns("df", ["10.0.1.1/24"])
    zone_file = tmp_path / "zone.json"
    import json
    zone_file.write_text(json.dumps(ZONE.to_dict()))
    pidfile = tmp_path / "pid"
    proc = subprocess.Popen(["nsenter", f"--net={ns.path}", sys.executable, "-m",
                             "hybridnb.daemons.dns.server", "--zone", str(zone_file),
                             "--listen", "127.0.0.1", "--port", "53", "--pidfile", str(pidfile),
                             "--log", str(tmp_path / "query.log"), "--io", io],
                            stderr=open(tmp_path / "err", "wb"))
    try:
        deadline = time.monotonic() + 10
        while not pidfile.exists():
            assert proc.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "err").read_text()
            time.sleep(0.02)
        answers = wire.Answers(ZONE)
        sock = ns.socket_in(connect=("127.0.0.1", 53))
        sock.setsockopt(socket.SOL_SOCKET, 33, 16 * 1024 * 1024)   # SO_RCVBUFFORCE: keep replies
        sock.settimeout(5)
        sent = replies = 0
        rng = random.Random(7)
        gen = packets(seed=3, count=100_000)
        for burst in range(100):
            expected = []
            for pkt in (next(gen) for _ in range(1000)):
                try:
                    sock.send(pkt)
                    sent += 1
                except OSError:
                    continue
                out = wire.answer(answers, pkt).wire
                if out is not None:
                    expected.append(out)
            # sentinel: the server answers in order, so all of the burst was processed
            probe = query(rng.choice(NAMES[:60]), 1, qid=0xBEEF, mix_case=rng,
                          edns=opt() if burst % 2 else b"")
            sock.send(probe)
            expected.append(wire.answer(answers, probe).wire)
            got = [sock.recv(65535) for _ in expected]
            replies += len(got)
            assert got == expected, f"burst {burst}: replies differ"
        assert sent >= 100_000 and proc.poll() is None
        snmp = ns.exec("cat", "/proc/net/snmp").stdout.splitlines()
        udp = dict(zip(*[line.split()[1:] for line in snmp if line.startswith("Udp:")]))
        assert int(udp["RcvbufErrors"]) == 0           # every packet reached the server
        print(f"network fuzz ({io}): {sent} hostile packets, {replies} replies, all as "
              "expected, server alive")
        assert b"Traceback" not in (tmp_path / "err").read_bytes()
        assert f"{'_MmsgBatch' if io == 'mmsg' else 'PortableBatch'} I/O" in \
            (tmp_path / "err").read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        ns.close()
