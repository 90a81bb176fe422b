"""The agent: hybridnb's fabric drivers serving JSON lines on stdio, on a remote host.

``python3 -m hybridnb.remote.agent`` reads one request per line on stdin and writes one
answer per line on stdout (:mod:`hybridnb.remote.wire`) until stdin closes.  It holds the
drivers of the ordinary sandbox/host backend for the kinds a host's kernel makes
(:data:`KINDS`: the bridge, the VXLAN device, the DOCKER-USER rule, the nftables policy
table, namespace hosts, link impairments), bound to a target *without a namespace*: they
act on the network namespace the agent runs in — in the agent container
(``network_mode=host``), the remote host's own.  A namespace host's namespace is mounted on
``/run/netns/NAME``, which in the agent container is the host's own ``/run/netns`` (a
shared bind: :data:`hybridnb.remote.agentbox.BINDS`), so it is the host's and outlives the
agent.  The pseudo kind ``agent``
answers ``hello`` (its version, kinds and network-namespace inode) so a caller can tell
where it landed; the pseudo kind ``links`` answers ``dump`` (every link of the host's lab
host, or of one of its containers' namespaces, with the kernel's counters) for monitor and
doctor there; the pseudo kind ``hostread`` answers the doctor's read-only reads of the host —
sysctls, the iptables filter table, routes, a bridge's FDB, the ARP sweep on the lab's own
bridge, nftables' features (:mod:`hybridnb.remote.hostread`).

``--hold`` is the agent container's main process: it only waits for SIGTERM, so that
``docker exec`` has a running container to start the server in.  ``--exit-after SECONDS``
ends a server nobody asked anything for that long (it says ``{"bye": "idle"}`` first).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, BinaryIO, Callable, Iterator

from hybridnb.drivers.netns import NetnsHostDriver

#: kind -> (module, class) of the driver the agent serves
KINDS: dict[str, tuple[str, str]] = {
    "bridge": ("hybridnb.drivers.bridge", "BridgeDriver"),
    "vxlan": ("hybridnb.drivers.vxlan", "VxlanDriver"),
    "firewall": ("hybridnb.drivers.firewall", "FirewallDriver"),
    "policy": ("hybridnb.drivers.nftables", "PolicyDriver"),
    "host": ("hybridnb.remote.agent", "ServedHosts"),
    "link": ("hybridnb.remote.agent", "ServedLinks"),
}


class ServedHosts(NetnsHostDriver):
    """Namespace hosts as the agent serves them: the ordinary driver, refusing to make one
    where the agent container does not share the host's ``/run/netns`` (Docker refused the
    shared bind: :data:`hybridnb.remote.agentbox.CONFIG_ALONE`) — its namespace would live
    and die inside the container."""

    def check(self, lab: str, resource: Any) -> None:
        _netns_dir_is_the_hosts(resource.spec["endpoint"])
        super().check(lab, resource)

    def create(self, lab: str, resource: Any) -> None:
        _netns_dir_is_the_hosts(resource.spec["endpoint"])
        super().create(lab, resource)


def _netns_dir_is_the_hosts(endpoint: str) -> None:
    from hybridnb.errors import Unsupported
    from hybridnb.remote.wire import NETNS_ENV

    if os.environ.get(NETNS_ENV) == "alone":
        raise Unsupported(
            f"cannot make namespace host {endpoint!r} there: Docker refused to share that "
            "host's /run/netns with hybridnb's agent container (the mount holding it is not "
            "a shared mount), so the namespace would live and die inside the container",
            hint="make it a shared mount on that host once (`ip netns add hnb-tmp && ip "
                 "netns delete hnb-tmp` does), then `hybridnb images prune --docker URL` "
                 "so the next command makes the agent anew", kind="host")


class ServedLinks:
    """The link-impairment driver (:class:`~hybridnb.drivers.impairments.LinkDriver`) as the
    agent serves it.  It finds a container's bridge port (and sets its ``eth0`` MTU) inside
    the container's network namespace, which only that host's Docker API names: ``create``,
    ``update`` and ``delete`` take the lab's containers' namespaces **as seen on this host**
    (``{endpoint: /proc/PID/ns/net}``) as a last argument, sent by the caller with each
    request — the agent keeps nothing between requests.  VMs' guest agents are not reached
    from here (no libvirt in the agent): a VM's impairments go on its tap only."""

    kind = "link"
    concurrent = False

    def __init__(self, target: Any) -> None:
        from hybridnb.drivers.impairments import LinkDriver

        self._containers: dict[str, dict[str, str]] = {}
        self.driver = LinkDriver(target, container_netns=self._netns_of)

    def _netns_of(self, lab: str) -> dict[str, str]:
        return self._containers.get(lab, {})

    def _given(self, lab: str, containers: Any) -> None:
        self._containers = {lab: {str(k): str(v) for k, v in dict(containers or {}).items()}}

    def observe(self, lab: str) -> Any:
        return self.driver.observe(lab)

    def check(self, lab: str, resource: Any) -> None:
        self.driver.check(lab, resource)

    def create(self, lab: str, resource: Any, containers: Any = None) -> None:
        self._given(lab, containers)
        self.driver.create(lab, resource)

    def update(self, lab: str, resource: Any, containers: Any = None) -> None:
        self._given(lab, containers)
        self.driver.update(lab, resource)

    def delete(self, lab: str, name: str, containers: Any = None) -> None:
        self._given(lab, containers)
        self.driver.delete(lab, name)

    def link_report(self, lab: str) -> Any:
        return self.driver.link_report(lab)


