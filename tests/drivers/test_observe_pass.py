"""Observing stays cheap as labs grow, without root (issue 18, cost curves):

* the raw link parser reads the attributes observing needs (kind, group, flags, alias);
* inside one observing pass a namespace's links are dumped once, shared by every driver that
  asks; outside a pass every ask dumps afresh; a pass inside a pass shares the outer one;
  ``observe_all`` is one pass;
* the bridge and namespace-host drivers observe from that snapshot;
* ``existing_netns`` tells mounted namespaces from plain files and missing names;
* the container driver remembers a container's pid while the same process runs (no inspect),
  asks again when the process is another one, and forgets a container that stopped.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import pytest

from hybridnb.apply import observe_all
from hybridnb.core.resource import Observation
from hybridnb.drivers import bridge as bridge_mod
from hybridnb.drivers import docker as docker_mod
from hybridnb.drivers import links
from hybridnb.drivers import netns as netns_mod
from hybridnb.drivers import nsutil
from hybridnb.drivers.linkstats import (IFLA_GROUP, IFLA_IFALIAS, IFLA_IFNAME, IFLA_INFO_KIND,
                                        IFLA_LINKINFO, Link, _parse)
from hybridnb.target import Target


def _rta(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * ((4 - len(raw) % 4) % 4)


def test_the_link_parser_reads_kind_group_flags_and_alias():
    info = _rta(IFLA_INFO_KIND, b"veth\0") + _rta(2, b"\0" * 12)          # + IFLA_INFO_DATA
    attrs = (_rta(IFLA_IFNAME, b"hv-a\0") + _rta(IFLA_LINKINFO | 0x8000, info)
             + _rta(IFLA_GROUP, struct.pack("=I", 0x686E62))
             + _rta(IFLA_IFALIAS, b"hybridnb:lab:a:f00\0"))
    link = _parse(memoryview(attrs), 0, len(attrs), 7, 0x1003)
    assert (link.index, link.name, link.kind, link.group, link.flags, link.alias) == \
        (7, "hv-a", "veth", links.CREATING_GROUP, 0x1003, "hybridnb:lab:a:f00")
    assert _parse(memoryview(b""), 0, 0, 1).kind is None


@pytest.fixture
def dumps(monkeypatch):
    """Every dump is counted; the namespace ``lh`` holds a bridge and two host veths of lab
    ``lab`` and one of lab ``other``."""
    calls: list[str | None] = []
    table = {1: Link(1, "lo"),
             2: Link(2, "br0", alias="hybridnb:lab:fp-br", kind="bridge", flags=1),
             3: Link(3, "va", alias="hybridnb:lab:a:fp-a", kind="veth", master=2),
             4: Link(4, "vb", alias="hybridnb:lab:b:fp-b", kind="veth", master=2),
             5: Link(5, "vc", alias="hybridnb:other:c:fp-c", kind="veth", master=2)}

    def dump(netns: str | None, wanted: Any = None) -> dict[int, Link]:
        calls.append(netns)
        return dict(table)
    monkeypatch.setattr(links, "dump_links", dump)
    monkeypatch.setattr(nsutil, "existing_netns",
                        lambda names: {n for n in names if not n.endswith("-b")})
    return calls


def test_one_dump_per_namespace_per_pass(dumps):
    with links.observe_pass():
        first = links.link_snapshot("lh")
        assert links.link_snapshot("lh") is first
        links.link_snapshot(None)
        with links.observe_pass():                 # a pass inside a pass shares it
            links.link_snapshot("lh")
    assert dumps == ["lh", None]
    links.link_snapshot("lh")
    links.link_snapshot("lh")                      # outside a pass: afresh every time
    assert dumps == ["lh", None, "lh", "lh"]
    assert [link.index for link in first] == [1, 2, 3, 4, 5]


def test_bridge_and_hosts_observe_from_one_dump(dumps):
    target = Target(name="t", netns="lh")
    drivers = {"bridge": bridge_mod.BridgeDriver(target),
               "host": netns_mod.NetnsHostDriver(target)}

    class _Backend:
        pass
    backend = _Backend()
    backend.drivers = drivers                      # type: ignore[attr-defined]
    seen = observe_all("lab", backend)             # type: ignore[arg-type]
    assert dumps == ["lh"]
    assert seen == {"bridge": {"br0": Observation("fp-br")},
                    # b's namespace is gone: not whole, not observed
                    "host": {"a": Observation("fp-a")}}
    assert drivers["host"].labs() == {"lab", "other"}


def test_existing_netns_tells_mounts_from_files(tmp_path):
    run = tmp_path / "netns"
    run.mkdir()
    (run / "plain").write_text("")                 # a file on the same device: not a mount
    names = [str(run / "plain"), str(run / "missing"), "/proc/self/ns/net"]
    assert nsutil.existing_netns(names) == {"/proc/self/ns/net"}
    assert nsutil.existing_netns([]) == set()


class _Api:
    def __init__(self, pid: int) -> None:
        self.pid, self.inspected = pid, []

    def inspect_container(self, cid: str) -> dict[str, Any]:
        self.inspected.append(cid)
        return {"State": {"Pid": self.pid}}


def _driver(monkeypatch, api: _Api, containers: dict[str, str]) -> Any:
    drv = docker_mod.ContainerDriver(Target(name="t", docker_url="unix:///nonexistent.sock"))
    monkeypatch.setattr(docker_mod.ContainerDriver, "api", property(lambda self: api))
    monkeypatch.setattr(drv, "state", lambda lab: {
        ep: {"id": cid, "name": f"hnb-{ep}", "state": "running"}
        for ep, cid in containers.items()})
    return drv


def test_a_container_pid_is_remembered_while_its_process_runs(monkeypatch):
    api = _Api(os.getpid())
    drv = _driver(monkeypatch, api, {"a": "id-a", "b": "id-b", "c": "id-c"})
    want = {ep: f"/proc/{os.getpid()}/ns/net" for ep in "abc"}
    assert drv.netns_paths("lab") == want
    assert sorted(api.inspected) == ["id-a", "id-b", "id-c"]
    assert drv.netns_paths("lab") == want              # the same processes: no inspect
    assert len(api.inspected) == 3
    drv._pid_cache["id-b"] = (os.getpid(), "1")        # as if the pid were another process
    assert drv.netns_paths("lab") == want
    assert api.inspected[3:] == ["id-b"]
    drv.close()


def test_a_stopped_container_is_forgotten(monkeypatch):
    api = _Api(os.getpid())
    containers = {"a": "id-a", "b": "id-b"}
    drv = _driver(monkeypatch, api, containers)
    drv.netns_paths("lab")
    del containers["b"]
    assert drv.netns_paths("lab") == {"a": f"/proc/{os.getpid()}/ns/net"}
    assert set(drv._pid_cache) == {"id-a"}
