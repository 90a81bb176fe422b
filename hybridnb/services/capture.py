"""Packet capture on an endpoint's bridge port (or the whole bridge) inside the lab host.

tcpdump (Debian's) runs in the lab host's network namespace (``nsenter --net=...``) on the
endpoint's port (:mod:`hybridnb.services.ports`: the veth of a host or a container, the tap of
a VM) or on the bridge, with an optional BPF filter, and writes a pcap file packet by packet
(``-U``), as root (``-Z root``: Debian's tcpdump would otherwise drop to its own user, who
cannot write beside the lab state).  A :class:`Capture` returns from :meth:`Capture.start`
only once tcpdump says it is listening, so nothing sent after ``start()`` is missed; it ends
by itself after ``count`` packets or ``duration`` seconds, or on :meth:`Capture.stop`, which
sends SIGINT — tcpdump then writes what it holds, closes the file and prints its counts — and
waits for it.  The pcap is always complete when a :class:`CaptureResult` is handed out.

The file goes where asked, by default beside the lab state:
``<state dir>/captures/<lab>/<endpoint>-<YYYYmmdd-HHMMSS>.pcap``.  ``CaptureResult.packets()``
decodes it (:mod:`hybridnb.services.packets`, dpkt); the result renders as text and HTML (the
decoded summary and a sequence picture) and as data.

    with Capture(view, "web", bpf="icmp or port 53") as cap:
        lab.test()                      # anything that makes traffic
    cap.result.packets()
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridnb.errors import EngineError, EngineUnavailable, HybridError
from hybridnb.services.labview import LabView

BRIDGE = "bridge"
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_COUNTS = {"captured": re.compile(r"(\d+) packets? captured"),
           "received": re.compile(r"(\d+) packets? received by filter"),
           "dropped": re.compile(r"(\d+) packets? dropped by kernel")}


@dataclass(frozen=True)
class CaptureResult:
    """A finished capture: where the pcap is and what tcpdump counted."""

    lab: str
    endpoint: str                     # an endpoint name, or "bridge"
    interface: str
    path: str
    bpf: str = ""
    started: float = 0.0              # wall clock
    ended: float = 0.0
    captured: int = 0
    dropped: int = 0
    address: str | None = None        # the endpoint's address (to focus the summary)
    notes: tuple[str, ...] = field(default=())
    #: a whole-bridge capture of a lab over several hosts: each host's own capture (its
    #: bridge, its pcap); ``path`` is then their frames merged in time order
    hosts: tuple[tuple[str, "CaptureResult"], ...] = field(default=())

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    def packets(self, limit: int | None = None) -> Any:
        """The pcap decoded (:class:`~hybridnb.services.packets.PacketTable`)."""
        from hybridnb.services.packets import decode_pcap

        return decode_pcap(self.path, limit=limit, title=self.headline())

    def headline(self) -> str:
        what = f"{self.endpoint} ({self.interface})" if self.endpoint != BRIDGE \
            else f"bridge {self.interface}"
        flt = f" filter {self.bpf!r}" if self.bpf else ""
        each = f" ({', '.join(f'{h} {r.captured}' for h, r in self.hosts)})" \
            if self.hosts else ""
        return (f"capture of lab {self.lab} on {what}{flt}: {self.captured} packets{each} in "
                f"{self.seconds:.1f}s" + (f", {self.dropped} dropped" if self.dropped else ""))

    def host(self, name: str) -> "CaptureResult":
        """Host ``name``'s own capture (of a whole-bridge capture over several hosts)."""
        for h, result in self.hosts:
            if h == name:
                return result
        raise HybridError(f"capture of lab {self.lab} has no host {name!r}",
                          hint=f"its hosts: {', '.join(h for h, _ in self.hosts) or 'none'}")

    def records(self, limit: int | None = 500) -> list[dict[str, Any]]:
        """The decoded packets as rows (see :class:`~hybridnb.services.packets.PacketSummary`)."""
        return self.packets(limit=limit).records()

    def to_dict(self) -> dict[str, Any]:
        return {"lab": self.lab, "endpoint": self.endpoint, "interface": self.interface,
                "path": self.path, "bpf": self.bpf, "started": round(self.started, 3),
                "ended": round(self.ended, 3), "captured": self.captured,
                "dropped": self.dropped, "packets": self.packets(limit=500).records(),
                **({"hosts": [{"host": h, "interface": r.interface, "path": r.path,
                               "captured": r.captured, "dropped": r.dropped}
                              for h, r in self.hosts]} if self.hosts else {})}

    def _pcaps(self) -> str:
        return "".join(f"\n  host {h}: {r.captured} packets on {r.interface}, pcap: {r.path}"
                       for h, r in self.hosts)

    def to_text(self) -> str:
        return self.packets(limit=200).to_text(limit=50) + f"\npcap: {self.path}" + \
            self._pcaps()

    __repr__ = to_text
    __str__ = to_text

    def _repr_html_(self) -> str:
        from html import escape

        return (self.packets(limit=200)._repr_html_()
                + f"<div>pcap: <code>{escape(self.path)}</code></div>"
                + "".join(f"<div>host {escape(h)}: {r.captured} packets on "
                          f"{escape(r.interface)}, pcap: <code>{escape(r.path)}</code></div>"
                          for h, r in self.hosts))


