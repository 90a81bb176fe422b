"""The hostile corpus: invalid or hostile lab files → one clear error each, exit 2.

``tests/golden/hostile/NAME.yaml`` (alias bombs, duplicates, encodings, deep nesting, wrong
types in every field of the network and of each endpoint kind, not-a-mapping, ...) and the
members made at test time (:data:`GENERATED`: over 1 MiB, too many values, a directory, a
missing path, a symlink loop, an endless device) each go through ``hybridnb plan NAME
--dry-run``.

* Unit tests: one subprocess runs the CLI's ``main()`` on every member in turn, under a 1 GiB
  address-space limit (a regression cannot take the machine), and reports per member the
  exit code, what was printed, and the problems ``Lab.load`` raised.  Each member must exit 2
  with nothing on stdout and one error on stderr, equal to ``NAME.err`` (``UPDATE_GOLDEN=1``
  rewrites it), every problem with a path and a hint; the batch's peak memory stays under
  200 MB.
* The real-marked test (wall-clock time, so it runs with the real tests) starts a fresh
  ``python -m hybridnb.cli`` per member: each exits 2 in under 1 s using under 200 MB.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable

import pytest

from hybridnb.labfile import MAX_BYTES, MAX_NODES
from tests.golden import check_golden

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "golden" / "hostile"
LIMIT_AS = 1 << 30
MAX_RSS_MB = 200
MAX_SECONDS = 1.0


def _dir_with_a_lab(p: Path) -> None:
    p.mkdir()
    (p / "lab.yaml").write_text("name: x\n")


GENERATED: dict[str, Callable[[Path], None]] = {
    "g1-oversize.yaml": lambda p: p.write_text("name: h\n" + "#" * MAX_BYTES + "\n"),
    "g2-too-many-values.yaml": lambda p: p.write_text(
        "name: h\nendpoints:\n  web:\n    kind: host\n    services:\n"
        + "    - http/80\n" * MAX_NODES),
    "g3-directory.yaml": _dir_with_a_lab,
    "g4-missing.yaml": lambda p: None,
    "g5-symlink-loop.yaml": lambda p: p.symlink_to(p.name),
    "g6-endless-device.yaml": lambda p: p.symlink_to("/dev/zero"),
}
STATIC = sorted(p.name for p in CORPUS.glob("*.yaml"))
MEMBERS = STATIC + sorted(GENERATED)

_BATCH = textwrap.dedent("""\
    import contextlib, io, json, os, resource, sys, time, traceback
    from hybridnb.cli import main
    from hybridnb.errors import HybridError, ValidationError
    from hybridnb.lab import Lab
    out = {}
    for folder, name, state in json.load(sys.stdin):
        os.chdir(folder)
        err, std = io.StringIO(), io.StringIO()
        t = time.perf_counter()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
            try:
                code = main(["plan", name, "--dry-run", "--state-dir", state])
            except BaseException:
                code = "crash"
                traceback.print_exc()
        seconds = time.perf_counter() - t
        try:
            Lab.load(name, backend="dry-run", state_dir=state)
            problems = None
        except ValidationError as exc:
            problems = [[p.path, p.message, p.hint] for p in exc.problems]
        except HybridError as exc:
            problems = [["", exc.message, exc.hint]]
        except BaseException as exc:
            problems = [["", "crash: " + repr(exc), None]]
        out[name] = {"code": code, "stdout": std.getvalue(), "stderr": err.getvalue(),
                     "seconds": seconds, "problems": problems}
    # the peak of this process's own memory (ru_maxrss would carry over the forking parent's:
    # Linux keeps it across execve)
    with open("/proc/self/status") as status:
        out["_maxrss_kb"] = next(int(line.split()[1]) for line in status
                                 if line.startswith("VmHWM:"))
    json.dump(out, sys.__stdout__)
    """)


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))


def _folder(tmp: Path) -> dict[str, Path]:
    """Where each member lives: the corpus directory, or ``tmp`` for the generated ones."""
    for name, make in GENERATED.items():
        make(tmp / name)
    return {name: (tmp if name in GENERATED else CORPUS) for name in MEMBERS}


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("hostile")
    state = tmp_path_factory.mktemp("state")
    jobs = [[str(folder), name, str(state)] for name, folder in _folder(tmp).items()]
    r = subprocess.run([sys.executable, "-c", _BATCH], input=json.dumps(jobs), text=True,
                       capture_output=True, cwd=ROOT, preexec_fn=_limit, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def test_the_corpus_is_large_and_varied():
    assert len(MEMBERS) >= 60
    kinds = ("alias-bomb", "duplicate", "deep", "latin1", "binary", "empty", "oversize",
             "net-", "container-", "vm-", "host-", "top-is", "name-")
    assert all(any(k in m for m in MEMBERS) for k in kinds)


@pytest.mark.parametrize("name", MEMBERS, ids=lambda n: n.removesuffix(".yaml"))
def test_one_clear_error_exit_2(name: str, batch: dict) -> None:
    got = batch[name]
    assert got["code"] == 2, got["stderr"][-3000:]
    assert got["stdout"] == ""
    assert got["stderr"].startswith("hybridnb: error: ")
    assert got["stderr"].count("hybridnb: error:") == 1 and "Traceback" not in got["stderr"]
    assert got["problems"], "Lab.load accepted it"
    for path, message, hint in got["problems"]:
        assert message and hint, (path, message)
    check_golden(CORPUS / (name.removesuffix(".yaml") + ".err"), got["stderr"])


def test_the_corpus_fits_in_200_mb(batch: dict) -> None:
    assert batch["_maxrss_kb"] / 1024 < MAX_RSS_MB


def test_every_golden_error_has_its_member():
    orphans = sorted(p.name for p in CORPUS.glob("*.err")
                     if p.stem + ".yaml" not in MEMBERS)
    assert not orphans


#: ``python -m hybridnb.cli ARGS`` that also writes the peak memory of its own process
#: (VmHWM: reset by execve, unlike ru_maxrss, which Linux carries over from the forking
#: parent — a test runner hundreds of MB large) to the file descriptor ``$HNB_PEAK_FD`` (a
#: pipe the test passes down) as it exits.
_CLI_WITH_PEAK = """\
import atexit, os, runpy, sys
def peak():
    with open("/proc/self/status") as status:
        kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    os.write(int(os.environ["HNB_PEAK_FD"]), str(kb).encode())
