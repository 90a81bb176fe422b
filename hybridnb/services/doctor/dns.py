"""The lab's DNS server: alive, serving the lab's zone, answering each endpoint's name.

``dns-server`` asks the DNS driver what the running server reports (pid, the zone fingerprint
it loaded); a dead server is restarted by the fix (the driver's own create, as apply would).
``dns-answers`` sends one A query per endpoint (``NAME.DOMAIN``) to the gateway from inside
the lab host — the same place the endpoints ask — and compares each answer with the planned
address.  Queries are built and parsed with dnslib.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Any

from hybridnb.drivers.base import Updatable
from hybridnb.services.doctor.base import FAIL, OK, WARN, Check, DoctorContext, Finding


def _server(ctx: DoctorContext) -> dict[str, Any] | None:
    driver = ctx.drivers.get("dns")
    status = getattr(driver, "status", None)
    return ctx.cached("dns-status", lambda: status(ctx.lab) if status else None)


class _DnsCheck(Check):
    group = "dns"

    def applies(self, ctx: DoctorContext) -> bool:
        return ctx.resource("dns") is not None and "dns" in ctx.drivers


class DnsServer(_DnsCheck):
    id = "dns-server"
    title = "the lab's DNS server runs and serves the lab's zone"
    why = "every endpoint resolves NAME.DOMAIN through the gateway; without it names fail"

    def run(self, ctx: DoctorContext) -> Finding:
        res = ctx.resource("dns")
        assert res is not None
        status = _server(ctx)
        listen = f"{res.spec['listen']}:{getattr(ctx.drivers['dns'], 'port', 53)}"
        if status is None:
            return self.finding(FAIL, f"no DNS server is running for lab {ctx.lab} "
                                f"(it should listen on {listen})",
                                fix_command=f"hybridnb apply {ctx.lab}", fixable=True)
        if status.get("fingerprint") != res.fingerprint:
            return self.finding(WARN, f"the server (pid {status.get('pid')}) serves an older "
                                "zone than the lab's", fix_command=f"hybridnb apply {ctx.lab}",
                                fixable=True)
        return self.finding(OK, f"pid {status.get('pid')} serves {res.spec['domain']} on "
                                f"{listen}")

    def fix(self, ctx: DoctorContext) -> None:
        res = ctx.resource("dns")
        driver = ctx.drivers["dns"]
        if _server(ctx) is None or not isinstance(driver, Updatable):
            driver.create(ctx.lab, res)
        else:
            driver.update(ctx.lab, res)


def query_all(netns: str | None, server: str, port: int, names: list[str],
              timeout: float = 1.0) -> dict[str, list[str] | str]:
    """``{name: [A addresses]}`` or ``{name: "NXDOMAIN"/"no answer"/rcode}``."""
    from dnslib import QTYPE, RCODE, DNSRecord

    from hybridnb.drivers.nsutil import socket_in_netns

    sock = socket_in_netns(netns, socket.AF_INET, socket.SOCK_DGRAM)
    out: dict[str, list[str] | str] = {}
    try:
        sock.setblocking(False)
        queries = {}
        for i, name in enumerate(names):
            q = DNSRecord.question(name, "A")
            q.header.id = (i * 7919 + 1) & 0xFFFF
            queries[q.header.id] = (name, q.pack())
        pending = dict(queries)
        for attempt in range(2):
            for _, (_, wire) in pending.items():
                sock.sendto(wire, (server, port))
            deadline = time.monotonic() + timeout / 2
            while pending and time.monotonic() < deadline:
                ready, _, _ = select.select([sock], [], [], 0.02)
                if not ready:
                    continue
                data = sock.recv(4096)
                try:
                    reply = DNSRecord.parse(data)
                except Exception:  # dnslib raises DNSError and friends on garbage
                    continue
                entry = pending.pop(reply.header.id, None)
                if entry is None:
                    continue
                rcode = reply.header.rcode
                addrs = [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]
                out[entry[0]] = addrs if rcode == 0 and addrs else RCODE.get(rcode, str(rcode))
        for name, _ in pending.values():
            out[name] = "no answer"
    finally:
        sock.close()
    return out


class DnsAnswers(_DnsCheck):
    id = "dns-answers"
    title = "each endpoint's name resolves to its address"
    why = "a name that does not resolve (or resolves elsewhere) breaks every client using it"

    def run(self, ctx: DoctorContext) -> Finding:
        res = ctx.resource("dns")
        assert res is not None
        if _server(ctx) is None:
            return self.finding(FAIL, "not asked: the server is not running (see dns-server)")
        domain = str(res.spec["domain"]).rstrip(".")
        want = {f"{name}.{domain}": addr for name, addr in sorted(res.spec["records"].items())}
        got = query_all(ctx.netns, str(res.spec["listen"]),
                        int(getattr(ctx.drivers["dns"], "port", 53)), list(want))
        wrong = [f"{name} -> {got.get(name)} (plan: {addr})" for name, addr in want.items()
                 if got.get(name) != [addr]]
        if wrong:
            return self.finding(FAIL, "; ".join(wrong),
                                fix_command=f"hybridnb apply {ctx.lab}")
        return self.finding(OK, f"all {len(want)} names answer with their planned address")


CHECKS: list[Any] = [DnsServer(), DnsAnswers()]
