"""Probes from a VM at wire speed: the test VM's resident helper, over a virtio-serial port.

A VM source used to probe only through a shell script run by qemu-guest-agent
(:mod:`~hybridnb.services.probe.script`): a busybox ``ping`` process per pair, its RTT read
in user space of a TCG guest.  The test VM image now carries ``hnb-probe``
(``hybridnb/images/guest/hnb-probe.c``), which its init starts and which answers probe
batches on the virtio-serial port :data:`CHANNEL_NAME`; the libvirt driver gives every test
VM that port, its host side a unix socket in the VM's files directory
(:class:`~hybridnb.drivers.base.ProbeChannel`).  The helper sends all echoes of a batch at
once from one raw socket, round by round, and takes each RTT as the kernel's receive
timestamp (``SO_TIMESTAMPNS``) minus the clock read just before the send — what the engine
does for every other source — so a VM-sourced RTT means the same as the others.

:func:`run_vm_source` is what the engine calls for a VM source: the pairs the helper can
probe (:data:`HELPER_PROTOCOLS`: ICMP, and TCP connects with the kernel's handshake RTT, as
far as the helper's greeting lists them) go to the helper, the rest (UDP, HTTP, DNS) to the
script, both at once.  A VM without the helper (a recipe VM, an older image, a socket
that does not answer the greeting within :data:`HELLO_TIMEOUT`) falls back to the script
for everything, automatically.  Each ICMP and TCP result says which path measured it in its
``detail``: :data:`VIA_HELPER` or :data:`VIA_SCRIPT`.  ``HYBRIDNB_VM_PROBE`` (``auto``,
``helper``, ``script``) forces a path (``helper`` without a helper fails those pairs with the
reason) — for benchmarks and tests.

The wire format (text lines, see the C source for the whole of it)::

    -> HELLO <nonce>                  <- HELLO <nonce> hnb-probe 1 icmp tcp
    -> BATCH <id> <count> <timeout ms>
    -> ICMP <index> <address>         (one per pair: <count> echoes)
    -> TCP <index> <address> <port>   (one per pair: one connect)
    -> END                            <- R <id> <index> ok <rtt ns,...> -
                                      <- R <id> <index> fail - <reason code>
                                      <- DONE <id>

:func:`encode_batch` and :func:`parse_replies` are the two ends of it on this side.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import socket
import threading
import time
from typing import Callable, NamedTuple, Protocol, Sequence, runtime_checkable

from hybridnb.services.probe.clients import UNREACH_CODES
from hybridnb.services.probe.endpoint import ProbeEndpoint
from hybridnb.services.probe.matrix import ProbeResult
from hybridnb.services.probe.plan import PairSpec
from hybridnb.services.probe.script import run_script
from hybridnb.services.probe.wire import reason as errno_text

#: The virtio-serial port name the helper listens on (the domain XML's channel target).
CHANNEL_NAME = "org.hybridnb.probe.0"
#: Checks the helper can run (those its greeting lists are sent to it); the others stay on
#: the guest-agent script.
HELPER_PROTOCOLS = frozenset({"icmp", "tcp"})
#: ``detail`` of results measured by the helper / by the script.
VIA_HELPER = "via hnb-probe"
VIA_SCRIPT = "via guest script"
#: Environment variable choosing the path: auto (helper where it answers), helper, script.
MODE_ENV = "HYBRIDNB_VM_PROBE"
MODES = ("auto", "helper", "script")
#: Seconds the helper has to answer the greeting (it polls an idle port every 20 ms).
HELLO_TIMEOUT = 1.5
#: Seconds before a greeting not answered yet is said again (see ``HelperConnection._greet``).
HELLO_AGAIN = 0.4
#: Seconds past the batch's timeout the answer may take (a TCG guest, a busy machine).
REPLY_MARGIN = 5.0
#: Pairs per batch the helper accepts.
MAX_BATCH = 4096

_REPLY = re.compile(r"^R (\S+) (\d+) (ok|fail) (\S+) (\S+)$")


@runtime_checkable
class HelperChannel(Protocol):
    """An executor that also knows the host-side socket of the VM's probe helper port."""

    def probe_channel(self) -> str | None: ...


