"""The lab's DNS server for real: started by the dns driver in a private namespace, asked by
dig and dnspython over UDP and TCP (A, PTR, SRV, NODATA, NXDOMAIN, case, EDNS0, truncation),
an outside client refused, records following the lab without a restart, the query log; and
forwarding of out-of-lab names to an upstream (dnsmasq on the namespace's loopback): answers
and NXDOMAIN passed through, SERVFAIL in bounded time from a silent or unreachable upstream,
still no open resolver."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from hybridnb.core.resource import Observation, Resource
from hybridnb.drivers.dns import DnsDriver
from hybridnb.target import Target

from .netns_helpers import LabNetns, require_root

pytestmark = pytest.mark.real

GW = "10.77.1.1"
OUTSIDE = "10.99.0.2"            # a client in a namespace of its own, outside the lab subnet
HOST_OTHER = "10.99.0.1"         # another address of the lab host itself
LAB = "dt"
RECORDS = {"web": "10.77.1.100", "db": "10.77.1.200", "h1": "10.77.1.10"}
SERVICES = [{"service": "http", "proto": "tcp", "endpoint": "web", "port": 80}] + [
    {"service": "many", "proto": "tcp", "endpoint": "h1", "port": 1000 + i} for i in range(80)]


def spec(records=RECORDS, upstream=()):
    return {"domain": "hybrid.local", "listen": GW, "subnet": "10.77.1.0/24", "gateway": GW,
            "bridge": "lab0", "records": dict(records), "upstream": list(upstream),
            "services": [s for s in SERVICES if s["endpoint"] in records]}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_root("dig", "nsenter", "ip")
    pytest.importorskip("dns.message")
    ns = LabNetns("dt", [f"{GW}/24", f"{HOST_OTHER}/24"])
    ns.outside = ns.client("dto", f"{OUTSIDE}/24", via=HOST_OTHER)
    driver = DnsDriver(Target("dnstest", netns=ns.name), tmp_path_factory.mktemp("state"))
    try:
        driver.create(LAB, Resource("dns", LAB, spec()))
        yield ns, driver
    finally:
        driver.delete(LAB, LAB)
        ns.close()


def ask(ns, name, rdtype, *, edns=-1, payload=1232, tcp=False, source=None, want_dnssec=False,
        timeout=3):
    import dns.message
    import dns.query

    q = dns.message.make_query(name, rdtype, use_edns=edns, payload=payload,
                               want_dnssec=want_dnssec)
    if tcp:
        s = ns.socket_in(socket.SOCK_STREAM, connect=(GW, 53))
        s.setblocking(False)
        with s:
            r = dns.query.tcp(q, GW, timeout=timeout, sock=s)
    else:
        s = ns.socket_in(bind=(source, 0) if source else None)
        s.setblocking(False)
        with s:
            r = dns.query.udp(q, GW, timeout=timeout, sock=s)
    assert r.id == q.id
    return r


def dig(ns, *args):
    return ns.exec("dig", f"@{GW}", "+tries=1", "+time=2", *args).stdout


def test_a_ptr_srv_soa_ns(lab):
    import dns.rcode

    ns, _ = lab
    r = ask(ns, "web.hybrid.local", "A")
    assert r.rcode() == dns.rcode.NOERROR and r.flags & 0x0400          # AA
    assert not r.flags & 0x0020 and not r.flags & 0x0080                # no AD, no RA
    assert [rr.address for rr in r.answer[0]] == ["10.77.1.100"]
    assert dig(ns, "+short", "db.hybrid.local").split() == ["10.77.1.200"]
    assert dig(ns, "+short", "gateway.hybrid.local").split() == [GW]
    assert dig(ns, "+short", "-x", "10.77.1.100").split() == ["web.hybrid.local."]
    assert dig(ns, "+short", "-x", GW).split() == ["gateway.hybrid.local."]
    srv = dig(ns, "+short", "_http._tcp.web.hybrid.local", "SRV").split()
    assert srv == ["0", "0", "80", "web.hybrid.local."]
    soa = ask(ns, "hybrid.local", "SOA").answer[0][0]
    assert soa.mname.to_text() == "gateway.hybrid.local."
    assert dig(ns, "+short", "hybrid.local", "NS").split() == ["gateway.hybrid.local."]


def test_nodata_and_nxdomain_carry_soa(lab):
    import dns.rcode
    import dns.rdatatype

    ns, _ = lab
    nodata = ask(ns, "web.hybrid.local", "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA
    nx = ask(ns, "nothere.hybrid.local", "A")
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority[0].rdtype == dns.rdatatype.SOA
    assert "status: NXDOMAIN" in dig(ns, "nothere.hybrid.local")
    rnx = ask(ns, "99.1.77.10.in-addr.arpa", "PTR")
    assert rnx.rcode() == dns.rcode.NXDOMAIN
    assert rnx.authority[0].name.to_text() == "1.77.10.in-addr.arpa."


def test_question_case_preserved(lab):
    ns, _ = lab
    for edns in (-1, 0):
        r = ask(ns, "WeB.HyBrId.LoCaL", "A", edns=edns)
        assert r.question[0].name.to_text() == "WeB.HyBrId.LoCaL."
        assert r.answer[0].name.to_text() == "WeB.HyBrId.LoCaL."
    assert "WeB.HyBrId.LoCaL." in dig(ns, "WeB.HyBrId.LoCaL", "+noall", "+answer")


def test_edns0(lab):
    import dns.rcode

    ns, _ = lab
    r = ask(ns, "web.hybrid.local", "A", edns=0, payload=4096, want_dnssec=True)
    assert r.edns == 0 and r.payload == 1232 and r.ednsflags & 0x8000    # DO copied
    r = ask(ns, "web.hybrid.local", "A", edns=0, payload=512)
    assert r.edns == 0 and not r.ednsflags & 0x8000
    assert "EDNS: version: 0" in dig(ns, "web.hybrid.local")              # dig sends a cookie
    bad = ask(ns, "web.hybrid.local", "A", edns=1)
    assert bad.rcode() == dns.rcode.BADVERS


def test_truncation_and_tcp_fallback(lab):
    import dns.flags

    ns, _ = lab
    name = "_many._tcp.h1.hybrid.local"
    udp = ask(ns, name, "SRV")
    assert udp.flags & dns.flags.TC and not udp.answer
    udp_edns = ask(ns, name, "SRV", edns=0, payload=4096)
    assert udp_edns.flags & dns.flags.TC                                   # > 1232 bytes
    tcp = ask(ns, name, "SRV", tcp=True)
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 80
    out = dig(ns, name, "SRV", "+noall", "+answer")
    assert len(out.strip().splitlines()) == 80                             # dig retried on TCP
    agg = ask(ns, "_http._tcp.hybrid.local", "SRV", tcp=True)
    assert [rr.target.to_text() for rr in agg.answer[0]] == ["web.hybrid.local."]


def test_outside_client_is_refused(lab):
    import dns.rcode

    ns, _ = lab
    r = ask(ns.outside, "web.hybrid.local", "A")
    assert r.rcode() == dns.rcode.REFUSED and not r.answer
    inside = ask(ns, "web.hybrid.local", "A", source=GW)
    assert inside.rcode() == dns.rcode.NOERROR and inside.answer


def test_the_lab_host_itself_is_answered_from_any_of_its_addresses(lab):
    """Docker masquerades the lab subnet leaving by any interface but the bridge — also the
    lab host's queries to its own gateway address, which leave by ``lo`` with the source
    rewritten to another of the host's addresses.  The lab host is never an outsider."""
    import dns.rcode

    ns, _ = lab
    r = ask(ns, "web.hybrid.local", "A", source=HOST_OTHER)
    assert r.rcode() == dns.rcode.NOERROR and r.answer


