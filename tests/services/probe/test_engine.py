"""The probe engine against real namespaces on a private bridge (root, kernel only)."""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import pytest

from hybridnb.core.expect import evaluate, parse_expectations
from hybridnb.services.probe import ProbeEndpoint, probe_matrix
from tests.gating import require_real
from tests.services.probe.netlab import NetLab, TinyDNS

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("probe_engine")]

CHECKS = ("icmp", "tcp", "udp", "http", "dns")
DOMAIN = "probe.test"  # TinyDNS answers for it


@pytest.fixture(scope="module")
def lab():
    require_real(tools=("ip", "nsenter", "busybox"))
    with NetLab(4) as lab:
        records = {ep.name: ep.address for ep in lab.endpoints()}
        dns = TinyDNS(lab.lab, lab.gateway, records)
        try:
            yield lab
        finally:
            dns.close()


def run(lab, endpoints=None, checks=CHECKS, **kw):
    kw.setdefault("timeout", 0.5)
    kw.setdefault("count", 2)
    return probe_matrix(endpoints or lab.endpoints(), checks, gateway=lab.gateway_endpoint(),
                        domain=DOMAIN, **kw)


def test_all_green_every_protocol(lab):
    m = run(lab)
    assert m.failures() == [], m.to_text()
    n = 4
    # icmp/tcp/udp/http: every ordered pair + the gateway; dns: every ordered pair
    assert m.counts() == {"ok": 4 * n * n + n * (n - 1), "fail": 0, "skip": 0}
    icmp = m.get("icmp", "h00", "h01")
    assert icmp.received == 2 and 0 < icmp.rtt_min <= icmp.rtt_median <= icmp.rtt_p99 < 0.05
    assert m.get("http", "h02", "gateway").detail == "HTTP 200"
    assert m.get("dns", "h03", "h01").detail == lab.address(1)
    assert m.get("tcp", "h01", "h02").port == 7
    # everything answered well before the timeout
    assert m.duration < 0.5


def test_dead_endpoint_fails_exactly_its_rows_and_columns_in_one_timeout(lab):
    lab.link(2, False)
    try:
        start = time.perf_counter()
        m = run(lab, checks=("icmp", "tcp", "udp", "http"), timeout=0.5)
        took = time.perf_counter() - start
    finally:
        lab.link(2, True)
        for _ in range(20):   # let h02 answer again (neighbour entries recover) for later tests
            if run(lab, checks=("icmp",), timeout=0.1, count=1).ok:
                break
    failed = {(r.check, r.source, r.target) for r in m.failures()}
    expected = set()
    for check in ("icmp", "tcp", "udp", "http"):
        for other in ("h00", "h01", "h03"):
            expected |= {(check, "h02", other), (check, other, "h02")}
        expected.add((check, "h02", "gateway"))
    assert failed == expected
    assert all(r.reason for r in m.failures())
    # 40 failed pairs share one timeout
    assert 0.5 <= took < 0.5 + 0.6, took


def test_expectations_pass_and_fail(lab):
    eps = lab.endpoints()
    # h01 declares a real postgres port; nothing listens there, so it is refused
    eps[1] = ProbeEndpoint(eps[1].name, eps[1].address, netns=eps[1].netns,
                           services=("tcp/5432",))
    m = run(lab, eps, checks=("icmp", "tcp", "tcp/5432", "dns"))
    assert m.get("tcp/5432", "h00", "h01").reason == "refused"
    exps = parse_expectations([
        "h00 -> h01 icmp ok",
        "h00 -> gateway icmp ok",
        "h00 -> h01 tcp/5432 blocked",
        "h00 -> h02 tcp/5432 blocked",     # nothing listens on h02 either: no stand-in
        "h00 -> h03 dns ok",
        "h00 -> h01 tcp/5432 ok",          # wrong: refused
        "h03 -> h02 icmp blocked",         # wrong: reachable
        "h00 -> h02 udp/53 ok",            # wrong: never probed
    ], names=[e.name for e in eps])
    report = evaluate(exps, m)
    assert [r.holds for r in report.results] == [True] * 5 + [False] * 3
    assert report.exit_code == 1
    assert evaluate(exps[:5], m).exit_code == 0


class NsenterExec:
    """Stands in for a VM's guest agent: runs the command inside a namespace with busybox."""

    def __init__(self, netns: str) -> None:
        self.netns = netns

    def __call__(self, argv, timeout):
        r = subprocess.run(["nsenter", f"--net=/run/netns/{self.netns}", "busybox", "sh", *argv[1:]],
                           capture_output=True, text=True, timeout=timeout)
        return r.returncode, r.stdout, r.stderr