class HelperUnavailable(Exception):
    """The helper cannot be reached or did not answer as it should."""


class HelperLine(NamedTuple):
    """One ``R`` line: the pair's verdict, its RTTs in seconds, the reason code."""

    ok: bool
    rtts: tuple[float, ...]
    reason: str


def mode() -> str:
    """The path chosen by :data:`MODE_ENV` (``auto`` when unset or unknown)."""
    m = os.environ.get(MODE_ENV, "auto").strip().lower()
    return m if m in MODES else "auto"


def encode_batch(batch_id: str, count: int, timeout: float,
                 probes: Sequence[tuple[int, str, str, int | None]]) -> bytes:
    """The request for ``probes`` (``(index, protocol, IPv4 address, port)``; ``icmp``:
    ``count`` echoes, ``tcp``: one connect to ``port``), replies awaited ``timeout``
    seconds."""
    if not 1 <= count <= 16:
        raise ValueError(f"the helper sends 1 to 16 echoes per pair, not {count}")
    if len(probes) > MAX_BATCH:
        raise ValueError(f"at most {MAX_BATCH} pairs per batch, not {len(probes)}")
    lines = [f"BATCH {batch_id} {count} {max(1, round(timeout * 1000))}"]
    for index, protocol, address, port in probes:
        if not address or any(c.isspace() for c in address):
            raise ValueError(f"not an address: {address!r}")
        if protocol == "icmp":
            lines.append(f"ICMP {int(index)} {address}")
        elif protocol == "tcp" and port is not None and 0 < int(port) < 65536:
            lines.append(f"TCP {int(index)} {address} {int(port)}")
        else:
            raise ValueError(f"the helper cannot probe {protocol} port {port}")
    lines.append("END")
    return ("\n".join(lines) + "\n").encode()


def parse_replies(text: str, batch_id: str) -> tuple[dict[int, HelperLine], bool]:
    """``({index: HelperLine}, done)`` from the helper's output: only lines of
    ``batch_id`` (a batch given up on may still answer later); ``done`` once its ``DONE``
    line came."""
    out: dict[int, HelperLine] = {}
    done = False
    for line in text.splitlines():
        line = line.strip()
        if line == f"DONE {batch_id}":
            done = True
            continue
        m = _REPLY.match(line)
        if not m or m.group(1) != batch_id:
            continue
        rtts: tuple[float, ...] = ()
        if m.group(4) != "-":
            try:
                rtts = tuple(max(int(x), 0) / 1e9 for x in m.group(4).split(",") if x)
            except ValueError:
                rtts = ()
        ok = m.group(3) == "ok" and bool(rtts)
        out[int(m.group(2))] = HelperLine(ok, rtts, "" if m.group(5) == "-" else m.group(5))
    return out, done


def reason_text(code: str) -> str:
    """The reason a result shows for a helper's reason code — the words the engine's own
    ICMP client uses (``timeout``, ``host unreachable``, ``TTL exceeded``…)."""
    kind, _, arg = code.partition(":")
    if kind == "unreach" and arg.isdigit():
        return UNREACH_CODES.get(int(arg), f"unreachable (code {arg})")
    if kind == "errno" and arg.isdigit():
        return errno_text(int(arg))
    return {"ttl": "TTL exceeded", "bad-address": "not an IPv4 address",
            "": "timeout"}.get(code, code)


