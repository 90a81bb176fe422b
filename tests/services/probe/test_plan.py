"""The probe plan and its file-descriptor window, as plain data (no root, no sockets)."""

from __future__ import annotations

import pytest

from hybridnb.core.resource import Resource
from hybridnb.errors import EngineError, ValidationError
from hybridnb.services.probe import ProbeEndpoint, lab_probe_endpoints, plan_probes
from hybridnb.services.probe.plan import Check, Unit, parse_checks
from hybridnb.services.probe.schedule import Window


def host(name: str, i: int, **kw) -> ProbeEndpoint:
    return ProbeEndpoint(name, f"10.0.1.{10 + i}", netns=f"/run/netns/{name}", **kw)


def vm(name: str, i: int, **kw) -> ProbeEndpoint:
    return ProbeEndpoint(name, f"10.0.1.{200 + i}", executor=lambda argv, timeout: (0, "", ""),
                         kind="vm", **kw)


GW = ProbeEndpoint("gateway", "10.0.1.1", netns="/run/netns/lab", kind="gateway")


def pair(plan, check, src, dst):
    found = [p for p in plan.pairs if (p.check.name, p.src.name, p.dst.name) == (check, src, dst)]
    assert len(found) == 1, (check, src, dst)
    return found[0]


# ------------------------------------------------------------------------------ checks

def test_checks_are_typed_deduplicated_and_every_bad_one_reported():
    assert parse_checks(["icmp", "tcp", "tcp/5432", "http/08080", "tcp"]) == [
        Check("icmp", "icmp"), Check("tcp", "tcp"), Check("tcp/5432", "tcp", 5432),
        Check("http/8080", "http", 8080)]
    assert Check("tcp", "tcp").builtin and not Check("tcp/7", "tcp", 7).builtin
    assert not Check("icmp", "icmp").builtin
    with pytest.raises(ValidationError) as info:
        parse_checks(["icmp", "tcp/99999", "smtp", "dns/53", "udp/x"])
    assert info.value.exit_code == 2
    assert [p.path for p in info.value.problems] == ["checks[1]", "checks[2]", "checks[3]",
                                                     "checks[4]"]


def test_count_below_one_is_a_usage_error():
    with pytest.raises(ValidationError):
        plan_probes([host("a", 0)], ["icmp"], count=0)


# ------------------------------------------------------------------------------- pairs

def test_every_ordered_pair_plus_the_gateway_and_dns_not_to_the_gateway():
    eps = [host("a", 0), host("b", 1), host("c", 2)]
    plan = plan_probes(eps, ["icmp", "dns"], gateway=GW)
    assert plan.sources == ("a", "b", "c") and plan.targets == ("a", "b", "c", "gateway")
    icmp = [(p.src.name, p.dst.name) for p in plan.pairs if p.protocol == "icmp"]
    assert len(icmp) == 3 * 3 and ("a", "a") not in icmp and ("a", "gateway") in icmp
    dns = [p for p in plan.pairs if p.protocol == "dns"]
    assert len(dns) == 3 * 2 and {p.address for p in dns} == {"10.0.1.1"}
    assert {p.port for p in dns} == {53}
    assert [p.index for p in plan.pairs] == list(range(len(plan.pairs)))


def test_a_responder_stands_in_only_for_built_in_checks():
    """Issue 11 #2: tcp/5432 is probed against what really listens, for every kind."""
    eps = [host("h", 0), host("c", 1, kind="container"), vm("v", 0)]
    plan = plan_probes(eps, ["tcp", "tcp/5432", "http/8080", "udp/53"], gateway=GW)
    builtin = pair(plan, "tcp", "v", "c")
    assert (builtin.port, builtin.responder, builtin.skip) == (7, True, None)
    for dst in ("h", "c", "v", "gateway"):
        for check, port in (("tcp/5432", 5432), ("http/8080", 8080), ("udp/53", 53)):
            p = pair(plan, check, "h" if dst != "h" else "c", dst)
            assert (p.port, p.responder, p.skip) == (port, False, None), (check, dst)
    assert {(r.target, r.kind, r.port) for r in plan.responders} == {
        ("h", "stream", 7), ("c", "stream", 7), ("gateway", "stream", 7)}
    # a VM gets no responder: the built-in check has nothing to probe there
    assert "no tcp service declared on v" in pair(plan, "tcp", "h", "v").skip


