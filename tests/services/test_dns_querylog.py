"""The DNS query log: batched writes, rotation into a bounded pair of files, tail reading."""

import time

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
