"""A private bridge with N namespace hosts, for probe tests and the probe benchmark.

``NetLab(n)`` makes an isolated lab namespace ``hnb-pt-<pid>-<k>`` (``lo`` up, no default
route) holding a bridge with the gateway address, and ``n`` host namespaces attached to it by
veth pairs (``eth0`` inside, one address each, only the connected route).  Everything is made
with ``ip -batch`` and removed by :meth:`NetLab.close` (deleting the namespaces removes the
bridge and the veths).  Nothing here routes anywhere but the private /24.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import threading
from dataclasses import dataclass, field

from hybridnb.services.probe import ProbeEndpoint

_seq = itertools.count(1)


def _ip(*args: str, batch: str | None = None) -> None:
    subprocess.run(["ip", *args], input=batch, text=True, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@dataclass
class NetLab:
    n: int
    subnet: str = "10.77.0"
    lab: str = field(default="")
    hosts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lab = f"hnb-pt-{os.getpid()}-{next(_seq)}"
        self.gateway = f"{self.subnet}.1"
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def name(self, i: int) -> str:
        return f"h{i:02d}"

    def netns(self, i: int) -> str:
        return f"{self.lab}-{self.name(i)}"

    def address(self, i: int) -> str:
        return f"{self.subnet}.{10 + i}"

    def _build(self) -> None:
        _ip("netns", "add", self.lab)
        lab_cmds = ["link set lo up", "link add br0 type bridge",
                    f"addr add {self.gateway}/24 dev br0", "link set br0 up"]
        for i in range(self.n):
            _ip("netns", "add", self.netns(i))
            self.hosts.append(self.netns(i))
            lab_cmds += [f"link add v{i} type veth peer name eth0 netns {self.netns(i)}",
                         f"link set v{i} master br0", f"link set v{i} up"]
        _ip("-n", self.lab, "-batch", "-", batch="\n".join(lab_cmds) + "\n")
        for i in range(self.n):
            cmds = [f"link set eth0 address {self.mac(i)}", "link set lo up",
                    f"addr add {self.address(i)}/24 dev eth0", "link set eth0 up"]
            _ip("-n", self.netns(i), "-batch", "-", batch="\n".join(cmds) + "\n")

    def mac(self, i: int) -> str:
        return f"02:77:00:00:{i // 256:02x}:{i % 256:02x}"

    def endpoints(self) -> list[ProbeEndpoint]:
        return [ProbeEndpoint(self.name(i), self.address(i), netns=f"/run/netns/{self.netns(i)}")
                for i in range(self.n)]

    def gateway_endpoint(self) -> ProbeEndpoint:
        return ProbeEndpoint("gateway", self.gateway, netns=f"/run/netns/{self.lab}",
                             kind="gateway")

    def link(self, i: int, up: bool) -> None:
        """Bring host ``i``'s bridge-side veth up or down."""
        _ip("-n", self.lab, "link", "set", f"v{i}", "up" if up else "down")

    def close(self) -> None:
        from hybridnb.drivers import nsutil

        for ns in self.hosts + [self.lab]:
            nsutil.workers().release(f"/run/netns/{ns}") if os.path.exists(
                f"/run/netns/{ns}") else None
            subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        self.hosts.clear()

    def __enter__(self) -> "NetLab":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


DOMAIN = "probe.test"


class TinyDNS:
    """A test-only authoritative responder on the gateway (dnslib, one thread) for
    ``<host>.probe.test``."""

    def __init__(self, netns: str, address: str, records: dict[str, str]) -> None:
        from hybridnb.drivers import nsutil

        self.records = records
        self.sock = nsutil.socket_in_netns(netns, socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 53))
        self.sock.settimeout(0.1)
        self.stop = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        from dnslib import QTYPE, RCODE, RR, A, DNSRecord

        while not self.stop:
            try:
                data, addr = self.sock.recvfrom(512)
            except OSError:
                continue
            q = DNSRecord.parse(data)
            reply = q.reply()
            name = str(q.q.qname).rstrip(".")
            host = name[: -len(DOMAIN) - 1] if name.endswith("." + DOMAIN) else None
            if host in self.records:
                reply.add_answer(RR(q.q.qname, QTYPE.A, rdata=A(self.records[host]), ttl=5))
            else:
                reply.header.rcode = RCODE.NXDOMAIN
            self.sock.sendto(reply.pack(), addr)

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        self.sock.close()
