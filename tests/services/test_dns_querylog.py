"""The DNS query log: batched writes, rotation into a bounded pair of files, tail reading."""

import time

import pytest

from hybridnb.services.dns.querylog import QueryLog, read_log


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
    assert [e["name"] for e in last] == [f"h{i}.hybrid.local." for i in range(195, 200)]
    assert last[-1] == {"time": last[-1]["time"], "client": "10.0.1.5",
                        "name": "h199.hybrid.local.", "type": "A", "rcode": "NOERROR",
                        "latency_us": last[-1]["latency_us"]}
    assert abs(last[-1]["latency_us"] - 12.0) < 0.5          # wall-clock float resolution
    assert abs(last[-1]["time"] - time.time()) < 60
    both = read_log(path, 10_000)                             # spans the rotated file
    assert len(both) > 50 and both[-1]["name"] == "h199.hybrid.local."
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
    assert read_log(tmp_path / "q.log", 1)[0]["type"] == "AAAA"


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
    assert (old_e["name"], old_e["latency_us"], old_e["time"]) == ("old.hybrid.local.", 5.0, 1000.0)
    assert (new_e["client"], new_e["type"], new_e["rcode"], new_e["latency_us"]) == \
        ("10.0.1.8", "PTR", "NXDOMAIN", 250000.0)


def test_hot_loop_records_keep_every_field_across_rotation(tmp_path):
    """Float records (monotonic times, client code + text code) read back as full entries,
    also from a rotated file, whose tables are rewritten at its start."""
    from hybridnb.services.dns.querylog import text_code

    path = tmp_path / "q.log"
    log = QueryLog(path, max_bytes=3000)
    a, b = log.client_code("10.0.1.5"), log.client_code("127.0.0.1")
    assert a and b and a != b and log.client_code("10.0.1.5") == a
    for i in range(300):
        code = (a if i % 2 else b) + text_code(f"f{i}.hybrid.local.\tA\tNOERROR")
        t0 = time.monotonic()
        log.fast_append(t0)
        log.fast_append(code)
        log.fast_append(t0 + 25e-6)
        if i % 40 == 39:
            log.flush()
    log.append((time.time(), "10.0.1.9", "slow.hybrid.local.\tTXT\tNOTIMP", time.time() + 1e-3))
    log.fast_append(1.0)                                      # a torn record is not written
    log.close()
    assert path.with_name("q.log.1").exists()
    entries = read_log(path, 10_000)
    names = [e["name"] for e in entries]
    assert names[-2:] == ["f299.hybrid.local.", "slow.hybrid.local."]
    assert names[:-1] == sorted(names[:-1], key=lambda n: int(n.split(".")[0][1:]))
    last = entries[-2]
    assert (last["client"], last["type"], last["rcode"]) == ("10.0.1.5", "A", "NOERROR")
    assert abs(last["latency_us"] - 25.0) < 0.5 and abs(last["time"] - time.time()) < 60
    assert entries[-1]["client"] == "10.0.1.9" and entries[-1]["rcode"] == "NOTIMP"
    assert len(read_log(path.with_name("q.log.1"), 10_000)) > 0


@pytest.mark.extra("dns")
def test_server_logs_every_answered_query(tmp_path):
    """Real UDP queries on loopback (fast path and slow path) all appear in the log."""
    import json
    import socket

    from hybridnb.core.dnszone import Zone
    from hybridnb.services.dns import server as srv

    zone = Zone("hybrid.local", {"h1": "10.0.1.11"}, "10.0.1.1", subnet="10.0.1.0/24")
    (tmp_path / "z.json").write_text(json.dumps(zone.to_dict()))
    log = QueryLog(tmp_path / "q.log", interval=0.05)
    server = srv.Server(str(tmp_path / "z.json"), "127.0.0.1", 0, [], log)
    import threading

    class Stoppable:                          # the real socket; recvfrom stops on request
        def __init__(self, sock: socket.socket) -> None:
            self.sock, self.stop, self.sendto = sock, False, sock.sendto

        def recvfrom(self, n: int):
            got = self.sock.recvfrom(n)
            if self.stop:
                raise srv._Stop
            return got

        def close(self) -> None:
            self.sock.close()

    udp = server.udp = Stoppable(server.udp)
    log.start()
    thread = threading.Thread(target=server.serve_udp, daemon=True)
    thread.start()

    def query(name: bytes, qtype: int, flags: int = 0x0100) -> bytes:
        return (b"\x00\x07" + flags.to_bytes(2, "big") + b"\x00\x01\x00\x00\x00\x00\x00\x00"
                + name + qtype.to_bytes(2, "big") + b"\x00\x01")

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(2)
        for q in (query(b"\x02h1\x06hybrid\x05local\x00", 1),            # plain
                  query(b"\x02H1\x06hybrid\x05local\x00", 1),            # case kept: table
                  query(b"\x02h1\x06hybrid\x05local\x00", 16)):          # TXT: slow path
            c.sendto(q, ("127.0.0.1", server.port))
            assert c.recvfrom(4096)[0][:2] == b"\x00\x07"
        deadline = time.monotonic() + 3
        while len(read_log(tmp_path / "q.log", 10)) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        udp.stop = True
        c.sendto(b"stop", ("127.0.0.1", server.port))
    thread.join(timeout=5)
    assert not thread.is_alive()
    server.close()
    got = read_log(tmp_path / "q.log", 10)
    assert [(e["client"], e["type"]) for e in got] == [("127.0.0.1", "A")] * 2 + \
        [("127.0.0.1", "TXT")]
    assert got[0]["name"] == "h1.hybrid.local." and got[0]["rcode"] == "NOERROR"
    assert all(0 < e["latency_us"] < 1e6 and abs(e["time"] - time.time()) < 60 for e in got)
