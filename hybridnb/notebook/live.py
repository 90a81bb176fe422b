"""A live topology view: the lab's graph redrawn from ``status()`` every few seconds, in place.

:class:`LiveTopology` owns one ipywidgets ``Image`` (the drawing, PNG), a one-line ``HTML``
caption and a Stop button.  A background thread calls ``lab.status()``, draws it with
:func:`hybridnb.render.topology.draw_topology` — always with the same
:class:`~hybridnb.render.topology.RingLayout`, so nodes stay where they are — and swaps the
image's bytes; the notebook shows a single picture that changes, not a growing list of them.
The image is only re-sent when the drawing changed.

The loop waits on a ``threading.Event`` between refreshes, so :meth:`stop` (or the button)
ends it within one refresh and :meth:`stop` joins the thread.  A refresh that fails (the
sandbox went away, the state is locked) shows the error in the caption and the loop goes on.

    live = LiveTopology(lab, interval=2.0)
    live            # displays and starts refreshing
    live.stop()
"""

from __future__ import annotations

import hashlib
import html
import threading
import time
from typing import Any, Callable

from hybridnb.errors import HybridError


class LiveTopology:
    def __init__(self, lab: Any = None, *, interval: float = 2.0,
                 matrix: Callable[[], Any] | Any = None, autostart: bool = True) -> None:
        import ipywidgets as w

        from hybridnb.render.topology import RingLayout

        if lab is None:
            from hybridnb.notebook import current_lab

            lab = current_lab()
        if lab is None:
            from hybridnb.errors import NotFoundError

            raise NotFoundError("no lab to watch", hint="create one first (%hybrid create)")
        self.lab = lab
        self.interval = interval
        self.matrix = matrix                 # a matrix, or a callable returning the latest one
        self.autostart = autostart
        self.layout = RingLayout()
        self.image = w.Image(format="png", value=b"")
        self.caption = w.HTML(value="")
        self.button = w.Button(description="Stop", icon="stop", button_style="warning")
        self.button.on_click(lambda _b: self.stop(wait=False))
        self.widget = w.VBox([w.HBox([self.button, self.caption]), self.image])
        self.refreshes = 0                   # drawings made
        self.updates = 0                     # times the image bytes changed
        self.errors: list[str] = []
        self.last_status: Any = None
        self._digest = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- one refresh -----------------------------------------------------------------------

    def refresh(self) -> bool:
        """Redraw once from the lab's status; True when the picture changed."""
        from hybridnb.render.topology import draw_topology

        with self._lock:
            started = time.perf_counter()
            try:
                status = self.lab.status()
                matrix = self.matrix() if callable(self.matrix) else self.matrix
                topo = draw_topology(status, matrix, layout=self.layout)
                png = topo.to_png()
            except HybridError as exc:
                self.errors.append(exc.message)
                self.caption.value = (f'<span style="color:#c62828">refresh failed: '
                                      f"{html.escape(exc.message)}</span>")
                return False
            self.last_status = status
            self.refreshes += 1
            digest = hashlib.sha256(png).hexdigest()
            changed = digest != self._digest
            if changed:
                self._digest = digest
                self.image.value = png
                self.updates += 1
            took = time.perf_counter() - started
            state = "up" if status.up else f"{status.pending} change(s) pending"
            running = "live" if self.running else "stopped"
            self.caption.value = html.escape(
                f"{status.lab}: {len(status.endpoints)} endpoints, {state} — "
                f"{time.strftime('%H:%M:%S')} ({took * 1000:.0f} ms, {running}, "
                f"every {self.interval:g}s)")
            return changed

    # -- the loop --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def start(self) -> "LiveTopology":
        if self.running:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="hybridnb-live-topology",
                                        daemon=True)
        self._thread.start()
        self.button.disabled = False
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as exc:  # a bug must not kill the kernel's thread silently
                self.errors.append(repr(exc))
                self.caption.value = html.escape(f"refresh crashed: {exc!r}")
            self._stop.wait(self.interval)

    def stop(self, wait: bool = True, timeout: float = 10.0) -> None:
        """Stop refreshing; with ``wait`` join the thread (it finishes its current refresh)."""
        self._stop.set()
        self.button.disabled = True
        thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.caption.value = self.caption.value.replace(", live,", ", stopped,")

    # -- display ---------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        if self.autostart and not self.running and self._thread is None:
            self.start()
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return (f"<LiveTopology of lab {self.lab.name}: every {self.interval:g}s, "
                f"{'running' if self.running else 'stopped'}, {self.refreshes} refreshes>")


def live_topology(lab: Any = None, *, interval: float = 2.0, matrix: Any = None) -> LiveTopology:
    """A live topology widget for ``lab`` (default: the current lab); it starts refreshing
    when displayed."""
    return LiveTopology(lab, interval=interval, matrix=matrix)


__all__ = ["LiveTopology", "live_topology"]
