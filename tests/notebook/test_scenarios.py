"""The scenario notebooks (issue 13), executed headless the way CI runs them.

Each scenario is a lab file in ``examples/`` and a notebook in ``notebooks/`` that builds it,
proves its claim with real traffic and asserts it.  On the dry-run backend (a unit test) the
notebook plans, draws and reports the lab and says which cells need engines; against the
session's sandbox (``real``) every assertion in the notebook must hold — a notebook that ran
to its end is a claim that held — and its lab is gone afterwards.  Each real run prints how
long it took.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.notebook.test_notebooks import NOTEBOOKS, ROOT, execute, outputs

MICRO = NOTEBOOKS / "02-microservices-vm-postgres.ipynb"
DEV = NOTEBOOKS / "05-dev-hot-reload.ipynb"
LB = NOTEBOOKS / "03-haproxy-vm-backends.ipynb"
PROM = NOTEBOOKS / "04-discovery-prometheus.ipynb"


def _images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


def _dry_run(path: Path, lab: str, tmp_path: Path, monkeypatch, **params) -> str:
    """Execute ``path`` on the dry-run backend as lab ``lab``; its text output, after the
    checks every scenario shares there: engine cells skipped, validate refused, the report
    saved, the lab destroyed."""
    nb = execute(path, {"BACKEND": "dry-run", "LAB": lab, "STATE_DIR": str(tmp_path),
                        "REPORT": str(tmp_path / "r.html"), **params}, monkeypatch)
    text = outputs(nb)
    assert "skipped on the dry-run backend" in text and "not on this backend" in text
    assert (tmp_path / "r.html").read_text().count(lab) > 1
    assert "# exit 5" in text                       # hybridnb validate: no probes on dry-run
    assert _images(nb) >= 1                         # the topology
    return text


def _run_real(path: Path, lab: str, params: dict, tmp_path: Path, monkeypatch):
    """Execute ``path`` on the sandbox as lab ``lab``; whatever it left is destroyed."""
    from hybridnb.lab import Lab
    from tests.realengines import SANDBOX_NAME

    params = {"BACKEND": "sandbox", "SANDBOX": SANDBOX_NAME, "LAB": lab,
              "STATE_DIR": str(tmp_path / "state"), "REPORT": str(tmp_path / "report.html"),
              **params}
    t0 = time.monotonic()
    try:
        nb = execute(path, params, monkeypatch, timeout=600)
    finally:
        try:            # what a notebook that failed half way left behind
            Lab.load(lab, backend="sandbox", sandbox=SANDBOX_NAME,
                     state_dir=tmp_path / "state").destroy()
        except Exception:
            pass
    print(f"\n{path.name} on the sandbox: {time.monotonic() - t0:.1f} s")
    assert "    # exit 0" in outputs(nb)          # `hybridnb validate` from a shell, on the lab
    nbconvert = pytest.importorskip("nbconvert")    # the executed notebook as a page
    html, _ = nbconvert.HTMLExporter().from_notebook_node(nb)
    assert html.count("data:image/png;base64") >= 2
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    page = Path(os.environ.get("HYBRIDNB_SCENARIO_HTML", tmp_path)) / f"{path.stem}.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(html)
    for line in outputs(nb).splitlines():           # what the notebook measured
        if line.startswith(("$ hybridnb", "lab up in", "seconds from", "median", "recovered", "after the",
                            "HAProxy took", "web2 booted", "{", "node2", "targets:")):
            print("  " + line)
    return nb


@pytest.mark.extra("notebook")
def test_microservices_on_dry_run(tmp_path, monkeypatch):
    text = _dry_run(MICRO, "scendry02", tmp_path, monkeypatch)
    assert "Plan for lab scendry02: 8 to create" in text
    assert "+ vm         db" in text and "image pg 192 MiB" in text
    assert text.count("not applied") >= 4                       # destroyed at the end


@pytest.mark.real
@pytest.mark.vm
@pytest.mark.extra("notebook")
def test_microservices_on_the_sandbox(sandbox, tmp_path, monkeypatch):
    """PostgreSQL in a VM used by the API, worker and client containers: rows made and read
    through the API, the worker's rows arriving, latency plotted, the API container made
    again with the data kept, the expect: lines holding, the report saved, the lab gone."""
    nb = _run_real(MICRO, "scen02", {}, tmp_path, monkeypatch)
    text = outputs(nb)
    assert "rows created and read back through the API" in text
    assert "worker rows over time" in text
    assert "all 5 rows read back" in text
    assert "skipped" not in text
    assert "4 of 4 expectations hold" in text or "all 4 expectations hold" in text.lower()
    assert (tmp_path / "report.html").exists()
    assert _images(nb) >= 2                                    # topology and latency


@pytest.mark.extra("notebook")
def test_dev_hot_reload_on_dry_run(tmp_path, monkeypatch):
    app = ROOT / "examples" / "dev-app" / "app.py"
    before = app.read_text()
    text = _dry_run(DEV, "scendry05", tmp_path, monkeypatch, WORKDIR=str(tmp_path / "app"))
    assert "Plan for lab scendry05: 7 to create" in text
    assert f"here:           ['{tmp_path}/app:/app']" in text      # the notebook's copy
    assert "in the lab file: ['" + str(ROOT / "examples" / "dev-app") + ":/app']" in text
    assert text.count("not applied") >= 3
    assert app.read_text() == before                               # the repository's copy


@pytest.mark.real
@pytest.mark.vm
@pytest.mark.extra("notebook")
def test_dev_hot_reload_on_the_sandbox(sandbox, tmp_path, monkeypatch):
    """A bind-mounted app edited on this machine 10 times, each edit served within 2 s; the
    visits in the VM's PostgreSQL; a syntax error in the container's log and the recovery."""
    nb = _run_real(DEV, "scen05", {"WORKDIR": str(tmp_path / "app")}, tmp_path, monkeypatch)
    text = outputs(nb)
    assert "seconds from save to new answer:" in text and "max " in text
    assert "visits of" in text and "recorded in the db VM" in text
    assert "SyntaxError" in text and "answers HTTP 500" in text and "recovered" in text
    assert "skipped" not in text and (tmp_path / "report.html").exists()
    assert _images(nb) >= 1


@pytest.mark.extra("notebook")
def test_haproxy_on_dry_run(tmp_path, monkeypatch):
    text = _dry_run(LB, "scendry03", tmp_path, monkeypatch)
    assert "Plan for lab scendry03: 9 to create" in text
    assert "['web1.hybrid.local.', 'web2.hybrid.local.', 'web3.hybrid.local.']" in text
    assert text.count("not applied") >= 6                       # web4 too


@pytest.mark.real
@pytest.mark.vm
@pytest.mark.extra("notebook")
def test_haproxy_on_the_sandbox(sandbox, tmp_path, monkeypatch):
    """HAProxy over three VM backends found by SRV records: an even spread, a stopped VM
    taken out with no failed request, back after its start, a fourth VM joining by DNS."""
    nb = _run_real(LB, "scen03", {}, tmp_path, monkeypatch)
    text = outputs(nb)
    assert "HAProxy took web2 out" in text and "web2 booted and back in HAProxy" in text
    assert "'web4'" in text and "skipped" not in text
    assert "HAProxy statistics" in outputs(nb, "text/html")
    assert (tmp_path / "report.html").exists() and _images(nb) >= 2


@pytest.mark.extra("notebook")
def test_discovery_on_dry_run(tmp_path, monkeypatch):
    text = _dry_run(PROM, "scendry04", tmp_path, monkeypatch)
    assert "Plan for lab scendry04: 7 to create" in text
    assert "['node1.hybrid.local.', 'vm1.hybrid.local.']" in text
    assert text.count("not applied") >= 3


def test_the_consul_variant_validates_and_plans(tmp_path):
    """examples/consul.yaml is for engines that can pull hashicorp/consul: not run here,
    but a valid lab file whose plan makes what it says."""
    from hybridnb.lab import Lab

    lab = Lab.load(ROOT / "examples" / "consul.yaml", backend="dry-run", state_dir=tmp_path)
    plan = lab.plan().to_text()
    assert "+ container  consul" in plan and "image hashicorp/consul" in plan
    assert "+ container  prom" in plan and "+ vm         vm1" in plan
    lab.apply()
    assert {e.name for e in lab.status().endpoints} == {"consul", "prom", "vm1", "node1",
                                                        "register"}
    lab.destroy()


@pytest.mark.real
@pytest.mark.vm
@pytest.mark.extra("notebook")
def test_discovery_on_the_sandbox(sandbox, tmp_path, monkeypatch):
    """Prometheus discovering node-exporter on a VM and a container through the lab's SRV
    records: every target up, one joining and leaving within seconds, PromQL plotted."""
    nb = _run_real(PROM, "scen04", {}, tmp_path, monkeypatch)
    text = outputs(nb)
    assert "node2 scraped" in text and "node2 dropped" in text
    assert "PromQL, now" in outputs(nb, "text/html") and "skipped" not in text
    assert (tmp_path / "report.html").exists() and _images(nb) >= 2


def test_a_lab_file_opens_under_another_name(shell):
    """``%hybrid create LABFILE --name NAME``: the file's lab (images, expect: and all) as
    NAME — how the scenario notebooks take their lab name as a parameter."""
    from hybridnb.notebook import current_lab
    from tests.notebook.conftest import run

    run(shell, f"%hybrid create {ROOT}/examples/microservices-vm-postgres.yaml --name scenx")
    lab = current_lab()
    assert lab.name == "scenx" and set(lab.to_dict()["images"]) == {"pg", "app"}
    assert len(lab.to_dict()["expect"]) == 4
    run(shell, f"%hybrid create {ROOT}/examples/microservices-vm-postgres.yaml")
    assert current_lab().name == "microservices"