class HelperConnection:
    """One connection to a helper's port: greet it, then run batches."""

    def __init__(self, path: str, *, hello_timeout: float | None = None) -> None:
        hello_timeout = HELLO_TIMEOUT if hello_timeout is None else hello_timeout
        self.path = path
        self.buffer = b""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.settimeout(hello_timeout)
            self.sock.connect(path)
            self.version = self._greet(time.monotonic() + hello_timeout)
            #: the checks this helper runs (its greeting: ``hnb-probe 1 icmp tcp``)
            self.capabilities = frozenset(self.version.split()[2:]) & HELPER_PROTOCOLS
        except BaseException:
            self.sock.close()
            raise

    def __enter__(self) -> "HelperConnection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def _greet(self, deadline: float) -> str:
        """Say HELLO until the helper answers one of ours, or ``deadline``.  A greeting is
        said again every :data:`HELLO_AGAIN` seconds, in case one was lost: in the VM probe
        benchmark a greeting went unanswered for 1.5 s in 2 runs of ~10 (~500 quick
        reconnects; cause not found, not seen again in 6 runs since)."""
        nonces: list[str] = []
        while True:
            nonces.append(secrets.token_hex(6))
            self.sock.sendall(f"HELLO {nonces[-1]}\n".encode())
            again = min(deadline, time.monotonic() + HELLO_AGAIN)
            try:
                return self._line(tuple(f"HELLO {n} " for n in nonces), again)
            except HelperUnavailable:
                if time.monotonic() >= deadline:
                    raise

    def _recv(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise HelperUnavailable("the helper did not answer in time")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise HelperUnavailable("the helper did not answer in time") from None
        except OSError as exc:
            raise HelperUnavailable(f"reading from the helper: {exc}") from exc
        if not data:
            raise HelperUnavailable("the helper's port closed")
        self.buffer += data

    def _line(self, prefix: str | tuple[str, ...], deadline: float) -> str:
        """The rest of the first line starting with ``prefix`` (or one of them; earlier lines
        are a former connection's leftovers)."""
        wants = [w.encode() for w in ((prefix,) if isinstance(prefix, str) else prefix)]
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                for want in wants:
                    if line.startswith(want):
                        return line[len(want):].decode(errors="replace").strip()
            self._recv(deadline)

    def batch(self, probes: Sequence[tuple[int, str, str, int | None]], *, count: int,
              timeout: float) -> dict[int, HelperLine]:
        """Run one batch; ``{index: HelperLine}`` for every probe."""
        batch_id = secrets.token_hex(4)
        deadline = time.monotonic() + timeout + REPLY_MARGIN
        try:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.1))
            self.sock.sendall(encode_batch(batch_id, count, timeout, probes))
        except OSError as exc:
            raise HelperUnavailable(f"writing to the helper: {exc}") from exc
        text = b""
        while True:
            if f"DONE {batch_id}\n".encode() in self.buffer:
                text, self.buffer = self.buffer, b""
                break
            self._recv(deadline)
        got, done = parse_replies(text.decode(errors="replace"), batch_id)
        missing = [p[0] for p in probes if p[0] not in got]
        if not done or missing:
            raise HelperUnavailable(f"the helper's answer lacks {len(missing)} pairs")
        return got


def helper_channel(src: ProbeEndpoint) -> str | None:
    """The host-side socket of ``src``'s helper port, when its executor knows one."""
    ex = src.executor
    if ex is None or not isinstance(ex, HelperChannel):
        return None
    try:
        path = ex.probe_channel()
    except Exception:   # noqa: BLE001  (the driver could not say: no helper path)
        return None
    return path or None