atexit.register(peak)
sys.argv = ["hybridnb"] + sys.argv[1:]
runpy.run_module("hybridnb.cli", run_name="__main__")
"""


@pytest.mark.real                       # wall-clock time: measured on the real machine only
def test_each_member_under_a_second_and_200_mb(tmp_path: Path) -> None:
    """A fresh ``python -m hybridnb.cli plan NAME --dry-run`` per member, as a user runs it."""
    slow = []
    worst = (0.0, "")
    for name, folder in _folder(tmp_path).items():
        read, write = os.pipe()
        t = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", _CLI_WITH_PEAK, "plan", name,
                                 "--dry-run", "--state-dir", str(tmp_path / "state")],
                                cwd=folder, preexec_fn=_limit,
                                pass_fds=(write,), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONPATH": str(ROOT),
                                     "HNB_PEAK_FD": str(write)})
        os.close(write)
        proc.wait()
        seconds = time.monotonic() - t
        with os.fdopen(read) as fh:
            peak_mb = int(fh.read()) / 1024        # no number: the measuring failed
        worst = max(worst, (seconds, name))
        if proc.returncode != 2 or seconds >= MAX_SECONDS or peak_mb >= MAX_RSS_MB:
            slow.append(f"{name}: exit {proc.returncode}, {seconds:.2f} s, {peak_mb:.0f} MB")
    print(f"\n{len(MEMBERS)} hostile lab files, slowest {worst[1]} in {worst[0]:.2f} s")
    assert not slow, "\n".join(slow)
