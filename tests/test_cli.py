"""The command line: output, exit codes, errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hybridnb.cli import main

SEED = Path(__file__).resolve().parent.parent / "examples" / "seed.yaml"


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_plan_apply_status_destroy(capsys, state_dir):
    common = ["--dry-run", "--state-dir", str(state_dir)]
    code, out, _ = run(capsys, "plan", str(SEED), *common, "--detailed-exitcode")
    assert code == 1 and "6 to create" in out          # changes: 1, never 2
    code, out, err = run(capsys, "status", str(SEED), *common)
    assert code == 1 and "not applied" in out
    code, out, err = run(capsys, "apply", str(SEED), *common)
    assert code == 0 and "[6/6]" in err
    code, out, _ = run(capsys, "plan", str(SEED), *common, "--detailed-exitcode")
    assert code == 0 and "no changes" in out
    code, out, _ = run(capsys, "status", str(SEED), *common, "--json")
    assert code == 0 and '"up": true' in out
    code, out, _ = run(capsys, "destroy", "seed", *common, "-q")
    assert code == 0 and "6 to delete" in out


def test_invalid_lab_exit_code_and_message(capsys, tmp_path, state_dir):
    bad = tmp_path / "bad.yaml"
    bad.write_text("network: {mtu: 1}\nendpoints: {A: {kind: host}}\n")
    code, out, err = run(capsys, "plan", str(bad), "--dry-run", "--state-dir", str(state_dir))
    assert code == 2
    assert "2 problems in" in err and "Traceback" not in err and "hint" in err


def test_missing_file(capsys, state_dir):
    code, _, err = run(capsys, "apply", "/nonexistent/lab.yaml", "--dry-run",
                       "--state-dir", str(state_dir))
    assert code == 2 and "does not exist" in err


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "hybridnb.cli", "--help"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "exit codes" in out.stdout
    for cmd in ("plan", "apply", "destroy", "status", "sandbox"):
        assert cmd in out.stdout


def test_kinds_reference_and_version(capsys):
    from importlib.metadata import version

    code, out, _ = run(capsys, "kinds")
    assert code == 0 and "--image IMAGE" in out and "--memory MiB" in out
    code, out, _ = run(capsys, "kinds", "host")
    assert code == 0 and "container" not in out.split("\n", 1)[1]
    code, _, err = run(capsys, "kinds", "robot")
    assert code == 2 and "unknown kind 'robot'" in err
    import hybridnb

    assert hybridnb.__version__ == version("hybridnb")
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"hybridnb {version('hybridnb')}"


def test_what_the_dry_run_backend_cannot_do_is_one_clear_error(capsys, state_dir):
    common = ["--dry-run", "--state-dir", str(state_dir), "-q"]
    run(capsys, "apply", str(SEED), *common)
    code, _, err = run(capsys, "dns", str(SEED), *common, "--query-log", "5")
    assert code == 5 and "cannot read the DNS query log" in err and "sends no packets" in err
    code, _, err = run(capsys, "test", str(SEED), *common)
    assert code == 5 and "cannot probe the lab" in err and "Traceback" not in err


def test_sandbox_option_and_environment(capsys, monkeypatch):
    monkeypatch.setenv("HYBRIDNB_SANDBOX", "hnb-env-cli")
    code, out, _ = run(capsys, "sandbox", "status")
    assert "hnb-env-cli" in out
    code, out, _ = run(capsys, "sandbox", "status", "--sandbox", "hnb-flag-cli")
    assert "hnb-flag-cli" in out
    code, out, _ = run(capsys, "sandbox", "status", "--name", "hnb-old-cli")   # old spelling
    assert "hnb-old-cli" in out
    from hybridnb.lab import Lab

    assert Lab("x", backend="dry-run").sandbox == "hnb-env-cli"


def test_test_prints_a_summary_at_scale_and_everything_with_verbose(capsys, state_dir,
                                                                     monkeypatch):
    """Issue 11 #13: an all-ok run on 50 endpoints is a short summary; --verbose, the grids."""
    from hybridnb.lab import Lab
    from tests.helpers.matrices import mesh

    calls = []

    def fake_test(self, checks=None, **kw):
        calls.append((checks, kw))
        return mesh()
    monkeypatch.setattr(Lab, "test", fake_test)
    common = ["--dry-run", "--state-dir", str(state_dir)]
    code, out, _ = run(capsys, "test", str(SEED), *common, "--checks", "icmp,tcp/5432")
    assert code == 0 and len(out.splitlines()) < 12 and "every probe answered" in out
    assert calls[0][0] == ("icmp", "tcp/5432")
    code, out, _ = run(capsys, "test", str(SEED), *common, "--verbose")
    assert code == 0 and out.count("from \\ to") == 2
    code, out, _ = run(capsys, "test", str(SEED), *common, "--json")
    assert code == 0 and out.count('"check"') == 5000