_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(path: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


def _results(pairs: Sequence[PairSpec], got: dict[int, HelperLine], count: int
             ) -> dict[int, ProbeResult]:
    out = {}
    for i, p in enumerate(pairs):
        line = got[i]
        sent = count if p.protocol == "icmp" else 1
        out[p.index] = ProbeResult(p.check.name, p.src.name, p.dst.name, line.ok,
                                   "" if line.ok else reason_text(line.reason),
                                   rtts=line.rtts, sent=sent, received=min(len(line.rtts), sent),
                                   port=p.port, address=p.address, detail=VIA_HELPER)
    return out


def _failed(pairs: Sequence[PairSpec], why: str) -> dict[int, ProbeResult]:
    return {p.index: ProbeResult(p.check.name, p.src.name, p.dst.name, False, why,
                                 port=p.port, address=p.address, detail=VIA_HELPER)
            for p in pairs}


def _via_script(results: dict[int, ProbeResult], pairs: Sequence[PairSpec]
                ) -> dict[int, ProbeResult]:
    """Mark the script's ICMP and TCP results with the path that measured them."""
    icmp = {p.index for p in pairs if p.protocol in HELPER_PROTOCOLS}
    return {i: (dataclasses.replace(r, detail=VIA_SCRIPT) if i in icmp and not r.detail
                else r) for i, r in results.items()}


def run_vm_source(src: ProbeEndpoint, pairs: Sequence[PairSpec], *, timeout: float,
                  count: int, domain: str) -> dict[int, ProbeResult]:
    """Probe ``pairs`` (all from the VM source ``src``): ICMP and TCP through the helper
    when it answers, everything else (and everything, when it does not) through the
    script."""
    if not pairs:
        return {}
    chosen = mode()
    fast = [p for p in pairs if chosen != "script" and p.protocol in HELPER_PROTOCOLS]
    rest = [p for p in pairs if not (chosen != "script" and p.protocol in HELPER_PROTOCOLS)]

    def script(some: Sequence[PairSpec]) -> dict[int, ProbeResult]:
        return _via_script(run_script(src, some, timeout=timeout, count=count, domain=domain),
                           some) if some else {}

    def without_helper(why: str) -> dict[int, ProbeResult]:
        if chosen != "helper":
            return script(pairs)                   # one script run for everything
        out = _failed(fast, f"probe helper unavailable: {why}")
        out.update(script(rest))
        return out

    if not fast:
        return script(pairs)
    if not all(p.protocol == "icmp" or p.port for p in fast):
        fast = [p for p in fast if p.protocol == "icmp" or p.port]
        rest = _others(pairs, fast)
    path = helper_channel(src)
    if path is None:
        return without_helper("no helper channel")
    if len(fast) > MAX_BATCH or not 1 <= count <= 16:
        return without_helper(f"{len(fast)} pairs x {count} is beyond the helper's batch")
    lock = _lock(path)
    if not lock.acquire(timeout=timeout + REPLY_MARGIN):
        return without_helper("another probe run holds the helper")
    try:
        try:
            conn = HelperConnection(path)
        except (HelperUnavailable, OSError) as exc:
            return without_helper(_why(exc))
        with conn:
            fast = [p for p in fast if p.protocol in conn.capabilities]
            if not fast:                                # an older helper: nothing it runs
                return script(pairs)
            rest = _others(pairs, fast)
            return _with_helper(conn, fast, rest, script, count=count, timeout=timeout,
                                fallback=lambda why: _failed(
                                    fast, f"probe helper failed: {why}") if chosen == "helper"
                                else script(fast))
    finally:
        lock.release()


def _others(pairs: Sequence[PairSpec], taken: Sequence[PairSpec]) -> list[PairSpec]:
    keep = {p.index for p in taken}
    return [p for p in pairs if p.index not in keep]


def _why(exc: BaseException) -> str:
    if isinstance(exc, HelperUnavailable):
        return str(exc)
    if isinstance(exc, socket.timeout):
        return "the helper did not answer in time"
    return f"cannot reach the helper: {getattr(exc, 'strerror', None) or exc}"


def _with_helper(conn: HelperConnection, fast: Sequence[PairSpec], rest: Sequence[PairSpec],
                 script: Callable[[Sequence[PairSpec]], dict[int, ProbeResult]], *,
                 count: int, timeout: float,
                 fallback: Callable[[str], dict[int, ProbeResult]]) -> dict[int, ProbeResult]:
    """The helper's batch here, the script for the rest beside it (a thread); a batch that
    goes wrong midway is ``fallback(why)`` for its pairs."""
    scripted: dict[int, ProbeResult] = {}

    def side_run() -> None:
        try:
            scripted.update(script(rest))
        except Exception as exc:    # a bug or an executor gone wrong: a reason, not a hole
            scripted.update({p.index: ProbeResult(p.check.name, p.src.name, p.dst.name, False,
                                                  f"probe script failed: {exc}", port=p.port,
                                                  address=p.address) for p in rest})

    side = threading.Thread(target=side_run, name="probe-exec-rest", daemon=True)
    if rest:
        side.start()
    try:
        try:
            got = conn.batch([(i, p.protocol, p.address, p.port) for i, p in enumerate(fast)],
                             count=count, timeout=timeout)
            out = _results(fast, got, count)
        except (HelperUnavailable, OSError) as exc:
            out = fallback(_why(exc))
    finally:
        if rest:
            side.join()
    out.update(scripted)
    return out
