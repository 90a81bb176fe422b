"""Live traffic of a lab: per endpoint bytes, packets, errors and drops per second, both ways.

Every endpoint's frames cross its bridge port (:mod:`hybridnb.services.ports`), so the port's
kernel counters are the endpoint's traffic.  A :class:`TrafficMonitor` reads the counters of
every port of the lab — and of the bridge device itself, which is the gateway's own traffic
(its DNS server, the lab host) — with **one** netlink dump of the lab host per interval
(:class:`hybridnb.drivers.linkstats.LinkDumper`), and turns two consecutive readings into a
:class:`TrafficSample` of rates.  Directions are the endpoint's: ``tx`` is what the endpoint
sent (what its port received from it), ``rx`` what it received.

* :meth:`TrafficMonitor.sample` — one :class:`TrafficSample` (rates since the previous call);
* :meth:`TrafficMonitor.watch` — a generator of samples every ``interval`` seconds, for
  ``duration`` seconds or until a ``stop`` event is set (the CLI's refreshing table and the
  notebook's live plot iterate it);
* :meth:`TrafficMonitor.record` — the whole series as a :class:`TrafficReport` (summary per
  endpoint: mean and peak; the plot; data for reports).

Ports are resolved once and again whenever one disappears or an endpoint without a port may
have come up (a container re-created, a VM started), at most every ``resolve_every`` seconds.
Results render as text, as HTML (:mod:`hybridnb.render.traffic`) and as plain data
(``to_dict``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

from hybridnb.drivers.linkstats import Counters, Link
from hybridnb.services.labview import LabView
from hybridnb.services.ports import PortMap, link_dumper, resolve_ports

GATEWAY = "gateway"


@dataclass(frozen=True)
class PortRates:
    """One endpoint over one interval: per-second rates from the endpoint's point of view."""

    endpoint: str
    kind: str
    port: str
    tx_bytes_s: float = 0.0
    rx_bytes_s: float = 0.0
    tx_packets_s: float = 0.0
    rx_packets_s: float = 0.0
    errors_s: float = 0.0             # both directions
    drops_s: float = 0.0              # both directions
    tx_bytes: int = 0                 # over the interval
    rx_bytes: int = 0
    state: str = "up"

    @property
    def bytes_s(self) -> float:
        return self.tx_bytes_s + self.rx_bytes_s

    def to_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "kind": self.kind, "port": self.port,
                "tx_bytes_s": round(self.tx_bytes_s, 3), "rx_bytes_s": round(self.rx_bytes_s, 3),
                "tx_packets_s": round(self.tx_packets_s, 3),
                "rx_packets_s": round(self.rx_packets_s, 3),
                "errors_s": round(self.errors_s, 3), "drops_s": round(self.drops_s, 3),
                "tx_bytes": self.tx_bytes, "rx_bytes": self.rx_bytes, "state": self.state}


@dataclass(frozen=True)
class TrafficSample:
    """Rates of every endpoint of a lab over one interval, plus the gateway and the total."""

    lab: str
    bridge: str
    time: float                                   # wall clock at the end of the interval
    interval: float                               # seconds
    ports: tuple[PortRates, ...] = ()
    gateway: PortRates | None = None              # the bridge device: the lab host's traffic
    missing: tuple[tuple[str, str], ...] = ()     # (endpoint, why it has no port)
    cost: float = 0.0                             # CPU seconds this sample cost
    #: endpoint (and gateway) → its host, for a lab with ``hosts:`` (a ``host`` column)
    hosts: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def total_bytes_s(self) -> float:
        """Bytes per second crossing the bridge (everything its ports sent)."""
        return sum(p.tx_bytes_s for p in self.ports)

    @property
    def total_packets_s(self) -> float:
        return sum(p.tx_packets_s for p in self.ports)

    def top(self, n: int = 5) -> list[PortRates]:
        """The ``n`` busiest endpoints (bytes both ways), busiest first; idle ones left out."""
        busy = [p for p in self.ports if p.bytes_s > 0]
        return sorted(busy, key=lambda p: (-p.bytes_s, p.endpoint))[:n]

    def rates(self) -> dict[str, float]:
        """``{endpoint: bytes/s both ways}`` (the gateway included), e.g. for graph edges."""
        out = {p.endpoint: p.bytes_s for p in self.ports}
        if self.gateway is not None:
            out[GATEWAY] = self.gateway.bytes_s
        return out

    def get(self, endpoint: str) -> PortRates | None:
        if endpoint == GATEWAY:
            return self.gateway
        return next((p for p in self.ports if p.endpoint == endpoint), None)

    def records(self) -> list[dict[str, Any]]:
        """One row per endpoint (the gateway first), as :meth:`PortRates.to_dict` (with its
        ``host`` for a lab with ``hosts:``)."""
        rows = ([self.gateway] if self.gateway is not None else []) + list(self.ports)
        return [_with_host(p.to_dict(), self.hosts) for p in rows]

    def to_dict(self) -> dict[str, Any]:
        return {"lab": self.lab, "bridge": self.bridge, "time": round(self.time, 3),
                "interval": round(self.interval, 4),
                "ports": [_with_host(p.to_dict(), self.hosts) for p in self.ports],
                "gateway": _with_host(self.gateway.to_dict(), self.hosts) if self.gateway
                else None,
                "total_bytes_s": round(self.total_bytes_s, 3),
                "total_packets_s": round(self.total_packets_s, 3),
                "top": [p.endpoint for p in self.top()],
                "missing": dict(self.missing)}

    def to_text(self) -> str:
        from hybridnb.render.traffic import sample_text

        return sample_text(self)

    __repr__ = to_text
    __str__ = to_text

    def _repr_html_(self) -> str:
        from hybridnb.render.traffic import sample_html

        return sample_html(self)