def test_executor_source_probes_with_a_script(lab):
    eps = lab.endpoints()
    eps[3] = ProbeEndpoint("h03", lab.address(3), executor=NsenterExec(lab.netns(3)), kind="vm")
    m = run(lab, eps, checks=("icmp", "tcp", "http", "dns", "udp"))
    for target in ("h00", "h01", "h02", "gateway"):
        for check in ("icmp", "tcp", "http"):
            r = m.get(check, "h03", target)
            assert r.ok, (check, target, r)
        assert m.get("udp", "h03", target).ok is None           # busybox nc has no -u
    assert m.get("icmp", "h03", "h00").rtts                       # parsed from ping
    assert m.get("http", "h03", "h01").detail == "HTTP 200"
    assert m.get("dns", "h03", "h00").ok
    # the VM-like target gets no responder: tcp/udp/http to it are skipped, icmp works
    assert m.get("icmp", "h00", "h03").ok
    assert m.get("tcp", "h00", "h03").ok is None
    assert "no tcp service declared" in m.get("tcp", "h00", "h03").reason


def test_source_namespace_gone_is_a_reason_not_a_crash(lab):
    eps = lab.endpoints()[:2] + [ProbeEndpoint("ghost", "10.77.0.99",
                                               netns="/run/netns/hnb-pt-does-not-exist")]
    m = run(lab, eps, checks=("icmp",))
    rows = [r for r in m.results if r.source == "ghost"]
    assert rows and all(r.ok is False and "cannot open sockets" in r.reason for r in rows)
    assert m.get("icmp", "h00", "h01").ok


# --------------------------------------------------------- asserted ports are probed honestly

class Listener:
    """A real TCP listener (accept queue only) or UDP echo inside a namespace."""

    def __init__(self, netns: str, address: str, port: int, udp: bool = False) -> None:
        from hybridnb.drivers import nsutil

        kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
        self.sock = nsutil.socket_in_netns(netns, socket.AF_INET, kind)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, port))
        self.thread = None
        if udp:
            self.sock.settimeout(0.05)
            self.stop = False
            self.thread = threading.Thread(target=self.echo, daemon=True)
            self.thread.start()
        else:
            self.sock.listen(64)

    def echo(self) -> None:
        while not self.stop:
            try:
                data, addr = self.sock.recvfrom(2048)
            except OSError:
                continue
            self.sock.sendto(data, addr)

    def close(self) -> None:
        if self.thread is not None:
            self.stop = True
            self.thread.join()
        self.sock.close()


def test_asserted_ports_are_probed_against_what_really_listens(lab):
    """Issue 11 #2: no responder of ours answers tcp/PORT, udp/PORT or http/PORT — the same
    line gives the same answer for a host, a namespace and a VM-like (script) source."""
    eps = lab.endpoints()
    eps[3] = ProbeEndpoint("h03", lab.address(3), executor=NsenterExec(lab.netns(3)), kind="vm")
    checks = ("tcp", "tcp/5432", "udp/5353", "http/8080")
    m = run(lab, eps, checks=checks)
    for src in ("h00", "h03"):
        for dst in ("h01", "h02", "gateway"):
            assert m.get("tcp", src, dst).ok, m.get("tcp", src, dst)      # built-in: stand-in
            for check in ("tcp/5432", "http/8080"):
                r = m.get(check, src, dst)
                assert r.ok is False and r.reason == "refused", (check, src, dst, r)
    r = m.get("udp/5353", "h00", "h02")
    assert r.ok is False and r.reason == "refused (port unreachable)", r
    real = [Listener(f"/run/netns/{lab.netns(2)}", lab.address(2), 5432),
            Listener(f"/run/netns/{lab.netns(2)}", lab.address(2), 5353, udp=True)]
    try:
        m = run(lab, checks=checks)
    finally:
        for listener in real:
            listener.close()
    for src in ("h00", "h01", "h03"):
        assert m.get("tcp/5432", src, "h02").ok, m.get("tcp/5432", src, "h02")
        assert m.get("tcp/5432", src, "gateway").ok is False
    assert m.get("udp/5353", "h00", "h02").ok and m.get("udp/5353", "h00", "h02").received == 2
    assert m.get("udp/5353", "h00", "h01").ok is False


# ------------------------------------------------------------------ the file-descriptor window

