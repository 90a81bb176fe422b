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
across processes and kernels; readers need no lock.  A writer that has to wait is told so
(``on_wait``: which process holds the lock); destroying a lab removes its state *and* its lock
file (a waiter that then gets the lock of the removed file notices and locks afresh).

State belongs to a *target*: the state records where the lab lives (``target``: the sandbox
``sandbox:NAME``, ``host``) and, for a lab that takes its name from its file, which file
(``source``).  :func:`owner_conflict` is the one rule: the same lab name on another target,
or an unnamed lab file that is not the one the lab was applied from, is a
:class:`~hybridnb.errors.ConflictError` — never a silent mix.  The dry-run backend keeps its
labs in a directory of their own (``dry-run/`` inside the state directory; see
:func:`hybridnb.backends.state_scope`), so a preview never reads or writes a real lab's state.
A lab over several hosts keeps each host's record of what was made there in
``hosts/<host>/`` (:func:`host_store`); :func:`owners` gathers, for one target, every lab's
record of what it made there — what the doctor's leftovers are judged against.
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
from typing import Any, Callable, Iterable, Iterator, Mapping

from hybridnb.errors import ConflictError, StateError

VERSION = 1
#: Journal statuses of a resource whose driver call is (or was, when its process died) in
#: flight; ``created``, ``failed`` and ``interrupted`` are the settled ones.
IN_FLIGHT_STATUSES = frozenset({"creating", "replacing", "updating", "deleting"})
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


def _write_holder(fd: int) -> None:
    """Write who holds the lock into the lock file (for a waiter's message)."""
    import sys

    text = f"pid {os.getpid()}: {' '.join(os.path.basename(a) for a in sys.argv[:3])}\n"
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)


