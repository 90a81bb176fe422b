"""The DNS query log: every query with time, client, name, type, answer code and latency.

The server's hot loop logs a *batch* of queries (what one ``recvmmsg`` returned) as one
group of floats appended to one :class:`array.array` (``fast_extend``, bound once): the
monotonic time the batch was received, the monotonic time its answers were ready to send,
the number of queries, then one code per query: ``client * 2**32 + text``.  ``client``
numbers the client address in the log's client table (:meth:`QueryLog.client_code`, looked
up once per address with the access check) and ``text`` numbers the answer template's
``"name\ttype\trcode"`` in the process-wide text table (:func:`text_code`, assigned when
the template is built).  A group is appended by one ``extend`` call, so a flush on another
thread never sees half of one; no object outlives the query and nothing is formatted on the
hot path.  Other paths (slow path, TCP, forwarding) append a :class:`Entry` of
``time.time()`` readings to ``pending``.

A writer thread takes what is pending every ``interval`` seconds and writes it as one frame:
a 4-byte big-endian length and a :mod:`marshal` dump of ``(4, wall - monotonic, little
endian?, floats as bytes, k, clients[k:], j, texts[j:], entries)``: the array is copied as
raw bytes and only the table entries the file has not seen yet are written (each file
starts from full tables), so a flush is a few memory copies however many queries it holds.
Frames of the older formats — ``(3, ...)`` with one ``(received, code, answered)`` triple
per query, ``(2, entries)`` and a bare list whose 4th field is the latency — stay readable.
The file rotates at ``max_bytes`` into ``<file>.1`` (one generation kept), so the pair of
files is a bounded ring of the most recent queries; :func:`read_log` returns its tail as
:class:`QueryRecord` values; ``python -m hybridnb.daemons.dns.querylog FILE [N]`` prints it
as tab-separated text.  The tables grow with the distinct allowed clients and the answer
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

FIELDS = ("time", "client", "name", "type", "rcode", "latency_us")
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
#: Marker of frames whose entries carry the answer time (not the latency) as 4th field.
FORMAT = 2
#: Marker of frames that also carry one float triple per hot-loop query (older servers).
FORMAT_FAST = 3
#: Marker of frames that carry the hot loop's float groups, one per batch.
FORMAT_BATCH = 4
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


def text_of(code: float) -> str:
    """The log text numbered ``code`` by :func:`text_code`."""
    return _TEXTS[int(code)]


class Entry(NamedTuple):
    """A query logged off the hot path: wall-clock times of receipt and answer, the client's
    address and ``"name\ttype\trcode"``."""

    received: float
    client: str
    text: str
    answered: float


@dataclass(frozen=True)
class QueryRecord:
    """One query as :func:`read_log` returns it."""

    time: float                 # when it was received (seconds since the epoch)
    client: str
    name: str
    type: str
    rcode: str
    latency_us: float           # received → answer ready to send

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __getitem__(self, field: str) -> Any:
        """``record["name"]``: the fields also read by name, as the dicts ``Lab.dns_logs()``
        returned before (notebooks index them so)."""
        if field not in FIELDS:
            raise KeyError(field)
        return getattr(self, field)


class QueryLog:
    """Batched, rotating query log.  ``append`` takes an :class:`Entry` (off the hot path);
    ``fast_extend`` a hot-loop group (see the module docstring); the writer thread
    (:meth:`start`) writes what is pending every ``interval`` seconds."""

    def __init__(self, path: str | os.PathLike[str] | None, *,
                 max_bytes: int = DEFAULT_MAX_BYTES, interval: float = 0.25) -> None:
        self.path = Path(path) if path is not None else None
        self.max_bytes = max_bytes
        self.interval = interval
        self.pending: list[Entry] = []
        self.append = self.pending.append
        #: hot-loop groups: received, answered (monotonic), count, client + text codes
        self.fast = array("d")
        self.fast_extend = self.fast.extend
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
            self._file = open(self.path, "ab")  # noqa: SIM115 - open for the log's lifetime

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
            n = len(fast)                  # whole groups only: each came in one extend
            if not count and not n:
                return
            if self._file is None:
                del pending[:count]
                del fast[:n]
                return
            batch = [tuple(e) for e in pending[:count]]
            del pending[:count]            # appends made meanwhile stay in the list
            records = fast[:n]
            del fast[:n]
            k, j = self._sent
            clients, texts = (self.clients[k:], _TEXTS[j:]) if n else ([], [])
            self._sent = (k + len(clients), j + len(texts))
            frame = marshal.dumps((FORMAT_BATCH, time.time() - time.monotonic(),
                                   sys.byteorder == "little", records.tobytes(),
                                   k, clients, j, texts, batch))
            self._file.write(struct.pack(">I", len(frame)) + frame)
            self._file.flush()
            self.written += count + _group_queries(records)
            if self._file.tell() >= self.max_bytes:
                self._rotate()

    def flush_marked(self, mark: Path | None = None) -> None:
        """:meth:`flush` now, then rewrite ``mark`` (a token that changes every time): a
        reader that asked for a flush waits for the token to change."""
        self.flush()
        if mark is not None:
            tmp = mark.with_name(mark.name + ".tmp")
            tmp.write_text(str(time.monotonic_ns()))
            os.replace(tmp, mark)

    def _rotate(self) -> None:
        assert self.path is not None
        self._file.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._file = open(self.path, "ab")  # noqa: SIM115 - open for the log's lifetime
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


def _group_queries(records: array) -> int:
    """How many queries the float groups in ``records`` hold."""
    n = i = 0
    while i + 3 <= len(records):
        k = int(records[i + 2])
        n += k
        i += 3 + k
    return n


class _Row(NamedTuple):
    """A log entry while reading: received (wall clock), client, text, and either the answer
    time (``answered``) or the latency."""

    received: float
    client: str
    text: str
    last: float
    answered: bool


class _Tables:
    """The client and text tables of one log file, as its frames rebuild them."""

    def __init__(self) -> None:
        self.clients: list[str] = []
        self.texts: list[str] = []

    def update(self, k: int, clients: list[str], j: int, texts: list[str]) -> None:
        del self.clients[k:]
        self.clients.extend(clients)
        del self.texts[j:]
        self.texts.extend(texts)

    def row(self, t0: float, code: float, t1: float) -> _Row:
        c, t = int(code) >> 32, int(code) & 0xFFFFFFFF
        return _Row(t0, self.clients[c] if c < len(self.clients) else "?",
                    self.texts[t] if t < len(self.texts) else "?\t?\t?", t1 - t0, False)


def _frame_rows(frame: Any, tables: _Tables) -> list[_Row] | None:
    """The rows of one frame (``None``: not a frame of ours)."""
    if isinstance(frame, tuple) and len(frame) == 9 and frame[0] in (FORMAT_FAST, FORMAT_BATCH):
        return _float_rows(frame, tables)
    if isinstance(frame, tuple) and len(frame) == 2 and frame[0] == FORMAT \
            and isinstance(frame[1], list):
        return [_Row(*e, True) for e in frame[1] if isinstance(e, tuple) and len(e) == 4]
    if isinstance(frame, list):                        # older frames: 4th field = latency
        return [_Row(*e, False) for e in frame if isinstance(e, tuple) and len(e) == 4]
    return None


def _entries(path: Path) -> list[_Row]:
    """Every entry of one log file; a torn or foreign frame ends the file."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    out: list[_Row] = []
    tables = _Tables()
    i, n = 0, len(data)
    while i + 4 <= n:
        size = struct.unpack_from(">I", data, i)[0]
        if i + 4 + size > n:
            break
        try:
            rows = _frame_rows(marshal.loads(data[i + 4:i + 4 + size]), tables)
        except (ValueError, EOFError, TypeError, IndexError):
            break
        if rows is None:
            break
        out.extend(rows)
        i += 4 + size
    return out


