"""Probes on real labs: honest answers for asserted ports, any lab size under ``ulimit -n 1024``
(issue 11 #2 and #6, real engines in the session sandbox).

* A container and a host with nothing on 5432 make ``x -> y tcp/5432 ok`` fail and ``blocked``
  hold — the engine's own responders stand in only for the built-in checks; with a real
  listener (httpd in a container, a socket in the host's namespace) the same line holds.
  (VMs: ``test_hybrid_real.py``, which has them booted.)
* ``hybridnb test`` on 50 namespace hosts and 10 containers with the default checks (~26k
  sockets) is green in a subprocess whose open-file limit is 1024, soft and hard.
"""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hybridnb.cli import main
from hybridnb.lab import Lab
from tests.realengines import SANDBOX_NAME

pytestmark = pytest.mark.real
ROOT = Path(__file__).resolve().parents[2]

HONEST = """
name: ithon
network: {{subnet: 10.0.71.0/24, bridge: hnbhon0, dns: false}}
endpoints:
  h1: {{kind: host}}
  h2: {{kind: host}}
  c1: {{kind: container, command: [sleep, "3600"]}}
  c2: {{kind: container, command: [httpd, -f, -p, "5432", -h, /]}}
expect:
{expect}
"""


def lab_file(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "honest.yaml"
    path.write_text(HONEST.format(expect="\n".join(f"  - {line}" for line in lines)))
    return str(path)


def test_an_asserted_port_is_probed_against_what_really_listens(sandbox, tmp_path, state_dir,
                                                                 capsys):
    common = ["--backend", "sandbox", "--sandbox", SANDBOX_NAME, "--state-dir",
              str(state_dir), "-q"]
    nothing = lab_file(tmp_path, "h1 -> h2 tcp/5432 blocked", "h1 -> c1 tcp/5432 blocked",
                       "c1 -> h2 tcp/5432 blocked", "h2 -> c1 tcp/5432 blocked",
                       "h1 -> c2 tcp/5432 ok", "h1 -> h2 icmp ok")
    lab = Lab.load(nothing, backend="sandbox", sandbox=SANDBOX_NAME, state_dir=state_dir)
    try:
        assert main(["apply", nothing, *common]) == 0
        assert main(["validate", nothing, *common]) == 0, capsys.readouterr().out
        capsys.readouterr()
        wrong = lab_file(tmp_path, "h1 -> h2 tcp/5432 ok", "h1 -> c1 tcp/5432 ok")
        assert main(["validate", wrong, *common]) == 1
        assert main(["test", nothing, *common, "--checks", "tcp/5432"]) == 1
        out = capsys.readouterr().out
        assert "h1 -> h2: fail (refused)" in out or "-> h2: fail (refused)" in out, out
        m = lab.test(("tcp", "tcp/5432"), timeout=1.0, count=1)
        for src in ("h1", "c1", "gateway"):
            for dst in ("h2", "c1"):
                if src != dst:
                    r = m.get("tcp/5432", src, dst)
                    assert r.ok is False and r.reason == "refused", r
            assert m.get("tcp/5432", src, "c2").ok                     # httpd listens there
            assert m.get("tcp", src, "h2").ok                          # built-in: stand-in
        # a real listener in h2's namespace: now the same line holds
        eps, _ = lab.probe_endpoints()
        h2 = next(e for e in eps if e.name == "h2")
        from hybridnb.drivers import nsutil

        listener = nsutil.socket_in_netns(h2.netns, socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind((h2.address, 5432))
            listener.listen(16)
            real = lab_file(tmp_path, "h1 -> h2 tcp/5432 ok", "c1 -> h2 tcp/5432 ok",
                            "h1 -> c2 tcp/5432 ok", "h1 -> c1 tcp/5432 blocked")
            assert main(["validate", real, *common]) == 0, capsys.readouterr().out
        finally:
            listener.close()
    finally:
        main(["destroy", nothing, *common])


BIG_HOSTS, BIG_CONTAINERS = 50, 10


def big_lab(tmp_path: Path) -> str:
    lines = ["name: itbig", "network: {subnet: 10.0.72.0/24, bridge: hnbbig0}", "endpoints:"]
    lines += [f"  h{i:02d}: {{kind: host}}" for i in range(BIG_HOSTS)]
    lines += [f"  c{i:02d}: {{kind: container, command: [sleep, \"3600\"]}}"
              for i in range(BIG_CONTAINERS)]
    path = tmp_path / "big.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _nofile_1024() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def test_a_60_endpoint_lab_tests_green_under_ulimit_1024(sandbox, tmp_path, state_dir):
    path = big_lab(tmp_path)
    common = ["--backend", "sandbox", "--sandbox", SANDBOX_NAME, "--state-dir",
              str(state_dir), "-q"]
    try:
        t0 = time.perf_counter()
        assert main(["apply", path, *common]) == 0
        applied = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "hybridnb.cli", "test", path, *common],
                           capture_output=True, text=True, timeout=300, cwd=ROOT,
                           preexec_fn=_nofile_1024)
        took = time.perf_counter() - t0
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        n = BIG_HOSTS + BIG_CONTAINERS + 1                  # + the gateway
        probes = 5 * n * (n - 1)              # icmp, tcp, udp, http, dns: every ordered pair
        assert f"{probes} ok, 0 failed, 0 skipped" in r.stdout, r.stdout
        assert len(r.stdout.splitlines()) < 15, r.stdout             # a summary, not grids
        print(f"60 endpoints: apply {applied:.1f} s, test under ulimit 1024 {took:.1f} s")
    finally:
        main(["destroy", path, *common])
