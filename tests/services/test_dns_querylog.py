"""The DNS query log: batched writes, rotation into a bounded pair of files, tail reading."""

import time

import pytest

from hybridnb.daemons.dns.querylog import QueryLog, read_log


def test_batches_rotate_and_tail(tmp_path):
    path = tmp_path / "q.log"
    log = QueryLog(path, max_bytes=5000)
    t = time.time()
    for i in range(200):
        log.append((t, "10.0.1.5", f"h{i}.hybrid.local.\tA\tNOERROR", t + 12e-6))
        if i % 50 == 49:
            log.flush()
    log.close()
    assert path.with_name("q.log.1").exists()
    assert path.stat().st_size < 5000 + 50 * 60              # bounded
    last = read_log(path, 5)
    assert [e.name for e in last] == [f"h{i}.hybrid.local." for i in range(195, 200)]
    assert last[-1].to_dict() == {"time": last[-1].time, "client": "10.0.1.5",
                        "name": "h199.hybrid.local.", "type": "A", "rcode": "NOERROR",
                        "latency_us": last[-1].latency_us}
    assert abs(last[-1].latency_us - 12.0) < 0.5          # wall-clock float resolution
    assert abs(last[-1].time - time.time()) < 60
    both = read_log(path, 10_000)                             # spans the rotated file
    assert len(both) > 50 and both[-1].name == "h199.hybrid.local."
    assert read_log(tmp_path / "missing.log", 10) == []


def test_disabled_log_drops_entries(tmp_path):
    log = QueryLog(None)
    log.append((0.0, "127.0.0.1", "x.\tA\tNOERROR", 0.0))
    log.flush()
    assert not log.enabled and log.pending == []
    log.close()


def test_writer_thread_flushes(tmp_path):
    log = QueryLog(tmp_path / "q.log", interval=0.05)
    log.start()
    log.append((time.time(), "127.0.0.1", "a.hybrid.local.\tAAAA\tNOERROR", 0.0))
    deadline = time.monotonic() + 2
    while not read_log(tmp_path / "q.log", 1) and time.monotonic() < deadline:
        time.sleep(0.01)
    log.close()
    assert read_log(tmp_path / "q.log", 1)[0].type == "AAAA"


def test_reads_frames_of_the_older_format(tmp_path):
    """Frames holding a bare list (4th field: latency) stay readable next to new ones."""
    import marshal
    import struct

    path = tmp_path / "q.log"
    old = marshal.dumps([(1000.0, "10.0.1.7", "old.hybrid.local.\tA\tNOERROR", 5e-6)])
    path.write_bytes(struct.pack(">I", len(old)) + old)
    log = QueryLog(path)
    log.append((2000.0, "10.0.1.8", "new.hybrid.local.\tPTR\tNXDOMAIN", 2000.25))
    log.close()
    old_e, new_e = read_log(path, 10)
    assert (old_e.name, old_e.latency_us, old_e.time) == ("old.hybrid.local.", 5.0, 1000.0)
    assert (new_e.client, new_e.type, new_e.rcode, new_e.latency_us) == \
        ("10.0.1.8", "PTR", "NXDOMAIN", 250000.0)


def test_hot_loop_groups_keep_every_field_across_rotation(tmp_path):
    """Float groups (one per batch: monotonic receive and answer times, count, one client +
    text code per query) read back as full entries, also from a rotated file, whose tables
    are rewritten at its start."""
    from hybridnb.daemons.dns.querylog import text_code

    path = tmp_path / "q.log"
    log = QueryLog(path, max_bytes=3000)
    a, b = log.client_code("10.0.1.5"), log.client_code("127.0.0.1")
    assert a and b and a != b and log.client_code("10.0.1.5") == a
    i = 0
    for size in [1, 2, 3, 5, 8] * 20:                        # batches of several sizes
        t0 = time.monotonic()
        group = [t0, t0 + 25e-6, float(size)]
        for _ in range(size):
            group.append((a if i % 2 else b) + text_code(f"f{i}.hybrid.local.\tA\tNOERROR"))
            i += 1
        log.fast_extend(group)
        if i % 40 < size:
            log.flush()
    log.append((time.time(), "10.0.1.9", "slow.hybrid.local.\tTXT\tNOTIMP", time.time() + 1e-3))
    log.close()
    assert path.with_name("q.log.1").exists()
    entries = read_log(path, 10_000)
    names = [e.name for e in entries]
    assert names[-2:] == [f"f{i - 1}.hybrid.local.", "slow.hybrid.local."]
    assert names[:-1] == sorted(names[:-1], key=lambda n: int(n.split(".")[0][1:]))
    last = entries[-2]
    assert (last.client, last.type, last.rcode) == ("10.0.1.5", "A", "NOERROR")
    assert abs(last.latency_us - 25.0) < 0.5 and abs(last.time - time.time()) < 60
    assert entries[-1].client == "10.0.1.9" and entries[-1].rcode == "NOTIMP"
    older = read_log(path.with_name("q.log.1"), 10_000)       # read_log spans both files
    assert older and entries[:len(older)] == older
    nums = [int(e.name.split(".")[0][1:]) for e in entries[:-1]]
    assert nums == list(range(nums[0], i))                 # nothing lost across the rotation