def default_state_dir() -> Path:
    env = os.environ.get("HYBRIDNB_STATE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(xdg) / "hybridnb"


def applied(data: Mapping[str, Any]) -> bool:
    """The state holds something of an applied lab (a description, addresses, resources)."""
    return bool(data.get("spec") or data.get("addresses") or data.get("resources"))


def recorded_target(data: Mapping[str, Any]) -> str | None:
    """The name of the target the state says the lab lives on (``sandbox:NAME``, ``host``,
    ``dry-run``); ``None`` for state written before targets were recorded."""
    target = data.get("target")
    name = target.get("name") if isinstance(target, Mapping) else None
    return str(name) if name else None


def describe_target(name: str) -> str:
    """``sandbox:NAME`` → ``sandbox 'NAME'``; ``host`` → ``the host's own engines``."""
    if name.startswith("sandbox:"):
        return f"sandbox {name.partition(':')[2]!r}"
    if name == "host":
        return "the host's own engines"
    return f"the {name} backend"


def target_options(name: str) -> str:
    """The command-line options that reach target ``name``."""
    if name.startswith("sandbox:"):
        return f"--sandbox {name.partition(':')[2]}"
    return f"--backend {name}"


def owner_conflict(data: Mapping[str, Any], lab: str, *, target: str, source: str | None,
                   named: bool) -> ConflictError | None:
    """Why this state is not the state of lab ``lab`` on ``target`` described by ``source``
    (``named``: the description names the lab; else the name is its file's stem) — or
    ``None`` when it is (or holds nothing yet)."""
    if not applied(data):
        return None
    where = recorded_target(data)
    if where is not None and where != target:
        return ConflictError(
            f"lab {lab!r} lives on {describe_target(where)}, not on {describe_target(target)}",
            hint=f"work with it there ({target_options(where)}), or destroy it there first "
                 f"(hybridnb destroy {lab} {target_options(where)}); the same name cannot "
                 "hold two labs")
    if not named and data.get("source") != source:
        came = data.get("source") or "a description that is not this file"
        return ConflictError(
            f"lab {lab!r} was applied from {came}; {source} has no name: of its own and would "
            "take over that lab",
            hint=f"add a name (name: another-name) to {source}, or destroy the other lab first")
    return None


#: where a lab over several hosts records each host's share, inside the state directory
HOSTS_DIR = "hosts"


def host_store(state_dir: str | os.PathLike[str], host: str) -> "StateStore":
    """The store of one host's share of the labs over several hosts of ``state_dir``."""
    return StateStore(Path(state_dir) / HOSTS_DIR / host)


def owners(store: "StateStore", target: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Every lab that may own objects on the engines of ``target`` (a target's ``to_dict()``),
    by name: the labs of ``store``, and each lab over several hosts whose record of a host's
    share names this very target, its resources joined into that lab's entry — so a one-host
    lab's doctor never takes a spread lab's bridge or VXLAN device on the same machine for a
    leftover, nor the other way round.  A record that cannot be read owns nothing."""
    from hybridnb.errors import StateError

    def read(st: StateStore, name: str) -> Mapping[str, Any] | None:
        try:
            return st.read(name)
        except StateError:
            return None

    out: dict[str, Mapping[str, Any]] = {}
    for name in store.labs():
        if (data := read(store, name)) is not None:
            out[name] = data
    hosts = store.dir / HOSTS_DIR
    for share in sorted(hosts.iterdir()) if hosts.is_dir() else ():
        st = StateStore(share)
        for name in st.labs():
            data = read(st, name)
            if data is None or data.get("target") != dict(target):
                continue
            mine = dict(out.get(name) or empty_state(name))
            mine["resources"] = {**(mine.get("resources") or {}),
                                 **(data.get("resources") or {})}
            out[name] = mine
    return out


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

    def lock_path(self, lab: str) -> Path:
        return self.dir / f"{lab}.lock"

    def _open_locked(self, lab: str, blocking: bool) -> int | None:
        """A descriptor of the lab's lock file holding the flock (``None``: held elsewhere
        and not ``blocking``).  A lock file removed by its holder (a destroyed lab) while we
        waited is noticed — its inode is no longer the path's — and locked afresh."""
        path = self.lock_path(lab)
        while True:
            self._ensure_dir()
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    return None
                raise
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)

    def holder(self, lab: str) -> str:
        """Who holds the lab's lock, as its holder wrote it (``pid 123: hybridnb apply``)."""
        try:
            return self.lock_path(lab).read_text().strip()
        except OSError:
            return ""

    @contextlib.contextmanager
    def lock(self, lab: str, timeout: float = 60.0,
             on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Exclusive cross-process lock for one lab; ``on_wait`` is told once, when another
        process holds it, who that is and how long we wait."""
        deadline = time.monotonic() + timeout
        told = False
        while True:
            fd = self._open_locked(lab, blocking=False)
            if fd is not None:
                break
            if time.monotonic() > deadline:
                who = self.holder(lab)
                raise StateError(f"lab {lab!r} is locked by another process"
                                 + (f" ({who})" if who else ""),
                                 hint="another kernel or command is applying this lab; "
                                      "wait for it to finish")
            if on_wait is not None and not told:
                told = True
                who = self.holder(lab)
                on_wait(f"lab {lab} is locked by another process" + (f" ({who})" if who else "")
                        + f"; waiting for it (up to {timeout:.0f} s)")
            time.sleep(0.01)
        try:
            _write_holder(fd)
            yield
        finally:
            os.close(fd)                                   # closing releases the flock

    @contextlib.contextmanager
    def try_lock(self, lab: str) -> Iterator[bool]:
        """The lab's lock if nobody holds it (yields True), else nothing (yields False)."""
        fd = self._open_locked(lab, blocking=False)
        try:
            if fd is not None:
                _write_holder(fd)
            yield fd is not None
        finally:
            if fd is not None:
                os.close(fd)

    @contextlib.contextmanager
    def transaction(self, lab: str, on_wait: Callable[[str], None] | None = None
                    ) -> Iterator[LabState]:
        """Lock the lab, read its state, yield it for changes; ``LabState.save`` persists.
        A lab that has no state file when the transaction ends (never applied, destroyed)
        leaves no lock file either."""
        with self.lock(lab, on_wait=on_wait):
            try:
                yield LabState(lab, self.read(lab), self)
            finally:
                if not self.path(lab).exists():
                    with contextlib.suppress(FileNotFoundError):
                        self.lock_path(lab).unlink()

    def labs(self) -> list[str]:
        """Every lab with a state file here (files starting with ``.`` or ``_`` are not
        labs: temporary files, the dry-run engine)."""
        if not self.dir.is_dir():
            return []
        return sorted(p.stem for p in self.dir.glob("*.json") if p.name[0] not in "._")

    def forget(self, lab: str) -> None:
        """Remove the lab's state file and its lock file (call it holding the lock: a
        process waiting for the lock then locks a new file)."""
        for path in (self.path(lab), self.lock_path(lab)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

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
