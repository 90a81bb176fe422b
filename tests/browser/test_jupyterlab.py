"""The basics notebook in JupyterLab, in a real browser, the way a user meets it.

A JupyterLab server (from PyPI, in the test venv) starts on 127.0.0.1 with a token, in a
folder holding a copy of ``notebooks/01-hybrid-basics.ipynb``; its kernels get a state
directory of their own.  On dry-run the notebook has no parameters and the kernel's
environment says ``HYBRIDNB_BACKEND=dry-run`` (as on Binder); on the real sandbox (``real``)
the parameters are injected into the copy, papermill-style.  Headless Chromium opens the
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


def copy_notebook(dest: Path, params: dict[str, Any] | None) -> None:
    """The notebook as the user opens it: as committed, or with a papermill-style
    ``injected-parameters`` cell after its ``parameters`` cell."""
    if not params:
        shutil.copy2(BASICS, dest / BASICS.name)
        return
    import nbformat

    from tests.notebook.test_notebooks import inject

    nb = nbformat.read(BASICS, as_version=4)
    inject(nb, params)
    nbformat.write(nb, dest / BASICS.name)


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[Any]:
    """``start(params, env)`` → a running JupyterLab on a copy of the basics notebook."""
    servers: list[LabServer] = []

    def start(params: dict[str, Any] | None = None, **extra_env: str) -> LabServer:
        (tmp_path / "nb").mkdir()
        (tmp_path / "home").mkdir()
        copy_notebook(tmp_path / "nb", params)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("JUPYTER", "HYBRIDNB_"))}
        env.update(HOME=str(tmp_path / "home"), HYBRIDNB_STATE_DIR=str(tmp_path / "state"),
                   JUPYTER_CONFIG_DIR=str(tmp_path / "home" / ".jupyter"),
                   JUPYTER_RUNTIME_DIR=str(tmp_path / "home" / "runtime"),
                   JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "home" / "lab-settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "home" / "lab-workspaces"),
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   **extra_env)
        servers.append(start_jupyterlab(tmp_path, env))
        return servers[-1]

    yield start
    for server in servers:
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


def walk_through(server: LabServer, open_page: Any, shots: Path, *, lab: str, subnet: str,
                 run_timeout_ms: int = 120_000, apply_timeout_ms: int = 60_000) -> str:
    """Run all, then use the host form as a user would, then re-run the status cell;
    returns the text of every output after the run."""
    w = open_page((server.url, "data:", "blob:"))
    page = w.page
    page.set_default_timeout(60_000)
    page.goto(server.notebook_url(BASICS.name))
    cells = run_all(page, shots, timeout_ms=run_timeout_ms)
    page.screenshot(path=str(shots / "lab-1-run-all.png"), full_page=False)
    outputs = page.locator(".jp-Notebook .jp-OutputArea").all_text_contents()
    text = "\n".join(outputs)
    assert cells >= 20
    assert "Traceback" not in text and "UsageError" not in text, text[-3000:]
    # forms and progress bars are widgets, not their text repr
    assert "VBox(" not in text and "HostForm" not in text and "IntProgress(" not in text
    # two applies, the destroy and the form's own bar
    assert page.locator(".jp-OutputArea .widget-hprogress").count() >= 4
    form = form_area(page, f"Add a host to lab {lab}")
    # a text input for the name and for every text-like field of the host kind (registry)
    from hybridnb.core.kinds import get

    texts = [f.name for f in get("host").fields()
             if f.info.form and f.type.form not in ("int", "choice", "lines")]
    assert form.locator(".widget-text input").count() == 1 + len(texts), texts
    assert all(field(form, name).count() == 1 for name in ["name", *texts])
    button = form.locator("button", has_text="Apply")
    assert button.is_visible()

    # a bad address: refused inline, the button disabled
    field(form, "name").fill("probe3")
    prefix = subnet.rsplit(".", 1)[0]
    field(form, "address").fill(f"{prefix}.999")
    form.locator("text=is not an IPv4 address").wait_for()
    assert button.is_disabled()
    page.screenshot(path=str(shots / "lab-2-inline-error.png"))
    # fixed: the error goes, the button comes back
    field(form, "address").fill(f"{prefix}.60")
    form.locator("text=is not an IPv4 address").wait_for(state="detached")
    assert button.is_enabled()
    # (the notebook clicked this form once from code: its bar and its result are there)
    result = form.locator("table", has_text="probe3")
    assert result.count() == 0
    button.click()
    result.wait_for(timeout=apply_timeout_ms)         # the apply's result, in the form
    assert "create" in result.inner_text() and "ok" in result.inner_text()
    bar = form.locator(".widget-hprogress .progress-bar")
    assert "progress-bar-success" in bar.get_attribute("class")
    assert bar.evaluate("b => b.style.width") == "100%"
    page.screenshot(path=str(shots / "lab-3-applied.png"))

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
    assert f"{prefix}.60" in row.inner_text() and "up" in row.inner_text()
    page.screenshot(path=str(shots / "lab-4-status.png"))
    assert not w.blocked, f"the page reached outside the server: {w.blocked}"
    assert not w.page_errors and not w.console_errors, (w.page_errors, w.console_errors)
    return text


def test_basics_notebook_in_jupyterlab_on_dry_run(jupyterlab, watched_page, tmp_path):
    """No parameters: the kernel's environment says dry-run (as on Binder)."""
    server = jupyterlab(HYBRIDNB_BACKEND="dry-run")
    text = walk_through(server, watched_page, tmp_path, lab="basics", subnet="10.0.1.0/24")
    assert "No probes on this backend" in text              # the environment chose dry-run


@pytest.mark.real
@pytest.mark.vm
def test_basics_notebook_in_jupyterlab_on_the_sandbox(sandbox, jupyterlab, watched_page,
                                                      tmp_path):
    """The same on the real engines of the session's sandbox (a container, a test VM, hosts;
    real probes), the parameters injected as papermill would."""
    from hybridnb.lab import Lab
    from tests.realengines import SANDBOX_NAME

    params = {"BACKEND": "sandbox", "SANDBOX": SANDBOX_NAME, "LAB": "repnb",
              "SUBNET": "10.0.67.0/24", "BRIDGE": "hnbrepnb0",
              "STATE_DIR": str(tmp_path / "state"), "WITH_VM": True, "REQUIRE_PROBES": True}
    server = jupyterlab(params)
    try:
        text = walk_through(server, watched_page, tmp_path, lab="repnb",
                            subnet="10.0.67.0/24", run_timeout_ms=600_000,
                            apply_timeout_ms=180_000)
        assert "probes over" in text and "No probes" not in text    # a real matrix
    finally:
        stop(server.proc)                         # the kernel lets go of the lab first
        Lab.load("repnb", backend="sandbox", sandbox=SANDBOX_NAME,
                 state_dir=tmp_path / "state").destroy()
