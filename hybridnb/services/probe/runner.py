"""How a probe share is started on a host this process cannot enter: the runner protocol.

One lab over several hosts (``hosts:``, issue 17) probes as one matrix, but a host's sockets,
namespaces and guest agents are that host's: its share of the matrix
(:mod:`hybridnb.services.probe.share`) must run *there*.  The coordinator
(:mod:`hybridnb.services.probe.coordinate`) does not care how it gets there; it needs a
:class:`Runner`:

* ``runner.where`` — a few words for messages (``"a local subprocess"``,
  ``"docker exec in hnb-agent on ssh://lab@b"``);
* ``runner.run_module(module, args)`` — start ``python3 -m <module> <args...>`` on that host
  and return a :class:`ShareProcess`: ``stdin`` and ``stdout`` carry JSON lines (text or
  bytes; the coordinator writes one line per message and flushes), ``wait(timeout)`` returns
  the exit code (or raises/returns None while it runs), ``kill()`` ends it.  ``stderr``, when
  the process has one, is read for the tail of its error output.

:class:`LocalRunner` starts the module as a subprocess of this Python (``sys.executable -m``):
the stand-in for a remote host in tests, and the shape other runners follow (a Docker-exec
runner into an agent container on the remote host returns the same process-like object).
The module and its stdin/stdout contract are
:mod:`hybridnb.services.probe.share`'s (``python3 -m hybridnb.services.probe.share``).
"""

from __future__ import annotations

import subprocess
import sys
from typing import IO, Any, Protocol, Sequence, runtime_checkable


@runtime_checkable
class ShareProcess(Protocol):
    """A started share: JSON lines in on ``stdin``, out on ``stdout``."""

    stdin: IO[Any] | None
    stdout: IO[Any] | None

    def wait(self, timeout: float | None = None) -> int | None: ...

    def kill(self) -> None: ...


@runtime_checkable
class Runner(Protocol):
    """Starts ``python3 -m <module> <args>`` where a host's share must run."""

    where: str

    def run_module(self, module: str, args: Sequence[str] = ()) -> ShareProcess: ...


class LocalRunner:
    """Runs the module in a subprocess of this Python, on this machine (a stand-in for a
    remote host: a separate process, nothing shared with the coordinator but the pipes)."""

    where = "a local subprocess"

    def __init__(self, python: str | None = None, env: dict[str, str] | None = None) -> None:
        self.python = python or sys.executable
        self.env = env

    def run_module(self, module: str, args: Sequence[str] = ()) -> ShareProcess:
        return subprocess.Popen([self.python, "-m", module, *args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                bufsize=1, env=self.env, close_fds=True)

    def __repr__(self) -> str:
        return f"LocalRunner({self.python!r})"


__all__ = ["LocalRunner", "Runner", "ShareProcess"]
