"""Run ``python3 -m MODULE`` on a host with its stdin and stdout attached: the transport.

A :class:`Runner` starts a Python module somewhere and hands back a :class:`ModuleProcess`
(``stdin``/``stdout`` byte streams, ``wait``, ``kill``, ``stderr_tail``).  What is spoken on
the streams is the module's business.  Two users speak JSON lines over it: a remote host's
agent (:mod:`hybridnb.remote.agentbox`, :mod:`hybridnb.remote.wire`) and a host's share of a
probe matrix (:mod:`hybridnb.services.probe.coordinate`, which also takes any object of this
shape — a ``subprocess.Popen`` with text pipes will do):

* :class:`LocalRunner` — a subprocess of this machine (unit tests, and a module that must
  run here);
* :class:`DockerExecRunner` — ``docker exec`` in a container of a (remote) Docker engine,
  through its API: ``exec_create`` with stdin attached, ``exec_start(socket=True)``, the
  engine's multiplexed stdout/stderr frames split by a reader thread.  Docker has no API to
  signal an exec'd process, so the command first prints its pid in the container and
  ``kill`` runs ``kill -9 PID`` there by a second exec.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import IO, Any, Protocol, Sequence, runtime_checkable

from hybridnb.errors import EngineError

_TAIL = 8192


@runtime_checkable
class ModuleProcess(Protocol):
    """A running module: write requests to ``stdin``, read answers from ``stdout``."""

    stdin: Any
    stdout: IO[bytes]

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...

    def stderr_tail(self) -> str: ...


@runtime_checkable
class Runner(Protocol):
    """Starts ``python3 -m module args...`` somewhere, stdio attached."""

    where: str

    def run_module(self, module: str, args: Sequence[str] = ()) -> ModuleProcess: ...


# ------------------------------------------------------------------------------- local

class _LocalProcess:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self.proc, self.stdin, self.stdout = proc, proc.stdin, proc.stdout
        self._err = bytearray()
        self._reader = threading.Thread(target=self._drain, args=(proc.stderr,), daemon=True,
                                        name="hybridnb-runner-stderr")
        self._reader.start()

    def _drain(self, stream: IO[bytes]) -> None:
        for chunk in iter(lambda: stream.read1(4096), b""):   # type: ignore[attr-defined]
            self._err += chunk
            del self._err[:-_TAIL]

    def wait(self, timeout: float | None = None) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stderr_tail(self) -> str:
        return self._err.decode(errors="replace")


class LocalRunner:
    """Runs modules as subprocesses of this machine (with this interpreter, or ``python``)."""

    def __init__(self, python: str | None = None, env: dict[str, str] | None = None, *,
                 prefix: Sequence[str] = ()) -> None:
        self.python = python or sys.executable
        self.env = env
        self.prefix = tuple(prefix)       # e.g. ("unshare", "--net"): a namespace of its own
        self.where = "this machine"

    def run_module(self, module: str, args: Sequence[str] = ()) -> ModuleProcess:
        env = None if self.env is None else {**os.environ, **self.env}
        proc = subprocess.Popen([*self.prefix, self.python, "-m", module, *args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        return _LocalProcess(proc)


# --------------------------------------------------------------------------- docker exec

class _SocketWriter:
    """The write side of an exec's hijacked connection (``close`` half-closes it)."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock

    def write(self, data: bytes) -> int:
        self.sock.sendall(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        try:
            if hasattr(self.sock, "shutdown_write"):      # paramiko (ssh://) channels
                self.sock.shutdown_write()
            elif getattr(self.sock, "proc", None) is not None:   # ssh:// via the ssh binary
                self.sock.proc.stdin.close()
            else:
                self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class _ExecProcess:
    """One ``docker exec``: its frames demultiplexed into a stdout pipe and a stderr tail."""

    def __init__(self, api: Any, container: str, exec_id: str, conn: Any) -> None:
        self.api, self.container, self.exec_id = api, container, exec_id
        self.conn = conn
        self.sock = getattr(conn, "_sock", conn)
        self.stdin = _SocketWriter(self.sock)
        rfd, self._wfd = os.pipe()
        self.stdout = os.fdopen(rfd, "rb")
        self._err = bytearray()
        self._pid: str | None = None
        self._got_pid = threading.Event()
        self._reader = threading.Thread(target=self._demux, daemon=True,
                                        name="hybridnb-exec-reader")
        self._reader.start()

    def _recv_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _demux(self) -> None:
        out = b""
        try:
            while True:
                stream, size = struct.unpack(">BxxxL", self._recv_exactly(8))
                data = self._recv_exactly(size) if size else b""
                if stream == 2:
                    self._err += data
                    del self._err[:-_TAIL]
                    continue
                if self._pid is None:            # the first stdout line is the pid
                    out += data
                    if b"\n" not in out:
                        continue
                    head, _, data = out.partition(b"\n")
                    self._pid = head.decode(errors="replace").strip()
                    self._got_pid.set()
                if data:
                    os.write(self._wfd, data)
        except (EOFError, OSError, struct.error):
            pass
        finally:
            self._got_pid.set()
            os.close(self._wfd)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        self._reader.join(timeout)          # the stream ends when the process does
        while True:
            info = self.api.exec_inspect(self.exec_id)
            if not info.get("Running"):
                return int(info.get("ExitCode") or 0)
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"exec {self.exec_id[:12]}", timeout or 0)
            time.sleep(0.01)

    def kill(self) -> None:
        self._got_pid.wait(5)
        if self._pid and self._pid.isdigit():
            try:
                eid = self.api.exec_create(self.container,
                                           ["sh", "-c", f"kill -9 {self._pid}"])["Id"]
                self.api.exec_start(eid)
            except Exception:                     # gone already: nothing to kill
                pass
        try:
            self.conn.close()
        except OSError:
            pass
        self._reader.join(5)

    def stderr_tail(self) -> str:
        return self._err.decode(errors="replace")


class DockerExecRunner:
    """Runs modules by ``docker exec`` in ``container`` of the engine behind ``api`` (a
    ``docker.APIClient``: ``unix://``, ``tcp://`` with TLS and ``ssh://`` alike)."""

    def __init__(self, api: Any, container: str, *, python: str = "python3",
                 where: str = "") -> None:
        self.api, self.container, self.python = api, container, python
        self.where = where or f"container {container}"

    def run_module(self, module: str, args: Sequence[str] = ()) -> ModuleProcess:
        import shlex

        command = "echo $$; exec " + shlex.join([self.python, "-m", module, *args])
        try:
            eid = self.api.exec_create(self.container, ["sh", "-c", command], stdin=True,
                                       stdout=True, stderr=True, tty=False)["Id"]
            conn = self.api.exec_start(eid, socket=True, tty=False)
        except Exception as exc:
            raise EngineError(f"cannot start {module} in {self.where}: {exc}",
                              engine="docker") from exc
        return _ExecProcess(self.api, self.container, eid, conn)
