"""Issue 11 on the real sandbox: every change converges, a failed change leaves the lab no
worse, and the record tells the truth.

* #3  a changed subnet of a lab with a container, a host and DNS converges with one apply —
      and every endpoint answers at its new address, by name;
* #4  a replacement that cannot be made (an image the engine cannot get) is refused before
      the working container is touched;
* #9  a container whose command exits fails apply with the exit code and its output, leaves
      nothing, and a change to such a command puts the working container back;
* #1  a ``--dry-run`` destroy of a lab that is up leaves its state alone; a command on the
      applied lab finds the sandbox its state records;
* #12 ``apply`` interrupted by SIGINT at random points: the next command finishes the
      record (no "creating" left), and the lab converges.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hybridnb.errors import BootError, EngineError
from hybridnb.lab import Lab
from hybridnb.state import IN_FLIGHT_STATUSES
from tests.helpers.labs import LabsMade
from tests.realengines import SANDBOX_NAME

pytestmark = pytest.mark.real
ROOT = Path(__file__).resolve().parents[2]
_made = LabsMade()


@pytest.fixture(autouse=True)
def _destroy_afterwards():
    yield
    _made.destroy_all()


def docker_api(box):
    import docker

    return docker.APIClient(base_url=box.target().docker_url, version="auto")


def lab_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def load(path, state_dir, **kw) -> Lab:
    lab = Lab.load(path, backend="sandbox", sandbox=SANDBOX_NAME, state_dir=state_dir, **kw)
    _made.append(lab)
    return lab


SUBNET = """name: cvsub
network: {{subnet: {subnet}, bridge: cvsub0}}
endpoints:
  c1: {{kind: container, command: [httpd, -f, -p, "80", -h, /]}}
  h1: {{kind: host}}
