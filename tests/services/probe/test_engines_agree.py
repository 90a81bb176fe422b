"""The fast (C) and the portable probe engine say the same thing about the same lab: every
pair's verdict, reason, probes sent and answered, port, address and detail (only the RTT values
differ).  Root, kernel only; one namespace lab with a dead endpoint, a refused declared port, a
UDP port nothing listens on and the lab's name server."""

from __future__ import annotations

import pytest

from hybridnb.services.probe import ProbeEndpoint, fast, probe_matrix
from tests.gating import require_real
from tests.services.probe.netlab import DOMAIN, NetLab, TinyDNS

pytestmark = pytest.mark.real

CHECKS = ("icmp", "tcp", "udp", "http", "dns", "tcp/5432", "udp/5353")


def verdicts(m):
    return [(r.check, r.source, r.target, r.ok, r.reason, r.sent, r.received, len(r.rtts),
             r.port, r.address, r.detail) for r in m.results]


def test_both_engines_give_the_same_answers():
    require_real(tools=("ip",))
    assert fast.available(), "the fast engine is not built"
    with NetLab(5, subnet="10.79.0") as lab:
        dns = TinyDNS(lab.lab, lab.gateway, {ep.name: ep.address for ep in lab.endpoints()})
        try:
            eps = lab.endpoints()
            eps[1] = ProbeEndpoint(eps[1].name, eps[1].address, netns=eps[1].netns,
                                   services=("tcp/5432",))
            lab.link(3, False)

            def run(engine):
                return probe_matrix(eps, CHECKS, gateway=lab.gateway_endpoint(),
                                    domain=DOMAIN, timeout=0.5, count=2, engine=engine)

            quick, portable = run("fast"), run("portable")
        finally:
            dns.close()
    assert verdicts(quick) == verdicts(portable)
    by = {(r.check, r.source, r.target): r for r in quick.results}
    assert by["tcp/5432", "h00", "h01"].reason == "refused"
    assert by["udp/5353", "h00", "h02"].reason == "refused (port unreachable)"
    assert by["icmp", "h00", "h03"].reason == "timeout" and by["icmp", "h03", "h00"].ok is False
    assert by["dns", "h00", "h03"].ok and by["http", "h04", "gateway"].detail == "HTTP 200"
    # h03's rows and columns fail (dns to it is answered by the server), tcp/5432 and
    # udp/5353 fail everywhere, the built-in tcp check probes h01's declared port 5432
    # (refused): everything else is green
    others = {(r.check, r.source, r.target, r.reason) for r in quick.failures()
              if "h03" not in (r.source, r.target) and "/" not in r.check}
    assert others == {("tcp", s, "h01", "refused") for s in ("h00", "h02", "h04")}, others
