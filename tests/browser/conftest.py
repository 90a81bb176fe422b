"""Headless Chromium for the browser tests: Debian's ``chromium-headless-shell`` (or
``chromium``), driven by Playwright for Python through ``executable_path`` — Playwright's own
browser download is neither used nor needed.

The browser starts with a fresh profile and with everything that would reach out on its own
turned off (``CHROMIUM_ARGS``).  Without Playwright or a Chromium binary the tests skip
locally and FAIL under ``CI=true``.  :class:`Watched` wraps a page and records what the page
asked the network for (anything outside the allowed prefixes is aborted), its console errors
and uncaught exceptions.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.gating import IN_CI

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
CANDIDATES = ("chromium-headless-shell", "chromium", "chromium-browser")


def chromium_path() -> str | None:
    chosen = os.environ.get("HYBRIDNB_CHROMIUM")
    if chosen:
        return chosen
    for name in CANDIDATES:
        found = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}")
                                       else None)
        if found:
            return found
    return None


def require_browser() -> str:
    why = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        why = "playwright is not installed (pip install playwright; never `playwright install`)"
    path = chromium_path()
    if why is None and path is None:
        why = "no Chromium binary (apt-get install chromium-headless-shell)"
    if why is not None:
        if IN_CI:
            pytest.fail(f"browser test cannot run under CI: {why}")
        pytest.skip(why)
    assert path is not None
    return path


class LazyBrowser:
    """Chromium through Playwright, started on first use (:meth:`context`) and stopped at the
    end of the test: until a test opens a page, its code runs with no asyncio loop on the
    main thread (Playwright's sync API keeps one running while it is started, and engine
    libraries such as pyroute2 cannot run their own loop under it)."""

    def __init__(self, path: str, profile: Callable[[], Path]) -> None:
        self.path, self.profile = path, profile
        self._pw: Any = None
        self._context: Any = None

    def context(self) -> Any:
        if self._context is None:
            from playwright.sync_api import sync_playwright

            pw = sync_playwright().start()
            try:
                self._context = pw.chromium.launch_persistent_context(
                    str(self.profile()), executable_path=self.path, headless=True,
                    args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900})
            except Exception:
                pw.stop()
                raise
            self._pw = pw
        return self._context

    def close(self) -> None:
        if self._context is not None:
            self._context.close()
            self._pw.stop()
            self._context = self._pw = None


@pytest.fixture
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LazyBrowser]:
    """A browser with a fresh profile, for one test, started when the test first opens a page.

    Not shared wider on purpose: Playwright's sync API keeps an asyncio loop running on the
    main thread while it is started, and every later test that calls ``asyncio.run`` would
    fail until it stops."""
    lazy = LazyBrowser(require_browser(), lambda: tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield lazy
    finally:
        lazy.close()


@dataclass
class Watched:
    """A page and what it did: requests outside ``allowed`` (aborted), console errors,
    uncaught page errors."""

    page: Any
    allowed: tuple[str, ...]
    blocked: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, context: Any, allowed: tuple[str, ...]) -> "Watched":
        page = context.new_page()
        watched = cls(page, allowed)
        page.on("request", lambda r: watched.requests.append(r.url))
        page.on("console", lambda m: watched.console_errors.append(m.text)
                if m.type == "error" else None)
        page.on("pageerror", lambda e: watched.page_errors.append(str(e)))

        def route(r: Any) -> None:
            if r.request.url.startswith(allowed):
                r.continue_()
            else:
                watched.blocked.append(r.request.url)
                r.abort()
        page.route("**/*", route)
        return watched

    def outside(self) -> list[str]:
        """Every URL the page asked for that is not allowed (blocked or not routable)."""
        return sorted({u for u in self.requests + self.blocked if not u.startswith(self.allowed)})

    def close(self) -> None:
        self.page.close()


@pytest.fixture
def watched_page(browser: LazyBrowser) -> Iterator[Any]:
    opened: list[Watched] = []

    def open_page(allowed: tuple[str, ...]) -> Watched:
        w = Watched.open(browser.context(), allowed)
        opened.append(w)
        return w

    yield open_page
    for w in opened:
        w.close()


def not_blank(png: str, *, min_stddev: float = 20.0, min_colours: int = 40) -> tuple[float, int]:
    """(pixel standard deviation, distinct colours) of a screenshot; asserts it shows
    something (a blank or single-colour page has neither)."""
    from PIL import Image, ImageStat

    image = Image.open(png).convert("RGB")
    stddev = max(ImageStat.Stat(image.convert("L")).stddev)
    colours = len(image.getcolors(maxcolors=1 << 24) or [])
    assert stddev >= min_stddev and colours >= min_colours, (png, stddev, colours)
    return stddev, colours
