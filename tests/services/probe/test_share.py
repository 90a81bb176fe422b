"""Probe shares without namespaces: the split of a plan, the wire form, the JSON-lines share
and the coordinator's handling of shares that hang or die (no root needed)."""

from __future__ import annotations

import io
import json
import os
import platform
import sys
from pathlib import Path

import pytest

from hybridnb.errors import EngineError
from hybridnb.services.probe import ProbeEndpoint, plan_probes, probe_matrix
from hybridnb.services.probe.coordinate import probe_shares
from hybridnb.services.probe.engine import engine_name
from hybridnb.services.probe.plan import share_plans
from hybridnb.drivers.runner import LocalRunner, Runner
from hybridnb.services.probe.share import (
    LibvirtGuest,
    ProbeRequest,
    result_from_wire,
    result_to_wire,
    serve,
)
from tests.golden import check_golden

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "probe"
CHECKS = ("icmp", "tcp", "udp", "http", "dns")


def spread() -> list[ProbeEndpoint]:
    """Four endpoints and the gateway over hosts a and b (namespaces named, never opened)."""
    return [ProbeEndpoint("c1", "10.0.1.101", netns="/proc/101/ns/net", kind="container",
                          services=("http/80",)),
            ProbeEndpoint("c2", "10.0.1.102", netns="/proc/102/ns/net", kind="container"),
            ProbeEndpoint("v1", "10.0.1.200", kind="vm", mac="52:54:00:00:00:01",
                          executor=LibvirtGuest("qemu:///system", "lab", "v1")),
            ProbeEndpoint("h1", "10.0.1.50", netns="/run/netns/hnb-lab-h1", kind="host",
                          services=("udp/53",)),
            ProbeEndpoint("gateway", "10.0.1.1", netns="/run/netns/hnb-lab", kind="host")]


HOSTS = {"c1": "a", "h1": "a", "gateway": "a", "c2": "b", "v1": "b"}


def test_the_shares_split_the_plan_without_overlap() -> None:
    plan = plan_probes(spread(), CHECKS, dns_server="10.0.1.1")
    a = share_plans(plan, [n for n, h in HOSTS.items() if h == "a"])
    b = share_plans(plan, [n for n, h in HOSTS.items() if h == "b"])
    # every responder is held by the share of its target, once
    assert sorted(a.holding.responders + b.holding.responders, key=repr) == \
        sorted(plan.responders, key=repr)
    assert {r.target for r in a.holding.responders} <= {"c1", "h1", "gateway"}
    assert {r.target for r in b.holding.responders} == {"c2"}   # v1: no namespace here
    assert a.holding.held == tuple(range(len(a.holding.responders))) and not a.holding.units
    # every socket unit goes out from its source's share, once, with no responder of its own
    units = plan.units
    assert len(a.probing.units) + len(b.probing.units) == len(units)
    assert set(a.probing.units.namespaces) == {"/proc/101/ns/net", "/run/netns/hnb-lab-h1",
                                               "/run/netns/hnb-lab"}
    assert set(b.probing.units.namespaces) == {"/proc/102/ns/net"}
    for share in (a, b):
        assert share.probing.responders == () and share.probing.held == ()
        assert all(u.responder == -1 for u in share.probing.units)
        assert share.probing.pairs is plan.pairs      # pair numbers are the whole plan's
    want = sorted((u.kind, u.netns, u.pairs, u.attempt) for u in units)
    got = sorted((u.kind, u.netns, u.pairs, u.attempt)
                 for s in (a, b) for u in s.probing.units)
    assert got == want
    # the VM's script runs in b's share only
    assert [s.src.name for s in b.probing.scripts] == ["v1"] and a.probing.scripts == ()


def test_the_request_round_trips_and_its_wire_form_is_golden() -> None:
    req = ProbeRequest(tuple(spread()), CHECKS, dns_server="10.0.1.1", domain="spread.lab",
                       timeout=0.5, count=2)
    wire = req.to_wire()
    text = json.dumps(wire, indent=1, sort_keys=True)
    check_golden(GOLDEN / "share-request.json", text)
    back = ProbeRequest.from_wire(json.loads(text), local=["c2", "v1"])
    assert back.to_wire() == wire
    v1 = next(e for e in back.endpoints if e.name == "v1")
    assert isinstance(v1.executor, LibvirtGuest) and v1.executor.uri == "qemu:///system"
    # planned again from the wire form: the very same plan
    a, b = req.plan(), back.plan()
    def pairs(plan):
        return [(p.index, p.check, p.src.name, p.dst.name, p.port, p.address, p.skip, p.fail,
                 p.responder) for p in plan.pairs]

    assert (a.sources, a.targets, a.responders, pairs(a)) == \
        (b.sources, b.targets, b.responders, pairs(b))
    # an endpoint of another host keeps its place in the plan, not a way to run commands
    other = ProbeRequest.from_wire(wire, local=["c1"])
    with pytest.raises(EngineError, match="another host"):
        next(e for e in other.endpoints if e.name == "v1").executor(["true"], 1.0)


def test_results_round_trip() -> None:
    from hybridnb.services.probe.matrix import ProbeResult

    rows = [ProbeResult("icmp", "c1", "c2", True, "", (0.0001, 0.00012), 2, 2, None,
                        "10.0.1.102", ""),
            ProbeResult("tcp/5432", "c1", "v1", False, "refused", (), 2, 0, 5432, "10.0.1.200",
                        ""),
            ProbeResult("http", "v1", "c1", None, "no executor", (), 0, 0, 80, "10.0.1.101",
                        "HTTP 200")]
    assert [result_from_wire(json.loads(json.dumps(result_to_wire(r)))) for r in rows] == rows