def _with_host(row: dict[str, Any], hosts: Mapping[str, str]) -> dict[str, Any]:
    """``row`` with the host of its endpoint after ``kind`` (a lab with ``hosts:``)."""
    if not hosts:
        return row
    out: dict[str, Any] = {}
    for key, value in row.items():
        out[key] = value
        if key == "kind":
            out["host"] = hosts.get(row["endpoint"], "")
    return out


@dataclass(frozen=True)
class EndpointSummary:
    endpoint: str
    kind: str
    port: str
    tx_bytes: int
    rx_bytes: int
    mean_bytes_s: float
    peak_bytes_s: float
    errors: float
    drops: float

    def to_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "kind": self.kind, "port": self.port,
                "tx_bytes": self.tx_bytes, "rx_bytes": self.rx_bytes,
                "mean_bytes_s": round(self.mean_bytes_s, 3),
                "peak_bytes_s": round(self.peak_bytes_s, 3),
                "errors": round(self.errors, 3), "drops": round(self.drops, 3)}


@dataclass(frozen=True)
class TrafficReport:
    """A recorded series of samples: what the monitor saw over its run."""

    lab: str
    bridge: str
    samples: tuple[TrafficSample, ...] = ()

    @property
    def hosts(self) -> Mapping[str, str]:
        """Endpoint → host (a lab with ``hosts:``; from the samples)."""
        return self.samples[-1].hosts if self.samples else {}

    @property
    def duration(self) -> float:
        return sum(s.interval for s in self.samples)

    def summary(self) -> list[EndpointSummary]:
        """Per endpoint (the gateway first): bytes both ways, mean and peak rate, errors and
        drops over the whole run; busiest first."""
        acc: dict[str, dict[str, Any]] = {}
        for s in self.samples:
            for p in ((s.gateway,) if s.gateway else ()) + s.ports:
                a = acc.setdefault(p.endpoint, {"kind": p.kind, "port": p.port, "tx": 0,
                                                "rx": 0, "peak": 0.0, "err": 0.0, "drop": 0.0})
                a["tx"] += p.tx_bytes
                a["rx"] += p.rx_bytes
                a["peak"] = max(a["peak"], p.bytes_s)
                a["err"] += p.errors_s * s.interval
                a["drop"] += p.drops_s * s.interval
        dur = self.duration or 1.0
        rows = [EndpointSummary(name, a["kind"], a["port"], a["tx"], a["rx"],
                                (a["tx"] + a["rx"]) / dur, a["peak"], a["err"], a["drop"])
                for name, a in acc.items()]
        return sorted(rows, key=lambda r: (-(r.tx_bytes + r.rx_bytes), r.endpoint))

    def top(self, n: int = 5) -> list[str]:
        return [r.endpoint for r in self.summary()
                if r.endpoint != GATEWAY and r.tx_bytes + r.rx_bytes > 0][:n]

    def series(self, endpoint: str) -> list[tuple[float, float]]:
        """``(time, bytes/s both ways)`` of one endpoint over the run."""
        out = []
        for s in self.samples:
            p = s.get(endpoint)
            if p is not None:
                out.append((s.time, p.bytes_s))
        return out

    def records(self) -> list[dict[str, Any]]:
        """The summary as rows (the report's table; stable keys: ``endpoint``, ``kind``,
        ``port``, ``tx_bytes``, ``rx_bytes``, ``mean_bytes_s``, ``peak_bytes_s``,
        ``errors``, ``drops``), busiest first, the gateway among them."""
        return [_with_host(r.to_dict(), self.hosts) for r in self.summary()]

    def headline(self) -> str:
        from hybridnb.render.traffic import report_headline

        return report_headline(self)

    def to_dict(self) -> dict[str, Any]:
        return {"lab": self.lab, "bridge": self.bridge, "duration": round(self.duration, 3),
                "summary": self.records(), "top": self.top(),
                "samples": [s.to_dict() for s in self.samples]}

    def figure(self, top: int = 6) -> Any:
        from hybridnb.render.traffic import plot_traffic

        return plot_traffic(self, top=top)

    def to_text(self) -> str:
        from hybridnb.render.traffic import report_text

        return report_text(self)

    __repr__ = to_text
    __str__ = to_text

    def _repr_html_(self) -> str:
        from hybridnb.render.traffic import report_html

        return report_html(self)


