"""Showing an apply's progress in a notebook: a progress bar when widgets can be shown, text
otherwise.

``Lab.apply(progress=...)`` calls its callback with a
:class:`~hybridnb.apply.ProgressEvent` for every action that starts, finishes or fails, for
one still running (every 10 s) and for a note (waiting for a lock, rolling back) — possibly
from several driver threads at once.  :class:`ProgressBar` turns those events into an
ipywidgets ``IntProgress`` plus a one-line ``HTML`` label when it runs inside a Jupyter kernel
(widgets need a frontend), and into one printed line per finished action in a terminal
IPython or when ipywidgets is not installed.  No tqdm: the bar is the widget itself, so forms
can embed the same bar in their own layout.
"""

from __future__ import annotations

import html
import threading
from typing import Any, Callable


def widgets_available(shell: Any = None) -> bool:
    """True when ipywidgets is installed and a kernel (a frontend) can show widgets."""
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover
            return False
        shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


class ProgressBar:
    """A progress callback that draws itself.

    ``bar`` and ``label`` are the widgets (``None`` in text mode); ``events`` keeps every
    event received, ``lines`` the text shown.  Pass ``bar``/``label`` to reuse widgets that
    live inside a form.
    """

    def __init__(self, *, title: str = "apply", use_widgets: bool | None = None,
                 bar: Any = None, label: Any = None,
                 write: Callable[[str], None] | None = None) -> None:
        self.title = title
        self.events: list[Any] = []
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._write = write
        if bar is not None:
            use_widgets = True
        elif use_widgets is None:
            use_widgets = widgets_available()
        self.bar = bar
        self.label = label
        if use_widgets and bar is None:
            import ipywidgets as w

            self.bar = w.IntProgress(value=0, min=0, max=1, description=title,
                                     bar_style="info")
            self.label = w.HTML(value="")
        self.widget = None
        if self.bar is not None and self.label is not None and bar is None:
            import ipywidgets as w

            self.widget = w.HBox([self.bar, self.label])

    def show(self) -> "ProgressBar":
        """Display the bar (widget mode); a no-op in text mode."""
        if self.widget is not None:
            from IPython.display import display

            display(self.widget)
        return self

    def reset(self, total: int = 1) -> None:
        if self.bar is not None:
            self.bar.max = max(1, total)
            self.bar.value = 0
            self.bar.bar_style = "info"
        if self.label is not None:
            self.label.value = ""

    def __call__(self, event: Any) -> None:
        with self._lock:
            self.events.append(event)
            text = str(event)
            if self.bar is not None and event.phase != "note":   # a note is no step
                self.bar.max = max(1, event.total)
                self.bar.value = event.done
                if event.phase == "error":
                    self.bar.bar_style = "danger"
                elif event.done >= event.total and self.bar.bar_style != "danger":
                    self.bar.bar_style = "success"
            if self.label is not None:
                self.label.value = f"<code>{html.escape(text)}</code>"
            if event.phase != "start":
                self.lines.append(text)
                if self.bar is None:
                    (self._write or print)(text)

    def finish(self, ok: bool = True, message: str = "") -> None:
        """Mark the end (a lab with nothing to do never sends an event)."""
        with self._lock:
            if self.bar is not None:
                self.bar.value = self.bar.max
                if not ok:
                    self.bar.bar_style = "danger"
                elif self.bar.bar_style != "danger":
                    self.bar.bar_style = "success"
            if self.label is not None and message:
                self.label.value = f"<code>{html.escape(message)}</code>"