def _float_rows(frame: tuple[Any, ...], tables: _Tables) -> list[_Row]:
    """The rows of a frame of :data:`FORMAT_BATCH` or :data:`FORMAT_FAST` (updating the
    file's tables), in order of receipt."""
    fmt, offset, little, raw, k, new_clients, j, new_texts, batch = frame
    tables.update(k, new_clients, j, new_texts)
    records = array("d")
    records.frombytes(raw)
    if bool(little) != (sys.byteorder == "little"):
        records.byteswap()
    out: list[_Row] = []
    row = tables.row
    if fmt == FORMAT_FAST:
        for r in range(0, len(records) - 2, 3):
            out.append(row(records[r] + offset, records[r + 1], records[r + 2] + offset))
    else:
        i = 0
        while i + 3 <= len(records):
            t0, t1, count = records[i] + offset, records[i + 1] + offset, int(records[i + 2])
            out.extend(row(t0, code, t1) for code in records[i + 3:i + 3 + count])
            i += 3 + count
    out.extend(_Row(*e, True) for e in batch if isinstance(e, tuple) and len(e) == 4)
    out.sort(key=lambda e: e.received)
    return out


def _record(e: _Row) -> QueryRecord:
    name, qtype, rcode = (str(e.text).split("\t") + ["", "", ""])[:3]
    lat = float(e.last) - float(e.received) if e.answered else float(e.last)
    return QueryRecord(float(e.received), str(e.client), name, qtype, rcode,
                       round(lat * 1e6, 1))


def read_log(path: str | os.PathLike[str], limit: int = 100) -> list[QueryRecord]:
    """The last ``limit`` queries (oldest first) from a query log and its rotated
    generation."""
    if limit <= 0:
        return []
    path = Path(path)
    entries = _entries(path)
    if len(entries) < limit:
        entries = _entries(path.with_name(path.name + ".1")) + entries
    return [_record(e) for e in entries[-limit:]]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        sys.stderr.write("usage: python -m hybridnb.daemons.dns.querylog FILE [N]\n")
        return 2
    for e in read_log(args[0], int(args[1]) if len(args) > 1 else 100):
        sys.stdout.write(f"{e.time:.6f}\t{e.client}\t{e.name}\t{e.type}\t{e.rcode}\t"
                         f"{e.latency_us:.1f}\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