def test_a_windowed_run_gives_the_same_answers_as_one_batch(lab):
    from hybridnb.services.probe.engine import run_plan
    from hybridnb.services.probe.plan import plan_probes

    plan = plan_probes(lab.endpoints(), CHECKS, gateway=lab.gateway_endpoint(), domain=DOMAIN,
                       count=3)
    notes: list[str] = []
    limit = 12 + len(plan.responders)                # a dozen of ~120 sockets at a time
    m = run_plan(plan, timeout=0.5, fd_limit=limit, progress=notes.append)
    assert m.failures() == [], m.to_text()
    assert m.counts()["ok"] == len(plan.pairs)
    assert all(r.sent == 3 for r in m.results), [r for r in m.results if r.sent != 3]
    assert any(n.startswith("sent in ") and int(n.split()[2]) > 5 for n in notes), notes


def test_a_dead_endpoint_costs_one_timeout_in_a_windowed_run_too(lab):
    from hybridnb.services.probe.engine import run_plan
    from hybridnb.services.probe.plan import plan_probes

    plan = plan_probes(lab.endpoints(), ("icmp", "tcp", "udp", "http"),
                       gateway=lab.gateway_endpoint(), domain=DOMAIN, count=3)
    # room for every first attempt to and from the dead host, not for everything at once
    limit = 36 + len(plan.responders)
    assert plan.fds_needed > 2 * limit
    lab.link(1, False)
    try:
        start = time.perf_counter()
        m = run_plan(plan, timeout=0.5, fd_limit=limit)
        took = time.perf_counter() - start
    finally:
        lab.link(1, True)
        for _ in range(20):
            if run(lab, checks=("icmp",), timeout=0.1, count=1).ok:
                break
    failed = {(r.source, r.target) for r in m.failures()}
    assert failed == {(a, b) for a in ("h00", "h01", "h02", "h03", "gateway")
                      for b in ("h00", "h01", "h02", "h03", "gateway")
                      if a != b and "h01" in (a, b) and a != "gateway"}, m.to_text()
    assert 0.5 <= took < 0.5 + 0.6, took


def test_any_lab_size_under_ulimit_1024():
    """Issue 11 #6, engine level: 30 hosts with every check need ~7k sockets; a subprocess
    with RLIMIT_NOFILE 1024 (soft and hard) still gets a full, green matrix."""
    import resource
    import sys
    import textwrap

    require_real(tools=("ip",))
    code = textwrap.dedent("""
        import resource, sys
        from hybridnb.services.probe import probe_matrix
        from tests.services.probe.netlab import NetLab, TinyDNS
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (1024, 1024)
        with NetLab(30, subnet="10.78.0") as lab:
            m = probe_matrix(lab.endpoints(), ("icmp", "tcp", "udp", "http"),
                             gateway=lab.gateway_endpoint(), timeout=1.0, count=3,
                             progress=lambda n: print(n, file=sys.stderr))
            print(m.summary())
            sys.exit(0 if m.ok and m.counts()["ok"] == 4 * 30 * 30 else 1)
    """)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, preexec_fn=limit, cwd=str(__import__("pathlib").Path(
                           __file__).resolve().parents[3]))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3600 ok, 0 failed" in r.stdout, r.stdout


def test_replies_that_arrived_count_however_busy_the_loop_was(lab):
    """A reply sitting in a socket buffer at the deadline is an answer: the run gives up on a
    probe only once it has read what arrived (HTTP for 40 hosts takes ~1 s of this process's
    time on two cores; it used to turn every HTTP pair into 'timeout')."""
    m = run(lab, checks=("http",), timeout=0.005, count=25)
    c = m.counts()
    assert c["ok"] >= 0.95 * len(m.results), (c, m.failures()[:3])
    assert m.duration < 2.0


def test_a_dead_source_does_not_hold_the_dns_queries_back(lab, monkeypatch):
    """The fast engine paces DNS queries (a window per lane, towards the lab's one server);
    a dead source's lost queries fill it, and are forgiven within milliseconds, so the run
    still costs one timeout and everyone else's queries are answered."""
    from hybridnb.services.probe import fast

    monkeypatch.setattr(fast, "DNS_WINDOW", 2)
    lab.link(2, False)
    try:
        start = time.perf_counter()
        m = run(lab, checks=("dns",), timeout=0.5, count=3)
        took = time.perf_counter() - start
    finally:
        lab.link(2, True)
        for _ in range(20):
            if run(lab, checks=("icmp",), timeout=0.1, count=1).ok:
                break
    assert {(r.source, r.target) for r in m.failures()} == {
        ("h02", t) for t in ("h00", "h01", "h03")}, m.to_text()
    assert all(r.reason == "timeout" for r in m.failures())
    assert all(r.received == 3 for r in m.results if r.ok)
    assert 0.5 <= took < 0.5 + 0.6, took