@dataclass
class _Reading:
    mono: float
    wall: float
    links: dict[int, Link] = field(default_factory=dict)


def _delta(new: int, old: int) -> int:
    return new - old if new >= old else new          # a counter reset (port re-created)


def _rates(endpoint: str, kind: str, old: Link, new: Link, dt: float,
           sent_is_rx: bool = True) -> PortRates:
    """Rates of one link between two readings.  On a bridge port the endpoint's sending is
    the port's receiving (``sent_is_rx``); on the bridge device it is the other way."""
    a, b = old.counters, new.counters
    rx, tx = _delta(b.rx_bytes, a.rx_bytes), _delta(b.tx_bytes, a.tx_bytes)
    rxp, txp = _delta(b.rx_packets, a.rx_packets), _delta(b.tx_packets, a.tx_packets)
    err = _delta(b.rx_errors, a.rx_errors) + _delta(b.tx_errors, a.tx_errors)
    drop = _delta(b.rx_dropped, a.rx_dropped) + _delta(b.tx_dropped, a.tx_dropped)
    sent, got, sentp, gotp = (rx, tx, rxp, txp) if sent_is_rx else (tx, rx, txp, rxp)
    return PortRates(endpoint, kind, new.name, sent / dt, got / dt, sentp / dt, gotp / dt,
                     err / dt, drop / dt, sent, got, new.operstate)