def test_declared_services_are_probed_for_real_and_get_no_responder():
    eps = [host("a", 0), host("db", 1, services=("tcp/5432", "http/8080")),
           vm("v", 0, services=("http/80", "tcp/80", "udp/7"))]
    plan = plan_probes(eps, ["tcp", "http", "udp"], gateway=GW)
    assert (pair(plan, "tcp", "a", "db").port, pair(plan, "tcp", "a", "db").responder) == \
        (5432, False)
    assert (pair(plan, "http", "a", "db").port, pair(plan, "http", "a", "db").responder) == \
        (8080, False)
    assert pair(plan, "udp", "a", "db").responder is True            # nothing declared for udp
    for check, port in (("tcp", 80), ("http", 80), ("udp", 7)):
        p = pair(plan, check, "a", "v")
        assert (p.port, p.responder, p.skip) == (port, False, None)


def test_an_asserted_port_gets_no_responder_even_for_a_built_in_check_on_it():
    plan = plan_probes([host("a", 0), host("b", 1)], ["tcp", "tcp/7"], gateway=GW)
    assert not plan.responders
    assert pair(plan, "tcp", "a", "b").port == 7 and not pair(plan, "tcp", "a", "b").responder


def test_without_responders_built_in_checks_probe_what_listens():
    plan = plan_probes([host("a", 0), host("b", 1)], ["tcp", "http"], gateway=GW,
                       responders=False)
    assert plan.responders == ()
    p = pair(plan, "http", "a", "b")
    assert (p.port, p.responder, p.skip) == (80, False, None)


def test_a_down_source_fails_and_a_down_target_is_probed_plainly():
    eps = [host("a", 0), ProbeEndpoint("c3", "10.0.1.99", kind="container",
                                       down="c3 is not running")]
    plan = plan_probes(eps, ["icmp", "tcp"], gateway=GW)
    out = pair(plan, "tcp", "c3", "a")
    assert out.fail == "c3 is not running" and not out.runnable
    into = pair(plan, "tcp", "a", "c3")
    assert into.runnable and not into.responder and into.port == 7
    assert all(p.src.name != "c3" for u in plan.units for p in (plan.pairs[i] for i in u.pairs))


def test_a_source_without_a_way_in_is_skipped_and_no_dns_server_skips_dns():
    eps = [host("a", 0), ProbeEndpoint("x", "10.0.1.50")]
    plan = plan_probes(eps, ["icmp", "dns"])
    assert pair(plan, "icmp", "x", "a").skip.startswith("cannot probe from x")
    assert pair(plan, "dns", "a", "x").skip == "no DNS server given"


# ------------------------------------------------------------------------------- units

