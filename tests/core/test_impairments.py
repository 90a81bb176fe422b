"""Link impairments: strict units, every problem at once, and where each impairment goes."""

from __future__ import annotations

import pytest

from hybridnb.core.impairments import (Capabilities, Impairment, check_placements,
                                       format_loss, format_rate, format_time, parse_links,
                                       parse_loss, parse_rate, parse_time, placement)
from hybridnb.errors import ValidationError

NAMES = ["db", "web", "h1"]


@pytest.mark.parametrize("text,us", [("20ms", 20000), ("1.5ms", 1500), ("250us", 250),
                                     ("1s", 1000000), ("0ms", 0), (" 5 MS ", 5000)])
def test_times(text, us):
    assert parse_time(text) == (us, None)


@pytest.mark.parametrize("value,why", [
    (20, "20 has no unit (write e.g. 20ms)"),
    ("20", "'20' is not a duration"),
    ("20sec", "'20sec' is not a duration"),
    ("0.5us", "finer than a microsecond"),
    ("61s", "longer than 60s"),
    (None, "expected a duration like 20ms"),
])
def test_bad_times(value, why):
    got, msg = parse_time(value)
    assert got is None and why in msg


@pytest.mark.parametrize("text,loss", [("1%", 100), ("0.25%", 25), ("100%", 10000),
                                       ("12.5%", 1250), ("0%", 0)])
def test_losses(text, loss):
    assert parse_loss(text) == (loss, None)


@pytest.mark.parametrize("value,why", [(1, "1 has no unit (write 1%)"),
                                       ("0.125%", "two decimals at most"),
                                       ("101%", "more than 100%"), ("1", "not a percentage")])
def test_bad_losses(value, why):
    got, msg = parse_loss(value)
    assert got is None and why in msg


@pytest.mark.parametrize("text,bps", [("100mbit", 100_000_000), ("512kbit", 512_000),
                                      ("1.5Gbit", 1_500_000_000), ("8000bit", 8000),
                                      ("10Mbit", 10_000_000)])
def test_rates(text, bps):
    assert parse_rate(text) == (bps, None)


@pytest.mark.parametrize("value,why", [
    ("100mbps", "tc reads mbps as bytes per second (write 100mbit"),
    ("100", "not a rate"), (100, "100 has no unit"), ("1kbit", "outside 8kbit-32gbit"),
    ("40gbit", "outside 8kbit-32gbit"), ("10mb", "unknown rate unit 'mb'"),
])
def test_bad_rates(value, why):
    got, msg = parse_rate(value)
    assert got is None and why in msg


def test_parse_links_all_problems_at_once():
    with pytest.raises(ValidationError) as exc:
        parse_links({"db": {"delay": "20", "jitter": "5ms", "loss": "1", "rate": "10mbps",
                            "mtu": 100, "dealy": "1ms"},
                     "wbe": {"delay": "1ms"}, "h1": {}, "web": "fast"}, NAMES)
    got = [str(p) for p in exc.value.problems]
    assert got == [
        "links.db.dealy: unknown key 'dealy' (hint: did you mean 'delay'?)",
        "links.db.delay: '20' is not a duration (write e.g. 20ms, 1.5ms, 250us or 1s) "
        "(hint: write e.g. 20ms)",
        "links.db.jitter: jitter needs a delay (hint: add delay: (jitter varies the delay "
        "around it))",
        "links.db.loss: '1' is not a percentage (write e.g. 1%, 0.25% — two decimals at most) "
        "(hint: write e.g. 1%)",
        "links.db.mtu: 100 is outside 576-65535 (hint: write e.g. 1400)",
        "links.db.rate: '10mbps' is ambiguous: tc reads mbps as bytes per second (write "
        "10mbit for bits per second) (hint: write e.g. 100mbit)",
        "links.h1: no impairment given (hint: give one of delay, jitter, loss, rate, mtu, or "
        "remove the entry)",
        "links.wbe: unknown endpoint 'wbe' (hint: did you mean 'web'?)",
        "links.web: expected a mapping of impairments (hint: write e.g. {delay: 20ms, "
        "loss: 1%, rate: 100mbit})",
    ]


