"""One time-ordered log of a lab: DNS queries, container output, VM consoles, hybridnb's actions.

Four kinds of source, each a small adapter with ``read(since)`` (the lines it has, newer than
``since``) and ``poll()`` (only the lines that appeared since its last call):

* :class:`DnsSource` — the lab DNS server's query log, through the DNS driver's ``logs``
  (the one place that knows the log's format); the asking client is named by its address;
  for some endpoints only, the queries they asked or that asked for them;
* :class:`ContainerSource` — a container's stdout/stderr with Docker's own timestamps;
* :class:`ConsoleSource` — a VM's serial console file.  The console has no wall-clock times,
  but its lines carry the guest's uptime (kernel ``[  1.234567]`` stamps, the test image's
  ``... at 3.55`` and ``uptime=4.70``): with the guest's boot time — now minus the uptime the
  guest agent reports, else the file's last write minus the last uptime seen — each becomes a
  wall-clock time; a line without one takes its predecessor's;
* :class:`JournalSource` — hybridnb's own action journal in the lab state (what apply and
  destroy did to which resource, when, for how long, and whether it failed); for a lab over
  several hosts, every host's journal, each line naming its host.

:func:`collect_logs` merges them into a :class:`LogView` (oldest first, each line tagged by its
source: ``dns``, ``container:web``, ``vm:vm1``, ``hybridnb``), which renders as text, HTML,
JSON lines and data; :func:`follow_logs` is a generator that yields the history and then new
lines as they come (``stop`` event or the consumer ends it).
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

from hybridnb.drivers.base import ConsoleLog, GuestExec, OutputLog, QueryLog
from hybridnb.errors import HybridError
from hybridnb.services.labview import LabView

GATEWAY = "gateway"

_UPTIME = re.compile(r"^\[\s*(\d+\.\d+)\]|\b(?:at|uptime=)\s?(\d+\.\d+)\b")


@dataclass(frozen=True, order=True)
class LogLine:
    time: float
    source: str                           # dns | container | vm | hybridnb
    endpoint: str = ""
    text: str = ""

    @property
    def tag(self) -> str:
        return f"{self.source}:{self.endpoint}" if self.endpoint else self.source

    def to_dict(self) -> dict[str, Any]:
        return {"time": round(self.time, 6), "source": self.source, "endpoint": self.endpoint,
                "tag": self.tag, "text": self.text}


class LogSource(Protocol):
    name: str

    def read(self, since: float | None = None) -> list[LogLine]: ...

    def poll(self) -> list[LogLine]: ...


class _Incremental:
    """``poll`` from ``read``: remembers the newest time returned and what was at it."""

    name = ""

    def __init__(self) -> None:
        self._last: float | None = None
        self._seen_at_last: set[LogLine] = set()

    def read(self, since: float | None = None) -> list[LogLine]:
        raise NotImplementedError

    def poll(self) -> list[LogLine]:
        lines = [ln for ln in self.read(self._last) if ln not in self._seen_at_last]
        if lines:
            newest = max(ln.time for ln in lines)
            if self._last is None or newest > self._last:
                self._last = newest
                self._seen_at_last = set()
            self._seen_at_last.update(ln for ln in lines if ln.time == self._last)
        return lines


def _after(lines: Iterable[LogLine], since: float | None) -> list[LogLine]:
    return [ln for ln in lines if since is None or ln.time >= since]


class DnsSource(_Incremental):
    """The lab DNS server's query log (through ``DnsDriver.logs``)."""

    def __init__(self, view: LabView, limit: int = 10000,
                 only: set[str] | None = None) -> None:
        super().__init__()
        self.view, self.limit, self.only = view.part(GATEWAY), limit, only   # the primary's
        self.name = "dns"
        self.names = {str(r.spec["address"]): r.name for r in view.endpoints()}
        self.names[view.gateway] = GATEWAY

    def read(self, since: float | None = None) -> list[LogLine]:
        driver = self.view.driver("dns")
        if not isinstance(driver, QueryLog):
            return []
        out = []
        for e in driver.query_log(self.view.name, self.limit):
            who = self.names.get(e.client.split("#")[0], e.client)
            asked = e.name.split(".", 1)[0]
            if self.only is not None and who not in self.only and asked not in self.only:
                continue
            out.append(LogLine(e.time, "dns", "", f"{who} asked {e.type} {e.name} -> "
                                                  f"{e.rcode} ({e.latency_us:.0f} µs)"))
        return _after(out, since)