def test_out_of_zone_refused_without_upstream(lab):
    import dns.rcode

    ns, _ = lab
    assert ask(ns, "example.com", "A").rcode() == dns.rcode.REFUSED


def test_records_follow_the_lab(lab):
    import dns.rcode

    ns, driver = lab
    before = driver.status(LAB)
    added = dict(RECORDS, new1="10.77.1.50")
    t0 = time.monotonic()
    driver.update(LAB, Resource("dns", LAB, spec(added)))
    while ask(ns, "new1.hybrid.local", "A").rcode() != dns.rcode.NOERROR:
        assert time.monotonic() - t0 < 1.0, "new name not served within 1 s"
        time.sleep(0.02)
    assert time.monotonic() - t0 < 1.0
    assert dig(ns, "+short", "-x", "10.77.1.50").split() == ["new1.hybrid.local."]
    assert driver.status(LAB)["pid"] == before["pid"]                       # no restart
    removed = {k: v for k, v in added.items() if k != "db"}
    t0 = time.monotonic()
    driver.update(LAB, Resource("dns", LAB, spec(removed)))
    while ask(ns, "db.hybrid.local", "A").rcode() != dns.rcode.NXDOMAIN:
        assert time.monotonic() - t0 < 1.0, "removed name still served after 1 s"
        time.sleep(0.02)
    assert [r.name for r in driver.records(LAB) if r.name.startswith("db.")] == []
    driver.update(LAB, Resource("dns", LAB, spec()))
    assert ask(ns, "db.hybrid.local", "A").rcode() == dns.rcode.NOERROR