def test_units_group_icmp_and_dns_per_source_then_go_target_by_target():
    eps = [host("a", 0), host("b", 1), vm("v", 0)]
    plan = plan_probes(eps, ["icmp", "dns", "udp", "tcp", "http"], gateway=GW, count=3)
    kinds = [(u.kind, u.attempt) for u in plan.units]
    # 2 socket sources (the VM probes by script): one icmp and one dns unit each
    assert kinds[:4] == [("icmp", 0), ("icmp", 0), ("dns", 0), ("dns", 0)]
    assert all(len(plan.units[i].pairs) == 3 for i in (0, 1))        # 2 targets + gateway
    # then target by target: every first attempt towards it, then its retries
    singles = [u for u in plan.units if u.kind in ("udp", "stream")]
    targets = [plan.pairs[u.pairs[0]].dst.name for u in singles]
    assert targets == sorted(targets, key=["a", "b", "v", "gateway"].index)
    for t in set(targets):
        attempts = [u.attempt for u in singles if plan.pairs[u.pairs[0]].dst.name == t]
        assert attempts == sorted(attempts) and attempts[0] == 0     # no retry before a first
    streams = [u for u in plan.units if u.kind == "stream"]
    http = [u for u in streams if plan.pairs[u.pairs[0]].protocol == "http"]
    # sources x (the other host, the gateway): TCP x count attempts, HTTP one unit per pair
    # (its count requests on one keep-alive connection); to the VM skipped (no service)
    assert len(streams) - len(http) == 2 * 2 * 3
    assert len(http) == 2 * 2 and all(u.attempt == 0 for u in http)
    to_ours = [u for u in http if plan.pairs[u.pairs[0]].responder]
    assert to_ours and all(u.fds == 2 for u in to_ours)               # + the accepted conn
    assert all(u.responder >= 0 for u in to_ours)
    for u in plan.units:                          # a unit names the responder its pair probes
        spec = plan.pairs[u.pairs[0]]
        if u.responder >= 0:
            r = plan.responders[u.responder]
            assert (r.target, r.address) == (spec.dst.name, spec.dst.address) and spec.responder
        elif u.kind in ("udp", "stream"):
            assert not spec.responder
    assert plan.fds_needed == len(plan.responders) + sum(u.fds for u in plan.units)
    (script,) = plan.scripts
    assert script.src.name == "v" and {plan.pairs[i].src.name for i in script.pairs} == {"v"}
    # the responders the VM's script probes are held open for the whole run
    assert plan.held and {plan.responders[r].target for r in plan.held} == {"a", "b", "gateway"}


def test_the_window_is_the_budget_or_a_clear_error():
    """Responders open and close with the units towards them, so they share the window."""
    plan = plan_probes([host("a", 0), host("b", 1)], ["tcp", "udp"], gateway=GW)
    assert len(plan.responders) == 6
    assert plan.window(100) == 100
    with pytest.raises(EngineError, match="ulimit -n"):
        plan.window(7)


def _reference_pair(index, check, src, dst, dns_server, stand_in):
    """The planning rule for one pair, as it was written pair by pair (before the plan
    became columns): the compact plan must say exactly this for every pair."""
    from hybridnb.services.probe.plan import PairSpec, _port_for

    port = _port_for(check, dst)
    address = (dns_server or "") if check.protocol == "dns" else dst.address
    skip = fail = None
    responder = False
    if src.down is not None:
        fail = src.down
    elif not src.can_source:
        skip = f"cannot probe from {src.name}: no network namespace and no executor"
    elif check.protocol == "dns" and not dns_server:
        skip = "no DNS server given"
    elif check.builtin and not dst.declares(check.protocol, port or 0):
        if stand_in and dst.reachable and dst.down is None:
            responder = True
        elif not dst.reachable and dst.down is None:
            skip = (f"no {check.protocol} service declared on {dst.name} and no responder "
                    f"can be placed in a {dst.kind}")
    return PairSpec(index, check, src, dst, port, address, skip, fail, responder)


