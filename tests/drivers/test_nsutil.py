"""Namespace primitives against the real kernel (private namespaces only)."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from hybridnb.drivers import nsutil
from hybridnb.errors import ConflictError, NotFoundError
from tests.gating import require_real
from tests.helpers.privnet import private_netns, unique

pytestmark = pytest.mark.real


@pytest.fixture(autouse=True)
def _root():
    require_real()


def _thread_ns_inode() -> int:
    return os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino


def test_netns_path():
    assert nsutil.netns_path("x") == "/run/netns/x"
    assert nsutil.netns_path("/proc/1/ns/net") == "/proc/1/ns/net"
    assert nsutil.netns_path(None) is None


def test_run_in_netns_runs_on_a_thread_inside_the_namespace():
    with private_netns() as ns:
        inode = os.stat(nsutil.netns_path(ns)).st_ino
        assert nsutil.run_in_netns(ns, _thread_ns_inode) == inode
        assert _thread_ns_inode() != inode                 # the caller never moved
        assert nsutil.run_in_netns(None, _thread_ns_inode) == _thread_ns_inode()
        with pytest.raises(ZeroDivisionError):
            nsutil.run_in_netns(ns, lambda: 1 / 0)


def test_socket_and_iproute_live_in_the_namespace():
    with private_netns() as ns:
        name = unique("b")[:15]
        with nsutil.iproute(ns) as ipr:
            ipr.link("add", ifname=name, kind="bridge")
            assert ipr.link_lookup(ifname=name)
        with nsutil.iproute(None) as ipr:
            assert not ipr.link_lookup(ifname=name)
        # a UDP socket bound to an address that exists only inside the namespace
        with nsutil.iproute(ns) as ipr:
            idx = ipr.link_lookup(ifname=name)[0]
            ipr.addr("add", index=idx, address="10.81.0.1", prefixlen=32)
        sock = nsutil.socket_in_netns(ns, socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            sock.bind(("10.81.0.1", 0))


def test_missing_namespace_is_not_found_and_nothing_is_created():
    name = f"hnb-{unique('missing')}"
    with pytest.raises(NotFoundError):
        nsutil.run_in_netns(name, int)
    with pytest.raises(NotFoundError):
        nsutil.iproute(name)
    assert not nsutil.netns_exists(name)


def test_create_delete_and_recreate_gets_a_fresh_namespace():
    name = f"hnb-{unique('c')}"
    nsutil.create_netns(name)
    try:
        with pytest.raises(ConflictError):
            nsutil.create_netns(name)
        first = nsutil.run_in_netns(name, _thread_ns_inode)
        nsutil.write_sysctl(name, "net.ipv4.ping_group_range", "0 2147483647")
        assert nsutil.read_sysctl(name, "net.ipv4.ping_group_range").split() == ["0",
                                                                                 "2147483647"]
        assert nsutil.delete_netns(name) is True
        assert nsutil.delete_netns(name) is False
        assert not nsutil.netns_exists(name)
        nsutil.create_netns(name)
        second = nsutil.run_in_netns(name, _thread_ns_inode)
        assert second != first                              # not the old worker
        assert nsutil.read_sysctl(name, "net.ipv4.ping_group_range").split() == ["1", "0"]
    finally:
        nsutil.delete_netns(name)


def test_released_workers_exit():
    with private_netns() as ns:
        nsutil.run_in_netns(ns, int)
        tag = f"netns:{ns}"
        assert any(t.name == tag for t in threading.enumerate())
        nsutil.workers().release(ns)
        assert not any(t.name == tag for t in threading.enumerate())


def test_idle_workers_exit_by_themselves():
    pool = nsutil.NetnsWorkers(idle=0.05)
    with private_netns() as ns:
        fut = pool.submit(ns, threading.current_thread)
        worker = fut.result()
        worker.join(timeout=2)
        assert not worker.is_alive()
        assert pool.run(ns, int, "7") == 7                   # a new worker takes over
        pool.close()