def test_reads_frames_of_the_triple_format(tmp_path):
    """Frames of the previous hot-loop format (one float triple per query) stay readable."""
    import marshal
    import struct
    import sys
    from array import array

    from hybridnb.daemons.dns.querylog import FORMAT_FAST

    t0 = time.monotonic()
    raw = array("d", [t0, 1 * 2.0**32 + 0, t0 + 5e-6, t0 + 1, 1 * 2.0**32 + 1, t0 + 1 + 7e-6])
    frame = marshal.dumps((FORMAT_FAST, time.time() - time.monotonic(),
                           sys.byteorder == "little", raw.tobytes(), 0, ["", "10.0.1.4"], 0,
                           ["a.hybrid.local.\tA\tNOERROR", "b.hybrid.local.\tPTR\tNXDOMAIN"],
                           []))
    path = tmp_path / "q.log"
    path.write_bytes(struct.pack(">I", len(frame)) + frame)
    a, b = read_log(path, 10)
    assert (a.name, a.client, b.type, b.rcode) == ("a.hybrid.local.", "10.0.1.4", "PTR",
                                                   "NXDOMAIN")
    assert abs(a.latency_us - 5.0) < 0.5 and abs(b.latency_us - 7.0) < 0.5


@pytest.mark.extra("dns")
@pytest.mark.parametrize("io", ["mmsg", "portable"])
def test_server_logs_every_answered_query_before_sending_it(tmp_path, io):
    """Real UDP queries on loopback (plain, table and slow path; one at a time and in
    bursts that arrive as one batch): every answer a client holds is already in the query log
    (a flush right after receiving it finds it), and every query is logged."""
    import json
    import socket
    import threading

    from hybridnb.core.dnszone import Zone
    from hybridnb.daemons.dns import server as srv

    zone = Zone("hybrid.local", {"h1": "10.0.1.11"}, "10.0.1.1", subnet="10.0.1.0/24")
    (tmp_path / "z.json").write_text(json.dumps(zone.to_dict()))
    log = QueryLog(tmp_path / "q.log", interval=3600)        # only our flushes write
    server = srv.Server(str(tmp_path / "z.json"), "127.0.0.1", 0, [], log, io=io)
    real = server.io

    class Stoppable:                          # the real batch I/O; recv stops on request
        stop = False

        def recv(self):
            got = real.recv()
            if self.stop:
                raise srv._Stop
            return got

        send, addr = real.send, real.addr

    io_ = server.io = Stoppable()
    thread = threading.Thread(target=server.serve_udp, daemon=True)
    thread.start()

    def query(qid: int, name: bytes, qtype: int, flags: int = 0x0100) -> bytes:
        return (qid.to_bytes(2, "big") + flags.to_bytes(2, "big")
                + b"\x00\x01\x00\x00\x00\x00\x00\x00" + name + qtype.to_bytes(2, "big")
                + b"\x00\x01")

    singles = [query(1, b"\x02h1\x06hybrid\x05local\x00", 1),            # plain
               query(2, b"\x02H1\x06hybrid\x05local\x00", 1),            # case kept: table
               query(3, b"\x02h1\x06hybrid\x05local\x00", 16)]           # TXT: slow path
    burst = [query(100 + k, b"\x02h1\x06hybrid\x05local\x00", (1, 28, 16)[k % 3])
             for k in range(60)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(2)
        for q in singles:
            c.sendto(q, ("127.0.0.1", server.port))
            assert c.recvfrom(4096)[0][:2] == q[:2]
            log.flush()                                          # logged before it was sent
            assert read_log(tmp_path / "q.log", 1)[0].type == ("A", "A", "TXT")[q[1] - 1]
        for q in burst:
            c.sendto(q, ("127.0.0.1", server.port))
        got = sorted(c.recvfrom(4096)[0][:2] for _ in burst)
        assert got == sorted(q[:2] for q in burst)
        log.flush()
        io_.stop = True
        c.sendto(b"stop", ("127.0.0.1", server.port))
    thread.join(timeout=5)
    assert not thread.is_alive()
    server.close()
    entries = read_log(tmp_path / "q.log", 100)
    assert [(e.client, e.type) for e in entries[:3]] == [("127.0.0.1", "A")] * 2 + \
        [("127.0.0.1", "TXT")]
    assert sorted(e.type for e in entries[3:]) == sorted(("A", "AAAA", "TXT")[k % 3]
                                                        for k in range(60))
    assert entries[0].name == "h1.hybrid.local." and entries[0].rcode == "NOERROR"
    assert all(0 <= e.latency_us < 1e6 and abs(e.time - time.time()) < 60 for e in entries)


def test_records_read_by_attribute_and_by_name(tmp_path):
    import pytest as _pytest

    log = QueryLog(tmp_path / "q.log")
    log.append((1000.0, "10.0.1.8", "web.hybrid.local.\tA\tNOERROR", 1000.5))
    log.close()
    (rec,) = read_log(tmp_path / "q.log", 1)
    assert rec.name == rec["name"] == "web.hybrid.local." and rec["latency_us"] == 500000.0
    assert rec.to_dict() == {f: rec[f] for f in ("time", "client", "name", "type", "rcode",
                                                 "latency_us")}
    with _pytest.raises(KeyError):
        rec["to_dict"]