@pytest.mark.parametrize("responders", [True, False])
@pytest.mark.parametrize("dns", [None, "10.0.1.53"])
def test_the_compact_plan_says_what_the_pair_by_pair_rule_says(responders, dns):
    from hybridnb.services.probe.plan import _asserted, _port_for, _responder_kind, parse_checks

    eps = [host("a", 0), host("db", 1, services=("tcp/5432", "http/8080")),
           ProbeEndpoint("c3", "10.0.1.99", kind="container", down="c3 is not running"),
           vm("v", 0, services=("udp/7",)), ProbeEndpoint("x", "10.0.1.50"),
           host("e", 2, kind="container")]
    names = ["icmp", "tcp", "udp", "http", "dns", "tcp/5432", "udp/7"]
    plan = plan_probes(eps, names, gateway=GW, dns_server=dns, responders=responders)
    checks = parse_checks(names)
    targets = eps + [GW]
    blocked = _asserted(checks, targets) if responders else set()
    expected = []
    for check in checks:
        for src in eps:
            for dst in targets:
                if dst is src or (check.protocol == "dns" and dst.kind == "gateway"):
                    continue
                stand_in = responders and (dst.name, _responder_kind(check.protocol),
                                           _port_for(check, dst)) not in blocked
                expected.append(_reference_pair(len(expected), check, src, dst,
                                                dns or GW.address, stand_in))
    assert len(plan.pairs) == len(expected)
    assert list(plan.pairs) == expected
    assert [plan.pairs[i] for i in range(len(expected))] == expected
    assert plan.pairs[-1] == expected[-1] and plan.pairs[2:5] == tuple(expected[2:5])
    with pytest.raises(IndexError):
        plan.pairs[len(expected)]
    # every runnable pair from a socket source is in exactly one unit; script pairs in scripts
    in_units = [i for u in plan.units if u.attempt == 0 for i in u.pairs]
    assert len(in_units) == len(set(in_units))
    runnable = {p.index for p in expected if p.runnable and p.src.netns is not None}
    assert set(in_units) == runnable
    assert {i for s in plan.scripts for i in s.pairs} == {
        p.index for p in expected if p.runnable and p.src.netns is None}
    wanted = {(p.dst.name, _responder_kind(p.protocol), p.port or 0)
              for p in expected if p.responder and p.runnable}
    assert {(r.target, r.kind, r.port) for r in plan.responders} == wanted


# ------------------------------------------------------------------------------ window

def units(n: int, retries: int = 0, fds: int = 1) -> list[Unit]:
    return [Unit("stream", "/ns", (i,), 0, fds) for i in range(n)] + \
        [Unit("stream", "/ns", (i,), 1, fds) for i in range(retries)]


def test_when_everything_fits_the_first_take_admits_everything():
    w = Window(units(50, 50), limit=1000)
    assert w.take() == list(range(100)) and w.batches == 1
    assert w.take() == []
    for i in range(100):
        w.release(i)
    assert w.done


def test_under_a_limit_units_go_in_chunks_and_the_window_never_overflows():
    w = Window(units(100, fds=2), limit=40)
    first = w.take()
    assert len(first) == 20 and w.in_flight == 40
    assert w.take() == []                          # full
    for i in first[:2]:
        w.release(i)
    assert w.take() == []                          # 4 free: less than a chunk (5)
    for i in first[2:4]:
        w.release(i)
    assert w.take() == [20, 21, 22, 23]            # a chunk's worth is free again
    assert w.in_flight <= w.limit


def test_a_responder_opens_with_the_first_unit_towards_it_and_closes_after_the_last():
    us = [Unit("stream", "/ns", (0,), 0, 1, responder=0), Unit("stream", "/ns", (1,), 0, 1, 0),
          Unit("stream", "/ns", (2,), 0, 1, responder=1), Unit("udp", "/ns", (3,))]
    w = Window(us, limit=3, responders=2)
    assert w.take() == [0, 1] and w.opening == [0] and w.in_flight == 3   # 2 units + 1
    assert w.take() == []                                     # unit 2 needs 2: 1 + its responder
    w.release(0)
    assert w.closing == [] and w.take() == []                 # responder 0 still in use
    w.release(1)
    assert w.closing == [0] and w.in_flight == 0
    w.closing.clear()
    assert w.take() == [2, 3] and w.opening == [1] and w.in_flight == 3
    w.release(3)
    w.release(2)
    assert w.closing == [1] and w.done and w.in_flight == 0


def test_held_responders_open_at_once_and_close_only_when_released():
    us = [Unit("stream", "/ns", (0,), 0, 1, responder=0)]
    w = Window(us, limit=10, responders=2, held=[0, 1])
    assert w.take() == [0] and sorted(w.opening) == [0, 1] and w.in_flight == 3
    w.release(0)
    assert w.closing == [] and w.in_flight == 2               # held for the scripts
    w.release_held()
    assert sorted(w.closing) == [0, 1] and w.in_flight == 0 and w.done