class Agent:
    """The drivers and the dispatch of one request."""

    def __init__(self) -> None:
        from hybridnb.target import Target

        self.target = Target(name="agent", netns=None)
        self._drivers: dict[str, Any] = {}

    def driver(self, kind: str) -> Any:
        if kind not in self._drivers:
            import importlib

            from hybridnb.errors import Unsupported

            if kind not in KINDS:
                raise Unsupported(f"the agent has no {kind!r} driver", kind=kind,
                                  hint=f"it serves {', '.join(sorted(KINDS))}")
            module, cls = KINDS[kind]
            self._drivers[kind] = getattr(importlib.import_module(module), cls)(self.target)
        return self._drivers[kind]

    def hello(self) -> dict[str, Any]:
        from hybridnb.version import version

        return {"version": version(), "kinds": sorted(KINDS), "pid": os.getpid(),
                "netns": os.stat("/proc/self/ns/net").st_ino,
                "python": sys.version.split()[0]}

    def labs(self) -> set[str]:
        """Labs whose mark is on a link of this namespace (bridges, VXLAN devices)."""
        from hybridnb.drivers.links import link_snapshot

        return {link.alias.split(":")[1] for link in link_snapshot(None)
                if link.alias.startswith("hybridnb:") and link.alias.count(":") >= 2}

    def call(self, kind: str, method: str, args: list[Any]) -> Any:
        from hybridnb.errors import HybridError
        from hybridnb.remote.wire import METHODS

        if kind == "agent" and method in ("hello", "labs"):
            return self.hello() if method == "hello" else self.labs()
        if kind == "links" and method == "dump":
            return links(*args)
        if kind == "hostread":                  # the doctor's reads of this host (not a driver)
            from hybridnb.remote.hostread import read

            return read(method, args)
        if method not in METHODS:
            raise HybridError(f"the agent does not serve {method!r}",
                              hint=f"one of {', '.join(sorted(METHODS))}")
        fn: Callable[..., Any] | None = getattr(self.driver(kind), method, None)
        if fn is None:
            from hybridnb.errors import Unsupported

            raise Unsupported(f"the agent's {kind} driver has no {method!r}", kind=kind)
        return fn(*args)


def links(netns: str | None = None) -> dict[str, Any]:
    """Every link of the agent's namespace (or of ``netns``, a path such as a container's
    ``/proc/PID/ns/net`` on this host) with its counters: ``{index: fields}``
    (:func:`hybridnb.drivers.linkstats.dump_links`; what a monitor on that host reads)."""
    import dataclasses

    from hybridnb.drivers.linkstats import dump_links

    return {str(i): dataclasses.asdict(link) for i, link in dump_links(netns).items()}


def _lines(fd: int, timeout: float | None) -> Iterator[bytes | None]:
    """Lines read from ``fd``; ``None`` once ``timeout`` seconds pass without one."""
    import select

    buf = b""
    while True:
        while b"\n" in buf:
            line, _, buf = buf.partition(b"\n")
            yield line
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            yield None
            return
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        buf += chunk


def serve(stdin: BinaryIO, stdout: BinaryIO, *, exit_after: float | None = None) -> int:
    """Answer requests until ``stdin`` closes — or, with ``exit_after``, until that many
    seconds pass without a request: then the agent says ``{"bye": "idle"}`` and ends (a
    client that went away without closing leaves no process behind; one still there
    starts a new agent and asks again, :class:`hybridnb.remote.agentbox.AgentClient`)."""
    import json

    from hybridnb.remote import wire

    agent = Agent()
    for line in _lines(stdin.fileno(), exit_after):
        if line is None:
            stdout.write(wire.BYE.encode())
            stdout.flush()
            break
        if not line.strip():
            continue
        ident: Any = None
        try:
            req = json.loads(line)
            ident = req.get("id")
            value = agent.call(str(req["kind"]), str(req["method"]),
                               wire.decode(req.get("args") or []))
            out = wire.answer(ident, value)
        except Exception as exc:           # every failure is an answer, never a dead agent
            out = wire.failure(ident, exc)
        stdout.write(out.encode())
        stdout.flush()
    return 0


def hold() -> int:
    """Wait for SIGTERM (the container's main process)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    while True:
        signal.pause()


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python3 -m hybridnb.remote.agent")
    parser.add_argument("--hold", action="store_true",
                        help="be the agent container's main process: wait for SIGTERM")
    parser.add_argument("--exit-after", type=float, default=None, metavar="SECONDS",
                        help="end after this many seconds without a request")
    args = parser.parse_args(argv)
    if args.hold:
        return hold()
    return serve(sys.stdin.buffer, sys.stdout.buffer, exit_after=args.exit_after)


if __name__ == "__main__":          # pragma: no cover - run in the agent container
    sys.exit(main(sys.argv[1:]))