def unreachable() -> list[ProbeEndpoint]:
    """Endpoints with no way in: every pair is skipped, nothing is opened (no root)."""
    return [ProbeEndpoint(f"x{i}", f"10.9.9.{i}", kind="vm") for i in range(1, 4)]


def test_a_share_speaks_json_lines() -> None:
    req = ProbeRequest(tuple(unreachable()), ("icmp", "tcp"), timeout=0.2, count=1)
    lines = [{"op": "share", "version": 1, "host": "b", "local": ["x2", "x3"],
              "request": req.to_wire()}, {"op": "go"}, {"op": "done"}]
    out = io.StringIO()
    code = serve(io.StringIO("".join(json.dumps(x) + "\n" for x in lines)), out)
    said = [json.loads(x) for x in out.getvalue().splitlines()]
    assert code == 0, said
    assert [m["op"] for m in said] == ["ready", "results"]
    process = said[0].pop("process")
    assert said[0] == {"op": "ready", "host": "b", "responders": 0,
                       "engine": engine_name(share_plans(req.plan(), ["x2", "x3"]).probing)}
    assert process["pid"] == os.getpid() and process["python"] == platform.python_version()
    assert process["netns"] == os.stat("/proc/self/ns/net").st_ino
    rows = [result_from_wire(r) for r in said[1]["results"]]
    assert {r.source for r in rows} == {"x2", "x3"} and len(rows) == 2 * 2 * 2
    assert all(r.ok is None for r in rows)


def test_a_share_refuses_what_it_does_not_understand() -> None:
    out = io.StringIO()
    assert serve(io.StringIO('{"op": "share", "version": 99}\n'), out) == 1
    msg = json.loads(out.getvalue())
    assert msg["op"] == "error" and "version 1" in msg["error"]
    out = io.StringIO()
    assert serve(io.StringIO(""), out) == 0 and out.getvalue() == ""   # nothing asked


def test_shares_merge_into_the_one_process_matrix() -> None:
    eps = unreachable()
    where = {"x1": "a", "x2": "b", "x3": "b"}
    one = probe_matrix(eps, ("icmp", "udp"), timeout=0.2, count=1)
    for runners in ({}, {"b": LocalRunner()}):
        m = probe_shares(eps, ("icmp", "udp"), placement=where, runners=runners,
                         timeout=0.2, count=1)
        assert [(r.check, r.source, r.target, r.status, r.reason) for r in m.results] == \
            [(r.check, r.source, r.target, r.status, r.reason) for r in one.results]
        assert (m.sources, m.targets, m.checks, m.count) == (one.sources, one.targets,
                                                            one.checks, one.count)


class Script:
    """A runner whose "share" is a Python one-liner (a share gone wrong)."""

    where = "a test process"

    def __init__(self, code: str) -> None:
        self.code = code
        self.started: list = []

    def run_module(self, module, args=()):
        import subprocess

        self.started.append(proc := subprocess.Popen([sys.executable, "-c", self.code], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        return proc


def test_a_share_that_never_says_ready_times_out_naming_its_host() -> None:
    runner = Script("import time; time.sleep(30)")
    assert isinstance(runner, Runner)
    with pytest.raises(EngineError, match=r"^host b: the probe share in a test process said "
                                          r"no ready within 0.5 s"):
        probe_shares(unreachable(), ("icmp",), placement={"x1": "a", "x2": "b", "x3": "b"},
                     runners={"b": runner}, ready_timeout=0.5)
    # and the process was killed (not left sleeping, not waited for)
    assert [p.poll() for p in runner.started] == [-9]


def test_a_share_that_dies_is_named_with_its_error_output() -> None:
    runner = Script("import sys; sys.stdin.readline(); "
                    "sys.stderr.write('no such namespace\\n'); sys.exit(3)")
    with pytest.raises(EngineError, match=r"^host b: .* ended before saying ready "
                                          r"\(exit code 3\)") as caught:
        probe_shares(unreachable(), ("icmp",), placement={"x1": "a", "x2": "b", "x3": "b"},
                     runners={"b": runner})
    assert "no such namespace" in (caught.value.hint or "")


def test_a_share_that_dies_after_go_is_named() -> None:
    ready = '{"op": "ready", "host": "b", "responders": 0}'
    runner = Script(f"import sys; sys.stdin.readline(); print({ready!r}, flush=True); "
                    "sys.stdin.readline(); sys.exit(5)")
    with pytest.raises(EngineError, match=r"^host b: .* ended before saying results"):
        probe_shares(unreachable(), ("icmp",), placement={"x1": "a", "x2": "b", "x3": "b"},
                     runners={"b": runner})


def test_every_source_needs_a_host() -> None:
    with pytest.raises(EngineError, match="no host given for x3"):
        probe_shares(unreachable(), ("icmp",), placement={"x1": "a", "x2": "b"})


def test_a_share_whose_engine_fails_says_so_naming_its_host() -> None:
    from hybridnb.errors import HybridError

    for runners, host in (({}, "a"), ({"a": LocalRunner()}, "a")):
        with pytest.raises(HybridError, match=rf"(?s)host {host}: .*unknown probe engine "
                                              r"'bogus'"):
            probe_shares(unreachable(), ("icmp",), placement={"x1": "a", "x2": "b", "x3": "b"},
                         runners=runners, engine="bogus", ready_timeout=10)