class TrafficMonitor:
    """Samples a lab's bridge ports; one netlink dump of the lab host per sample."""

    def __init__(self, view: LabView, *, resolve_every: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.view = view
        self.resolve_every = resolve_every
        self.clock = clock
        self._dumper = link_dumper(view)      # a host of another machine: its agent
        self._ports: PortMap | None = None
        self._resolved_at = 0.0
        self._last: _Reading | None = None

    def close(self) -> None:
        self._dumper.close()

    def __enter__(self) -> "TrafficMonitor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def ports(self) -> PortMap:
        if self._ports is None:
            self._resolve(self._dumper.dump())
        assert self._ports is not None
        return self._ports

    def forget_ports(self) -> None:
        """Resolve the ports again at the next sample (an endpoint was just started)."""
        self._ports = None

    def _resolve(self, links: Mapping[int, Link]) -> None:
        self._ports = resolve_ports(self.view, links)
        self._resolved_at = self.clock()

    def _stale(self, links: Mapping[int, Link]) -> bool:
        ports = self._ports
        if ports is None:
            return True
        gone = any(links.get(p.ifindex) is None or links[p.ifindex].name != p.ifname
                   for p in ports.ports.values())
        return gone or (bool(ports.missing)
                        and self.clock() - self._resolved_at >= self.resolve_every)

    def read(self) -> _Reading:
        """One dump of the lab host: the counters of every link, with the time."""
        mono, wall = self.clock(), time.time()
        links = self._dumper.dump()
        if self._stale(links):
            self._resolve(links)
        return _Reading(mono, wall, links)

    def sample(self) -> TrafficSample | None:
        """Rates since the previous call (None on the first call: nothing to compare)."""
        cpu = time.thread_time()
        reading = self.read()
        last, self._last = self._last, reading
        if last is None:
            return None
        return self._sample(last, reading, time.thread_time() - cpu)

    def _sample(self, old: _Reading, new: _Reading, cost: float) -> TrafficSample:
        ports = self.ports
        dt = max(new.mono - old.mono, 1e-6)
        rows = []
        for name in sorted(ports.ports):
            p = ports.ports[name]
            a, b = old.links.get(p.ifindex), new.links.get(p.ifindex)
            if a is None or b is None or a.name != b.name:
                continue
            rows.append(_rates(name, p.kind, a, b, dt))
        gw = None
        a, b = old.links.get(ports.bridge_index), new.links.get(ports.bridge_index)
        if a is not None and b is not None:
            gw = _rates(GATEWAY, "gateway", a, b, dt, sent_is_rx=False)
        return TrafficSample(self.view.name, self.view.bridge, new.wall, dt, tuple(rows), gw,
                             tuple(sorted(ports.missing.items())), cost,
                             dict(self.view.hosts))

    def watch(self, interval: float = 1.0, duration: float | None = None,
              stop: threading.Event | None = None) -> Iterator[TrafficSample]:
        """A sample every ``interval`` seconds, for ``duration`` seconds (None: until
        ``stop`` is set or the consumer stops iterating)."""
        stop = stop or threading.Event()
        if self._last is None:
            self.sample()
        start = self.clock()
        tick = start
        while not stop.is_set():
            tick += interval
            if duration is not None and tick - start > duration + 1e-9:
                return
            if stop.wait(max(0.0, tick - self.clock())):
                return
            sample = self.sample()
            if sample is not None:
                yield sample

    def record(self, interval: float = 1.0, duration: float = 10.0,
               stop: threading.Event | None = None,
               on_sample: Callable[[TrafficSample], None] | None = None) -> TrafficReport:
        """Watch for ``duration`` seconds and return the whole series."""
        samples = []
        for s in self.watch(interval, duration, stop):
            samples.append(s)
            if on_sample is not None:
                on_sample(s)
        return TrafficReport(self.view.name, self.view.bridge, tuple(samples))


class HostsMonitor(TrafficMonitor):
    """A lab over several hosts: one :class:`TrafficMonitor` per host (each with one dump
    of its own lab host per sample), their samples merged into one — every endpoint's row
    from its own host's bridge port, the gateway from the primary's bridge."""

    def __init__(self, view: LabView, *, resolve_every: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.view = view
        self.resolve_every = resolve_every
        self.clock = clock
        self._subs = [TrafficMonitor(p, resolve_every=resolve_every, clock=clock)
                      for p in view.parts]
        self._last = None

    def close(self) -> None:
        for sub in self._subs:
            sub.close()

    @property
    def ports(self) -> PortMap:
        """Every host's ports as one map (netns and bridge index: the primary's; ifindexes
        are each host's own — use :attr:`hosts_ports` to look links up by index)."""
        maps = self.hosts_ports
        primary = maps.get(self.view.hosts.get(GATEWAY)) or next(iter(maps.values()))
        ports = {n: p for m in maps.values() for n, p in m.ports.items()}
        missing = {n: f"host {h}: {why}" for h, m in maps.items() for n, why in m.missing.items()}
        return PortMap(self.view.name, primary.netns, self.view.bridge, primary.bridge_index,
                       ports, missing)

    @property
    def hosts_ports(self) -> dict[str | None, PortMap]:
        return {sub.view.host: sub.ports for sub in self._subs}

    def forget_ports(self) -> None:
        for sub in self._subs:
            sub.forget_ports()

    def sample(self) -> TrafficSample | None:
        samples = [(sub.view.host, sub.sample()) for sub in self._subs]
        self._last = _Reading(self.clock(), time.time())
        if any(s is None for _, s in samples):
            return None
        return _merged(self.view, [(h, s) for h, s in samples if s is not None])


def _merged(view: LabView, samples: list[tuple[str | None, TrafficSample]]) -> TrafficSample:
    primary = view.hosts.get(GATEWAY)
    rows = sorted((r for _, s in samples for r in s.ports), key=lambda r: r.endpoint)
    gateway = next((s.gateway for h, s in samples if h == primary), None)
    missing = sorted((ep, f"host {h}: {why}") for h, s in samples for ep, why in s.missing)
    return TrafficSample(view.name, view.bridge, max(s.time for _, s in samples),
                         max(s.interval for _, s in samples), tuple(rows), gateway,
                         tuple(missing), sum(s.cost for _, s in samples), dict(view.hosts))


def watcher(view: LabView, **kw: Any) -> TrafficMonitor:
    """The monitor for ``view``: per host (:class:`HostsMonitor`) for a lab over several."""
    return HostsMonitor(view, **kw) if view.parts else TrafficMonitor(view, **kw)


def monitor(view: LabView, *, interval: float = 1.0, duration: float = 10.0,
            stop: threading.Event | None = None,
            on_sample: Callable[[TrafficSample], None] | None = None) -> TrafficReport:
    """Record a lab's traffic for ``duration`` seconds (see :class:`TrafficMonitor`)."""
    with watcher(view) as mon:
        return mon.record(interval, duration, stop, on_sample)


__all__ = ["Counters", "EndpointSummary", "GATEWAY", "HostsMonitor", "PortRates", "TrafficMonitor",
           "TrafficReport", "TrafficSample", "monitor", "watcher"]
