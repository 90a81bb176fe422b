"""The walkthrough notebooks, executed headless by nbclient the way CI runs them.

Parameters are injected papermill-style: a cell tagged ``injected-parameters`` is inserted
right after the cell tagged ``parameters``.  The dry-run run is a unit test; the sandbox run
(``real``) drives the real engines and must finish without errors.  Saved notebooks must have
no outputs in the repository.  Execution keeps the widgets' state (nbclient
``store_widget_state``), so a notebook exported to HTML shows its forms and progress bars as
they were at the end of the run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
BASICS = NOTEBOOKS / "01-hybrid-basics.ipynb"


def inject(nb, params: dict) -> None:
    index = next(i for i, c in enumerate(nb.cells)
                 if "parameters" in c.get("metadata", {}).get("tags", []))
    source = "# Injected parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, cell)


def execute(path: Path, params: dict, monkeypatch, timeout: int = 600, cwd: Path = ROOT):
    nb = nbformat.read(path, as_version=4)
    if params:
        inject(nb, params)
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(cwd)}},
                                     store_widget_state=True)
    client.execute()
    return nb


WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def widget_views(nb) -> list[str]:
    """The model ids of every widget a cell displayed."""
    return [o["data"][WIDGET_VIEW]["model_id"] for c in nb.cells for o in c.get("outputs", [])
            if WIDGET_VIEW in o.get("data", {})]


def outputs(nb, kind: str = "text/plain") -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or out.get("data", {}).get(kind, ""))
    return "\n".join(parts)


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_saved_notebooks_have_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells)


@pytest.mark.extra("notebook")
def test_basics_on_dry_run(tmp_path, monkeypatch):
    report = tmp_path / "nbdry-report.html"
    nb = execute(BASICS, {"BACKEND": "dry-run", "LAB": "nbdry", "STATE_DIR": str(tmp_path),
                          "REPORT": str(report)}, monkeypatch)
    text = outputs(nb)
    # the notebook ends by exporting its lab's report
    assert "Report of lab nbdry" in text and f"saved: {report}" in text
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>") and "probe2" in page
    assert "dry-run backend sends no packets" in page
    assert "Doctor findings" in page and "Traffic" in page        # each says why it is empty
    assert "Plan for lab nbdry: 3 to create" in text           # the bridge on its own
    assert "No probes on this backend" in text and "dry-run backend sends no packets" in text
    assert "web.hybrid.local." in text                          # the DNS records
    assert "<Topology of lab nbdry: 1 containers, 1 VMs, 1 hosts" in text
    assert "8 to delete" in text                    # bridge, firewall, network, dns, 2 hosts, web, vm1
    # "when something is wrong" on dry-run: visibly skipped, doctor refused, the journal shown
    assert "nothing runs there, so nothing can break" in text
    assert "doctor needs real engines: the dry-run backend cannot diagnose the lab" in text
    assert "logs of lab nbdry:" in text and "the dry-run backend has no container output" in text
    html = outputs(nb, "text/html")
    assert "probe2" in html and "vm1.hybrid.local" in html
    assert any("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert_widget_state(nb, tmp_path)


def assert_widget_state(nb, tmp_path) -> None:
    """Every widget a cell showed is in the saved state, with its last values, and the HTML
    export carries that state: the form shows the host it added, the bars their ends."""
    nbconvert = pytest.importorskip("nbconvert")
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    views = widget_views(nb)
    assert views and all(v in state for v in views)
    texts = [m["state"].get("value") for m in state.values()
             if m["model_name"] == "TextModel"]
    assert "probe2" in texts                               # the form's name field
    bars = [m["state"] for m in state.values() if m["model_name"] == "IntProgressModel"]
    assert bars and all(b["value"] == b["max"] and b["bar_style"] == "success" for b in bars)
    html, _ = nbconvert.HTMLExporter().from_notebook_node(nb)
    (tmp_path / "basics.html").write_text(html)
    assert WIDGET_STATE in html and '"probe2"' in html
    assert all(v in html for v in views)


def test_no_parameters_follow_the_environment(tmp_path, monkeypatch):
    """The Binder case: no BACKEND parameter, HYBRIDNB_BACKEND=dry-run in the environment (as
    binder/start exports it) — the notebook runs on the dry-run backend, even as root."""
    monkeypatch.setenv("HYBRIDNB_BACKEND", "dry-run")
    monkeypatch.setenv("HYBRIDNB_STATE_DIR", str(tmp_path))
    nb = execute(BASICS, {}, monkeypatch, cwd=tmp_path)
    text = outputs(nb)
    assert "No probes on this backend" in text and "8 to delete" in text
    assert (tmp_path / "basics-report.html").is_file()       # beside the notebook's cwd
    assert "backend chosen for this run" in outputs(nb, "text/html")
    assert "<td>dry-run</td>" in outputs(nb, "text/html")


@pytest.mark.real
@pytest.mark.extra("notebook")
def test_basics_on_the_sandbox(sandbox, tmp_path, monkeypatch):  # noqa: F811
    """The walkthrough against the real engines in the session's sandbox (CI acceptance)."""
    from hybridnb.lab import Lab
    from tests.realengines import SANDBOX_NAME

    params = {"BACKEND": "sandbox", "SANDBOX": SANDBOX_NAME, "LAB": "nbbasics",
              "SUBNET": "10.0.61.0/24", "BRIDGE": "hnbnb0","STATE_DIR": str(tmp_path), "WITH_VM": True,
              "REQUIRE_PROBES": True, "REPORT": str(tmp_path / "report" / "nbbasics.json")}
    try:
        nb = execute(BASICS, params, monkeypatch, timeout=900)
    finally:
        try:            # whatever the notebook left (it failed half way) is destroyed
            Lab.load("nbbasics", backend="sandbox", sandbox=SANDBOX_NAME,
                     state_dir=tmp_path).destroy()
        except Exception:
            pass
    text = outputs(nb)
    assert "probes over" in text and "No probes" not in text    # a real matrix was made
    html = outputs(nb, "text/html")
    assert "container &lt;-&gt; VM, both ways" in html or "container <-> VM" in html
    assert "lookups" in html
    assert "not applied" in text
    import json

    doc = json.loads((tmp_path / "report" / "nbbasics.json").read_text())   # the export
    conn = doc["sections"]["connectivity"]
    assert conn["note"] == "" and conn["data"]["results"], conn["note"]   # a fresh probe run
    assert {e["name"] for e in doc["sections"]["endpoints"]["data"]["endpoints"]} == {
        "web", "vm1", "probe", "probe2"}
    doctor = doc["sections"]["doctor"]                             # after doctor --fix
    assert doctor["note"] == "" and doctor["data"]["counts"]["fail"] == 0, doctor["data"]
    # "when something is wrong": broken, named by doctor, captured, logged, mended
    assert "stopped web and killed the lab's DNS server" in text
    assert "doctor for lab nbbasics" in html and "container web is stopped" in html
    assert "capture of lab nbbasics on probe" in html
    assert "fixed <b>endpoint-state</b>" in html and "fixed <b>dns-server</b>" in html
    assert "skipped on the dry-run backend" not in text


