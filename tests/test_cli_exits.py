"""Issue 11 #10 and #11 on the command line: usage errors are exit 2, ``plan
--detailed-exitcode`` never says 2 for "has changes", ``| head`` ends quietly, hints name the
sandbox they mean, and long steps say what they do when they start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hybridnb.cli import main

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "seed.yaml"


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("argv, says", [
    (["test", "--checks", "bogus"], "unknown probe check 'bogus'"),
    (["test", "--checks", "tcp/99999"], "bad port in probe check 'tcp/99999'"),
    (["test", "--checks", ","], "no check given"),
    (["test", "--count", "0"], "0 is not a positive number"),
    (["test", "--count", "-2"], "-2 is not a positive number"),
    (["test", "--timeout", "-1"], "-1 is not a positive number of seconds"),
    (["test", "--timeout", "nan"], "nan is not a positive number of seconds"),
    (["validate", "--timeout", "0"], "0 is not a positive number of seconds"),
    (["dns", "--query-log", "0"], "0 is not a positive number"),
    (["dns", "--query-log", "-5"], "-5 is not a positive number"),
])
def test_bad_option_values_are_usage_errors(capsys, state_dir, argv, says):
    """Regression (#10): these were engine errors (exit 4) or tracebacks."""
    with pytest.raises(SystemExit) as exc:
        main([argv[0], str(SEED), "--dry-run", "--state-dir", str(state_dir), *argv[1:]])
    assert exc.value.code == 2
    assert says in capsys.readouterr().err


def test_the_library_refuses_bad_probe_options_before_looking_at_the_lab(state_dir):
    from hybridnb.errors import ValidationError
    from hybridnb.lab import Lab

    lab = Lab.load(SEED, backend="dry-run", state_dir=state_dir)   # cannot probe at all
    for kw in ({"checks": ("tcp/0",)}, {"count": 0}, {"timeout": -1.0}, {"count": True}):
        with pytest.raises(ValidationError) as info:
            lab.test(**kw)
        assert info.value.exit_code == 2


def test_plan_detailed_exitcode_says_changes_with_1(capsys, state_dir, tmp_path):
    common = ["--dry-run", "--state-dir", str(state_dir), "--detailed-exitcode"]
    assert run(capsys, "plan", str(SEED), *common)[0] == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nnetwork: {mtu: 1}\n")
    assert run(capsys, "plan", str(bad), *common)[0] == 2          # 2 stays: a bad file
    run(capsys, "apply", str(SEED), "--dry-run", "--state-dir", str(state_dir), "-q")
    assert run(capsys, "plan", str(SEED), *common)[0] == 0


def test_dns_takes_json(capsys, state_dir):
    import json

    code, out, _ = run(capsys, "dns", str(SEED), "--dry-run", "--state-dir", str(state_dir),
                       "--json")
    data = json.loads(out)
    assert code == 0 and data["domain"] == "hybrid.local." and data["lab"] == "seed"
    a = [r for r in data["records"] if r["name"] == "web.hybrid.local." and r["type"] == "A"]
    assert [r["data"] for r in a] == [["10.0.1.100"]]


def test_output_cut_short_ends_quietly(tmp_path, state_dir):
    """Regression (#10): ``hybridnb ... | head`` printed a BrokenPipeError traceback."""
    hosts = "\n".join(f"  h{i}: {{kind: host}}" for i in range(3000))
    lab = tmp_path / "big.yaml"
    lab.write_text(f"name: big\nnetwork: {{subnet: 10.40.0.0/16}}\nendpoints:\n{hosts}\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cli = subprocess.Popen([sys.executable, "-m", "hybridnb.cli", "dns", str(lab), "--dry-run",
                            "--state-dir", str(state_dir), "--json"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.run(["head", "-n", "2"], stdin=cli.stdout, capture_output=True)
    cli.stdout.close()
    err = cli.stderr.read().decode()
    assert cli.wait(60) == 141 and err == "", err
    assert head.stdout.decode().startswith("{")


HALF_BUILT = """
import asyncio, sys
import hybridnb.cli as cli

def cut_short(args):
    # what SIGINT inside asyncio's loop constructor leaves behind (CI, stop 21)
    cut_short.loop = asyncio.SelectorEventLoop.__new__(asyncio.SelectorEventLoop)
    raise KeyboardInterrupt

class Other:
    def __del__(self):
        raise ValueError("a finalizer's own bug")

cli.cmd_kinds = cut_short
code = cli.main(["kinds"])
if "--other" in sys.argv:
    Other()
sys.exit(code)
"""


@pytest.mark.parametrize("other", [False, True])
def test_ctrl_c_inside_a_constructor_prints_one_line(state_dir, other):
    """Regression: Ctrl-C landing in pyroute2's event-loop constructor printed the half-built
    loop's ``__del__`` traceback after "interrupted"; other finalizer errors still show."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    got = subprocess.run([sys.executable, "-c", HALF_BUILT, *(["--other"] if other else [])],
                         env=env, capture_output=True, text=True, timeout=60)
    assert got.returncode == 130
    lines = got.stderr.splitlines()
    assert lines[0].startswith("hybridnb: interrupted;")
    if other:
        assert "a finalizer's own bug" in got.stderr
    else:
        assert lines == lines[:1], got.stderr


def test_the_sandbox_hints_name_the_sandbox(monkeypatch, tmp_path, state_dir):
    from hybridnb.drivers.docker import ContainerDriver
    from hybridnb.errors import EngineUnavailable
    from hybridnb.lab import Lab
    from hybridnb.target import Target

    monkeypatch.setenv("HYBRIDNB_SANDBOX_RUN", str(tmp_path / "run"))
    with pytest.raises(EngineUnavailable) as info:
        Lab.load(SEED, backend="sandbox", sandbox="hnb-nope", state_dir=state_dir).plan()
    assert "hnb-nope" in info.value.message and "--sandbox hnb-nope" in info.value.hint
    gone = Target("sandbox:hnb-gone", docker_url=f"unix://{tmp_path}/no.sock")
    with pytest.raises(EngineUnavailable) as info:
        ContainerDriver(gone).observe("x")
    assert "--sandbox hnb-gone" in info.value.hint


def test_apply_says_each_action_when_it_starts(capsys, state_dir):
    code, _, err = run(capsys, "apply", str(SEED), "--dry-run", "--state-dir", str(state_dir))
    lines = err.splitlines()
    assert code == 0
    start = lines.index("create bridge hybr0 ...")
    assert lines[start + 1].startswith("[1/6] create bridge hybr0 (")
    assert lines.index("create vm vm1 ...") < next(
        i for i, line in enumerate(lines) if "] create vm vm1 (" in line)


def test_sandbox_down_reports_progress(capsys, monkeypatch):
    from hybridnb.sandbox import Sandbox

    seen = {}

    def down(self, purge=False, progress=None):
        seen["progress"] = progress
        if progress is not None:
            progress(f"stopping dockerd (pid 1) of {self.name}")
        return self.status()
    monkeypatch.setattr(Sandbox, "down", down)
    code, _, err = run(capsys, "sandbox", "down", "--sandbox", "hnb-prog")
    assert code == 0 and seen["progress"] is not None
    assert "taking sandbox hnb-prog down" in err and "stopping dockerd" in err
    run(capsys, "sandbox", "down", "--sandbox", "hnb-prog", "-q")
    assert seen["progress"] is None
