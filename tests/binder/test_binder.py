"""Binder, the way Binder does it: a user without root, a fresh venv made from
``binder/requirements.txt`` in a copy of the repository, the kernel started through
``binder/start``, every notebook in ``notebooks/`` run top to bottom with no parameters.

repo2docker installs ``binder/requirements.txt`` from the repository's root (so ``-e .``
installs hybridnb from the checkout) into the environment its base image already has
Jupyter in; here that base is stood in for by ``ipykernel``, ``nbclient`` and ``nbformat``,
installed beside the requirements.  When the tests run as root, the notebooks run as
``nobody`` (``runuser``) from a copy of the checkout that user owns; as any other user, as
that user.  pip takes its packages from the machine's configured indexes (local wheel cache
or PyPI).  About 40 s, most of it pip.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BINDER = ROOT / "binder"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
#: What repo2docker's base environment has and the requirements do not name.
BASE_ENV = ("ipykernel", "nbclient", "nbformat")
#: Files repo2docker reads from binder/ that we may use; none of them runs as root.
BINDER_FILES = {"requirements.txt", "start", "apt.txt", "postBuild", "runtime.txt"}


def test_binder_folder_needs_no_root():
    names = {p.name for p in BINDER.iterdir()}
    assert names <= BINDER_FILES, names - BINDER_FILES
    for name in names & {"start", "postBuild"}:
        path = BINDER / name
        assert path.stat().st_mode & stat.S_IXUSR, f"binder/{name} must be executable"
        text = path.read_text()
        for word in ("sudo", "apt-get", "apt ", "dpkg", "su -", "runuser"):
            assert word not in text, f"binder/{name} uses {word!r}"
    start = (BINDER / "start").read_text()
    assert 'exec "$@"' in start and "HYBRIDNB_BACKEND=dry-run" in start
    reqs = (BINDER / "requirements.txt").read_text().split()
    assert any(r.startswith("-e") for r in reqs) and any(r.startswith(".[") for r in reqs)


def _as_user() -> tuple[list[str], str | None]:
    """The command prefix that runs as an unprivileged user, and that user's name."""
    if os.geteuid() != 0:
        return [], None
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    return [runuser, "-u", "nobody", "--"], "nobody"


def _python_for(prefix: list[str]) -> str:
    """A Python the unprivileged user can run (root's pyenv may sit under /root)."""
    for candidate in (sys._base_executable, shutil.which("python3") or "", "/usr/bin/python3"):
        if candidate and subprocess.run(prefix + [candidate, "-c", "import venv, ensurepip"],
                                        capture_output=True).returncode == 0:
            return candidate
    pytest.fail("no Python with venv that an unprivileged user can run "
                "(install python3-venv)")


def _copy_checkout(dest: Path) -> None:
    """The repository as repo2docker sees it: the files git knows (and new ones)."""
    listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.split(b"\0")
    for raw in listed:
        rel = raw.decode()
        if not rel or not (ROOT / rel).is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)


def test_every_notebook_runs_as_a_binder_user_with_no_parameters():
    prefix, user = _as_user()
    python = _python_for(prefix)
    work = Path(tempfile.mkdtemp(prefix="hnb-binder-"))
    try:
        repo, home, venv, out = work / "repo", work / "home", work / "venv", work / "out"
        _copy_checkout(repo)
        home.mkdir()
        shutil.copy2(Path(__file__).with_name("run_notebooks.py"), work / "run_notebooks.py")
        if user is not None:
            subprocess.run(["chown", "-R", f"{user}:", str(work)], check=True)
        work.chmod(0o755)
        env = ["env", "-i", f"HOME={home}", f"PATH={venv}/bin:/usr/bin:/bin", "LANG=C.UTF-8",
               f"PIP_CACHE_DIR={home}/.cache/pip", "PIP_DISABLE_PIP_VERSION_CHECK=1",
               "PIP_PROGRESS_BAR=off"]

        def run(*argv: str, timeout: float) -> subprocess.CompletedProcess[str]:
            return subprocess.run(prefix + env + list(argv), cwd=repo, capture_output=True,
                                  text=True, timeout=timeout)

        made = run(python, "-m", "venv", str(venv), timeout=120)
        assert made.returncode == 0, made.stderr
        pip = run(f"{venv}/bin/pip", "install", "-q", "-r", "binder/requirements.txt",
                  *BASE_ENV, timeout=900)
        assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
        whoami = run(f"{venv}/bin/python", "-c", "import os; print(os.geteuid())", timeout=60)
        assert whoami.stdout.strip() != "0"
        rel = [str(p.relative_to(ROOT)) for p in NOTEBOOKS]
        done = run("binder/start", f"{venv}/bin/python", str(work / "run_notebooks.py"),
                   str(out), *rel, timeout=900)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        assert done.stdout.count("\nok ") + done.stdout.startswith("ok ") == len(NOTEBOOKS)
        for path in NOTEBOOKS:
            nb = json.loads((out / path.name).read_text())
            text = json.dumps([c.get("outputs", []) for c in nb["cells"]])
            assert "the sandbox needs root" not in text
            assert "dry-run" in text                     # the backend the environment chose
            assert "saved: " in text                     # it ended by exporting its report
        assert sorted(p.name for p in (repo / "notebooks").glob("*-report.html")), \
            "no notebook exported its lab report"
        # hybridnb came from the checkout, editable, as `-e .` says
        where = run(f"{venv}/bin/python", "-c", "import hybridnb; print(hybridnb.__file__)",
                    timeout=60)
        assert where.stdout.strip() == str(repo / "hybridnb" / "__init__.py")
    finally:
        shutil.rmtree(work, ignore_errors=True)
