"""The DNS query log: every query with time, client, name, type, answer code and latency.

The server's hot loop only appends a small tuple per query to an in-memory list; a writer
thread takes the list in batches every ``interval`` seconds, formats it and appends it to a
log file.  The file rotates at ``max_bytes`` into ``<file>.1`` (one generation kept), so the
pair of files is a bounded ring of the most recent queries; :func:`read_log` returns its tail.

One line per query, tab-separated::

    1732751234.123456  10.0.1.100  web.hybrid.local.  A  NOERROR  12

(the last field is the server-side latency in microseconds: from receiving the packet to
handing the answer to the kernel).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

FIELDS = ("time", "client", "name", "type", "rcode", "latency_us")
DEFAULT_MAX_BYTES = 8 * 1024 * 1024


class QueryLog:
    """Batched, rotating query log.  ``append`` is the hot-path entry point:
    ``append((t_received, client_ip, info, latency))`` with times from ``time.perf_counter``
    and ``info`` a ``(name, type, rcode)`` tuple."""

    def __init__(self, path: str | os.PathLike[str] | None, *,
                 max_bytes: int = DEFAULT_MAX_BYTES, interval: float = 0.25) -> None:
        self.path = Path(path) if path is not None else None
        self.max_bytes = max_bytes
        self.interval = interval
        self.pending: list[tuple[float, str, tuple[str, str, str], float]] = []
        self.append = self.pending.append
        self.written = 0
        # perf_counter -> wall clock
        self._offset = time.time() - time.perf_counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._file: Any = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")

    @property
    def enabled(self) -> bool:
        return self._file is not None

    def start(self) -> None:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dns-querylog", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def flush(self) -> None:
        """Write what is pending (safe to call from any thread)."""
        with self._lock:
            pending = self.pending
            count = len(pending)
            if not count or self._file is None:
                if self._file is None:
                    del pending[:count]
                return
            batch = pending[:count]
            del pending[:count]            # appends made meanwhile stay in the list
            off = self._offset
            text = "".join([
                "%.6f\t%s\t%s\t%s\t%s\t%d\n" % (t + off, client, info[0], info[1], info[2],
                                                 lat * 1e6)
                for t, client, info, lat in batch])
            self._file.write(text)
            self._file.flush()
            self.written += count
            if self._file.tell() >= self.max_bytes:
                self._rotate()

    def _rotate(self) -> None:
        assert self.path is not None
        self._file.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._file = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.flush()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _parse(line: str) -> dict[str, Any] | None:
    parts = line.rstrip("\n").split("\t")
    if len(parts) != len(FIELDS):
        return None
    try:
        return {"time": float(parts[0]), "client": parts[1], "name": parts[2],
                "type": parts[3], "rcode": parts[4], "latency_us": int(parts[5])}
    except ValueError:
        return None


def _tail_lines(path: Path, limit: int) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            block = 64 * 1024
            data = b""
            pos = size
            while pos > 0 and data.count(b"\n") <= limit:
                step = min(block, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines(keepends=True)
    if pos > 0 and lines:
        lines = lines[1:]                  # first line may be cut
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]                 # a batch being written
    return lines[-limit:] if limit else []


def read_log(path: str | os.PathLike[str], limit: int = 100) -> list[dict[str, Any]]:
    """The last ``limit`` queries (oldest first) from a query log and its rotated
    generation, as dicts with the keys in :data:`FIELDS`."""
    path = Path(path)
    lines = _tail_lines(path, limit)
    if len(lines) < limit:
        older = _tail_lines(path.with_name(path.name + ".1"), limit - len(lines))
        lines = older + lines
    out = [e for e in (_parse(line) for line in lines) if e is not None]
    return out[-limit:] if limit else []