def test_query_log_and_observe(lab):
    ns, driver = lab
    ask(ns, "h1.hybrid.local", "A")
    ask(ns, "ghost.hybrid.local", "A")
    entries = driver.query_log(LAB, 50)       # at once: the server writes what it holds first
    ghost = [e for e in entries if e.name == "ghost.hybrid.local."][-1]
    assert ghost.rcode == "NXDOMAIN" and ghost.type == "A" and ghost.latency_us >= 0
    assert any(e.name == "h1.hybrid.local." and e.rcode == "NOERROR" for e in entries)
    assert driver.observe(LAB) == {LAB: Observation(Resource("dns", LAB, spec()).fingerprint)}
    pid = driver.status(LAB)["pid"]
    assert os.getsid(pid) != os.getsid(0)           # own session: outlives the kernel


def test_lifecycle_create_delete(tmp_path):
    require_root("nsenter", "ip")
    ns = LabNetns("dl", [f"{GW}/24"])
    driver = DnsDriver(Target("dnstest", netns=ns.name), tmp_path)
    try:
        res = Resource("dns", "other", spec())
        driver.create("lc", res)
        driver.create("lc", res)                    # re-create converges
        pid = driver.status("lc")["pid"]
        assert driver.observe("lc") == {"other": Observation(res.fingerprint)}
        driver.delete("lc", "other")
        assert driver.observe("lc") == {} and not (tmp_path / "lc" / "dns").exists()
        assert not os.path.exists(f"/proc/{pid}") or \
            open(f"/proc/{pid}/stat").read().split(") ")[1][0] in "ZX"
        driver.delete("lc", "other")                # already gone: fine
        from hybridnb.errors import EngineError
        bad = dict(spec(), listen="10.55.0.1")       # address not in the namespace
        with pytest.raises(EngineError) as err:
            driver.create("lc", Resource("dns", "other", bad))
        assert "assign" in str(err.value)
        assert driver.observe("lc") == {}
        # two servers on one address: the second fails, it does not share the queries
        driver.create("lc", res)
        rival = DnsDriver(Target("dnstest", netns=ns.name), tmp_path / "rival")
        with pytest.raises(EngineError) as err:
            rival.create("lc2", Resource("dns", "rival", spec()))
        assert "already in use" in str(err.value)
        assert rival.observe("lc2") == {} and driver.status("lc")["pid"] != pid
    finally:
        driver.delete("lc", "other")
        ns.close()


# ------------------------------------------------------------------------ forwarding
UPSTREAM = "127.0.0.2"          # dnsmasq, on the test namespace's loopback
SILENT = "127.0.0.3"            # a socket that reads and never answers
UNROUTABLE = "10.77.9.9"        # a 'prohibit' route in the namespace: sendto fails at once


