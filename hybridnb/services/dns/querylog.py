"""The DNS query log: every query with time, client, name, type, answer code and latency.

The server's hot loop logs a query as three floats appended to one :class:`array.array`
(``fast_append``, bound once): the monotonic receive time, a code ``client * 2**32 + text``
and the monotonic time after the answer was sent.  ``client`` numbers the client address in
the log's client table (:meth:`QueryLog.client_code`, looked up once per address with the
access check) and ``text`` numbers the answer template's ``"name\ttype\trcode"`` in the
process-wide text table (:func:`text_code`, assigned when the template is built).  No object
outlives the query and nothing is formatted on the hot path.  Other paths (slow path, TCP,
forwarding) append a tuple ``(received, client, "name\ttype\trcode", answered)`` of
``time.time()`` readings to ``pending``.

A writer thread takes what is pending every ``interval`` seconds and writes it as one frame:
a 4-byte big-endian length and a :mod:`marshal` dump of ``(3, wall - monotonic, little
endian?, floats as bytes, k, clients[k:], j, texts[j:], tuples)``: the array is copied as
raw bytes and only the table entries the file has not seen yet are written (each file
starts from full tables), so a flush is a few memory copies however many queries it holds.
Older frames — ``(2, tuples)`` and a bare list whose 4th field is the latency — stay
readable.  The file rotates at ``max_bytes`` into ``<file>.1`` (one generation kept), so the
pair of files is a bounded ring of the most recent queries; :func:`read_log` returns its
tail as dicts; ``python -m hybridnb.services.dns.querylog FILE [N]`` prints it as
tab-separated text.  The tables grow with the distinct allowed clients and the answer
templates the process has built.
"""

from __future__ import annotations

import marshal
import os
import struct
import sys
import threading
import time
from array import array
from pathlib import Path
from typing import Any

FIELDS = ("time", "client", "name", "type", "rcode", "latency_us")
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
#: Marker of frames whose entries carry the answer time (not the latency) as 4th field.
FORMAT = 2
#: Marker of frames that also carry the hot loop's float records and table updates.
FORMAT_FAST = 3
#: The client number's weight in a record's code (the text number is below it).
CLIENT_UNIT = float(1 << 32)

_TEXTS: list[str] = []
_TEXT_CODES: dict[str, float] = {}
_TEXTS_LOCK = threading.Lock()


def text_code(text: str) -> float:
    """The number of a log text (``"name\ttype\trcode"``) in the process-wide text table."""
    code = _TEXT_CODES.get(text)
    if code is None:
        with _TEXTS_LOCK:
            code = _TEXT_CODES.get(text)
            if code is None:
                _TEXTS.append(text)                  # in the table before its code is used
                code = _TEXT_CODES[text] = float(len(_TEXTS) - 1)
    return code


class QueryLog:
    """Batched, rotating query log.  ``append`` is the hot-path entry point:
    ``append((t_received, client_ip, "name\ttype\trcode", t_answered))`` with
    ``time.time()`` seconds; the writer thread (:meth:`start`) writes what is pending every
    ``interval`` seconds."""

    def __init__(self, path: str | os.PathLike[str] | None, *,
                 max_bytes: int = DEFAULT_MAX_BYTES, interval: float = 0.25) -> None:
        self.path = Path(path) if path is not None else None
        self.max_bytes = max_bytes
        self.interval = interval
        self.pending: list[tuple[float, str, str, float]] = []
        self.append = self.pending.append
        #: hot-loop records: (monotonic received, client code + text code, monotonic answered)
        self.fast = array("d")
        self.fast_append = self.fast.append
        self.clients: list[str] = [""]           # number 0: no client (codes stay nonzero)
        self._client_codes: dict[str, float] = {}
        self._clients_lock = threading.Lock()
        self._sent = (0, 0)                       # table lengths the current file has seen
        self.written = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._file: Any = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")

    @property
    def enabled(self) -> bool:
        return self._file is not None

    def client_code(self, ip: str) -> float:
        """The (nonzero) code of a client address: its number times :data:`CLIENT_UNIT`."""
        code = self._client_codes.get(ip)
        if code is None:
            with self._clients_lock:
                code = self._client_codes.get(ip)
                if code is None:
                    self.clients.append(ip)
                    code = self._client_codes[ip] = (len(self.clients) - 1) * CLIENT_UNIT
        return code

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
            pending, fast = self.pending, self.fast
            count = len(pending)
            n = len(fast)
            n -= n % 3                     # a record still being appended stays
            if not count and not n:
                return
            if self._file is None:
                del pending[:count]
                del fast[:n]
                return
            batch = pending[:count]
            del pending[:count]            # appends made meanwhile stay in the list
            records = fast[:n]
            del fast[:n]
            k, j = self._sent
            clients, texts = (self.clients[k:], _TEXTS[j:]) if n else ([], [])
            self._sent = (k + len(clients), j + len(texts))
            frame = marshal.dumps((FORMAT_FAST, time.time() - time.monotonic(),
                                   sys.byteorder == "little", records.tobytes(),
                                   k, clients, j, texts, batch))
            self._file.write(struct.pack(">I", len(frame)) + frame)
            self._file.flush()
            self.written += count + n // 3
            if self._file.tell() >= self.max_bytes:
                self._rotate()

    def flush_marked(self) -> None:
        """:meth:`flush` now, then rewrite ``<log>.flushed`` (a token that changes every time):
        a reader that asked for a flush waits for the token to change."""
        self.flush()
        if self.path is not None:
            mark = self.path.with_name(self.path.name + ".flushed")
            tmp = mark.with_name(mark.name + ".tmp")
            tmp.write_text(str(time.monotonic_ns()))
            os.replace(tmp, mark)

    def _rotate(self) -> None:
        assert self.path is not None
        self._file.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._file = open(self.path, "ab")
        self._sent = (0, 0)

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


