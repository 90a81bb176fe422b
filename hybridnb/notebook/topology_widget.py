"""An interactive topology: the lab's drawing with traffic on its links, and per endpoint its
details and what you can do with it.

:class:`TopologyWidget` lays out, with ipywidgets:

* the drawing (:func:`hybridnb.render.topology.draw_topology`) with each link's traffic rate
  from a :class:`~hybridnb.services.monitor.TrafficMonitor` sample (thicker and labelled when
  busy) and the failed pairs of a connectivity matrix (``matrix=``: one, or a callable giving
  the latest) — refreshed by :meth:`TopologyWidget.refresh`, by the Refresh button, or every
  ``interval`` seconds once :meth:`TopologyWidget.start` runs (``autostart``: when displayed,
  what ``%hybrid graph --live`` does), with a caption and a button that stops refreshing; the
  picture is re-sent only when it changed.  On a backend without lab hosts (dry-run) there
  are no rates: the caption says so and the drawing shows the states;
* an endpoint picker (a ``Dropdown``: it works in every front end and in headless tests, where
  canvas picking would need a browser) and the selected endpoint's details: kind, state,
  address, MAC and bridge port, declared services, current rates;
* its actions: **Test from it** (the lab's connectivity run, its rows), **Capture** (a few
  seconds of tcpdump on its port, decoded), **Logs** (its merged log), **Stop** / **Start**
  (through its driver).  Each action's result is shown below as the result's own HTML and
  kept in :attr:`TopologyWidget.last` (for scripts and tests).

Actions run in the kernel when clicked (a capture holds the cell for its few seconds).
Stop and Start go through the driver's :class:`~hybridnb.drivers.base.Startable` capability.
"""

from __future__ import annotations

import hashlib
import html
import threading
import time
from typing import Any, Callable

from hybridnb.errors import HybridError
from hybridnb.notebook.monitor import lab_view, the_lab


