"""Persisted lab state: one JSON file per lab, written atomically under an exclusive lock.

The state remembers what cannot be read back from the engines: the addresses handed out (so a
re-run never moves anyone), the lab description last applied, and the *intent journal* — a
resource is marked ``creating``/``deleting`` (with the time) before the driver is called and
``created``/removed (or ``failed``) after, so after a crash (a killed kernel, a SIGKILL) the
next apply or destroy knows what may have been half made — or still be in the making — and
cleans it up.  Each journal entry also keeps the resource spec it was made from (its
fingerprint is the one the engine shows), so a plan can name *what* changed since.

Files live in ``$HYBRIDNB_STATE_DIR`` or ``$XDG_STATE_HOME/hybridnb`` (default
``~/.local/state/hybridnb``): ``<lab>.json`` and ``<lab>.lock``.  Writes go to a temporary
file in the same directory, are fsync'ed and renamed over the old file, so a reader sees the
old or the new state, never half of one.  ``fcntl.flock`` on the lock file serialises writers
across processes and kernels; readers need no lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from hybridnb.errors import StateError

VERSION = 1
#: How many action records the journal keeps (the oldest go first).
JOURNAL_MAX = 1000


#: One journal update: (kind, name, status or None to forget, fingerprint, spec)
Entry = tuple[str, str, "str | None", "str | None", "Mapping[str, Any] | None"]


def recorded_specs(data: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any] | None]:
    """The journal of a state mapping: ``(kind, name)`` → recorded spec (or ``None``)."""
    out: dict[tuple[str, str], dict[str, Any] | None] = {}
    for key, rec in sorted((data.get("resources") or {}).items()):
        kind, _, name = key.partition("/")
        out[(kind, name)] = rec.get("spec") if isinstance(rec, Mapping) else None
    return out


def default_state_dir() -> Path:
    env = os.environ.get("HYBRIDNB_STATE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(xdg) / "hybridnb"


def empty_state(lab: str) -> dict[str, Any]:
    return {"version": VERSION, "lab": lab, "spec": None, "addresses": {}, "kinds": {},
            "resources": {}, "updated": None}


@dataclass
class LabState:
    """A mutable view of one lab's state, valid inside :meth:`StateStore.transaction`."""

    lab: str
    data: dict[str, Any] = field(default_factory=dict)
    _store: StateStore | None = field(default=None, repr=False)

    @property
    def addresses(self) -> dict[str, str]:
        return self.data.setdefault("addresses", {})

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.data.setdefault("resources", {})

    def recorded(self) -> dict[tuple[str, str], dict[str, Any] | None]:
        """Every journalled resource → the spec it was made from (``None``: not recorded)."""
        return recorded_specs(self.data)

    def mark(self, kind: str, name: str, status: str | None, fingerprint: str | None = None,
             spec: Mapping[str, Any] | None = None) -> None:
        """Record intent/outcome for a resource and persist it at once (``None`` forgets it)."""
        self.mark_many([(kind, name, status, fingerprint, spec)])

    def mark_many(self, entries: Iterable[Entry]) -> None:
        """:meth:`mark` for several ``(kind, name, status, fingerprint, spec)`` at once, one
        write."""
        changed = False
        at = round(time.time(), 3)
        for kind, name, status, fingerprint, spec in entries:
            key = f"{kind}/{name}"
            if status is None:
                changed |= self.resources.pop(key, None) is not None
            else:
                entry: dict[str, Any] = {"status": status, "fingerprint": fingerprint, "at": at}
                if spec is not None:
                    entry["spec"] = dict(spec)
                self.resources[key] = entry
                changed = True
        if changed:
            self.save()

    def journal(self, entries: Iterable[dict[str, Any]]) -> None:
        """Append action records (what apply/destroy did, when, how long: see
        :func:`hybridnb.apply.execute`) to the lab's journal, keeping the last
        :data:`JOURNAL_MAX`; written with the next :meth:`save`."""
        journal = self.data.setdefault("journal", [])
        journal.extend(entries)
        del journal[:-JOURNAL_MAX]

    def save(self) -> None:
        if self._store is None:
            raise StateError("state is not open for writing")
        self._store.write(self.lab, self.data)


class StateStore:
    """Reads and writes lab state files in one directory."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.dir = Path(directory) if directory is not None else default_state_dir()

    def path(self, lab: str) -> Path:
        return self.dir / f"{lab}.json"

    def _ensure_dir(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create the state directory {self.dir}: {exc.strerror}",
                             hint="set HYBRIDNB_STATE_DIR to a writable directory") from exc

    def read(self, lab: str) -> dict[str, Any]:
        """The lab's state (an empty state if it has none); no lock needed."""
        path = self.path(lab)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return empty_state(lab)
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StateError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})",
                             hint="it was not written by hybridnb; move it away to start over") from exc
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise StateError(f"{path} has an unknown format",
                             hint="move it away to start over")
        return data

    def write(self, lab: str, data: dict[str, Any]) -> None:
        """Atomically replace the state file (temp file + fsync + rename + directory fsync)."""
        self._ensure_dir()
        data = dict(data)
        data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        payload = json.dumps(data, indent=2, sort_keys=True) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{lab}.", suffix=".tmp", dir=self.dir)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path(lab))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    @contextlib.contextmanager
    def lock(self, lab: str, timeout: float = 60.0) -> Iterator[None]:
        """Exclusive cross-process lock for one lab."""
        self._ensure_dir()
        fd = os.open(self.dir / f"{lab}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() > deadline:
                        raise StateError(f"lab {lab!r} is locked by another process",
                                         hint="another kernel or command is applying this lab; "
                                              "wait for it to finish") from None
                    time.sleep(0.01)
            yield
        finally:
            os.close(fd)                                   # closing releases the flock

    @contextlib.contextmanager
    def transaction(self, lab: str) -> Iterator[LabState]:
        """Lock the lab, read its state, yield it for changes; ``LabState.save`` persists."""
        with self.lock(lab):
            yield LabState(lab, self.read(lab), self)

    def labs(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.stem for p in self.dir.glob("*.json") if not p.name.startswith("."))

    def forget(self, lab: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(lab).unlink()

    def allocate(self, lab: str, name: str, kind: str, network: Any) -> str:
        """Reserve the next free address of ``kind`` for ``name`` (idempotent per name),
        safely across processes."""
        import ipaddress

        from hybridnb.core.ipam import allocate_one

        with self.transaction(lab) as st:
            if name in st.addresses:
                return st.addresses[name]
            taken = [ipaddress.IPv4Address(a) for a in st.addresses.values()]
            addr = str(allocate_one(network, kind, taken))
            st.addresses[name] = addr
            st.data.setdefault("kinds", {})[name] = kind
            st.save()
            return addr

    def release(self, lab: str, name: str) -> None:
        with self.transaction(lab) as st:
            if st.addresses.pop(name, None) is not None:
                st.data.get("kinds", {}).pop(name, None)
                st.save()