def _entries(path: Path) -> list[tuple[Any, ...]]:
    """Every entry of one log file; a torn or foreign frame ends the file."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    out: list[tuple[Any, ...]] = []
    clients: list[str] = []
    texts: list[str] = []
    i, n = 0, len(data)
    while i + 4 <= n:
        size = struct.unpack_from(">I", data, i)[0]
        if i + 4 + size > n:
            break
        try:
            frame = marshal.loads(data[i + 4:i + 4 + size])
        except (ValueError, EOFError, TypeError):
            break
        if isinstance(frame, tuple) and len(frame) == 9 and frame[0] == FORMAT_FAST:
            try:
                out.extend(_fast_entries(frame, clients, texts))
            except (TypeError, ValueError):
                break
        elif isinstance(frame, tuple) and len(frame) == 2 and frame[0] == FORMAT \
                and isinstance(frame[1], list):
            out.extend((*e, True) for e in frame[1] if isinstance(e, tuple) and len(e) == 4)
        elif isinstance(frame, list):                  # older frames: 4th field = latency
            out.extend((*e, False) for e in frame if isinstance(e, tuple) and len(e) == 4)
        i += 4 + size
    return out


def _fast_entries(frame: tuple[Any, ...], clients: list[str],
                  texts: list[str]) -> list[tuple[Any, ...]]:
    """The entries of one frame of :data:`FORMAT_FAST` (updating the file's tables), in
    order of receipt."""
    _, offset, little, raw, k, new_clients, j, new_texts, batch = frame
    del clients[k:]
    clients.extend(new_clients)
    del texts[j:]
    texts.extend(new_texts)
    records = array("d")
    records.frombytes(raw)
    if bool(little) != (sys.byteorder == "little"):
        records.byteswap()
    out: list[tuple[Any, ...]] = []
    nc, nt = len(clients), len(texts)
    for r in range(0, len(records) - 2, 3):
        t0, code, t1 = records[r], int(records[r + 1]), records[r + 2]
        c, t = code >> 32, code & 0xFFFFFFFF
        out.append((t0 + offset, clients[c] if c < nc else "?",
                    texts[t] if t < nt else "?\t?\t?", t1 - t0, False))
    out.extend((*e, True) for e in batch if isinstance(e, tuple) and len(e) == 4)
    out.sort(key=lambda e: e[0])
    return out


def _entry(e: tuple[Any, ...]) -> dict[str, Any]:
    t, client, text, last, answered = e
    name, qtype, rcode = (str(text).split("\t") + ["", "", ""])[:3]
    lat = float(last) - float(t) if answered else float(last)
    return {"time": float(t), "client": str(client), "name": name, "type": qtype,
            "rcode": rcode, "latency_us": round(lat * 1e6, 1)}


def read_log(path: str | os.PathLike[str], limit: int = 100) -> list[dict[str, Any]]:
    """The last ``limit`` queries (oldest first) from a query log and its rotated
    generation, as dicts with the keys in :data:`FIELDS`."""
    if limit <= 0:
        return []
    path = Path(path)
    entries = _entries(path)
    if len(entries) < limit:
        entries = _entries(path.with_name(path.name + ".1")) + entries
    return [_entry(e) for e in entries[-limit:]]


def main(argv: list[str] | None = None) -> int:
    import sys

    args = sys.argv[1:] if argv is None else argv
    if not args:
        sys.stderr.write("usage: python -m hybridnb.services.dns.querylog FILE [N]\n")
        return 2
    for e in read_log(args[0], int(args[1]) if len(args) > 1 else 100):
        sys.stdout.write("%.6f\t%s\t%s\t%s\t%s\t%.1f\n" % tuple(e[f] for f in FIELDS))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
