"""The live traffic monitor in a notebook: one plot and table, updated in place, stoppable.

:class:`LiveMonitor` shows a Stop button and one display (``display_id``) that a background
thread updates after every sample of :class:`hybridnb.services.monitor.TrafficMonitor`: the
busiest endpoints' rates over time and the current table.  The cell returns at once; the
picture keeps changing until ``duration`` has passed, :meth:`LiveMonitor.stop` is called or
the button is pressed.  :attr:`LiveMonitor.report` holds the samples so far (a
:class:`~hybridnb.services.monitor.TrafficReport`, as data for a later report).

    live = LiveMonitor(lab, interval=1.0, duration=30)
    live                # shows and starts
    live.stop()
"""

from __future__ import annotations

import base64
import html
import io
import threading
from typing import Any, Callable

from hybridnb.errors import HybridError


def the_lab(lab: Any, what: str = "watch") -> Any:
    """``lab``, or the magics' current lab; NotFoundError when there is none."""
    if lab is None:
        from hybridnb.notebook import current_lab

        lab = current_lab()
    if lab is None:
        from hybridnb.errors import NotFoundError

        raise NotFoundError(f"no lab to {what}", hint="create one first (%hybrid create)")
    return lab


def lab_view(lab: Any) -> Any:
    """The services' view of a lab (a :class:`~hybridnb.services.labview.LabView` passes)."""
    from hybridnb.services.labview import LabView

    if isinstance(lab, LabView):
        return lab
    view = lab.view() if callable(getattr(lab, "view", None)) else None
    return view if isinstance(view, LabView) else LabView.of(lab)   # per host when spread


class LiveMonitor:
    def __init__(self, lab: Any = None, *, interval: float = 1.0,
                 duration: float | None = 60.0, top: int = 6,
                 display: Callable[..., Any] | None = None) -> None:
        import ipywidgets as w

        self.view = lab_view(the_lab(lab))
        self.view.lab_host("monitor the lab")         # refused on dry-run: nothing to watch
        self.interval, self.duration, self.top = interval, duration, top
        self._display = display
        self.button = w.Button(description="Stop", icon="stop", button_style="warning")
        self.button.on_click(lambda _b: self.stop(wait=False))
        self.caption = w.HTML(value="")
        self.controls = w.HBox([self.button, self.caption])
        self.handle: Any = None
        self.samples: list[Any] = []
        self.updates = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def report(self) -> Any:
        from hybridnb.services.monitor import TrafficReport

        return TrafficReport(self.view.name, self.view.bridge, tuple(self.samples))

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def _show(self, obj: Any, **kw: Any) -> Any:
        if self._display is not None:
            return self._display(obj, **kw)
        from IPython.display import display

        return display(obj, **kw)

    def render(self) -> Any:
        """The current picture and table, as one HTML object."""
        from IPython.display import HTML

        from hybridnb.render.traffic import plot_traffic, sample_html

        report = self.report
        if not report.samples:
            return HTML("<i>waiting for the first sample…</i>")
        buf = io.BytesIO()
        plot_traffic(report, top=self.top).savefig(buf, format="png")
        img = base64.b64encode(buf.getvalue()).decode()
        return HTML(f'<img src="data:image/png;base64,{img}"/>'
                    + sample_html(report.samples[-1]))

    def show(self) -> "LiveMonitor":
        """Display the controls and the (updating) picture, and start sampling."""
        self._show(self.controls)
        self.handle = self._show(self.render(), display_id=True)
        return self.start()

    def start(self) -> "LiveMonitor":
        if self.running:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="hybridnb-live-monitor",
                                        daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        from hybridnb.services.monitor import watcher

        try:
            with watcher(self.view) as mon:
                for sample in mon.watch(self.interval, self.duration, self._stop):
                    self.samples.append(sample)
                    if self.handle is not None:
                        self.handle.update(self.render())
                    self.updates += 1
                    self.caption.value = html.escape(
                        f"{len(self.samples)} samples, every {self.interval:g}s — live")
        except HybridError as exc:
            self.errors.append(exc.message)
            self.caption.value = (f'<span style="color:#c62828">monitor stopped: '
                                  f"{html.escape(exc.message)}</span>")
        finally:
            self.button.disabled = True
            if not self.errors:
                self.caption.value = html.escape(f"{len(self.samples)} samples — stopped")

    def stop(self, wait: bool = True, timeout: float = 10.0) -> Any:
        """Stop sampling; returns the :attr:`report` so far."""
        self._stop.set()
        thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        return self.report

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the run ends (``duration``); returns the report."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.report

    def _ipython_display_(self) -> None:
        self.show()

    def __repr__(self) -> str:
        return (f"<LiveMonitor of lab {self.view.name}: every {self.interval:g}s, "
                f"{'running' if self.running else 'stopped'}, {len(self.samples)} samples>")


__all__ = ["LiveMonitor", "lab_view", "the_lab"]