# ------------------------------------------------------- http: count requests, one connection

class TinyHTTP:
    """A real web server in a namespace, one connection at a time: ``keep`` answers
    HTTP/1.1 with a 10,000-byte body and keeps the connection; else HTTP/1.0, closed after
    each response.  Counts connections and requests."""

    def __init__(self, netns: str, address: str, port: int, keep: bool) -> None:
        from hybridnb.drivers import nsutil

        self.sock = nsutil.socket_in_netns(netns, socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, port))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.keep = keep
        self.connections = self.requests = 0
        self.stop = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(1.0)
                self.converse(conn)

    def converse(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            try:
                data = conn.recv(4096)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\r\n\r\n" in buf:
                _, buf = buf.split(b"\r\n\r\n", 1)
                self.requests += 1
                if not self.keep:
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n" + b"x" * 10000)

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        self.sock.close()


@pytest.mark.parametrize("keep", [True, False], ids=["keep-alive", "closes"])
def test_http_count_requests_go_on_one_keep_alive_connection(lab, keep):
    """``http`` x3: three requests on one connection when the server keeps it (the body is
    skipped by its Content-Length), else one connection per request — three answers either
    way."""
    server = TinyHTTP(lab.netns(2), lab.address(2), 8080, keep)
    try:
        eps = lab.endpoints()
        m = probe_matrix([eps[0], eps[2]], ("http/8080",), timeout=0.5, count=3)
    finally:
        server.close()
    r = m.get("http/8080", "h00", "h02")
    assert r.ok and r.sent == 3 and r.received == 3 and r.detail == "HTTP 200", r
    assert server.requests == 3
    assert server.connections == (1 if keep else 3)


# ------------------------------------------------- stand-ins: only the client's side is needed

def _tcp_counters(netns: str) -> dict[str, int]:
    """The namespace's TCP counters (/proc/net/snmp ``Tcp:``, /proc/net/netstat ``TcpExt:``)."""
    out = subprocess.run(["ip", "netns", "exec", netns, "cat", "/proc/net/snmp",
                          "/proc/net/netstat"], capture_output=True, text=True, check=True).stdout
    counters: dict[str, int] = {}
    lines = out.splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        prefix = names.split(":")[0]
        if prefix in ("Tcp", "TcpExt"):
            counters.update({f"{prefix}.{k}": int(v) for k, v in
                             zip(names.split()[1:], values.split()[1:])})
    return counters


def test_a_stand_in_tcp_listener_never_accepts_a_probe_yet_each_connect_counts(lab):
    """Issue 18: the stand-in defers accepting (TCP_DEFER_ACCEPT) — a ``tcp`` probe's handshake
    completes in the kernel, its reset removes the embryonic connection, so the target's
    namespace makes no socket for it (PassiveOpens stays put); the client sees the handshake
    as before and each of its ``count`` connects counts.  A real service on a port the user
    asserts still gets (and accepts) every connection."""
    target = lab.netns(1)
    before = _tcp_counters(target)
    m = run(lab, checks=("tcp", "http"), count=3)
    after = _tcp_counters(target)
    assert m.failures() == [], m.to_text()
    for src in ("h00", "h02", "h03"):
        r = m.get("tcp", src, "h01")
        assert (r.sent, r.received) == (3, 3) and 0 < r.rtt_min < 0.05, r
        assert m.get("http", src, "h01").detail == "HTTP 200"
    # 3 sources x 3 tcp connects: none made a socket there; 3 http connections did
    assert after["Tcp.PassiveOpens"] - before["Tcp.PassiveOpens"] == 3, (before, after)
    assert after["TcpExt.TCPDeferAcceptDrop"] - before["TcpExt.TCPDeferAcceptDrop"] >= 9

    real = Listener(f"/run/netns/{target}", lab.address(1), 5432)
    try:
        before = _tcp_counters(target)
        m = run(lab, checks=("tcp/5432",), count=3)
        after = _tcp_counters(target)
        accepted = 0
        real.sock.setblocking(False)
        while True:
            try:
                real.sock.accept()[0].close()
            except BlockingIOError:
                break
            accepted += 1
    finally:
        real.close()
    for src in ("h00", "h02", "h03"):
        r = m.get("tcp/5432", src, "h01")
        assert r.ok and (r.sent, r.received) == (3, 3), r
    assert after["Tcp.PassiveOpens"] - before["Tcp.PassiveOpens"] == 9, (before, after)
    assert accepted == 9
