"""Running lab operations off a running asyncio event loop (a Jupyter kernel's).

A Jupyter kernel executes cells (and widget callbacks) inside a running asyncio event loop on
its main thread.  Some engine libraries drive their own loop synchronously on the calling
thread — pyroute2's ``IPRoute`` calls ``run_until_complete`` — and fail there with "This event
loop is already running".  :func:`off_loop` runs such a call on a short-lived worker thread
when (and only when) the calling thread has a running loop, waits for it and hands back its
result or re-raises its exception; in a terminal IPython or a plain script it simply calls
the function.  Widgets may be updated from the worker: their state changes are sent as comm
messages from any thread.  :func:`engine_call` applies it to a method: every ``Lab`` method
that talks to the engines is wrapped, so ``lab.apply()`` in a plain notebook cell works.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def loop_running() -> bool:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def off_loop(fn: Callable[[], T]) -> T:
    """``fn()``, on a worker thread if this thread is running an asyncio loop."""
    if not loop_running():
        return fn()
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised on the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target, name="hybridnb-call", daemon=True)
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def engine_call(method: F) -> F:
    """Decorator: run ``method`` through :func:`off_loop`."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return off_loop(lambda: method(*args, **kwargs))
    return wrapper  # type: ignore[return-value]
