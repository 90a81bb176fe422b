"""One host's share of a probe matrix: its responders, its sources, its results.

A lab over several hosts (``hosts:``, issue 17) probes as **one matrix**, yet a host's
namespaces, sockets and guest agents can be reached only on that host.  So the matrix is
planned once, from the same inputs everywhere (:class:`ProbeRequest`: every endpoint, every
check, count, timeout), and each host runs its **share**
(:func:`~hybridnb.services.probe.plan.share_plans`):

1. it opens the responders of *its* targets (the TCP/UDP/HTTP listeners the engine stands in
   with) and says **ready**;
2. on **go** it probes from *its* sources to *every* target, its own host's and the others';
3. it returns its results (:class:`~hybridnb.services.probe.matrix.ProbeResult`, the same
   objects a one-process run makes);
4. it keeps its responders open until **done** (other hosts may still be probing them), end
   of input, or being killed.

Two phases, so that every host's responders listen before any host's sources send.  The same
engines run a share as run a whole matrix (:func:`~hybridnb.services.probe.engine.run_plan`,
:func:`~hybridnb.services.probe.engine.hold_responders`; fast or portable): a share is two
plans, one holding responders and one probing.

:class:`Share` runs a share in this process.  ``python3 -m hybridnb.services.probe.share``
runs one in a process of its own, speaking JSON lines (:func:`main`), the contract a
:class:`~hybridnb.drivers.runner.Runner` carries to a remote host:

====================================================  =========================================
coordinator → share (stdin)                           share → coordinator (stdout)
====================================================  =========================================
``{"op": "share", "version": 1, "host": "b",``
``"local": ["c2", "v1"], "request": {...}}``          ``{"op": "ready", "host": "b",``
                                                      ``"responders": 4, "engine":``
                                                      ``"portable", "process": {...}}``
``{"op": "go"}``                                      ``{"op": "results", "host": "b",``
                                                      ``"results": [...], "seconds": 0.4}``
``{"op": "done"}`` (or end of input)                  (exits 0)
====================================================  =========================================

Anything wrong is one line ``{"op": "error", "host": ..., "type": "EngineError", "error":
"...", "hint": ...}`` and exit code 1.  The request's wire form is :meth:`ProbeRequest.to_wire`
(``tests/golden/probe/share-request.json``); a result is :func:`result_to_wire`.  A VM's way
in travels by value (:class:`LibvirtGuest`: the libvirt URI, lab and endpoint) and is
reconnected on the share's side; a namespace path travels as it is (it names the namespace on
the host that holds the endpoint).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterable, Mapping, Sequence

from hybridnb.errors import EngineError, HybridError
from hybridnb.services.probe.endpoint import Executor, ProbeEndpoint
from hybridnb.services.probe.matrix import ProbeResult
from hybridnb.services.probe.plan import DEFAULT_CHECKS, ProbePlan, plan_probes, share_plans

#: The module a runner starts for a share (``python3 -m ...``).
MODULE = "hybridnb.services.probe.share"
#: Version of the JSON-lines contract (a share refuses another).
WIRE_VERSION = 1


# -------------------------------------------------------------------------------- the request

@dataclass(frozen=True)
class ProbeRequest:
    """Everything a probe run is planned from (the arguments of
    :func:`~hybridnb.services.probe.engine.probe_matrix`), as one value every host's share
    plans identically."""

    endpoints: tuple[ProbeEndpoint, ...]
    checks: tuple[str, ...] = DEFAULT_CHECKS
    gateway: ProbeEndpoint | str | None = None
    dns_server: str | None = None
    domain: str = "hybrid.local"
    timeout: float = 1.0
    count: int = 3
    responders: bool = True
    pin_neighbours: bool | None = None
    engine: str = "auto"

    def plan(self) -> ProbePlan:
        return plan_probes(self.endpoints, self.checks, gateway=self.gateway,
                           dns_server=self.dns_server, domain=self.domain, count=self.count,
                           responders=self.responders)

    def to_wire(self) -> dict[str, Any]:
        gw = self.gateway
        return {"endpoints": [endpoint_to_wire(e) for e in self.endpoints],
                "checks": list(self.checks),
                "gateway": endpoint_to_wire(gw) if isinstance(gw, ProbeEndpoint) else gw,
                "dns_server": self.dns_server, "domain": self.domain,
                "timeout": self.timeout, "count": self.count, "responders": self.responders,
                "pin_neighbours": self.pin_neighbours, "engine": self.engine}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any], local: Iterable[str] = ()) -> "ProbeRequest":
        """The request back; the executors of the endpoints in ``local`` are reconnected
        (:func:`executor_from_wire`), the others only marked (they run elsewhere)."""
        mine = set(local)
        gw = data.get("gateway")
        return cls(endpoints=tuple(endpoint_from_wire(e, e["name"] in mine)
                                   for e in data["endpoints"]),
                   checks=tuple(data.get("checks", DEFAULT_CHECKS)),
                   gateway=endpoint_from_wire(gw, gw["name"] in mine) if isinstance(gw, dict)
                   else gw,
                   dns_server=data.get("dns_server"), domain=data.get("domain", "hybrid.local"),
                   timeout=float(data.get("timeout", 1.0)), count=int(data.get("count", 3)),
                   responders=bool(data.get("responders", True)),
                   pin_neighbours=data.get("pin_neighbours"),
                   engine=str(data.get("engine", "auto")))


def endpoint_to_wire(ep: ProbeEndpoint) -> dict[str, Any]:
    return {"name": ep.name, "address": ep.address, "netns": ep.netns, "kind": ep.kind,
            "services": list(ep.services), "mac": ep.mac, "down": ep.down,
            "executor": None if ep.executor is None else executor_to_wire(ep.executor)}


def endpoint_from_wire(data: Mapping[str, Any], local: bool = True) -> ProbeEndpoint:
    ref = data.get("executor")
    executor: Executor | None = None
    if ref is not None:
        executor = executor_from_wire(ref) if local else Elsewhere(str(data["name"]))
    return ProbeEndpoint(str(data["name"]), str(data["address"]), netns=data.get("netns"),
                         executor=executor, kind=str(data.get("kind", "host")),
                         services=tuple(data.get("services", ())), mac=data.get("mac"),
                         down=data.get("down"))


def executor_to_wire(executor: Executor) -> dict[str, Any]:
    """An executor by value: ``executor.wire_ref()`` where it has one (a dict naming how to
    reconnect, e.g. :class:`LibvirtGuest`), else ``{"kind": "opaque"}`` — fine for an
    endpoint of another host, refused by the share that would have to run commands in it."""
    ref = getattr(executor, "wire_ref", None)
    return dict(ref()) if callable(ref) else {"kind": "opaque"}


def executor_from_wire(ref: Mapping[str, Any]) -> Executor:
    if ref.get("kind") == "libvirt":
        return LibvirtGuest(str(ref["uri"]), str(ref["lab"]), str(ref["endpoint"]),
                            channel=ref.get("channel"))
    return Elsewhere("", why=f"its way in ({ref.get('kind')!r}) cannot be sent to another "
                            "process")


class Elsewhere:
    """The executor of an endpoint on another host: planned with, never called here."""

    def __init__(self, endpoint: str, why: str = "it lives on another host") -> None:
        self.endpoint, self.why = endpoint, why

    def __call__(self, argv: Sequence[str], timeout: float) -> tuple[int, str, str]:
        raise EngineError(f"cannot run commands in {self.endpoint or 'this endpoint'} here: "
                          f"{self.why}", engine="probe")

    def wire_ref(self) -> dict[str, Any]:
        return {"kind": "opaque"}


class LibvirtGuest:
    """Runs commands in a libvirt guest through its guest agent — a VM's way in, by value
    (``uri``, ``lab``, ``endpoint``), so it can be sent to a share and reconnected there.
    ``channel``: the host-side socket of the VM's probe helper, when it has one
    (:mod:`~hybridnb.services.probe.vmhelper`)."""

    def __init__(self, uri: str, lab: str, endpoint: str, channel: str | None = None) -> None:
        self.uri, self.lab, self.endpoint, self.channel = uri, lab, endpoint, channel
        self._driver: Any = None
        self._lock = threading.Lock()

    def __call__(self, argv: Sequence[str], timeout: float) -> tuple[int, str, str]:
        with self._lock:
            if self._driver is None:
                from hybridnb.drivers.libvirt import LibvirtDriver
                from hybridnb.target import Target

                self._driver = LibvirtDriver(Target(name="probe-share", libvirt_uri=self.uri))
        code, out, err = self._driver.guest_exec(self.lab, self.endpoint, list(argv),
                                                 timeout=timeout)
        return int(code), str(out), str(err)

    def probe_channel(self) -> str | None:
        return self.channel

    def wire_ref(self) -> dict[str, Any]:
        return {"kind": "libvirt", "uri": self.uri, "lab": self.lab, "endpoint": self.endpoint,
                "channel": self.channel}


# -------------------------------------------------------------------------------- results

def result_to_wire(r: ProbeResult) -> dict[str, Any]:
    return {"check": r.check, "source": r.source, "target": r.target, "ok": r.ok,
            "reason": r.reason, "rtts": list(r.rtts), "sent": r.sent, "received": r.received,
            "port": r.port, "address": r.address, "detail": r.detail}


def result_from_wire(d: Mapping[str, Any]) -> ProbeResult:
    return ProbeResult(str(d["check"]), str(d["source"]), str(d["target"]), d["ok"],
                       str(d.get("reason", "")), tuple(float(x) for x in d.get("rtts", ())),
                       int(d.get("sent", 0)), int(d.get("received", 0)), d.get("port"),
                       str(d.get("address", "")), str(d.get("detail", "")))


# -------------------------------------------------------------------------------- a share

class Share:
    """A host's share of one matrix, run in this process: :meth:`start` opens its
    responders (on a thread; :meth:`wait_ready`), :meth:`run` probes from its sources and
    returns their results, :meth:`close` releases the responders.  Use it as a context
    manager so they are released whatever happens."""

    def __init__(self, request: ProbeRequest, local: Iterable[str], *,
                 progress: Callable[[str], None] | None = None) -> None:
        self.request = request
        self.plans = share_plans(request.plan(), local)
        self.progress = progress
        self.ready = threading.Event()
        self.release = threading.Event()
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def responders(self) -> int:
        return len(self.plans.holding.responders)

    @property
    def engine(self) -> str:
        """The probe engine this share's sources run with (``fast`` or ``portable``)."""
        from hybridnb.services.probe.engine import engine_name

        return engine_name(self.plans.probing, self.request.engine)

    def start(self) -> "Share":
        from hybridnb.services.probe.engine import hold_responders

        def hold() -> None:
            try:
                hold_responders(self.plans.holding, ready=self.ready, release=self.release,
                                engine=self.request.engine, progress=self.progress)
            except BaseException as exc:   # noqa: BLE001  (said at wait_ready / run)
                self.error = exc
                self.ready.set()

        self._thread = threading.Thread(target=hold, name="probe-share:responders",
                                        daemon=True)
        self._thread.start()
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        """True once the responders listen; raises what opening them raised."""
        got = self.ready.wait(timeout)
        if self.error is not None:
            raise self.error
        return got

    def run(self) -> list[ProbeResult]:
        """Probe from this share's sources; their results, in plan order."""
        from hybridnb.services.probe.engine import run_plan

        if self.error is not None:
            raise self.error
        req, mine = self.request, self.plans.local
        plan = self.plans.probing
        matrix = run_plan(plan, timeout=req.timeout, pin_neighbours=req.pin_neighbours,
                          progress=self.progress, engine=req.engine,
                          pin=[e for e in plan.endpoints if e.name in mine])
        return [r for r in matrix.results if r.source in mine]

    def close(self) -> None:
        self.release.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> "Share":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------- the process side

