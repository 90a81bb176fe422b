"""``hybridnb report LAB -o FILE…`` and ``Lab.report()`` on the dry-run backend: one
collection written in every format asked for, the paths printed, the JSON valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("jinja2")
pytest.importorskip("matplotlib")

from hybridnb.cli import main  # noqa: E402

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"


def test_cli_writes_every_format_of_one_report(capsys, state_dir, tmp_path, monkeypatch):
    jsonschema = pytest.importorskip("jsonschema")
    from hybridnb.lab import Lab
    from hybridnb.render.report import schema

    common = ["--dry-run", "--state-dir", str(state_dir), "-q"]
    assert main(["apply", str(SEED), *common]) == 0
    capsys.readouterr()
    calls = []
    real = Lab.report
    monkeypatch.setattr(Lab, "report", lambda self, **kw: calls.append(kw) or real(self, **kw))
    out = tmp_path / "out"
    code = main(["report", "seed", *common, "-o", str(out / "seed.html"), "-o",
                 str(out / "seed.md"), "-o", str(out / "seed.json")])
    printed = capsys.readouterr().out.split()
    assert code == 0 and len(calls) == 1                    # one collection, three files
    assert calls[0] == {"probe": True, "monitor": 0.0}
    assert printed[:1] == [str(out / "seed.html")] and str(out / "seed.json") in printed
    assert any(p.startswith(str(out / "seed_files")) and p.endswith(".svg") for p in printed)
    assert all(Path(p).is_file() for p in printed)
    doc = json.loads((out / "seed.json").read_text())
    assert not list(jsonschema.Draft202012Validator(schema()).iter_errors(doc))
    assert doc["lab"] == "seed" and "web" in (out / "seed.html").read_text()
    assert "## Endpoints" in (out / "seed.md").read_text()


def test_cli_report_options_and_errors(capsys, state_dir, tmp_path, monkeypatch):
    from hybridnb.lab import Lab

    common = ["--dry-run", "--state-dir", str(state_dir), "-q"]
    seen = []
    monkeypatch.setattr(Lab, "report", lambda self, **kw: seen.append(kw))
    # a file name that says no format is refused before anything is collected
    code = main(["report", str(SEED), *common, "-o", str(tmp_path / "x.html"),
                 "-o", str(tmp_path / "x.pdf")])
    err = capsys.readouterr().err
    assert code == 2 and seen == [] and "Traceback" not in err
    assert "cannot tell the report format from" in err and "name the file .html, .md" in err
    with pytest.raises(AttributeError):                 # reached Lab.report, got None back
        main(["report", str(SEED), *common, "--no-probe", "--monitor", "2.5",
              "-o", str(tmp_path / "x.json")])
    assert seen == [{"probe": False, "monitor": 2.5}]
    with pytest.raises(SystemExit):
        main(["report", str(SEED), *common])                 # -o is required
    assert "-o/--output" in capsys.readouterr().err


def test_lab_report_renders_and_saves(tmp_path):
    from hybridnb.lab import Lab
    from hybridnb.render.report import LabReport

    lab = Lab.load(SEED, backend="dry-run", state_dir=tmp_path / "state")
    lab.apply()
    rep = lab.report(probe=False)
    assert isinstance(rep, LabReport) and rep.lab == "seed"
    assert "no probe run was asked" in rep.data.section("connectivity").note
    written = rep.save(tmp_path / "r" / "seed.md")
    assert written[0] == tmp_path / "r" / "seed.md" and len(written) > 1
    assert rep.saved == [tmp_path / "r" / "seed.md"]
    assert repr(rep).endswith(f"saved: {tmp_path / 'r' / 'seed.md'}")
    assert "hnb-saved" in rep._repr_html_()
    only = lab.report(probe=False, sections=["endpoints"])
    assert only.data.keys == ["endpoints"]