def default_path(view: LabView, endpoint: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = view.files("captures")
    path = base / f"{endpoint}-{stamp}.pcap"
    n = 1
    while path.exists():
        n += 1
        path = base / f"{endpoint}-{stamp}-{n}.pcap"
    return path


def _interface(view: LabView, endpoint: str) -> tuple[str, str | None]:
    """(interface on the lab host, the endpoint's address) for an endpoint or ``bridge``."""
    from hybridnb.services.ports import resolve_ports

    if endpoint == BRIDGE:
        return view.bridge, None
    res = view.endpoint(endpoint)                # NotFoundError naming the endpoints
    port = resolve_ports(view).port(endpoint)
    return port.ifname, str(res.spec["address"])


class Capture:
    """One tcpdump run; use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(self, view: LabView, endpoint: str = BRIDGE, *, bpf: str = "",
                 count: int | None = None, duration: float | None = None,
                 path: str | os.PathLike[str] | None = None, snaplen: int = 65535,
                 buffer_kib: int = 32768) -> None:
        self.view = view
        self.endpoint = endpoint
        self.bpf = bpf.strip()
        self.count = count
        self.duration = duration
        self.path = Path(path) if path is not None else default_path(view, endpoint)
        self.snaplen = snaplen
        self.buffer_kib = buffer_kib
        self.interface = ""
        self.address: str | None = None
        self.result: CaptureResult | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: list[str] = []
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None
        self._started = 0.0
        self._timer: threading.Timer | None = None

    def argv(self) -> list[str]:
        tcpdump = shutil.which("tcpdump", path=_PATH)
        if tcpdump is None:
            raise EngineUnavailable("tcpdump is not installed", engine="tcpdump",
                                    hint="apt-get install tcpdump")
        # -U: each packet written at once; --immediate-mode: handed over at once (else
        # libpcap holds a block of the ring until it fills or times out); -B: a ring big
        # enough for a burst (the probe engine's) of full-size frames
        cmd = [tcpdump, "-i", self.interface, "-w", str(self.path), "-U", "--immediate-mode",
               "-n", "-Z", "root", "-s", str(self.snaplen), "-B", str(self.buffer_kib)]
        if self.count:
            cmd += ["-c", str(int(self.count))]
        if self.bpf:
            cmd.append(self.bpf)
        if self.view.netns:
            cmd = [shutil.which("nsenter", path=_PATH) or "nsenter",
                   f"--net=/run/netns/{self.view.netns}", *cmd]
        return cmd

    def start(self) -> "Capture":
        """Start tcpdump and return once it listens (EngineError with its words if not)."""
        if self._proc is not None:
            return self
        self.interface, self.address = _interface(self.view, self.endpoint)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._started = time.time()
        self._proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      env={"PATH": _PATH, "LANG": "C"},
                                      start_new_session=True)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True,
                                        name=f"tcpdump:{self.interface}")
        self._reader.start()
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._listening.wait(0.01):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self._reader.join(1.0)
                self._kill()
                words = " ".join(self._stderr).strip() or "no output"
                raise EngineError(f"tcpdump on {self.interface} did not start: {words}",
                                  engine="tcpdump",
                                  hint="check the BPF filter (tcpdump -d FILTER)")
        self._arm_timer()
        return self

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for raw in self._proc.stderr:
            line = raw.decode(errors="replace").strip()
            self._stderr.append(line)
            if "listening on" in line:
                self._listening.set()

    def _arm_timer(self) -> None:
        """With a ``duration``, stop the capture once it has passed."""
        if self.duration:
            self._timer = threading.Timer(self.duration, self._interrupt)
            self._timer.daemon = True
            self._timer.start()

    def _interrupt(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass

    def _drain(self, quiet: float = 0.06, limit: float = 1.0) -> None:
        """Let tcpdump write what the kernel already handed it: SIGINT ends its loop at once,
        and frames still in the capture ring would be lost.  Waits until the file has not
        grown for ``quiet`` seconds (at most ``limit``)."""
        deadline = time.monotonic() + limit
        last, since = -1, time.monotonic()
        while self.running and time.monotonic() < deadline:
            try:
                size = self.path.stat().st_size
            except OSError:
                size = 0
            if size != last:
                last, since = size, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.01)

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout: float | None = None,
             stop: threading.Event | None = None) -> CaptureResult:
        """Wait until tcpdump ends by itself (``count`` packets or ``duration``); after
        ``timeout`` seconds, or once ``stop`` is set, stop it."""
        if self._proc is None:
            raise HybridError("the capture was not started")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if (left is not None and left <= 0) or (stop is not None and stop.is_set()):
                return self.stop()
            try:
                self._proc.wait(0.05 if stop is not None else left)
                return self._finish()
            except subprocess.TimeoutExpired:
                continue

    def stop(self) -> CaptureResult:
        """SIGINT tcpdump (it writes what it holds and closes the pcap) and wait for it."""
        if self._proc is None:
            raise HybridError("the capture was not started")
        if self.result is not None:
            return self.result
        self._drain()
        self._interrupt()
        try:
            self._proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._kill()
        return self._finish()

    def _finish(self) -> CaptureResult:
        """The result, made once: the duration timer cancelled, the last words collected."""
        if self.result is not None:
            return self.result
        if self._timer is not None:
            self._timer.cancel()
        self._collect()
        return self._counted()

    def _collect(self) -> None:
        """Wait (briefly) for tcpdump's last words on stderr."""
        if self._reader is not None:
            self._reader.join(2.0)

    def _counted(self) -> CaptureResult:
        """The result, with the counts tcpdump's last words (``self._stderr``) give; those
        lines and its "listening on" line are not kept as notes."""
        text = "\n".join(self._stderr)
        counts = {k: int(m.group(1)) if (m := rx.search(text)) else 0
                  for k, rx in _COUNTS.items()}
        self.result = CaptureResult(
            self.view.name, self.endpoint, self.interface, str(self.path), self.bpf,
            self._started, time.time(), counts["captured"], counts["dropped"], self.address,
            tuple(line for line in self._stderr if line and "listening on" not in line
                  and not any(rx.search(line) for rx in _COUNTS.values())))
        return self.result

    def __enter__(self) -> "Capture":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.result is None:
            self.stop()


class BridgesCapture(Capture):
    """A whole-bridge capture of a lab over several hosts: one tcpdump per host, each on
    that host's bridge in its own lab host (a frame between two endpoints of one host
    crosses only that host's bridge; one between hosts crosses both, once each), each into
    a pcap of its own (``<path stem>-<host>.pcap``); when they end, their frames are merged
    in time order into ``path``.  ``count`` ends each host's tcpdump after that many
    packets on its bridge."""

    def __init__(self, view: LabView, *, bpf: str = "", count: int | None = None,
                 duration: float | None = None,
                 path: str | os.PathLike[str] | None = None, **kw: Any) -> None:
        super().__init__(view, BRIDGE, bpf=bpf, count=count, duration=duration, path=path,
                         **kw)
        self.parts = [(part.host or "", _one(
            part, BRIDGE, bpf=bpf, count=count, duration=duration,
            path=self.path.with_name(f"{self.path.stem}-{part.host}.pcap"), **kw))
            for part in view.parts]

    def start(self) -> "Capture":
        """Start every host's tcpdump; return once all listen (if one cannot start, the
        others are stopped and the error names its host)."""
        if self._started:
            return self
        self.interface = ", ".join(f"{h}:{part.view.bridge}" for h, part in self.parts)
        self._started = time.time()
        for h, part in self.parts:
            try:
                part.start()
            except HybridError as exc:
                for _, started in self.parts:
                    if started.running:
                        started.stop()
                exc.message = f"host {h}: {exc.message}"
                raise
        return self

    @property
    def running(self) -> bool:
        return any(part.running for _, part in self.parts)

    def wait(self, timeout: float | None = None,
             stop: threading.Event | None = None) -> CaptureResult:
        if not self._started:
            raise HybridError("the capture was not started")
        deadline = None if timeout is None else time.monotonic() + timeout
        for _, part in self.parts:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            part.wait(left, stop=stop)
        return self._finish()

    def stop(self) -> CaptureResult:
        if not self._started:
            raise HybridError("the capture was not started")
        for _, part in self.parts:
            part.stop()
        return self._finish()

    def _finish(self) -> CaptureResult:
        if self.result is not None:
            return self.result
        done = [(h, part.stop()) for h, part in self.parts]
        merge_pcaps([r.path for _, r in done], self.path, self.snaplen)
        self.result = CaptureResult(
            self.view.name, BRIDGE, self.interface, str(self.path), self.bpf, self._started,
            time.time(), sum(r.captured for _, r in done), sum(r.dropped for _, r in done),
            None, tuple(f"host {h}: {n}" for h, r in done for n in r.notes), hosts=tuple(done))
        return self.result


def compile_bpf(bpf: str, snaplen: int = 65535) -> list[list[int]]:
    """A tcpdump filter as a classic BPF program (``tcpdump -ddd``, Ethernet), for a capture
    made elsewhere (:class:`RemoteCapture`): ``[[code, jt, jf, k], ...]``."""
    tcpdump = shutil.which("tcpdump", path=_PATH)
    if tcpdump is None:
        raise EngineUnavailable("tcpdump is not installed (it compiles the filter)",
                                engine="tcpdump", hint="apt-get install tcpdump")
    done = subprocess.run([tcpdump, "-ddd", "-y", "EN10MB", "-s", str(snaplen), bpf],
                          capture_output=True, text=True, env={"PATH": _PATH, "LANG": "C"},
                          timeout=10)
    lines = done.stdout.split()
    if done.returncode != 0 or not lines:
        raise HybridError(f"cannot compile the filter {bpf!r}: "
                          f"{done.stderr.strip() or 'no output'}",
                          hint="check the BPF filter (tcpdump -d FILTER)")
    words = [int(w) for w in lines[1:]]
    return [words[i:i + 4] for i in range(0, len(words), 4)]


class RemoteCapture(Capture):
    """A capture on a host of another machine: the agent there (``python3 -m
    hybridnb.remote.sniff`` in its container, run by the backend's ``runner``) captures on
    the bridge or the endpoint's port and streams the pcap back into ``path``; the filter is
    compiled here (:func:`compile_bpf`).  Stop closes the stream's stdin: the agent writes
    what the kernel already holds and ends."""

    _remote: Any = None                # the sniffer's ModuleProcess in the agent

    def start(self) -> "Capture":
        if self._started:
            return self
        runner = self.view.backend.extras.get("runner")
        if runner is None:
            raise HybridError(f"host {self.view.host}: its backend has no agent to capture with")
        self.interface, self.address = _interface(self.view, self.endpoint)
        args = [self.interface, "--snaplen", str(self.snaplen)]
        if self.count:
            args += ["--count", str(int(self.count))]
        if self.bpf:
            import json

            args += ["--filter", json.dumps(compile_bpf(self.bpf, self.snaplen))]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._started = time.time()
        self._remote = runner.run_module("hybridnb.remote.sniff", args)
        self._reader = threading.Thread(target=self._copy, daemon=True,
                                        name=f"capture:{self.view.host}:{self.interface}")
        self._reader.start()
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._listening.wait(0.01):
            if not self._reader.is_alive() or time.monotonic() > deadline:
                self._remote.kill()
                words = self._remote.stderr_tail().strip() or "no output"
                raise EngineError(f"host {self.view.host}: the capture on {self.interface} "
                                  f"did not start in {getattr(runner, 'where', 'its agent')}: "
                                  f"{words}", engine="agent")
        self._arm_timer()
        return self

    def _copy(self) -> None:
        """The pcap stream into the file, chunk by chunk (listening once its header came)."""
        got = 0
        with open(self.path, "wb") as out:
            for chunk in iter(lambda: self._remote.stdout.read1(65536), b""):
                out.write(chunk)
                out.flush()
                got += len(chunk)
                if got >= 24:
                    self._listening.set()

    def _interrupt(self) -> None:
        try:
            self._remote.stdin.close()
        except OSError:
            pass

    @property
    def running(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    def wait(self, timeout: float | None = None,
             stop: threading.Event | None = None) -> CaptureResult:
        if not self._started:
            raise HybridError("the capture was not started")
        deadline = None if timeout is None else time.monotonic() + timeout
        assert self._reader is not None
        while self._reader.is_alive():
            if (deadline is not None and time.monotonic() >= deadline) or \
                    (stop is not None and stop.is_set()):
                return self.stop()
            self._reader.join(0.05)
        return self._finish()

    def stop(self) -> CaptureResult:
        if not self._started:
            raise HybridError("the capture was not started")
        if self.result is not None:
            return self.result
        self._interrupt()
        assert self._reader is not None
        self._reader.join(STOP_TIMEOUT)
        if self._reader.is_alive():
            self._remote.kill()
        return self._finish()

    def _collect(self) -> None:
        """The sniffer's last words: its counts, from the tail of its error output."""
        try:
            self._remote.wait(2.0)
        except Exception:                 # it ended or cannot say: the pcap is complete
            pass
        self._stderr = [ln.strip() for ln in self._remote.stderr_tail().splitlines()]


def _one(view: LabView, endpoint: str, **kw: Any) -> Capture:
    """A capture of one host's share: in its lab host here, or by its agent there."""
    from hybridnb.services.ports import remote

    return (RemoteCapture if remote(view) else Capture)(view, endpoint, **kw)


def merge_pcaps(paths: list[str], into: str | os.PathLike[str], snaplen: int = 65535) -> int:
    """The frames of the pcap files ``paths`` (Ethernet, as tcpdump writes them) in one pcap
    ``into``, in time order (a stable sort: equal times keep the files' order); returns how
    many.  A file missing or cut before its header holds nothing."""
    import dpkt

    frames: list[tuple[float, int, bytes]] = []
    for n, path in enumerate(paths):
        if not os.path.exists(path):
            continue
        with open(path, "rb") as fh:
            try:
                reader = dpkt.pcap.Reader(fh)
            except (ValueError, dpkt.UnpackError):
                continue
            frames += [(ts, n, buf) for ts, buf in reader]
    frames.sort(key=lambda f: (f[0], f[1]))
    with open(into, "wb") as out:
        writer = dpkt.pcap.Writer(out, snaplen=snaplen, linktype=dpkt.pcap.DLT_EN10MB)
        for ts, _, buf in frames:
            writer.writepkt(buf, ts=ts)
    return len(frames)


def capturing(view: LabView, endpoint: str = BRIDGE, **kw: Any) -> Capture:
    """A capture, not yet started, on ``endpoint``'s port or the whole bridge; for a lab
    over several hosts, in the lab host of the endpoint's host, and the whole bridge on
    every host (:class:`BridgesCapture`) — on a host of another machine by its agent
    (:class:`RemoteCapture`).  The pcap goes beside the lab's own state unless
    ``path`` says where."""
    if kw.get("path") is None:
        kw["path"] = default_path(view, endpoint)
    if view.parts and endpoint == BRIDGE:
        return BridgesCapture(view, **kw)
    return _one(view.part(endpoint) if view.parts else view, endpoint, **kw)


def capture(view: LabView, endpoint: str = BRIDGE, *, bpf: str = "", count: int | None = None,
            duration: float | None = 10.0, path: str | os.PathLike[str] | None = None
            ) -> CaptureResult:
    """Capture until ``count`` packets or ``duration`` seconds (whichever comes first)."""
    if not count and not duration:
        raise HybridError("a capture needs a packet count or a duration",
                          hint="pass count= or duration=")
    cap = capturing(view, endpoint, bpf=bpf, count=count, duration=duration, path=path)
    cap.start()
    return cap.wait(None if duration is None else duration + STOP_TIMEOUT)


__all__ = ["BRIDGE", "BridgesCapture", "Capture", "CaptureResult", "RemoteCapture", "capture",
           "capturing", "compile_bpf", "default_path", "merge_pcaps"]
