"""Two sandboxes joined by an underlay: the stand-in for two machines in the multi-host tests.

Each sandbox has its own namespace and dockerd (and libvirtd where asked); a veth pair
between their namespaces, on a /30 of the test's own, stands in for the network between the
machines.  :func:`two_sandboxes` brings both up, lets each dockerd make its own chains, links
the underlay, waits for its IPv6 link-local addresses to settle, then snapshots both
namespaces (``hostsnap``): what every destroy must give back, underlay included.  Everything
is taken down when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Collection, Iterator, Mapping

from hybridnb.drivers.vxlan import link_underlay, unlink_underlay
from hybridnb.errors import HybridError
from hybridnb.sandbox import Sandbox
from tests.helpers import hostsnap


def prime_docker(box: Sandbox) -> None:
    """Let dockerd make its own iptables chains before the snapshot (they outlive labs)."""
    import docker

    api = docker.APIClient(base_url=box.target().docker_url, version="auto")
    net = api.create_network("hnb-prime", driver="bridge",
                             options={"com.docker.network.bridge.name": "hnbprime0"})
    api.remove_network(net["Id"])
    api.close()


def underlay_settled(boxes: Mapping[str, Sandbox], ulink: tuple[str, str],
                     timeout: float = 10.0) -> None:
    """Wait until both underlay ends' IPv6 link-local addresses passed duplicate address
    detection: the kernel adds their local routes only then, and a snapshot taken before
    would miss them (and every later one show them)."""
    from hybridnb.drivers import nsutil

    deadline = time.monotonic() + timeout
    for box, dev in zip(boxes.values(), ulink):
        while True:
            with nsutil.iproute(box.netns) as ipr:
                index = ipr.link_lookup(ifname=dev)[0]
                local = [r for r in ipr.route("dump", family=10, table=255)
                         if r.get("oif") == index and str(r.get("dst", "")).startswith("fe80")]
                tentative = [a for a in ipr.get_addr(family=10, index=index)
                             if a.get("IFA_FLAGS", a["flags"]) & 0x40]
            if local and not tentative:
                break
            assert time.monotonic() < deadline, f"{dev}: link-local address never settled"
            time.sleep(0.1)


def snapshots(boxes: Mapping[str, Sandbox], ours: Callable[[str], bool]
              ) -> dict[str, hostsnap.HostSnapshot]:
    """Each sandbox's namespace snapshot (``ours``: the lab's own namespaces, left out)."""
    return {h: hostsnap.snapshot(box.netns, netns_filter=ours) for h, box in boxes.items()}


@contextlib.contextmanager
def two_sandboxes(names: Mapping[str, str], underlay: str, ulink: tuple[str, str],
                  ours: Callable[[str], bool], *, libvirt: Collection[str] = (),
                  prepare: Callable[[dict[str, Sandbox]], None] | None = None
                  ) -> Iterator[tuple[dict[str, Sandbox], dict[str, hostsnap.HostSnapshot]]]:
    """``(sandboxes by host, their snapshots)``: sandboxes ``names`` (host -> sandbox name)
    up, libvirtd only in the hosts named in ``libvirt``, joined by the veth pair ``ulink`` on
    ``underlay`` (a /30: the first host gets its first address), ``prepare(boxes)`` run
    before the snapshots; all taken down at the end."""
    boxes = {h: Sandbox(name) for h, name in names.items()}
    try:
        for h, box in boxes.items():
            box.down()
            box.up(libvirt=h in libvirt)
            prime_docker(box)
        first, second = boxes.values()
        link_underlay(first.netns, second.netns, underlay, names=ulink)
        underlay_settled(boxes, ulink)
        if prepare is not None:
            prepare(boxes)
        yield boxes, snapshots(boxes, ours)
    finally:
        with contextlib.suppress(HybridError):
            unlink_underlay(next(iter(boxes.values())).netns, ulink[0])
        for box in boxes.values():
            box.down()


@contextlib.contextmanager
def remote_pair(names: Mapping[str, str], underlay: str, ulink: tuple[str, str],
                ours: Callable[[str], bool], state: object) -> Iterator[dict[str, object]]:
    """:func:`two_sandboxes` for a lab whose second host is given only by the Docker socket
    URL of its sandbox: ``{"boxes", "before" (snapshots), "state" (the lab's state
    directory), "url" (the second sandbox's Docker URL)}``."""
    with two_sandboxes(names, underlay, ulink, ours) as (boxes, before):
        second = list(boxes.values())[1]
        yield {"boxes": boxes, "before": before, "state": state,
               "url": second.target().docker_url}
