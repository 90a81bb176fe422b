"""One probe matrix over several hosts: every host's share run where it can run, merged.

:func:`probe_shares` plans the matrix once (:class:`~hybridnb.services.probe.share.ProbeRequest`),
then for each host runs its share (:mod:`hybridnb.services.probe.share`):

* **in this process** (:class:`~hybridnb.services.probe.share.Share`) for a host whose
  namespaces and guest agents this process can enter (this machine, a sandbox on it);
* **through a runner** (:class:`~hybridnb.drivers.runner.Runner`) for a host it cannot
  enter: ``python3 -m hybridnb.services.probe.share`` started there, spoken to in JSON lines.

It waits until every share says *ready* (its responders listen), says *go* to all of them at
once, collects every share's results and only then says *done* (so a host's responders serve
until every other host has finished probing them).  The results are merged in the plan's
order into one :class:`~hybridnb.services.probe.matrix.ConnectivityMatrix`, the same shape a
one-process :func:`~hybridnb.services.probe.engine.probe_matrix` gives: same sources, targets,
checks and pairs.

Nothing hangs on a share gone wrong: a share that does not say ready within
``ready_timeout``, or whose results do not come within ``results_timeout``, or whose process
ends early, fails the run with an :class:`~hybridnb.errors.EngineError` naming the host (and
the tail of the process's error output); every share is then released or killed.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import deque
from typing import Any, Callable, Mapping, Sequence

from hybridnb.drivers.runner import ModuleProcess, Runner
from hybridnb.errors import EngineError, HybridError
from hybridnb.services.probe.endpoint import ProbeEndpoint
from hybridnb.services.probe.matrix import ConnectivityMatrix, ProbeResult
from hybridnb.services.probe.plan import DEFAULT_CHECKS
from hybridnb.services.probe.share import (
    MODULE,
    WIRE_VERSION,
    ProbeRequest,
    Share,
    result_from_wire,
)

Progress = Callable[[str], None]
#: Seconds a share may take to open its responders and say ready (a runner may need to
#: start a container or an interpreter on its host first).
READY_TIMEOUT = 30.0


def probe_shares(endpoints: Sequence[ProbeEndpoint],
                 protocols: Sequence[str] = DEFAULT_CHECKS, *,
                 placement: Mapping[str, str], runners: Mapping[str, Runner | None] | None = None,
                 gateway: ProbeEndpoint | str | None = None, dns_server: str | None = None,
                 domain: str = "hybrid.local", timeout: float = 1.0, count: int = 3,
                 responders: bool = True, pin_neighbours: bool | None = None,
                 progress: Progress | None = None, engine: str = "auto",
                 ready_timeout: float = READY_TIMEOUT,
                 results_timeout: float | None = None) -> ConnectivityMatrix:
    """:func:`~hybridnb.services.probe.engine.probe_matrix` over several hosts.
    ``placement``: endpoint name (the gateway's too, when it is a source) → its host; every
    endpoint must be placed.  ``runners``: host → the runner that starts its share there;
    a host missing or mapped to None runs its share in this process.  ``results_timeout``:
    seconds after *go* for every share's results (default: generous for VM sources,
    ``max(60, 20 * timeout)``)."""
    request = ProbeRequest(tuple(endpoints), tuple(protocols), gateway=gateway,
                           dns_server=dns_server, domain=domain, timeout=timeout, count=count,
                           responders=responders, pin_neighbours=pin_neighbours,
                           engine=engine)
    return run_shares(request, placement, runners or {}, progress=progress,
                      ready_timeout=ready_timeout, results_timeout=results_timeout)


def run_shares(request: ProbeRequest, placement: Mapping[str, str],
               runners: Mapping[str, Runner | None], *, progress: Progress | None = None,
               ready_timeout: float = READY_TIMEOUT,
               results_timeout: float | None = None) -> ConnectivityMatrix:
    """Run ``request`` as one share per host of ``placement`` (see :func:`probe_shares`)."""
    t0 = time.perf_counter()
    plan = request.plan()                      # validates, and fixes the merged order
    missing = sorted(set(plan.sources) - set(placement))
    if missing:
        raise EngineError(f"no host given for {', '.join(missing)}",
                          hint="place every source endpoint on a host", engine="probe")
    hosts = list(dict.fromkeys(placement[s] for s in plan.sources))
    hosts += [h for h in dict.fromkeys(placement.values()) if h not in hosts]
    local = {h: [n for n in plan.targets if placement.get(n) == h] for h in hosts}
    shares: dict[str, _Handle] = {}
    ok = False
    try:
        for host in hosts:
            runner = runners.get(host)
            shares[host] = (_Local(host, request, local[host], progress) if runner is None
                            else _Remote(host, runner, request, local[host]))
        deadline = time.monotonic() + ready_timeout
        for share in shares.values():
            share.wait_ready(deadline, ready_timeout)
        for share in shares.values():
            share.go()
        limit = results_timeout if results_timeout is not None else max(60.0, 20 * request.timeout)
        deadline = time.monotonic() + limit
        got = {host: share.results(deadline, limit) for host, share in shares.items()}
        ok = True
    finally:
        for share in shares.values():
            share.close(abort=not ok)
    results = _merge(plan.check_plans, plan.sources, placement, got)
    return ConnectivityMatrix(results=results, sources=list(plan.sources),
                              targets=list(plan.targets), checks=[c.name for c in plan.checks],
                              duration=time.perf_counter() - t0, timeout=request.timeout,
                              count=plan.count,
                              shares={h: dict(share.info) for h, share in shares.items()})


def _merge(check_plans: Sequence[Any], sources: Sequence[str], placement: Mapping[str, str],
           got: Mapping[str, list[ProbeResult]]) -> list[ProbeResult]:
    """Every share's results in the whole plan's order (check, source, target); a share that
    returned another number of results than its sources have pairs is an error naming it."""
    groups: dict[tuple[str, str], list[ProbeResult]] = {}
    for rows in got.values():
        for r in rows:
            groups.setdefault((r.check, r.source), []).append(r)
    out: list[ProbeResult] = []
    for cp in check_plans:
        for i, src in enumerate(sources):
            want = cp.rows[i + 1] - cp.rows[i]
            rows = groups.get((cp.check.name, src), [])
            if len(rows) != want:
                raise EngineError(f"host {placement[src]}: {len(rows)} {cp.check.name} "
                                  f"results from {src}, expected {want}", engine="probe")
            out += rows
    return out


class _Handle:
    """One host's share as the coordinator drives it; ``info``: where it ran (``where``:
    the runner's words, ``engine``: the probe engine its sources ran with, ``process``:
    what the share process said of itself — pid, Python, namespace inodes — when it runs
    in a process of its own)."""

    host: str
    info: dict[str, Any]

    def wait_ready(self, deadline: float, limit: float) -> None: ...

    def go(self) -> None: ...

    def results(self, deadline: float, limit: float) -> list[ProbeResult]: ...

    def close(self, abort: bool = False) -> None: ...


class _Local(_Handle):
    """A share in this process: responders on a thread, sources run on another after go."""

    def __init__(self, host: str, request: ProbeRequest, local: Sequence[str],
                 progress: Progress | None) -> None:
        self.host = host
        self.share = Share(request, local, progress=progress).start()
        self.info: dict[str, Any] = {"where": "this process"}
        self.out: list[ProbeResult] | None = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def wait_ready(self, deadline: float, limit: float) -> None:
        try:
            ready = self.share.wait_ready(max(0.0, deadline - time.monotonic()))
        except HybridError as exc:
            raise _named(self.host, exc) from exc
        if not ready:
            raise EngineError(f"host {self.host}: the probe share (in this process) did not "
                              f"open its responders within {limit:g} s", engine="probe")
        self.info["engine"] = self.share.engine

    def go(self) -> None:
        def run() -> None:
            try:
                self.out = self.share.run()
            except BaseException as exc:   # noqa: BLE001  (raised in results())
                self.error = exc

        self.thread = threading.Thread(target=run, name=f"probe-share:{self.host}",
                                       daemon=True)
        self.thread.start()

    def results(self, deadline: float, limit: float) -> list[ProbeResult]:
        assert self.thread is not None
        self.thread.join(max(0.0, deadline - time.monotonic()))
        if self.thread.is_alive():
            raise EngineError(f"host {self.host}: the probe share (in this process) gave no "
                              f"results within {limit:g} s", engine="probe")
        if self.error is not None:
            if isinstance(self.error, HybridError):
                raise _named(self.host, self.error) from self.error
            raise self.error
        assert self.out is not None
        return self.out

    def close(self, abort: bool = False) -> None:
        self.share.close()


class _Remote(_Handle):
    """A share in a process a runner started: JSON lines over its stdin and stdout."""

    def __init__(self, host: str, runner: Runner, request: ProbeRequest,
                 local: Sequence[str]) -> None:
        self.host = host
        self.where = getattr(runner, "where", type(runner).__name__)
        self.info: dict[str, Any] = {"where": self.where}
        try:
            self.proc: ModuleProcess = runner.run_module(MODULE, [])
        except HybridError as exc:
            raise _named(self.host, exc) from exc
        except OSError as exc:
            raise EngineError(f"host {host}: cannot start the probe share in {self.where}: "
                              f"{exc}", engine="probe") from exc
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.stderr: deque[str] = deque(maxlen=20)
        threading.Thread(target=self._read, name=f"probe-share:{host}:out",
                         daemon=True).start()
        err = getattr(self.proc, "stderr", None)
        if err is not None:
            threading.Thread(target=self._drain, args=(err,), name=f"probe-share:{host}:err",
                             daemon=True).start()
        self._send({"op": "share", "version": WIRE_VERSION, "host": host,
                    "local": list(local), "request": request.to_wire()})

    # -- the pipes ----------------------------------------------------------------------------

    def _send(self, msg: Mapping[str, Any]) -> None:
        line = json.dumps(msg, separators=(",", ":")) + "\n"
        pipe = self.proc.stdin
        try:
            assert pipe is not None
            try:
                pipe.write(line)
            except TypeError:                       # a binary pipe
                pipe.write(line.encode())
            pipe.flush()
        except (OSError, ValueError) as exc:        # the process is gone
            raise self._gone(f"cannot be written to ({exc})") from exc

    def _read(self) -> None:
        pipe = self.proc.stdout
        try:
            for raw in iter(pipe.readline, "" if pipe is not None else b""):  # type: ignore[union-attr]
                if not raw:
                    break
                line = raw.decode() if isinstance(raw, bytes) else raw
                if line.strip():
                    try:
                        self.lines.put(json.loads(line))
                    except json.JSONDecodeError:
                        self.stderr.append(f"(stdout) {line.rstrip()}")
        except (OSError, ValueError):
            pass
        finally:
            self.lines.put(None)

    def _drain(self, pipe: Any) -> None:
        try:
            for raw in iter(pipe.readline, ""):
                if not raw:
                    break
                line = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
                self.stderr.append(line.rstrip())
        except (OSError, ValueError):
            pass

    def _expect(self, op: str, deadline: float, limit: float) -> dict[str, Any]:
        try:
            msg = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise EngineError(f"host {self.host}: the probe share in {self.where} said no "
                              f"{op} within {limit:g} s", hint=self._tail(),
                              engine="probe") from None
        if msg is None:
            raise self._gone(f"ended before saying {op}")
        if msg.get("op") == "error":
            raise EngineError(f"host {self.host}: the probe share in {self.where} failed: "
                              f"{msg.get('error')}", hint=msg.get("hint") or self._tail(),
                              engine="probe")
        if msg.get("op") != op:
            raise EngineError(f"host {self.host}: the probe share in {self.where} said "
                              f"{msg.get('op')!r}, expected {op!r}", engine="probe")
        return msg

    def _gone(self, what: str) -> EngineError:
        code = None
        try:
            code = self.proc.wait(timeout=1.0)
        except Exception:   # noqa: BLE001  (still running, or a runner that cannot say)
            pass
        rc = f" (exit code {code})" if code is not None else ""
        return EngineError(f"host {self.host}: the probe share in {self.where} {what}{rc}",
                           hint=self._tail(), engine="probe")

    def _tail(self) -> str | None:
        lines = [x for x in self.stderr if x.strip()]
        tail = getattr(self.proc, "stderr_tail", None)      # a runner that keeps the tail
        if callable(tail):
            lines += [x for x in str(tail()).splitlines() if x.strip()]
        return "its error output: " + " | ".join(lines[-5:]) if lines else None

    # -- the phases ---------------------------------------------------------------------------

    def wait_ready(self, deadline: float, limit: float) -> None:
        msg = self._expect("ready", deadline, limit)
        self.info.update({k: msg[k] for k in ("engine", "process") if k in msg})

    def go(self) -> None:
        self._send({"op": "go"})

    def results(self, deadline: float, limit: float) -> list[ProbeResult]:
        msg = self._expect("results", deadline, limit)
        return [result_from_wire(r) for r in msg.get("results", ())]

    def close(self, abort: bool = False) -> None:
        """Say done and give the process a moment to release its responders; kill it
        otherwise (at once when the run is given up: ``abort``)."""
        try:
            if abort:
                raise EngineError("given up", engine="probe")
            self._send({"op": "done"})
            pipe = self.proc.stdin
            if pipe is not None:
                pipe.close()
            self.proc.wait(timeout=5.0)
        except Exception:   # noqa: BLE001  (gone, stuck, or a runner without wait(timeout))
            try:
                self.proc.kill()
                self.proc.wait(timeout=5.0)
            except Exception:   # noqa: BLE001
                pass


def _named(host: str, exc: HybridError) -> HybridError:
    """``exc`` with ``host H: `` in front of its message (its class kept)."""
    try:
        named = type(exc).__new__(type(exc))
        named.__dict__.update(exc.__dict__)
        named.message = f"host {host}: {exc.message}"
        named.args = (named.message,)
        return named
    except Exception:   # noqa: BLE001
        return EngineError(f"host {host}: {exc.message}", hint=exc.hint, engine="probe")


__all__ = ["READY_TIMEOUT", "probe_shares", "run_shares"]
