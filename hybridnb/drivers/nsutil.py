"""Network-namespace primitives: run code, open sockets and talk netlink inside a namespace.

Everything a lab is made of lives in the target's network namespace (the isolated lab host),
and every ``host`` endpoint is a namespace of its own.  Linux lets one *thread* enter a network
namespace with ``setns(fd, CLONE_NEWNET)``; a socket keeps the namespace it was created in for
its whole life, whichever thread uses it later.  So the cheap way to act inside a namespace is:
enter it on a dedicated worker thread, create the socket (or run the function) there, and hand
the result back.  That costs microseconds, where pyroute2's own ``netns=`` argument forks a
child process per socket (milliseconds).

Rules this module keeps:

* a thread that entered a namespace is never used for anything else and never goes back; it
  serves only calls for that same namespace and exits when idle (a thread parked inside a
  namespace would keep it alive after ``ip netns del``);
* namespaces are identified by the inode of their bind mount, so a namespace deleted and
  re-created under the same name never gets the old namespace's worker;
* ``None`` means the caller's own (the host's) namespace: the function runs in the caller.

Public API: :func:`netns_path`, :func:`run_in_netns`, :func:`socket_in_netns`,
:func:`iproute`, :func:`create_netns`, :func:`delete_netns`, :func:`netns_exists`,
:func:`write_sysctl`, :func:`read_sysctl`, and :class:`NetnsWorkers` (the pool behind them).
"""

from __future__ import annotations

import ctypes
import errno
import os
import queue
import socket
import threading
from concurrent.futures import Future
from typing import Any, Callable, Iterable, TypeVar

from hybridnb.errors import EngineError, NotFoundError

T = TypeVar("T")

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
_MS_BIND = 4096
_MS_REC = 16384
_MS_SHARED = 1 << 20
_MNT_DETACH = 2
NETLINK_ROUTE = 0

_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def netns_path(name_or_path: str | None) -> str | None:
    """``/run/netns/NAME`` for a bare name, the path itself for anything containing ``/``,
    ``None`` for ``None`` (the caller's own namespace)."""
    if name_or_path is None:
        return None
    if "/" in name_or_path:
        return name_or_path
    if not name_or_path or name_or_path in (".", ".."):
        raise NotFoundError(f"invalid network namespace name {name_or_path!r}")
    return f"{NETNS_RUN_DIR}/{name_or_path}"


