"""The fast probe engine's Python side, as plain data: which engine runs, and how the C side's
outcome columns become results worded exactly as the portable engine words them (no root, no
sockets; the real-engine tests run both engines against namespaces)."""

from __future__ import annotations

import errno
import sys

import pytest

from hybridnb.errors import EngineError, ValidationError
from hybridnb.services.probe import ProbeEndpoint, fast, plan_probes
from hybridnb.services.probe.clients import UNREACH_CODES
from hybridnb.services.probe.engine import _use_fast
from hybridnb.services.probe.wire import reason


def host(name: str, i: int, **kw) -> ProbeEndpoint:
    return ProbeEndpoint(name, f"10.0.1.{10 + i}", netns=f"/run/netns/{name}", **kw)


GW = ProbeEndpoint("gateway", "10.0.1.1", netns="/run/netns/lab", kind="gateway")


def test_the_extension_is_built_on_linux():
    """pip install builds it (gcc and Python headers are in the Makefile's packages); a
    broken build must show, not silently fall back to the portable engine."""
    if sys.platform.startswith("linux"):
        assert fast.available()
    assert 1 <= fast.lanes() <= 4


def test_the_engine_is_chosen_by_argument_or_environment(monkeypatch):
    plan = plan_probes([host("a", 0), host("b", 1)], ["icmp"], gateway=GW)
    monkeypatch.delenv("HYBRIDNB_PROBE_ENGINE", raising=False)
    assert _use_fast(plan, "auto") is fast.available()
    assert _use_fast(plan, "portable") is False
    monkeypatch.setenv("HYBRIDNB_PROBE_ENGINE", "portable")
    assert _use_fast(plan, "auto") is False
    monkeypatch.setenv("HYBRIDNB_PROBE_ENGINE", "quick")
    with pytest.raises(ValidationError):
        _use_fast(plan, "auto")
    monkeypatch.setattr(fast, "_fast", None)                 # as where it is not built
    assert _use_fast(plan, "portable") is False
    monkeypatch.delenv("HYBRIDNB_PROBE_ENGINE")
    assert _use_fast(plan, "auto") is False                  # the portable fallback
    with pytest.raises(EngineError, match="not built"):
        _use_fast(plan, "fast")


def test_outcome_columns_become_results_in_plan_order_worded_as_the_portable_engine():
    from hybridnb.services.probe import _fast

    eps = [host("a", 0), host("b", 1), host("c", 2)]
    plan = plan_probes(eps, ["icmp", "tcp", "udp", "http", "dns"], gateway=GW, count=2)
    out = fast.Outcome(len(plan.pairs), plan.count)
    index = {(p.check.name, p.src.name, p.dst.name): p.index for p in plan.pairs}

    def set_(check, src, dst, code=0, rtts=(), sent=2, status=0):
        k = index[(check, src, dst)]
        out.sent[k], out.received[k], out.error[k], out.status[k] = sent, len(rtts), code, status
        for i, r in enumerate(rtts):
            out.rtt[k * plan.count + i] = r

    for p in plan.pairs:
        set_(p.check.name, p.src.name, p.dst.name, rtts=(1000, 3000))
    set_("icmp", "a", "b", code=_fast.E_ICMP | (3 << 8) | 1)
    set_("icmp", "a", "c", code=_fast.E_ICMP | (11 << 8))
    set_("icmp", "b", "c")                                                     # nothing came
    set_("tcp", "a", "b", code=errno.ECONNREFUSED)
    set_("udp", "a", "b", code=errno.ECONNREFUSED)
    set_("http", "a", "b", code=_fast.E_HTTP | 404, status=404)
    set_("http", "a", "c", code=_fast.E_CLOSED)
    set_("http", "b", "a", code=_fast.E_NOTHTTP)
    set_("dns", "a", "b", code=_fast.E_TOOMANY)
    set_("tcp", "c", "a", code=_fast.E_NONS | errno.ENOENT, sent=0)
    set_("tcp", "c", "b", code=_fast.E_NOSOCK | errno.EMFILE, sent=0)
    set_("http", "b", "c", code=errno.ETIMEDOUT, rtts=(5000,))           # an answer wins
    results = fast.results(plan, out, {})
    assert [(r.check, r.source, r.target) for r in results] == [
        (p.check.name, p.src.name, p.dst.name) for p in plan.pairs]
    by = {(r.check, r.source, r.target): r for r in results}
    assert by["icmp", "a", "b"].reason == UNREACH_CODES[1] == "host unreachable"
    assert by["icmp", "a", "c"].reason == "TTL exceeded"
    assert by["icmp", "b", "c"].reason == "timeout" and by["icmp", "b", "c"].sent == 2
    assert by["tcp", "a", "b"].reason == reason(errno.ECONNREFUSED) == "refused"
    assert by["udp", "a", "b"].reason == "refused (port unreachable)"
    assert by["http", "a", "b"].reason == "HTTP 404" and by["http", "a", "b"].detail == "HTTP 404"
    assert by["http", "a", "c"].reason == "connection closed without a response"
    assert by["http", "b", "a"].reason == "not an HTTP response"
    assert by["dns", "a", "b"].reason == "too many DNS probes from one source"
    assert by["tcp", "c", "a"].reason == ("cannot open sockets in /run/netns/c: network "
                                          "namespace /run/netns/c does not exist")
    assert by["tcp", "c", "b"].reason == ("cannot open sockets in /run/netns/c: [Errno 24] "
                                          "Too many open files")
    ok = by["http", "b", "c"]
    assert ok.ok and ok.rtts == (5e-6,) and ok.received == 1
    green = by["dns", "c", "b"]
    assert green.ok and green.rtts == (1e-6, 3e-6) and green.detail == "10.0.1.11"
    assert green.address == "10.0.1.1" and green.port == 53
    assert by["tcp", "b", "gateway"].port == 7 and by["tcp", "b", "gateway"].ok


def test_skipped_and_failed_sources_and_scripts_come_through_unchanged():
    from hybridnb.services.probe.matrix import ProbeResult

    vm = ProbeEndpoint("v", "10.0.1.200", executor=lambda argv, timeout: (0, "", ""), kind="vm")
    down = ProbeEndpoint("d", "10.0.1.99", kind="container", down="d is not running")
    plan = plan_probes([host("a", 0), vm, down], ["icmp", "tcp"], gateway=GW)
    out = fast.Outcome(len(plan.pairs), plan.count)
    scripts = {i: ProbeResult(plan.pairs[i].check.name, "v", plan.pairs[i].dst.name, True)
               for s in plan.scripts for i in s.pairs}
    results = fast.results(plan, out, scripts)
    by = {(r.check, r.source, r.target): r for r in results}
    assert by["tcp", "d", "a"].reason == "d is not running" and by["tcp", "d", "a"].ok is False
    assert by["tcp", "a", "v"].ok is None and "no tcp service declared" in by["tcp", "a", "v"].reason
    assert all(by[c, "v", t] is scripts[i] for i, (c, t) in
               ((i, (plan.pairs[i].check.name, plan.pairs[i].dst.name)) for i in scripts))
    assert by["icmp", "a", "d"].reason == "timeout"         # probed plainly: nothing came
