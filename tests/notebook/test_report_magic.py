"""``%hybrid report [FILE…]`` on the dry-run backend: the report shows inline, saves in the
formats the file names say, and uses the notebook's last test only when told not to probe."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from tests.notebook.conftest import run

pytest.importorskip("jinja2")
pytestmark = pytest.mark.extra("notebook")


def test_report_magic_shows_and_saves(shell, tmp_path):
    from hybridnb.render.report import LabReport

    run(shell, "%hybrid create --name rmag --subnet 10.0.9.0/24")
    run(shell, "%hybrid host h1")
    run(shell, "%hybrid apply -q")
    rep = run(shell, f"%hybrid report {tmp_path / 'r.html'} {tmp_path / 'r.json'} -o hnb_rep")
    assert isinstance(rep, LabReport) and shell.user_ns["hnb_rep"] is rep
    assert (tmp_path / "r.html").is_file() and (tmp_path / "r.json").is_file()
    assert rep.saved == [tmp_path / "r.html", tmp_path / "r.json"]
    html = rep._repr_html_()
    assert 'class="hnb-report"' in html and "<html" not in html and "r.json" in html
    # the dry-run backend sends no packets: said in the report, not raised
    assert "dry-run" in rep.data.section("connectivity").note
    assert "report" in repr(run(shell, "%hybrid help"))


def test_report_magic_uses_the_last_test_only_without_probing(shell, monkeypatch):
    from hybridnb.lab import Lab
    from tests.render.reportlab import sample_matrix

    run(shell, "%hybrid create --name rmag2 --subnet 10.0.10.0/24")
    run(shell, "%hybrid host h1")
    run(shell, "%hybrid host h2")
    run(shell, "%hybrid apply -q")
    magics = shell.magics_manager.registry["HybridMagics"]
    magics.last_matrix = sample_matrix(["h1", "h2"])
    seen = []
    real = Lab.report
    monkeypatch.setattr(Lab, "report", lambda self, **kw: seen.append(kw) or real(self, **kw))
    rep = run(shell, "%hybrid report --no-probe")
    assert seen[-1]["probe"] is False and seen[-1]["matrix"] is magics.last_matrix
    assert rep.data.section("connectivity").data["summary"] == magics.last_matrix.summary()
    run(shell, "%hybrid report --monitor 3")
    assert seen[-1] == {"probe": True, "matrix": None, "monitor": 3.0}
    # a test of another lab is not this lab's
    magics.last_matrix = sample_matrix(["x1", "x2"])
    run(shell, "%hybrid report --no-probe")
    assert seen[-1]["matrix"] is None
    calls = len(seen)
    with pytest.raises(UsageError, match="cannot tell the report format"):
        run(shell, "%hybrid report out.html out.pdf")
    assert len(seen) == calls                   # refused before anything was collected