def _ns_key(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFoundError(f"network namespace {path} does not exist",
                            hint="create it first (ip netns add NAME) or fix the target") from None
    return (st.st_dev, st.st_ino)


def _enter(path: str) -> None:
    """Move the *calling thread* into the namespace at ``path`` (no way back)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFoundError(f"network namespace {path} does not exist") from None
    try:
        if _lib().setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise EngineError(f"cannot enter network namespace {path}: {os.strerror(err)}",
                              engine="kernel",
                              hint="is it a mounted namespace (ip netns list)?")
    finally:
        os.close(fd)


class _Worker:
    __slots__ = ("key", "path", "jobs", "thread", "alive")

    def __init__(self, key: tuple[int, int], path: str) -> None:
        self.key = key
        self.path = path
        self.jobs: queue.SimpleQueue[tuple[Future, Callable, tuple, dict] | None] = \
            queue.SimpleQueue()
        self.alive = True
        self.thread: threading.Thread | None = None


class NetnsWorkers:
    """A pool with at most one worker thread per namespace.

    Each worker enters its namespace once, then runs the calls submitted for that namespace in
    order; it exits after ``idle`` seconds without work (or on :meth:`release`).  Calls for
    different namespaces run in parallel on their own workers.
    """

    def __init__(self, idle: float = 2.0) -> None:
        self.idle = idle
        self._lock = threading.Lock()
        self._workers: dict[tuple[int, int], _Worker] = {}

    def submit(self, netns: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> "Future[T]":
        path = netns_path(netns)
        assert path is not None
        key = _ns_key(path)
        fut: Future = Future()
        with self._lock:
            w = self._workers.get(key)
            if w is None or not w.alive:
                w = _Worker(key, path)
                self._workers[key] = w
                w.thread = threading.Thread(target=self._serve, args=(w,),
                                            name=f"netns:{os.path.basename(path)}", daemon=True)
                w.thread.start()
            w.jobs.put((fut, fn, args, kwargs))
        return fut

    def run(self, netns: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self.submit(netns, fn, *args, **kwargs).result()

    def release(self, netns: str | None = None) -> None:
        """Stop the worker of ``netns`` (all workers for ``None``) once its queue is drained,
        so that no thread keeps a namespace alive that is about to be deleted."""
        with self._lock:
            if netns is None:
                victims = list(self._workers.values())
            else:
                path = netns_path(netns)
                assert path is not None
                try:
                    key = _ns_key(path)
                except NotFoundError:
                    victims = [w for w in self._workers.values() if w.path == path]
                else:
                    victims = [w for w in self._workers.values()
                               if w.key == key or w.path == path]
            for w in victims:
                w.alive = False
                self._workers.pop(w.key, None)
                w.jobs.put(None)
        for w in victims:
            if w.thread is not None and w.thread is not threading.current_thread():
                w.thread.join()

    close = release

    def _serve(self, w: _Worker) -> None:
        try:
            _enter(w.path)
        except BaseException as exc:  # fail every queued job, then die
            with self._lock:
                w.alive = False
                if self._workers.get(w.key) is w:
                    del self._workers[w.key]
            while True:
                try:
                    item = w.jobs.get_nowait()
                except queue.Empty:
                    return
                if item is not None:
                    item[0].set_exception(exc)
        while True:
            try:
                item = w.jobs.get(timeout=self.idle)
            except queue.Empty:
                with self._lock:
                    if not w.jobs.empty():
                        continue
                    w.alive = False
                    if self._workers.get(w.key) is w:
                        del self._workers[w.key]
                return
            if item is None:
                # drain anything submitted before release() won the lock
                while True:
                    try:
                        rest = w.jobs.get_nowait()
                    except queue.Empty:
                        return
                    if rest is not None:
                        self._call(*rest)
            self._call(*item)

    @staticmethod
    def _call(fut: Future, fn: Callable, args: tuple, kwargs: dict) -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            fut.set_exception(exc)


_POOL = NetnsWorkers()


def workers() -> NetnsWorkers:
    """The process-wide pool used by the functions below."""
    return _POOL


def run_in_netns(netns: str | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` inside ``netns`` and return its result (exceptions propagate).

    ``netns`` is a name, a path, or ``None`` (run in the calling thread).  The function runs on
    the namespace's worker thread, so it must not block for long if others share the pool."""
    if netns is None:
        return fn(*args, **kwargs)
    return _POOL.run(netns, fn, *args, **kwargs)


def socket_in_netns(netns: str | None, family: int = socket.AF_INET,
                    type: int = socket.SOCK_STREAM, proto: int = 0) -> socket.socket:
    """A new socket that lives in ``netns`` (usable from any thread afterwards)."""
    try:
        return run_in_netns(netns, socket.socket, family, type, proto)
    except OSError as exc:
        raise EngineError(f"cannot open socket in {netns or 'host namespace'}: {exc}",
                          engine="kernel") from exc


def iproute(netns: str | None = None) -> Any:
    """A pyroute2 ``IPRoute`` whose netlink socket lives in ``netns`` (``None``: ours).

    The socket is opened on the namespace's worker thread and handed to
    ``IPRoute(use_socket=...)``; this avoids pyroute2's fork per namespace socket (and its
    ``O_CREAT`` default that would silently create a missing namespace).  Close it when done.
    """
    from pyroute2 import IPRoute

    if netns is None:
        return IPRoute(groups=0)
    sock = socket_in_netns(netns, socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        return IPRoute(use_socket=sock, groups=0)
    except BaseException:
        sock.close()
        raise


# -- namespaces ---------------------------------------------------------------------------

def netns_exists(netns: str) -> bool:
    """True when ``netns`` is a mounted network namespace."""
    path = netns_path(netns)
    assert path is not None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    # a mounted nsfs file lives on a different device than the tmpfs of /run/netns
    try:
        return st.st_dev != os.stat(os.path.dirname(path)).st_dev
    except FileNotFoundError:
        return False


def existing_netns(names: Iterable[str]) -> set[str]:
    """Those of ``names`` that are mounted network namespaces (:func:`netns_exists` for
    many: each directory is looked at once)."""
    out: set[str] = set()
    dirs: dict[str, int | None] = {}
    for name in names:
        path = netns_path(name)
        assert path is not None
        parent = os.path.dirname(path)
        if parent not in dirs:
            try:
                dirs[parent] = os.stat(parent).st_dev
            except FileNotFoundError:
                dirs[parent] = None
        try:
            # a mounted nsfs file lives on a different device than the tmpfs of /run/netns
            if dirs[parent] is not None and os.stat(path).st_dev != dirs[parent]:
                out.add(name)
        except FileNotFoundError:
            continue
    return out


def _prepare_run_dir(run_dir: str) -> None:
    """Make the namespace directory a shared mount, as ``ip netns add`` does, so the bind
    mounts below propagate to other mount namespaces (e.g. ``ip netns exec``)."""
    libc = _lib()
    os.makedirs(run_dir, exist_ok=True)
    target = run_dir.encode()
    if libc.mount(b"none", target, b"none", _MS_SHARED | _MS_REC, None) == 0:
        return
    if libc.mount(target, target, b"none", _MS_BIND | _MS_REC, None) != 0:
        err = ctypes.get_errno()
        raise EngineError(f"cannot bind-mount {run_dir}: {os.strerror(err)}", engine="kernel")
    if libc.mount(b"none", target, b"none", _MS_SHARED | _MS_REC, None) != 0:
        err = ctypes.get_errno()
        raise EngineError(f"cannot make {run_dir} shared: {os.strerror(err)}", engine="kernel")


_run_dir_ready: set[str] = set()


def create_netns(netns: str) -> str:
    """Create and mount a new, empty network namespace (like ``ip netns add``) in-process.

    A fresh thread unshares its network namespace and the new namespace is bind-mounted on
    ``/run/netns/NAME``; the thread then ends.  Raises :class:`ConflictError` if it exists.
    Returns the path."""
    from hybridnb.errors import ConflictError

    path = netns_path(netns)
    assert path is not None
    run_dir = os.path.dirname(path)
    if run_dir not in _run_dir_ready:
        _prepare_run_dir(run_dir)
        _run_dir_ready.add(run_dir)
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except FileExistsError:
        raise ConflictError(f"network namespace {path} already exists") from None
    result: dict[str, BaseException] = {}

    def unshare_and_mount() -> None:
        libc = _lib()
        try:
            if libc.unshare(CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
            src = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
            if libc.mount(src, path.encode(), b"none", _MS_BIND, None) != 0:
                raise OSError(ctypes.get_errno(), f"bind mount on {path}")
        except BaseException as exc:
            result["error"] = exc

    t = threading.Thread(target=unshare_and_mount, name=f"netns-create:{netns}", daemon=True)
    t.start()
    t.join()
    if "error" in result:
        try:
            os.unlink(path)
        except OSError:
            pass
        exc = result["error"]
        raise EngineError(f"cannot create network namespace {netns}: {exc}",
                          engine="kernel") from exc
    return path


def delete_netns(netns: str) -> bool:
    """Unmount and remove a namespace (like ``ip netns del``); False if it did not exist.

    The namespace itself goes away once nothing (a process, a socket, a worker) holds it."""
    path = netns_path(netns)
    assert path is not None
    _POOL.release(path)
    if not os.path.lexists(path):
        return False
    if _lib().umount2(path.encode(), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):   # EINVAL: not mounted (crash leftover)
            raise EngineError(f"cannot unmount {path}: {os.strerror(err)}", engine="kernel")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return True


# -- namespace-local sysctls ----------------------------------------------------------------

def _sysctl_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def read_sysctl(netns: str | None, key: str) -> str | None:
    """Value of a (namespace-local) sysctl such as ``net.ipv4.ip_forward``; None if absent."""
    def read() -> str | None:
        try:
            with open(_sysctl_path(key)) as f:
                return f.read().strip()
        except FileNotFoundError:
            return None
    return run_in_netns(netns, read)


def write_sysctl(netns: str | None, key: str, value: str) -> None:
    """Set a namespace-local sysctl from inside ``netns`` (``/proc/sys/net`` follows the
    namespace of the thread that opens it)."""
    def write() -> None:
        with open(_sysctl_path(key), "w") as f:
            f.write(value)
    try:
        run_in_netns(netns, write)
    except OSError as exc:
        raise EngineError(f"cannot set {key}={value!r} in {netns or 'host namespace'}: {exc}",
                          engine="kernel") from exc
