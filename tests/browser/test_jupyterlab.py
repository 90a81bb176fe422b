"""The basics notebook in JupyterLab, in a real browser, the way a user meets it.

A JupyterLab server (from PyPI, in the test venv) starts on 127.0.0.1 with a token, in a
folder holding a copy of ``notebooks/01-hybrid-basics.ipynb``; its kernels get
``HYBRIDNB_BACKEND=dry-run`` and a state directory of their own.  Headless Chromium opens the
notebook, runs all cells from the Run menu, and then, like a user: sees the forms rendered as
widgets (inputs and a button, not their text repr), types a bad address into the host form
and sees the inline error (and the button disabled), fixes it, presses the button, watches
the progress bar end green, and re-runs the status cell to see the new host up.  The page may
reach only the server; screenshots of each step are saved in the test's tmp dir.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("jupyterlab")
pytest.importorskip("ipywidgets")

ROOT = Path(__file__).resolve().parents[2]
BASICS = ROOT / "notebooks" / "01-hybrid-basics.ipynb"

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LabServer:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, token: str, log: Path) -> None:
        self.proc, self.url, self.token, self.log = proc, url, token, log

    def notebook_url(self, name: str) -> str:
        return f"{self.url}lab/tree/{name}?token={self.token}"


def start_jupyterlab(work: Path, env: dict[str, str], *, timeout: float = 90.0) -> LabServer:
    port, token = _free_port(), secrets.token_hex(16)
    url = f"http://127.0.0.1:{port}/"
    log = work / "jupyterlab.log"
    argv = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work / 'nb'}",
            "--LabApp.extension_manager=readonly", "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if os.geteuid() == 0:
        argv.append("--allow-root")
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with direct.open(f"{url}api/status?token={token}", timeout=2) as r:
                if r.status == 200:
                    return LabServer(proc, url, token, log)
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            pytest.fail("JupyterLab did not start:\n" + log.read_text()[-3000:])
        time.sleep(0.3)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End the server we started (its own process group: the kernels it started go too)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[LabServer]:
    (tmp_path / "nb").mkdir()
    (tmp_path / "home").mkdir()
    shutil.copy2(BASICS, tmp_path / "nb" / BASICS.name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "HYBRIDNB_"))}
    env.update(HOME=str(tmp_path / "home"), HYBRIDNB_BACKEND="dry-run",
               HYBRIDNB_STATE_DIR=str(tmp_path / "state"),
               JUPYTER_CONFIG_DIR=str(tmp_path / "home" / ".jupyter"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "home" / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "home" / "lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "home" / "lab-workspaces"),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    server = start_jupyterlab(tmp_path, env)
    try:
        yield server
    finally:
        stop(server.proc)


# ------------------------------------------------------------------------------ page steps

DIALOGS: list[str] = []


def _dismiss_dialog(page: Any) -> None:
    """Accept a dialog JupyterLab put up (kept in DIALOGS for the report)."""
    dialog = page.locator(".jp-Dialog")
    if dialog.count() and dialog.first.is_visible():
        DIALOGS.append(dialog.first.inner_text())
        print("JupyterLab dialog:", DIALOGS[-1].replace("\n", " | "))
        dialog.first.locator(".jp-Dialog-button.jp-mod-accept").first.click()
        dialog.first.wait_for(state="detached")


def _click_run_all(page: Any) -> bool:
    """Run → Run All Cells, if the command is enabled (it is once the kernel is there)."""
    _dismiss_dialog(page)
    page.locator(".lm-MenuBar-itemLabel").get_by_text("Run", exact=True).click()
    item = page.locator(".lm-Menu-item", has=page.locator(".lm-Menu-itemLabel").get_by_text(
        "Run All Cells", exact=True))
    item.wait_for()
    if item.get_attribute("aria-disabled") == "true":
        page.keyboard.press("Escape")
        return False
    item.click()
    return True


PROMPTS = ".jp-Notebook .jp-CodeCell .jp-InputArea-prompt"
STARTED = f"""() => [...document.querySelectorAll('{PROMPTS}')]
                  .some(p => p.textContent.trim() !== '[ ]:')"""
FINISHED = f"""() => {{
    const prompts = [...document.querySelectorAll('{PROMPTS}')];
    return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
  }}"""


def run_all(page: Any, shots: Path, *, timeout_ms: int = 120_000) -> int:
    """Run all cells from the menu, as a user does, and wait until every code cell has an
    execution count.  A click that started nothing (the kernel was still connecting) is
    repeated."""
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    # the kernel is up and connected: the status bar says "Python 3 (ipykernel) | Idle"
    page.locator(".jp-StatusBar-Item", has_text="| Idle").first.wait_for(timeout=90_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                           timeout=60_000)
    page.locator(".jp-Notebook .jp-Cell").first.click()        # the notebook has the focus
    for _ in range(10):
        if _click_run_all(page):
            try:
                page.wait_for_function(STARTED, timeout=10_000, polling=250)
                break
            except Exception:  # noqa: BLE001 — nothing started: try again
                continue
        page.wait_for_timeout(1000)
    else:
        raise AssertionError("Run All Cells never started the notebook")
    try:
        page.wait_for_function(FINISHED, timeout=timeout_ms, polling=250)
    except Exception:
        prompts = page.eval_on_selector_all(PROMPTS, "els => els.map(e => e.textContent)")
        dialogs = page.locator(".jp-Dialog").all_inner_texts()
        outputs = page.locator(".jp-Notebook .jp-OutputArea").all_text_contents()
        page.screenshot(path=str(shots / "lab-run-all-stuck.png"))
        raise AssertionError(f"run all did not finish; prompts: {prompts}; dialogs: "
                             f"{dialogs}; outputs: {' | '.join(outputs)[-3000:]}") from None
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                           timeout=60_000)
    return page.locator(".jp-Notebook .jp-CodeCell").count()


def form_area(page: Any, title: str) -> Any:
    """The output area showing the form whose title is ``title``."""
    area = page.locator(".jp-OutputArea-output", has=page.locator(".widget-html",
                                                                  has_text=title))
    area.first.wait_for(timeout=30_000)
    return area.first


def field(form: Any, label: str) -> Any:
    return form.locator(".widget-text", has=form.page.locator(
        "label", has_text=label)).first.locator("input")


def test_basics_notebook_in_jupyterlab_on_dry_run(jupyterlab, watched_page, tmp_path):
    w = watched_page((jupyterlab.url, "data:", "blob:"))
    page = w.page
    page.set_default_timeout(60_000)
    page.goto(jupyterlab.notebook_url(BASICS.name))
    cells = run_all(page, tmp_path)
    page.screenshot(path=str(tmp_path / "lab-1-run-all.png"), full_page=False)
    outputs = page.locator(".jp-Notebook .jp-OutputArea").all_text_contents()
    text = "\n".join(outputs)
    assert cells >= 20
    assert "Traceback" not in text and "UsageError" not in text, text[-3000:]
    assert "No probes on this backend" in text               # the environment chose dry-run
    # forms and progress bars are widgets, not their text repr
    assert "VBox(" not in text and "HostForm" not in text and "IntProgress(" not in text
    assert page.locator(".jp-OutputArea .widget-hprogress").count() >= 4   # 2 applies, destroy, form
    form = form_area(page, "Add a host to lab basics")
    assert form.locator(".widget-text input").count() == 2
    button = form.locator("button", has_text="Apply")
    assert button.is_visible()

    # a bad address: refused inline, the button disabled
    field(form, "name").fill("probe3")
    field(form, "address").fill("10.0.1.999")
    form.locator("text=is not an IPv4 address").wait_for()
    assert button.is_disabled()
    page.screenshot(path=str(tmp_path / "lab-2-inline-error.png"))
    # fixed: the error goes, the button comes back
    field(form, "address").fill("10.0.1.60")
    form.locator("text=is not an IPv4 address").wait_for(state="detached")
    assert button.is_enabled()
    # (the notebook clicked this form once from code: its bar and its result are there)
    result = form.locator("table", has_text="probe3")
    assert result.count() == 0
    button.click()
    result.wait_for(timeout=60_000)                   # the apply's result, in the form
    assert "create" in result.inner_text() and "ok" in result.inner_text()
    bar = form.locator(".widget-hprogress .progress-bar")
    assert "progress-bar-success" in bar.get_attribute("class")
    assert bar.evaluate("b => b.style.width") == "100%"
    page.screenshot(path=str(tmp_path / "lab-3-applied.png"))

    # the status cell under the form, run again, shows the new host up
    form_cell = page.locator(".jp-Notebook .jp-CodeCell", has=form).first
    status_cell = form_cell.locator(
        "xpath=following-sibling::div[contains(@class, 'jp-CodeCell')][1]")
    assert status_cell.locator(".jp-Editor").inner_text().strip() == "%hybrid status"
    before = status_cell.locator(".jp-InputArea-prompt").inner_text()
    status_cell.locator(".jp-InputArea-prompt").click()
    page.keyboard.press("Shift+Enter")
    page.wait_for_function(
        """([cell, before]) => {
             const p = cell.querySelector('.jp-InputArea-prompt').textContent;
             return p !== before && /\\[\\d+\\]/.test(p);
           }""", arg=[status_cell.element_handle(), before], polling=250)
    table = status_cell.locator(".jp-OutputArea table")
    row = table.locator("tr", has_text="probe3")
    row.wait_for()
    assert "10.0.1.60" in row.inner_text() and "up" in row.inner_text()
    page.screenshot(path=str(tmp_path / "lab-4-status.png"))
    assert not w.blocked, f"the page reached outside the server: {w.blocked}"
    assert not w.page_errors and not w.console_errors, (w.page_errors, w.console_errors)