def test_parse_links_ok_and_round_trip():
    links = parse_links({"db": {"delay": "20ms", "jitter": "5ms", "loss": "1.5%",
                                "rate": "100mbit"}, "web": {"mtu": 1400}}, NAMES)
    assert list(links) == ["db", "web"]
    db = links["db"]
    assert (db.delay_us, db.jitter_us, db.loss, db.rate, db.mtu) == \
        (20000, 5000, 150, 100_000_000, None)
    assert db.describe() == "delay 20ms jitter 5ms loss 1.5% rate 100mbit"
    assert Impairment.from_spec("db", db.to_spec()) == db
    assert str(links["web"]) == "web: mtu 1400"
    assert parse_links(None, NAMES) == {}


def test_formatting():
    assert [format_time(t) for t in (1_000_000, 20_000, 1500)] == ["1s", "20ms", "1500us"]
    assert [format_loss(x) for x in (100, 150, 25, 1250)] == ["1%", "1.5%", "0.25%", "12.5%"]
    assert [format_rate(r) for r in (10**9, 10**7, 512_000, 1500)] == \
        ["1gbit", "10mbit", "512kbit", "1500bit"]


# ------------------------------------------------------------------------------ placement

HERE = Capabilities(netem=False, tbf=True, ifb=True, nft_numgen=True)
MOST = Capabilities(netem=True, tbf=True, ifb=True, nft_numgen=True)


def test_placement_with_host_netem_goes_on_the_port():
    imp = Impairment("db", 50000, 5000, 2000, 10_000_000, 1400)
    for kind in ("vm", "container", "host"):
        where, probs = placement(imp, kind, MOST)
        assert probs == [] and where.port_netem == (50000, 5000) and where.guest_netem is None
        assert (where.rate, where.loss, where.mtu) == (10_000_000, 2000, 1400)


def test_placement_without_host_netem():
    imp = Impairment("db", 50000, None, 2000, 10_000_000)
    where, probs = placement(imp, "vm", Capabilities(**{**HERE.__dict__, "guest_netem": True}))
    assert probs == [] and where.guest_netem == (50000, 0) and where.port_netem is None
    where, probs = placement(imp, "vm", HERE)
    assert [p.path for p in probs] == ["links.db.delay"]
    assert "no tc with netem" in probs[0].message
    where, probs = placement(Impairment("web", 50000), "container", HERE)
    assert str(probs[0]) == (
        "links.web.delay: this host's kernel has no netem qdisc (sch_netem), and a container "
        "shares the host's kernel: delay and jitter cannot be given to it here (hint: use a "
        "host kernel with CONFIG_NET_SCH_NETEM (most distributions' kernels), or put the "
        "delay on a VM endpoint)")
    # rate and loss need no netem
    assert placement(Impairment("web", loss=100, rate=10**6), "container", HERE)[1] == []


def test_placement_missing_tbf_ifb_numgen():
    bare = Capabilities(netem=False, tbf=False, ifb=False, nft_numgen=False)
    _, probs = placement(Impairment("h1", rate=10**6, loss=100), "host", bare)
    assert [p.path for p in probs] == ["links.h1.rate", "links.h1.loss"]
    assert "no sch_tbf and no IFB devices" in probs[0].message


def test_check_placements_refuses_everything_at_once():
    with pytest.raises(ValidationError) as exc:
        check_placements({"web": Impairment("web", 1000), "h1": Impairment("h1", 1000),
                          "db": Impairment("db", 1000)},
                         {"web": "container", "h1": "host", "db": "vm"}, HERE)
    assert [p.path for p in exc.value.problems] == ["links.db.delay", "links.h1.delay",
                                                    "links.web.delay"]
    ok = check_placements({"db": Impairment("db", loss=5)}, {"db": "vm"}, HERE)
    assert ok["db"].loss == 5