def _rfc3339(stamp: str) -> float:
    """Docker's ``2026-11-30T12:31:45.123456789Z`` as seconds since the epoch."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    base = datetime.fromisoformat(head + "+00:00").timestamp()
    return base + (float("0." + frac) if frac else 0.0)


class ContainerSource(_Incremental):
    def __init__(self, view: LabView, endpoint: str) -> None:
        super().__init__()
        self.view, self.endpoint = view, endpoint
        self.name = f"container:{endpoint}"

    def read(self, since: float | None = None) -> list[LogLine]:
        driver = self.view.driver("container")
        if not isinstance(driver, OutputLog):
            return []
        rows = driver.logs(self.view.name, self.endpoint, since=since)
        return _after((LogLine(_rfc3339(ts), "container", self.endpoint, text)
                       for ts, text in rows), since)


class ConsoleSource:
    """A VM's serial console, its lines timed from the guest's uptime stamps."""

    def __init__(self, view: LabView, endpoint: str) -> None:
        self.view, self.endpoint = view, endpoint
        self.name = f"vm:{endpoint}"
        self._offset = 0
        self._boot: float | None = None
        self._carry = 0.0

    def _path(self) -> Path | None:
        driver = self.view.driver("vm")
        if not isinstance(driver, ConsoleLog):
            return None
        return Path(driver.console_path(self.view.name, self.endpoint))

    def boot_time(self, text: str, path: Path) -> float:
        """The guest's boot as wall-clock time: now - its uptime (guest agent), else the
        console's last write minus the last uptime it printed."""
        driver = self.view.driver("vm")
        try:
            if not isinstance(driver, GuestExec):
                raise HybridError("no guest agent")
            t0 = time.time()
            code, out, _ = driver.guest_exec(self.view.name, self.endpoint,
                                             ["cat", "/proc/uptime"], timeout=3.0)
            if code == 0 and out.split():
                return (t0 + time.time()) / 2 - float(out.split()[0])
        except (HybridError, AttributeError, ValueError):
            pass
        last = 0.0
        for line in text.splitlines():
            up = _uptime(line)
            if up is not None:
                last = up
        try:
            return path.stat().st_mtime - last
        except OSError:
            return time.time() - last

    def _lines(self, text: str, boot: float, fallback: float | None) -> list[LogLine]:
        out = []
        for line in text.splitlines():
            line = line.rstrip("\r")
            if not line.strip():
                continue
            up = _uptime(line)
            if up is not None:
                self._carry = boot + up
            elif fallback is not None:
                self._carry = max(self._carry, fallback)
            out.append(LogLine(self._carry, "vm", self.endpoint, line))
        return out

    def read(self, since: float | None = None) -> list[LogLine]:
        path = self._path()
        if path is None or not path.exists():
            return []
        data = path.read_bytes()
        text = data.decode(errors="replace")
        self._boot = self.boot_time(text, path)
        self._carry = self._boot
        self._offset = len(data)
        return _after(self._lines(text, self._boot, None), since)

    def poll(self) -> list[LogLine]:
        path = self._path()
        if path is None or not path.exists():
            return []
        if self._boot is None:
            return self.read()
        size = path.stat().st_size
        if size < self._offset:                    # a new boot wrote a new file
            return self.read()
        with path.open("rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        cut = data.rfind(b"\n") + 1                 # whole lines only
        self._offset += cut
        return self._lines(data[:cut].decode(errors="replace"), self._boot, time.time())


def _uptime(line: str) -> float | None:
    m = _UPTIME.search(line)
    if m is None:
        return None
    return float(m.group(1) or m.group(2))


class JournalSource(_Incremental):
    """hybridnb's action journal (``journal`` in the lab state, written by apply).  A lab
    over several hosts keeps one journal per host (each host's share is applied under its
    own state): every host's is read, and its lines say which host (``host b: create
    container c2 ...``)."""

    name = "hybridnb"

    def __init__(self, view: LabView, only: set[str] | None = None) -> None:
        super().__init__()
        self.view, self.only = view, only

    @staticmethod
    def _entries(view: LabView) -> list[dict[str, Any]]:
        if view.state_dir is None:
            return list(view.state.get("journal") or [])
        path = Path(view.state_dir) / f"{view.name}.json"
        try:
            return list(json.loads(path.read_text()).get("journal") or [])
        except (OSError, ValueError):
            return list(view.state.get("journal") or [])

    def read(self, since: float | None = None) -> list[LogLine]:
        out = []
        for view in (self.view, *self.view.parts):
            where = f"host {view.host}: " if view.host else ""
            for e in self._entries(view):
                if self.only is not None and e.get("name") not in self.only:
                    continue
                what = " ".join(str(w) for w in (e.get("op"), e.get("kind"), e.get("name"))
                                if w)
                result = "ok" if e.get("ok") else f"FAILED: {e.get('error')}"
                out.append(LogLine(float(e["at"]), "hybridnb", "",
                                   f"{where}{what} ({float(e.get('seconds', 0.0)):.2f}s) "
                                   f"{result}"))
        return _after(sorted(out), since)


def sources(view: LabView, endpoints: Iterable[str] | None = None,
            kinds: Iterable[str] | None = None) -> list[Any]:
    """Every log source of the lab (or of ``endpoints``): journal, DNS, each container, each
    VM; ``kinds`` limits them to some of ``hybridnb``, ``dns``, ``container``, ``vm``.  A
    source whose driver cannot be read (see :func:`unreadable`) is left out."""
    return _sources(view, endpoints, kinds)[0]


def unreadable(view: LabView, endpoints: Iterable[str] | None = None,
               kinds: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """``(source, why)`` of the sources the backend's drivers cannot read (the dry-run
    backend keeps no output, consoles or query log)."""
    return _sources(view, endpoints, kinds)[1]


#: The capability each kind of source needs from its driver, and what it reads.
_NEEDS: dict[str, tuple[type, str]] = {"dns": (QueryLog, "query log"),
                                       "container": (OutputLog, "container output"),
                                       "vm": (ConsoleLog, "console files")}


def _capable(view: LabView, kind: str) -> bool:
    return isinstance(view.driver(kind), _NEEDS[kind][0])


def _cannot(view: LabView, kind: str) -> str:
    backend = getattr(view.backend, "name", "this")
    where = f"host {view.host}: " if view.host else ""
    return f"{where}the {backend} backend has no {_NEEDS[kind][1]}"


def _sources(view: LabView, endpoints: Iterable[str] | None,
             kinds: Iterable[str] | None) -> tuple[list[Any], list[tuple[str, str]]]:
    wanted = set(kinds) if kinds is not None else {"hybridnb", "dns", "container", "vm"}
    names = set(endpoints) if endpoints else None
    if names is not None:
        for n in names:
            view.endpoint(n)                         # NotFoundError naming the endpoints
    out: list[Any] = []
    skipped: list[tuple[str, str]] = []

    if "hybridnb" in wanted:
        out.append(JournalSource(view, names))
    if "dns" in wanted and view.dns is not None:
        primary = view.part(GATEWAY)               # a lab over hosts: DNS on the primary
        if _capable(primary, "dns"):
            out.append(DnsSource(view, only=names))
        else:
            skipped.append(("dns", _cannot(primary, "dns")))
    for res in view.endpoints():
        if (names is not None and res.name not in names) or res.kind not in _NEEDS \
                or res.kind not in wanted:
            continue
        mine = view.part(res.name)                 # its own host's drivers
        if not _capable(mine, res.kind):
            skipped.append((f"{res.kind}:{res.name}", _cannot(mine, res.kind)))
        elif res.kind == "container":
            out.append(ContainerSource(mine, res.name))
        else:
            out.append(ConsoleSource(mine, res.name))
    return out, skipped


@dataclass(frozen=True)
class LogView:
    lab: str
    lines: tuple[LogLine, ...] = ()
    sources: tuple[str, ...] = ()
    errors: tuple[tuple[str, str], ...] = ()      # (source, why it could not be read)

    def of(self, tag_or_source: str) -> list[LogLine]:
        return [ln for ln in self.lines if tag_or_source in (ln.tag, ln.source)]

    def to_dict(self) -> dict[str, Any]:
        return {"lab": self.lab, "sources": list(self.sources),
                "errors": dict(self.errors), "lines": [ln.to_dict() for ln in self.lines]}

    def records(self) -> list[dict[str, Any]]:
        """One row per line, oldest first (keys: ``time``, ``source``, ``endpoint``, ``tag``,
        ``text``)."""
        return [ln.to_dict() for ln in self.lines]

    def headline(self) -> str:
        from hybridnb.render.logs import headline

        return headline(self)

    def to_json(self) -> str:
        """One JSON object per line (the CLI's ``--json``)."""
        return "\n".join(json.dumps(ln.to_dict(), sort_keys=True) for ln in self.lines)

    def to_text(self) -> str:
        from hybridnb.render.logs import logs_text

        return logs_text(self)

    __repr__ = to_text
    __str__ = to_text

    def _repr_html_(self) -> str:
        from hybridnb.render.logs import logs_html

        return logs_html(self)


def _read_all(srcs: list[Any], since: float | None) -> tuple[list[LogLine], list[tuple[str, str]]]:
    lines: list[LogLine] = []
    errors = []
    for src in srcs:
        try:
            got = src.read(since)
        except HybridError as exc:
            errors.append((src.name, exc.message))
            continue
        if isinstance(src, _Incremental) and got:      # later polls start after these
            src._last = max(ln.time for ln in got)
            src._seen_at_last = {ln for ln in got if ln.time == src._last}
        lines.extend(got)
    return sorted(lines), errors


def collect_logs(view: LabView, endpoints: Iterable[str] | None = None, *,
                 since: float | None = None, limit: int | None = None,
                 kinds: Iterable[str] | None = None) -> LogView:
    """Every source's lines since ``since`` (seconds since the epoch), merged in time order;
    ``limit`` keeps the newest."""
    srcs, skipped = sources(view, endpoints, kinds), unreadable(view, endpoints, kinds)
    lines, errors = _read_all(srcs, since)
    if limit is not None:
        lines = lines[-limit:] if limit > 0 else []
    return LogView(view.name, tuple(lines), tuple(s.name for s in srcs),
                   tuple(skipped + errors))


def follow_logs(view: LabView, endpoints: Iterable[str] | None = None, *,
                since: float | None = None, poll: float = 0.5,
                stop: threading.Event | None = None,
                kinds: Iterable[str] | None = None) -> Iterator[LogLine]:
    """The history since ``since``, then each new line as it appears (polled every ``poll``
    seconds, each batch in time order) until ``stop`` is set."""
    stop = stop or threading.Event()
    srcs = sources(view, endpoints, kinds)
    history, _ = _read_all(srcs, since)
    yield from history
    while not stop.wait(poll):
        batch: list[LogLine] = []
        for src in srcs:
            try:
                batch.extend(src.poll())
            except HybridError:
                continue
        yield from sorted(batch)


def parse_since(text: str, now: float | None = None) -> float:
    """``--since``: ``30s``, ``5m``, ``2h``, ``1d`` ago, epoch seconds, or an ISO time."""
    now = time.time() if now is None else now
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if m:
        return now - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise HybridError(f"cannot read the time {text!r}",
                          hint="use e.g. 30s, 5m, 2h, 1d, or 2026-11-30T12:00:00") from None
    return stamp.timestamp()


__all__ = ["ConsoleSource", "ContainerSource", "DnsSource", "JournalSource", "LogLine",
           "LogView", "collect_logs", "follow_logs", "parse_since", "sources", "unreadable"]