@pytest.fixture(scope="module")
def fwd(tmp_path_factory):
    require_root("dig", "nsenter", "ip", "dnsmasq")
    pytest.importorskip("dns.message")
    tmp = tmp_path_factory.mktemp("fwd")
    ns = LabNetns("df", [f"{GW}/24", f"{HOST_OTHER}/24"])
    ns.outside = ns.client("dfo", f"{OUTSIDE}/24", via=HOST_OTHER)
    driver = DnsDriver(Target("dnstest", netns=ns.name), tmp / "state")
    dnsmasq = None
    try:
        ns.exec("ip", "addr", "add", f"{UPSTREAM}/8", "dev", "lo")
        ns.exec("ip", "route", "add", "prohibit", f"{UNROUTABLE}/32")
        # nsenter execs dnsmasq: the Popen pid is dnsmasq's
        dnsmasq = subprocess.Popen(
            ["nsenter", f"--net={ns.path}", "dnsmasq", "--keep-in-foreground", "-C", "/dev/null",
             "--no-resolv", "--no-hosts", f"--listen-address={UPSTREAM}", "--bind-interfaces",
             "--port", "53", "--host-record=outside.example,192.0.2.7", "--local=/example/",
             f"--pid-file={tmp / 'dnsmasq.pid'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while ns.exec("dig", f"@{UPSTREAM}", "+short", "+tries=1", "+time=1",
                      "outside.example", check=False).stdout.strip() != "192.0.2.7":
            assert dnsmasq.poll() is None and time.monotonic() < deadline, "dnsmasq not up"
            time.sleep(0.05)
        driver.create(LAB, Resource("dns", LAB, spec(upstream=[UPSTREAM])))
        yield ns, driver
    finally:
        driver.delete(LAB, LAB)
        if dnsmasq is not None:
            dnsmasq.send_signal(signal.SIGTERM)
            try:
                dnsmasq.wait(timeout=5)
            except subprocess.TimeoutExpired:
                dnsmasq.kill()
                dnsmasq.wait()
        ns.close()


def test_forwarded_answers_come_from_upstream(fwd):
    import dns.flags
    import dns.rcode

    ns, _ = fwd
    for edns in (-1, 0):
        r = ask(ns, "OutSide.Example", "A", edns=edns)
        assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.RA
        assert r.question[0].name.to_text() == "OutSide.Example."            # case kept
        assert [rr.address for rr in r.answer[0]] == ["192.0.2.7"]
    assert (r.edns, r.payload) == (0, 1232)                                  # dnsmasq's OPT
    nx = ask(ns, "nothere.example", "A")
    assert nx.rcode() == dns.rcode.NXDOMAIN and not nx.answer
    tcp = ask(ns, "outside.example", "A", tcp=True)
    assert [rr.address for rr in tcp.answer[0]] == ["192.0.2.7"]
    assert dig(ns, "+short", "outside.example").split() == ["192.0.2.7"]
    lab_name = ask(ns, "web.hybrid.local", "A")                               # still ours
    assert lab_name.flags & dns.flags.AA and lab_name.flags & dns.flags.RA
    assert [rr.address for rr in lab_name.answer[0]] == ["10.77.1.100"]
    assert ask(ns, "nothere.hybrid.local", "A").rcode() == dns.rcode.NXDOMAIN   # not forwarded


def test_forwarding_is_not_an_open_resolver(fwd):
    import dns.rcode

    ns, driver = fwd
    r = ask(ns.outside, "outside.example", "A")
    assert r.rcode() == dns.rcode.REFUSED and not r.answer
    entries = wait_log(driver, lambda e: e.client == OUTSIDE)
    assert [e.rcode for e in entries if e.client == OUTSIDE] == ["REFUSED"]


def test_query_log_records_forwarded_queries(fwd):
    ns, driver = fwd
    ask(ns, "outside.example", "A")
    ask(ns, "nothere.example", "AAAA")
    entries = wait_log(driver, lambda e: e.name == "nothere.example." and e.type == "AAAA")
    out = [e for e in entries if e.name == "outside.example." and e.type == "A"][-1]
    nx = [e for e in entries if e.name == "nothere.example." and e.type == "AAAA"][-1]
    assert out.rcode == "FWD:NOERROR" and nx.rcode == "FWD:NXDOMAIN"
    assert out.client == GW and 0 < out.latency_us < 2e6


def test_silent_or_unreachable_upstream_gives_servfail_in_bounded_time(fwd):
    import dns.rcode

    from hybridnb.daemons.dns.forward import FORWARD_TIMEOUT

    ns, driver = fwd
    silent = ns.socket_in(bind=(SILENT, 53))
    try:
        driver.update(LAB, Resource("dns", LAB, spec(upstream=[SILENT])))
        for tcp in (False, True):
            t0 = time.monotonic()
            r = ask(ns, "outside.example", "A", tcp=tcp, timeout=FORWARD_TIMEOUT + 3)
            took = time.monotonic() - t0
            assert r.rcode() == dns.rcode.SERVFAIL and not r.answer
            assert FORWARD_TIMEOUT - 0.2 < took < FORWARD_TIMEOUT + 1.5, took
        silent.settimeout(1)
        assert b"\x07outside\x07example\x00" in silent.recv(4096)              # it was asked
        driver.update(LAB, Resource("dns", LAB, spec(upstream=[UNROUTABLE])))
        t0 = time.monotonic()
        r = ask(ns, "outside.example", "A")
        assert r.rcode() == dns.rcode.SERVFAIL and time.monotonic() - t0 < 1.0
        entries = wait_log(driver, lambda e: e.rcode == "FWD:UNREACHABLE")
        assert {"FWD:TIMEOUT", "FWD:TIMEOUT/TCP"} <= {e.rcode for e in entries}
    finally:
        silent.close()
        driver.update(LAB, Resource("dns", LAB, spec(upstream=[UPSTREAM])))
    r = ask(ns, "outside.example", "A")                                        # back again
    assert [rr.address for rr in r.answer[0]] == ["192.0.2.7"]


def wait_log(driver, found, timeout=3.0):
    deadline = time.monotonic() + timeout
    while True:
        entries = driver.query_log(LAB, 200)
        if any(found(e) for e in entries) or time.monotonic() > deadline:
            return entries
        time.sleep(0.05)
