"""The lab's DNS zone: record set, reverse zones, NODATA vs NXDOMAIN, serial determinism."""

import ipaddress

import pytest

from hybridnb.core.dnszone import Record, Service, Zone, absolute, reverse_name, reverse_origins


def lab_zone(**kw):
    args = dict(domain="hybrid.local", records={"web": "10.0.1.100", "db": "10.0.1.200"},
                gateway="10.0.1.1", services=[Service("http", "tcp", "web", 80)],
                subnet="10.0.1.0/24")
    args.update(kw)
    return Zone(**args)


def test_forward_and_reverse_records():
    z = lab_zone()
    assert z.lookup("web.hybrid.local", "A").answer == (
        Record("web.hybrid.local.", "A", ("10.0.1.100",), 60),)
    assert z.lookup("gateway.hybrid.local.", "A").answer[0].data == ("10.0.1.1",)
    ptr = z.lookup("100.1.0.10.in-addr.arpa", "PTR")
    assert ptr.rcode == "NOERROR" and ptr.answer[0].data == ("web.hybrid.local.",)
    assert z.lookup("1.1.0.10.in-addr.arpa", "PTR").answer[0].data == ("gateway.hybrid.local.",)
    assert z.origins == ("hybrid.local.", "1.0.10.in-addr.arpa.")


def test_case_insensitive_lookup():
    z = lab_zone()
    assert z.lookup("WeB.HyBrid.LOCAL", "a").answer[0].data == ("10.0.1.100",)


def test_soa_ns_at_every_origin():
    z = lab_zone()
    for origin in z.origins:
        soa = z.lookup(origin, "SOA").answer[0]
        assert soa.data[0] == "gateway.hybrid.local." and soa.data[2] == z.serial
        assert soa.data[-1] == z.ttl
        assert z.lookup(origin, "NS").answer[0].data == ("gateway.hybrid.local.",)


def test_srv_per_endpoint_and_aggregate():
    z = lab_zone(services=[Service("http", "tcp", "web", 80), Service("_http", "_tcp", "db", 8080)])
    one = z.lookup("_http._tcp.web.hybrid.local", "SRV").answer
    assert [r.data for r in one] == [(0, 0, 80, "web.hybrid.local.")]
    agg = z.lookup("_http._tcp.hybrid.local", "SRV").answer
    assert sorted(r.data[3] for r in agg) == ["db.hybrid.local.", "web.hybrid.local."]


def test_nodata_vs_nxdomain():
    z = lab_zone()
    nodata = z.lookup("web.hybrid.local", "AAAA")
    assert nodata.nodata and nodata.authority[0].rtype == "SOA"
    nx = z.lookup("nope.hybrid.local", "A")
    assert nx.rcode == "NXDOMAIN" and nx.authority[0].name == "hybrid.local."
    # empty non-terminal: _tcp.web exists because _http._tcp.web does
    ent = z.lookup("_tcp.web.hybrid.local", "A")
    assert ent.nodata
    rnx = z.lookup("99.1.0.10.in-addr.arpa", "PTR")
    assert rnx.rcode == "NXDOMAIN" and rnx.authority[0].name == "1.0.10.in-addr.arpa."
    assert z.lookup("example.com", "A") is None
    assert z.lookup("0.10.in-addr.arpa", "PTR") is None   # above our reverse zone


def test_any_returns_all_types():
    z = lab_zone()
    types = {r.rtype for r in z.lookup("hybrid.local", "ANY").answer}
    assert types == {"SOA", "NS"}


def test_serial_and_fingerprint_deterministic():
    a, b = lab_zone(), lab_zone(records={"db": "10.0.1.200", "web": "10.0.1.100"})
    assert a.serial == b.serial and a.fingerprint == b.fingerprint and a.to_text() == b.to_text()
    c = lab_zone(records={"web": "10.0.1.100"}, services=[])
    assert c.serial != a.serial


def test_roundtrip_dict():
    z = lab_zone(upstream=("10.0.1.53",))
    assert Zone.from_dict(z.to_dict()) == z
    assert Zone.from_dict(z.to_dict()).to_text() == z.to_text()


def test_addresses_outside_subnet_get_no_ptr():
    z = lab_zone(records={"far": "192.168.5.5"}, services=[])
    assert z.lookup("far.hybrid.local", "A").answer
    assert not any(r.rtype == "PTR" and r.data[0].startswith("far") for r in z.all_records)


def test_reverse_origins():
    net = ipaddress.IPv4Network
    assert reverse_origins(net("10.0.1.0/24")) == ("1.0.10.in-addr.arpa.",)
    assert reverse_origins(net("10.0.1.64/26")) == ("1.0.10.in-addr.arpa.",)
    assert reverse_origins(net("172.16.0.0/16")) == ("16.172.in-addr.arpa.",)
    assert len(reverse_origins(net("10.0.0.0/20"))) == 16
    assert reverse_name("10.0.1.5") == "5.1.0.10.in-addr.arpa."
    assert absolute("A.b") == "a.b."


def test_validation_collects_problems():
    with pytest.raises(ValueError) as err:
        lab_zone(records={"bad name": "10.0.1.5", "gateway": "10.0.1.9"},
                 services=[Service("http", "tcp", "ghost", 80)])
    msg = str(err.value)
    assert "bad name" in msg and "reserved" in msg and "ghost" in msg