"""


def test_a_changed_subnet_converges_with_one_apply(sandbox, tmp_path, state_dir):
    """Regression (#3): on the first slice this apply failed with exit 3 ("docker network
    still has containers attached") after the bridge was renumbered, and so did every
    re-apply."""
    first = lab_file(tmp_path, "cvsub", SUBNET.format(subnet="10.91.1.0/24"))
    load(first, state_dir).apply()
    changed = lab_file(tmp_path, "cvsub", SUBNET.format(subnet="10.91.2.0/24"))
    lab = load(changed, state_dir)
    result = lab.apply()
    assert result.ok and lab.plan().empty and lab.status().up, result.to_text()
    api = docker_api(sandbox)
    nets = api.inspect_container("hnb-cvsub-c1")["NetworkSettings"]["Networks"]
    assert nets["hnb-cvsub"]["IPAddress"] == "10.91.2.100"
    m = lab.test(("icmp", "tcp/80", "dns"), timeout=1.0, count=2)
    assert m.get("tcp/80", "h1", "c1").ok and m.get("icmp", "c1", "h1").ok, m.to_text()
    assert all(r.ok for r in m.of("icmp")) and all(r.ok for r in m.of("dns")), m.to_text()
    # the bridge renamed, same subnet (found by the edit property: the old bridge's route
    # was taken for a foreign one and the rename refused)
    renamed = lab_file(tmp_path, "cvsub", SUBNET.format(subnet="10.91.2.0/24")
                       .replace("cvsub0", "cvsub1"))
    lab = load(renamed, state_dir)
    assert lab.apply().ok and lab.plan().empty and lab.status().up


IMAGE = """name: cvimg
network: {{subnet: 10.91.3.0/24, bridge: cvimg0, dns: false}}
endpoints:
  c1: {{kind: container, {fields}}}
"""


def test_a_replacement_that_cannot_be_made_touches_nothing(sandbox, tmp_path, state_dir):
    """Regression (#4): an image the engine cannot get deleted the running container first."""
    ok = lab_file(tmp_path, "ok", IMAGE.format(fields='command: [sleep, "3600"]'))
    load(ok, state_dir).apply()
    api = docker_api(sandbox)
    before = api.inspect_container("hnb-cvimg-c1")["Id"]
    bad = lab_file(tmp_path, "bad", IMAGE.format(
        fields='image: "hnb-test/not-here:1", command: [sleep, "3600"]'))
    lab = load(bad, state_dir)
    with pytest.raises(EngineError) as info:
        lab.apply()
    assert "hnb-test/not-here:1" in info.value.message and "cannot be pulled" in \
        info.value.message
    assert not hasattr(info.value, "result")                   # refused before acting
    after = api.inspect_container("hnb-cvimg-c1")
    assert after["Id"] == before and after["State"]["Running"]
    assert load(ok, state_dir).plan().empty


def test_a_container_whose_command_exits_is_not_ok(sandbox, tmp_path, state_dir):
    """Regression (#9): apply said ok, and every later apply replaced it again."""
    failing = 'command: [sh, -c, "echo it broke; exit 3"]'
    lab = load(lab_file(tmp_path, "bad", IMAGE.format(fields=failing)), state_dir)
    with pytest.raises(BootError) as info:
        lab.apply()
    text = str(info.value)
    assert "exited with code 3" in text and "it broke" in text, text
    api = docker_api(sandbox)
    assert api.containers(all=True, filters={"label": "hybridnb.lab=cvimg"}) == []
    # a working container changed to a failing command: the working one is put back
    ok = load(lab_file(tmp_path, "ok", IMAGE.format(fields='command: [sleep, "3600"]')),
              state_dir)
    ok.apply()
    lab = load(lab_file(tmp_path, "bad", IMAGE.format(fields=failing)), state_dir)
    with pytest.raises(BootError) as info:
        lab.apply()
    assert info.value.result.rolled_back and "put back" in info.value.message
    back = api.inspect_container("hnb-cvimg-c1")
    assert back["State"]["Running"] and back["Config"]["Cmd"] == ["sleep", "3600"]
    assert ok.plan().empty and ok.status().up


def cli(*argv: str, state_dir: Path, sandbox: bool = True, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HYBRIDNB_SANDBOX",
                                                             "HYBRIDNB_BACKEND")}
    env.update(HYBRIDNB_STATE_DIR=str(state_dir), PYTHONPATH=str(ROOT))
    extra = ["--sandbox", SANDBOX_NAME] if sandbox else []
    return subprocess.run([sys.executable, "-m", "hybridnb.cli", *argv, *extra], env=env,
                          capture_output=True, text=True, timeout=120, **kw)


def test_a_dry_run_leaves_the_real_lab_alone(sandbox, tmp_path, state_dir):
    """Regression (#1): a --dry-run destroy of a lab up on the sandbox deleted its state; the
    next real apply said "no changes" and wrote no state back."""
    path = lab_file(tmp_path, "cvdry", IMAGE.format(fields='command: [sleep, "3600"]')
                    .replace("cvimg", "cvdry").replace("10.91.3", "10.91.4"))
    _made.append(Lab.load(path, backend="sandbox", sandbox=SANDBOX_NAME, state_dir=state_dir))
    assert cli("apply", str(path), "-q", state_dir=state_dir).returncode == 0
    saved = (state_dir / "cvdry.json").read_text()
    for cmd in ("destroy", "apply", "destroy"):
        got = cli(cmd, str(path), "--dry-run", "-q", state_dir=state_dir, sandbox=False)
        assert got.returncode == 0, got.stderr
    assert (state_dir / "cvdry.json").read_text() == saved
    got = cli("plan", str(path), "--detailed-exitcode", state_dir=state_dir)
    assert got.returncode == 0 and "no changes" in got.stdout, got.stdout + got.stderr
    # by name, without --sandbox: the lab is found on the sandbox its state records
    got = cli("status", "cvdry", "--json", state_dir=state_dir, sandbox=False)
    assert got.returncode == 0 and json.loads(got.stdout)["up"], got.stdout + got.stderr


INTERRUPT = """name: cvint
network: {subnet: 10.91.5.0/24, bridge: cvint0}
endpoints:
  a: {kind: container, command: [sleep, "3600"]}
  b: {kind: container, command: [sleep, "3600"]}
  c: {kind: container, command: [sleep, "3600"]}
  h1: {kind: host}
  h2: {kind: host}
"""


def in_flight(state_dir: Path) -> dict[str, str]:
    try:
        data = json.loads((state_dir / "cvint.json").read_text())
    except FileNotFoundError:
        return {}
    return {k: r["status"] for k, r in data.get("resources", {}).items()
            if r.get("status") in IN_FLIGHT_STATUSES}


def wait_in_flight(state_dir: Path, proc: subprocess.Popen, limit: float = 30.0) -> None:
    """Return once the journal of the running apply records a resource in flight."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        if in_flight(state_dir):      # the journal is replaced by rename: never half-read
            return
        time.sleep(0.005)


def test_an_interrupted_apply_is_finished_by_the_next_command(sandbox, tmp_path, state_dir):
    """Regression (#12): after SIGINT the journal kept "creating"/"replacing" forever."""
    path = lab_file(tmp_path, "cvint", INTERRUPT)
    _made.append(Lab.load(path, backend="sandbox", sandbox=SANDBOX_NAME, state_dir=state_dir))
    rng = random.Random(12)
    env = dict(os.environ, HYBRIDNB_STATE_DIR=str(state_dir), PYTHONPATH=str(ROOT))
    left_in_flight = 0
    for trial in range(6):
        edit = INTERRUPT.replace('"3600"', f'"{3600 + trial}"')      # each apply replaces
        path.write_text(edit)
        proc = subprocess.Popen([sys.executable, "-m", "hybridnb.cli", "apply", str(path),
                                 "--sandbox", SANDBOX_NAME, "-q"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if trial % 2:                 # at a random moment, wherever the apply is then
            time.sleep(rng.uniform(0.6, 1.6))
        else:                         # as soon as the journal says a driver call is running
            wait_in_flight(state_dir, proc)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
        assert "Traceback" not in err, err
        left_in_flight += bool(in_flight(state_dir))
        got = cli("status", str(path), state_dir=state_dir)
        assert "Traceback" not in got.stderr, got.stderr
        assert in_flight(state_dir) == {}, f"trial {trial}: {in_flight(state_dir)}"
        lab = load(path, state_dir)
        assert lab.apply() is not None and lab.plan().empty and lab.status().up
    assert left_in_flight >= 1, "no SIGINT landed inside a driver call"