class TopologyWidget:
    def __init__(self, lab: Any = None, *, interval: float = 2.0, capture_seconds: float = 3.0,
                 autostart: bool = False, matrix: Callable[[], Any] | Any = None,
                 layout: Any = None) -> None:
        import ipywidgets as w

        from hybridnb.render.topology import RingLayout

        self.lab = the_lab(lab, "show")
        self.interval = interval
        self.capture_seconds = capture_seconds
        self.autostart = autostart
        self.matrix = matrix                    # a matrix, or a callable giving the latest
        self.layout = layout if layout is not None else RingLayout()
        self.status: Any = None
        self.sample: Any = None
        self.ports: Any = None
        self.last: Any = None                   # the last action's result object
        self.errors: list[str] = []
        self.no_rates = ""                      # why there are no traffic rates, if so
        self.refreshes = 0                      # drawings made
        self.updates = 0                        # times the picture's bytes changed
        self._digest = ""
        self._monitor: Any = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

        self.caption = w.HTML(value="")
        self.button = w.Button(description="Stop refreshing", icon="pause",
                               disabled=not autostart)
        self.button.on_click(lambda _b: self.stop(wait=False))
        self.image = w.Image(format="png", value=b"")
        self.picker = w.Dropdown(description="endpoint", options=[])
        self.details = w.HTML(value="")
        self.result = w.HTML(value="")
        self.buttons = {
            "test": w.Button(description="Test from it", icon="check"),
            "capture": w.Button(description=f"Capture {capture_seconds:g}s", icon="filter"),
            "logs": w.Button(description="Logs", icon="list"),
            "stop": w.Button(description="Stop", icon="stop", button_style="warning"),
            "start": w.Button(description="Start", icon="play", button_style="success"),
            "refresh": w.Button(description="Refresh", icon="refresh"),
        }
        for name, button in self.buttons.items():
            button.on_click(lambda _b, n=name: self.act(n))
        self.picker.observe(lambda change: self.show_details(change["new"]), names="value")
        self.widget = w.VBox([
            w.HBox([self.button, self.caption]),
            self.image,
            w.HBox([self.picker, *[self.buttons[n] for n in ("test", "capture", "logs", "stop",
                                                              "start", "refresh")]]),
            self.details, self.result])

    # -- data ------------------------------------------------------------------------------

    @property
    def view(self) -> Any:
        return lab_view(self.lab)

    def _sample(self) -> None:
        """One traffic sample (rates since the previous refresh), if this lab can be watched."""
        from hybridnb.errors import Unsupported
        from hybridnb.services.monitor import watcher

        if self.no_rates:
            return
        try:
            if self._monitor is None:
                view = self.view
                view.lab_host("show traffic rates")
                self._monitor = watcher(view)
                self._monitor.sample()
            self.sample = self._monitor.sample()
            self.ports = self._monitor.ports
        except Unsupported as exc:
            self.no_rates = exc.message
            self.sample = None
        except HybridError as exc:
            self.errors.append(exc.message)
            self.sample = None

    def refresh(self) -> bool:
        """Read the status and one traffic sample, redraw, update the picker and details;
        True when the picture changed."""
        from hybridnb.render.topology import draw_topology

        with self._lock:
            started = time.perf_counter()
            self.status = self.lab.status()
            self._sample()
            rates = self.sample.rates() if self.sample is not None else None
            matrix = self.matrix() if callable(self.matrix) else self.matrix
            topo = draw_topology(self.status, matrix, layout=self.layout, rates=rates)
            png = topo.to_png()
            self.refreshes += 1
            digest = hashlib.sha256(png).hexdigest()
            changed = digest != self._digest
            if changed:
                self._digest = digest
                self.image.value = png
                self.updates += 1
            self._caption(time.perf_counter() - started)
            names = [e.name for e in self.status.endpoints]
            if list(self.picker.options) != names:
                current = self.picker.value
                self.picker.options = names
                self.picker.value = current if current in names else (names[0] if names
                                                                       else None)
            self.show_details(self.picker.value)
            return changed

    def _caption(self, took: float) -> None:
        from hybridnb.render.traffic import rate

        status = self.status
        state = "up" if status.up else f"{status.pending} change(s) pending"
        if self.sample is not None:
            top = ", ".join(f"{p.endpoint} {rate(p.bytes_s)}" for p in self.sample.top(3))
            traffic = f"{rate(self.sample.total_bytes_s)} across the bridge" + (
                f" (top: {top})" if top else "")
        else:
            traffic = "no traffic rates" + (f": {self.no_rates}" if self.no_rates else "")
        live = (f"live, every {self.interval:g}s" if self.running else
                f"stopped; every {self.interval:g}s" if self._thread is not None else
                "not refreshing")
        where = f" over {len(status.hosts)} hosts (mtu {status.mtu})" if len(
            status.hosts) > 1 else ""
        self.caption.value = html.escape(
            f"{status.lab}: {len(status.endpoints)} endpoints{where}, {state}; {traffic} — "
            f"{time.strftime('%H:%M:%S')} ({took * 1000:.0f} ms, {live})")

    def endpoint_details(self, name: str) -> dict[str, Any]:
        """What the details pane shows, as data."""
        row = next((e for e in self.status.endpoints if e.name == name), None) \
            if self.status is not None else None
        port = self.ports.ports.get(name) if self.ports is not None else None
        rates = self.sample.get(name) if self.sample is not None else None
        services: list[str] = []
        try:
            ep = self.lab.spec.endpoint(name)
            services = [f"{s.name}/{s.port}" for s in getattr(ep, "services", ())]
        except (HybridError, AttributeError):
            pass
        return {"name": name, "kind": row.kind if row else "", "host": row.host if row else "",
                "state": row.state if row else "",
                "address": row.address if row else "", "fqdn": row.fqdn if row else "",
                "mac": port.mac if port else None, "port": port.ifname if port else None,
                "services": services,
                "tx_bytes_s": rates.tx_bytes_s if rates else None,
                "rx_bytes_s": rates.rx_bytes_s if rates else None}

    def show_details(self, name: str | None) -> None:
        from hybridnb.render.traffic import rate

        if not name or self.status is None:
            self.details.value = ""
            return
        d = self.endpoint_details(name)
        traffic = (f"sends {rate(d['tx_bytes_s'])}, receives {rate(d['rx_bytes_s'])}"
                   if d["tx_bytes_s"] is not None else "not measured")
        rows = [("kind", d["kind"])] + ([("host", d["host"])] if d["host"] else []) + [
            ("state", d["state"]), ("address", d["address"]),
                ("name", d["fqdn"]), ("MAC", d["mac"] or "?"), ("bridge port", d["port"] or "?"),
                ("services", ", ".join(d["services"]) or "none declared"), ("traffic", traffic)]
        self.details.value = (f"<b>{html.escape(name)}</b><table>" + "".join(
            f"<tr><td>{html.escape(k)}</td><td><code>{html.escape(str(v))}</code></td></tr>"
            for k, v in rows) + "</table>")

    # -- actions ---------------------------------------------------------------------------

    def act(self, action: str) -> Any:
        """Run a button's action on the selected endpoint; show and return its result."""
        name = self.picker.value
        try:
            if action == "refresh":
                self.refresh()
                return None
            if not name:
                raise HybridError("no endpoint selected")
            result = getattr(self, f"_do_{action}")(name)
        except HybridError as exc:
            self.errors.append(exc.message)
            self.result.value = (f'<span style="color:#c62828">{html.escape(action)} '
                                 f"failed: {html.escape(str(exc))}</span>")
            return None
        self.last = result
        shown = result._repr_html_() if hasattr(result, "_repr_html_") else \
            f"<pre>{html.escape(str(result))}</pre>"
        self.result.value = shown
        return result

    def _do_test(self, name: str) -> Any:
        from hybridnb.services.probe import ConnectivityMatrix

        matrix = self.lab.test()
        rows = [r for r in matrix.results if r.source == name]
        return ConnectivityMatrix.from_results(rows, checks=matrix.checks,
                                               duration=matrix.duration,
                                               timeout=matrix.timeout, count=matrix.count)

    def _do_capture(self, name: str) -> Any:
        return self.lab.capture(name, duration=self.capture_seconds)

    def _do_logs(self, name: str) -> Any:
        return self.lab.logs(name, limit=200)

    def _control(self, name: str, verb: str) -> Any:
        from hybridnb.drivers.base import Startable

        res = self.view.endpoint(name)
        driver = self.view.driver(res.kind)
        if not isinstance(driver, Startable):
            raise HybridError(f"a {res.kind} cannot be {verb}ped here",
                              hint="stop/start works for containers and VMs on a real backend")
        getattr(driver, verb)(self.lab.name, name)
        if self._monitor is not None:
            self._monitor.forget_ports()          # its port is gone, or new
        self.refresh()
        return self.status

    def _do_stop(self, name: str) -> Any:
        return self._control(name, "stop")

    def _do_start(self, name: str) -> Any:
        return self._control(name, "start")

    # -- live ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def start(self) -> "TopologyWidget":
        """Refresh every ``interval`` seconds on a background thread until :meth:`stop`."""
        if self.running:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name="hybridnb-topology-widget")
        self._thread.start()
        self.button.disabled = False
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except HybridError as exc:
                self.errors.append(exc.message)
                self.caption.value = (f'<span style="color:#c62828">refresh failed: '
                                      f"{html.escape(exc.message)}</span>")
            except Exception as exc:  # keep the kernel's thread alive; say what happened
                self.errors.append(repr(exc))
                self.caption.value = html.escape(f"refresh crashed: {exc!r}")
            self._stop.wait(self.interval)

    def stop(self, wait: bool = True, timeout: float = 10.0) -> None:
        """Stop refreshing (the button does this too); with ``wait`` join the thread."""
        self._stop.set()
        self.button.disabled = True
        thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.caption.value = self.caption.value.replace(", live, every", ", stopped; every")

    def close(self) -> None:
        self.stop()
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        if self.autostart and self._thread is None:
            self.start()                          # its first refresh draws the picture
        elif self.status is None:
            self.refresh()
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return f"<TopologyWidget of lab {self.lab.name}: {len(self.picker.options)} endpoints>"


def topology_widget(lab: Any = None, **kw: Any) -> TopologyWidget:
    """An interactive topology of ``lab`` (default: the magics' current lab)."""
    return TopologyWidget(lab, **kw)


__all__ = ["TopologyWidget", "topology_widget"]