@dataclass
class _Channel:
    """This process's side of the JSON lines: one message per line."""

    inp: IO[str]
    out: IO[str]
    host: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, op: str, **body: Any) -> None:
        line = json.dumps({"op": op, "host": self.host, **body}, separators=(",", ":"))
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()

    def receive(self) -> dict[str, Any] | None:
        """The next message (None: end of input)."""
        while True:
            line = self.inp.readline()
            if not line:
                return None
            if line.strip():
                msg = json.loads(line)
                if not isinstance(msg, dict):
                    raise EngineError(f"a probe share takes JSON objects, not {line!r}",
                                      engine="probe")
                return msg


def serve(inp: IO[str], out: IO[str], *, ready_timeout: float = 60.0) -> int:
    """Run one share over JSON lines (see the module's docstring); the exit code."""
    chan = _Channel(inp, out)
    try:
        return _serve(chan, ready_timeout)
    except HybridError as exc:
        chan.send("error", type=type(exc).__name__, error=exc.message, hint=exc.hint)
    except Exception as exc:   # noqa: BLE001  (a bug: said, not a silent hang)
        chan.send("error", type=type(exc).__name__, error=str(exc) or repr(exc), hint=None)
    return 1


def _serve(chan: _Channel, ready_timeout: float) -> int:
    msg = chan.receive()
    if msg is None:
        return 0
    if msg.get("op") != "share" or msg.get("version") != WIRE_VERSION:
        raise EngineError(f"expected a share (version {WIRE_VERSION}), got op "
                          f"{msg.get('op')!r} version {msg.get('version')!r}", engine="probe")
    chan.host = str(msg.get("host", ""))
    local = list(msg.get("local", ()))
    request = ProbeRequest.from_wire(msg["request"], local)
    with Share(request, local) as share:
        if not share.wait_ready(ready_timeout):
            raise EngineError(f"the responders did not open within {ready_timeout:g} s",
                              engine="probe")
        chan.send("ready", responders=share.responders, engine=share.engine,
                  process=process_facts())
        msg = chan.receive()
        if msg is None or msg.get("op") == "done":
            return 0
        if msg.get("op") != "go":
            raise EngineError(f"expected go, got {msg.get('op')!r}", engine="probe")
        t0 = time.perf_counter()
        results = share.run()
        chan.send("results", results=[result_to_wire(r) for r in results],
                  seconds=round(time.perf_counter() - t0, 6))
        chan.receive()                     # done, or end of input: release the responders
    return 0


def process_facts() -> dict[str, Any]:
    """Where this share process runs, as its host sees it: pid, Python, and the inodes of
    its network and mount namespaces (a share in a container shows that container's mount
    namespace)."""
    import os
    import platform

    facts: dict[str, Any] = {"pid": os.getpid(), "python": platform.python_version()}
    for ns in ("net", "mnt"):
        try:
            facts[f"{ns}ns"] = os.stat(f"/proc/self/ns/{ns}").st_ino
        except OSError:
            facts[f"{ns}ns"] = None
    return facts


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m hybridnb.services.probe.share``: one share over stdin/stdout.  Anything
    else that would write to stdout (a stray print) goes to stderr instead."""
    import os
    import sys

    del argv
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        return serve(sys.stdin, out)
    finally:
        out.close()


__all__ = ["MODULE", "WIRE_VERSION", "Elsewhere", "LibvirtGuest", "ProbeRequest", "Share",
           "endpoint_from_wire", "endpoint_to_wire", "executor_from_wire", "executor_to_wire",
           "main", "process_facts", "result_from_wire", "result_to_wire", "serve"]