def test_a_dropped_retry_lets_its_responder_close():
    us = [Unit("stream", "/ns", (0,), 0, 1, responder=0), Unit("stream", "/ns", (0,), 1, 1, 0)]
    w = Window(us, limit=2, responders=1)                     # the retry does not fit yet
    assert w.take() == [0]
    w.release(0)
    assert w.closing == []
    assert w.take(lambda u: True) == [] and w.dropped == [1] and w.closing == [0]


def test_retries_past_their_pairs_deadline_are_dropped_not_sent():
    w = Window(units(4, retries=4), limit=4)
    first = w.take()
    assert first == [0, 1, 2, 3]
    for i in first:
        w.release(i)
    stale = {1, 3}
    assert w.take(lambda u: u.pairs[0] in stale) == [4, 6]
    assert w.dropped == [5, 7]
    w.release(4)
    w.release(6)
    assert w.done


# ------------------------------------------------------------------------- lab endpoints

def test_lab_probe_endpoints_from_plain_facts():
    resources = [
        Resource("bridge", "hybr0", {}),
        Resource("host", "h1", {"address": "10.0.1.10", "netns": "hnb-lab-h1"}),
        Resource("container", "web", {"address": "10.0.1.100"}),
        Resource("container", "stopped", {"address": "10.0.1.101"}),
        Resource("vm", "v1", {"address": "10.0.1.200", "template": "test",
                              "mac": "52:54:00:00:00:01"}),
    ]
    made = []

    def executor(name):
        made.append(name)
        return lambda argv, timeout: (0, "", "")

    ways = {"host": {"h1": "/run/netns/hnb-lab-h1"}, "container": {"web": "/proc/42/ns/net"},
            "vm": executor}
    eps, gw = lab_probe_endpoints(
        [r for r in resources if r.kind != "bridge"],
        {"web": ("http/80",), "v1": ("tcp/5432", "http/80", "tcp/80", "udp/7")}, ways,
        gateway="10.0.1.1", gateway_netns="hnb-sandbox")
    by = {e.name: e for e in eps}
    assert [e.name for e in eps] == ["h1", "stopped", "v1", "web"]
    assert by["h1"].netns == "/run/netns/hnb-lab-h1" and by["h1"].kind == "host"
    assert by["web"].netns == "/proc/42/ns/net" and by["web"].services == ("http/80",)
    assert by["stopped"].down == "stopped is not running" and not by["stopped"].can_source
    assert by["v1"].services == ("tcp/5432", "http/80", "tcp/80", "udp/7")
    assert by["v1"].mac == "52:54:00:00:00:01" and made == ["v1"] and by["v1"].can_source
    assert (gw.name, gw.address, gw.netns, gw.kind) == ("gateway", "10.0.1.1",
                                                        "/run/netns/hnb-sandbox", "host")
    no_vms, _ = lab_probe_endpoints([r for r in resources if r.kind == "vm"], {}, {},
                                    gateway="10.0.1.1", gateway_netns=None)
    assert no_vms[0].down == "v1 is not running"


# ------------------------------------------------------------------ http heads (both engines)

def test_an_http_head_says_whether_its_connection_carries_the_next_request():
    from hybridnb.services.probe.clients import head_end, head_keeps

    assert head_end(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") == 38
    assert head_end(b"HTTP/1.0 200 OK\n\nok") == 17 and head_end(b"HTTP/1.1 200 OK\r\n") == -1
    ok11 = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n"
    assert head_keeps(ok11, response=True) == (True, 9, False)
    assert head_keeps(ok11 + b"Connection: close\r\n", response=True)[0] is False
    assert head_keeps(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n", response=True)[0] is False
    assert head_keeps(b"HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\n", response=True) == \
        (True, None, False)
    assert head_keeps(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n", response=True) == \
        (True, None, True)
    # requests: HTTP/1.1 keeps unless it says close (the probe's own request keeps)
    from hybridnb.services.probe.clients import http_request
    assert head_keeps(http_request("h01.lab"), response=False)[0] is True
    assert head_keeps(b"GET / HTTP/1.0\r\nHost: x\r\nConnection: close\r\n", False)[0] is False
    assert head_keeps(b"GET / HTTP/1.1\r\nConnection: close\r\n", response=False)[0] is False
