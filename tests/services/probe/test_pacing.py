"""Pacing rules of both probe engines (schedule.Pacer, packet_cap, Window.take's pacing), pure."""

from __future__ import annotations

from hybridnb.services.probe import ProbeEndpoint, plan_probes
from hybridnb.services.probe.plan import Unit
from hybridnb.services.probe.schedule import (
    MIN_PACKETS,
    SLOW_GAP,
    STALE,
    Pacer,
    Window,
    packet_cap,
    read_backlog,
)


def test_the_packet_cap_fits_every_lane_twice_over_in_one_cpus_backlog():
    assert packet_cap(1000, 2) == 250              # 2 lanes x 250 = half of 1000
    assert packet_cap(1000, 1) == 500
    assert packet_cap(1000, 4) * 4 * 2 <= 1000
    assert packet_cap(10, 2) == MIN_PACKETS         # never below a useful window
    assert packet_cap(1000, 0) == 500


def test_the_backlog_is_read_from_the_kernel_or_defaults(tmp_path):
    f = tmp_path / "backlog"
    f.write_text("4096\n")
    assert read_backlog(str(f)) == 4096
    f.write_text("junk")
    assert read_backlog(str(f)) == 1000
    assert read_backlog(str(tmp_path / "missing")) == 1000


def test_the_window_holds_at_most_cap_packets_and_answers_free_places():
    p = Pacer(4)
    assert p.room(1.0) == 4
    p.sent(1.0, 3)
    p.sent(1.001)
    assert p.room(1.001) == 0
    p.answered(1.001)                               # by its send time
    assert p.room(1.002) == 1
    p.answered(1.0, 10)                             # more than counted there: not below 0
    assert p.inflight == 0 and p.room(1.002) == 4


def test_a_packet_counts_for_stale_seconds_at_most():
    p = Pacer(2)
    p.sent(1.0, 2)
    assert p.room(1.0 + STALE / 2) == 0             # a dead end: the window is full
    assert p.room(1.0 + STALE) == 2                 # ... for STALE, not for a timeout
    p.answered(1.0)                                 # a late answer changes nothing
    assert p.inflight == 0
    p.sent(2.0)
    p.sent(2.0 + STALE / 2)
    assert p.room(2.0 + STALE) == 1                 # only the older one left


def test_one_probe_at_a_time_towards_a_slow_target():
    p = Pacer(100, slow=[7])
    assert p.is_slow(7) and not p.is_slow(3)
    assert p.slow_free(7, 0.0)
    stamp = p.slow_take(7, 0.0)
    assert not p.slow_free(7, 0.0) and not p.slow_free(7, SLOW_GAP / 2)
    assert p.slow_wait(0.0) == SLOW_GAP
    p.slow_done(7, stamp)                           # answered: the next goes at once
    assert p.slow_free(7, 0.0) and p.slow_wait(0.0) is None


def test_an_unanswered_slow_probe_passes_the_turn_on_after_the_gap():
    p = Pacer(100, slow=[7])
    old = p.slow_take(7, 0.0)
    assert p.slow_free(7, SLOW_GAP)                 # a dead VM does not hold the rest back
    new = p.slow_take(7, SLOW_GAP)
    p.slow_done(7, old)                             # a late answer to the old probe
    assert not p.slow_free(7, SLOW_GAP)             # does not end the new probe's turn
    p.slow_done(7, new)
    assert p.slow_free(7, SLOW_GAP)


def test_the_plan_names_vms_as_slow_targets():
    eps = [ProbeEndpoint("c1", "10.0.1.10", netns="/proc/1/ns/net", kind="container"),
           ProbeEndpoint("h1", "10.0.1.11", netns="/run/netns/h1"),
           ProbeEndpoint("v1", "10.0.1.200", executor=lambda argv, timeout: (0, "", ""),
                         kind="vm")]
    plan = plan_probes(eps, ("icmp",), gateway="10.0.1.1")
    assert [plan.endpoints[k].name for k in plan.slow] == ["v1"]


def _stream(pair: int, target: str) -> Unit:
    return Unit("stream", f"/ns/{target}", (pair,))


def test_units_towards_slow_targets_wait_for_their_turn_and_the_rest_go_on():
    us = [_stream(0, "vm"), _stream(1, "vm"), _stream(2, "a"), _stream(3, "a")]
    slow = {0, 1}
    turn = {"free": True}

    def fits(i: int) -> bool:
        if i in slow:
            if not turn["free"]:
                return False
            turn["free"] = False                    # taken
        return True

    w = Window(us, limit=100)
    assert w.take(fits=fits, slow=lambda i: i in slow) == [2, 3, 0]   # set aside, then taken
    assert w.waiting == [1] and not w.done
    assert w.take(fits=fits, slow=lambda i: i in slow) == []    # the VM's turn is taken
    turn["free"] = True
    w.release(0)
    assert w.take(fits=fits, slow=lambda i: i in slow) == [1] and w.waiting == []
    for i in (1, 2, 3):
        w.release(i)
    assert w.done


def test_admission_stops_where_the_packet_window_is_full():
    p = Pacer(3)
    w = Window([_stream(i, "a") for i in range(5)], limit=100)

    def fits(i: int) -> bool:
        if p.room(0.0) < 1:
            return False
        p.sent(0.0)
        return True

    assert w.take(fits=fits) == [0, 1, 2]
    assert w.take(fits=fits) == []
    p.answered(0.0, 2)
    w.release(0)
    w.release(1)
    assert w.take(fits=fits) == [3, 4]


def test_a_waiting_retry_past_its_deadline_is_dropped():
    us = [Unit("stream", "/ns", (0,), 0), Unit("stream", "/ns", (0,), 1)]
    w = Window(us, limit=10)
    assert w.take(fits=lambda i: i == 0, slow=lambda i: True) == [0]
    assert w.waiting == [1]
    assert w.take(lambda u: True, fits=lambda i: True, slow=lambda i: True) == []
    assert w.dropped == [1] and w.waiting == []


def test_a_source_namespace_has_the_same_icmp_identifier_in_every_run():
    from hybridnb.services.probe.clients import icmp_ident

    a = icmp_ident("/run/netns/hnb-lab-h01")
    assert a == icmp_ident("/run/netns/hnb-lab-h01") and 0 <= a <= 0xFFFF
    assert len({icmp_ident(f"/run/netns/hnb-lab-h{i:02d}") for i in range(200)}) > 190
    # FNV-1a of b"a" is 0xe40c292c; folded: 0xe40c ^ 0x292c
    assert icmp_ident("a") == 0xE40C ^ 0x292C
