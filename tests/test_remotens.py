"""Namespace hosts and link impairments on a remote host (issue 17): made by its agent.

No Docker engine here: the proxies are given a stand-in agent client, the remote backend's
container driver a stand-in Docker driver.  The real thing — a namespace host and an
impaired container on a host given only by its Docker URL — is
``tests/integration/test_remotens_real.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker
import pytest

from hybridnb import multihost_apply
from hybridnb.core.resource import Observation, Resource
from hybridnb.drivers.base import NamespaceSource, Updatable
from hybridnb.errors import EngineError, Unsupported, ValidationError
from hybridnb.lab import Lab
from hybridnb.remote import agentbox, image
from hybridnb.remote.agent import KINDS, ServedLinks
from hybridnb.remote.agentbox import HostProxy, LinkProxy
from hybridnb.remote.backend import RemoteEndpoints
from hybridnb.target import Target
from tests.test_remote import _NoEngine, spread
from tests.test_remote_probe import STATE, _Docker


class _Client:
    """An agent client that records each call and answers from ``answers``."""

    where = "host b"

    def __init__(self, **answers: Any) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.answers = answers

    def call(self, kind: str, method: str, *args: Any) -> Any:
        self.calls.append((kind, method, *args))
        return self.answers.get(method)


def _link(kind: str, **spec: Any) -> Resource:
    return Resource("link", "e1", {"endpoint": "e1", "kind": kind, "bridge": "hybr0",
                                   "default_mtu": 1450, **spec})


# ------------------------------------------------------------------------ the container

def test_the_agent_container_shares_the_hosts_namespace_dir_and_may_write_sysctls() -> None:
    api = docker.APIClient(base_url="unix:///nonexistent.sock", version="1.41")
    hc = agentbox.host_config_of(api)
    # b's /run/netns with shared propagation (a namespace made there is b's and outlives the
    # agent), /etc/netns for resolv.conf; nothing else of b's filesystem
    assert hc["Binds"] == ["/run/netns:/run/netns:rshared", "/etc/netns:/etc/netns"]
    assert "/proc/sys" not in hc["ReadonlyPaths"]
    assert {"/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs"} <= set(
        hc["ReadonlyPaths"])
    assert "MaskedPaths" not in hc and not hc.get("Privileged")
    assert "binds=/run/netns:/run/netns:rshared" in agentbox.CONFIG
    assert "readonly=" in agentbox.CONFIG and "/proc/sys," not in agentbox.CONFIG


def test_an_agent_made_without_the_namespace_dir_is_replaced(monkeypatch) -> None:
    from tests.test_remote_probe import _Engine

    monkeypatch.setattr(agentbox, "ensure_agent_image", lambda api, progress=None: "img:1")
    older = ("cap_add=NET_ADMIN,NET_RAW,SYS_ADMIN;pid=host;network=host")  # remoteprobe's
    api = _Engine([{"Id": "old", "State": "running",
                    "Labels": {image.LABEL: "img:1", agentbox.CONFIG_LABEL: older}}])
    assert agentbox.ensure_agent(api) == "new" and api.removed == ["old"]
    hc = api.made[0][1]["host_config"]
    assert "/run/netns:/run/netns:rshared" in hc["Binds"]


# --------------------------------------------------------------------------- the agent

def test_where_docker_refuses_the_shared_bind_the_agent_is_made_without_it(monkeypatch):
    from tests.test_remote_probe import _Engine

    class Unshared(_Engine):
        def start(self, cid: str, **kw: Any) -> None:           # type: ignore[override]
            tag, made = self.made[-1]
            if any(b.endswith(":rshared") for b in made["host_config"]["Binds"]):
                raise docker.errors.APIError("500 Server Error", explanation=(
                    "path /run/netns is mounted on / but it is not a shared mount"))

        def remove_container(self, cid: str, **kw: Any) -> None:  # type: ignore[override]
            self.removed.append(cid)

    monkeypatch.setattr(agentbox, "ensure_agent_image", lambda api, progress=None: "img:1")
    api = Unshared([])
    assert agentbox.ensure_agent(api) == "new" and api.removed == ["new"]
    (_, first), (_, second) = api.made
    assert first["environment"] == {"HYBRIDNB_AGENT_NETNS": "host"}
    assert second["host_config"]["Binds"] == ["/etc/netns:/etc/netns"]
    assert second["environment"] == {"HYBRIDNB_AGENT_NETNS": "alone"}
    assert second["labels"][agentbox.CONFIG_LABEL] == agentbox.CONFIG_ALONE
    kept = _Engine([{"Id": "alone", "State": "running", "Labels": second["labels"]}])
    assert agentbox.ensure_agent(kept) == "alone" and kept.made == [] == kept.removed
    other = docker.errors.APIError("500 Server Error", explanation="no space left on device")
    assert not agentbox.not_shared(other)


def test_the_agent_serves_namespace_hosts_and_links_with_the_local_drivers(monkeypatch):
    from hybridnb.drivers.netns import NetnsHostDriver
    from hybridnb.remote.agent import ServedHosts

    assert KINDS["host"] == ("hybridnb.remote.agent", "ServedHosts")
    assert KINDS["link"] == ("hybridnb.remote.agent", "ServedLinks")
    assert issubclass(ServedHosts, NetnsHostDriver)
    served = ServedHosts(Target(name="agent", netns=None))
    res = Resource("host", "h2", {"endpoint": "h2", "netns": "hnb-lab-h2", "veth": "hv1"})
    monkeypatch.setenv("HYBRIDNB_AGENT_NETNS", "alone")    # an agent without b's /run/netns
    for step in (served.check, served.create):
        with pytest.raises(Unsupported, match="cannot make namespace host 'h2' there: "
                                              "Docker refused to share") as info:
            step("lab", res)
        assert "ip netns add" in (info.value.hint or "")


def test_served_links_take_the_containers_namespaces_with_each_request() -> None:
    served = ServedLinks(Target(name="agent", netns=None))
    seen: list[Any] = []
    served.driver.create = lambda lab, res: seen.append(served.driver.container_netns(lab))
    served.driver.delete = lambda lab, name: seen.append(served.driver.container_netns(lab))
    served.create("lab", _link("container"), {"e1": "/proc/7/ns/net"})
    served.delete("lab", "e1")                  # nothing kept from the request before
    served.update = served.create
    served.create("other", _link("container"), {"e1": "/proc/8/ns/net"})
    assert seen == [{"e1": "/proc/7/ns/net"}, {}, {"e1": "/proc/8/ns/net"}]
    assert served.driver.container_netns("lab") == {}


# ------------------------------------------------------------------------- the proxies

def test_the_link_proxy_sends_container_namespaces_only_where_a_port_is_looked_for() -> None:
    asked: list[str] = []

    def containers(lab: str) -> dict[str, str]:
        asked.append(lab)
        return {"e1": "/proc/9/ns/net"}

    client = _Client()
    proxy = LinkProxy("link", client, containers)             # type: ignore[arg-type]
    proxy.create("lab", _link("host", veth="hv1", netns="hnb-lab-e1", rate=10**7))
    assert client.calls[-1][-1] == {} and asked == []         # a host's port: its veth
    res = _link("container", rate=10**7)
    proxy.create("lab", res)
    proxy.update("lab", res)
    assert [c[:2] for c in client.calls[1:]] == [("link", "create"), ("link", "update")]
    assert client.calls[-1][-1] == {"e1": "/proc/9/ns/net"} and asked == ["lab", "lab"]
    proxy.delete("lab", "e1")
    assert client.calls[-1] == ("link", "delete", "lab", "e1", {"e1": "/proc/9/ns/net"})


def test_a_link_proxy_deletes_even_when_the_docker_api_cannot_name_namespaces() -> None:
    def broken(lab: str) -> dict[str, str]:
        raise EngineError("the Docker engine is not reachable")

    client = _Client()
    proxy = LinkProxy("link", client, broken)                 # type: ignore[arg-type]
    proxy.delete("lab", "e1")                                 # MTU restore: best effort
    assert client.calls == [("link", "delete", "lab", "e1", {})]
    with pytest.raises(EngineError, match="not reachable"):   # create needs the port
        proxy.create("lab", _link("container", rate=10**7))


def test_a_vms_mtu_on_a_remote_host_is_refused_before_the_agent_is_asked() -> None:
    client = _Client()
    proxy = LinkProxy("link", client)                         # type: ignore[arg-type]
    with pytest.raises(Unsupported, match="cannot set the mtu of vm 'e1' on host b") as info:
        proxy.check("lab", _link("vm", mac="52:54:00:00:00:01", mtu=1400))
    assert client.calls == [] and "sandbox" in (info.value.hint or "")
    proxy.check("lab", _link("vm", mac="52:54:00:00:00:01", rate=10**7))   # the tap: fine
    assert client.calls[-1][:2] == ("link", "check")


def test_namespace_hosts_there_are_named_as_seen_there_and_never_opened_here() -> None:
    client = _Client(observe={"h2": Observation("f1")}, labs=["lab"])
    proxy = HostProxy("host", client)                         # type: ignore[arg-type]
    assert proxy.netns_paths_there("lab") == {"h2": "/run/netns/hnb-lab-h2"}
    assert proxy.labs() == {"lab"}
    assert not isinstance(proxy, NamespaceSource)              # nothing here may open it
    assert not isinstance(proxy, Updatable)                    # a changed host is made anew
    proxy.check("lab", Resource("host", "h2", {}))
    assert client.calls[-1][:2] == ("host", "check")


# ---------------------------------------------------------------------- lab and probes

def _lab(tmp_path: Path) -> Lab:
    data = spread("ssh://lab@b")
    data["endpoints"]["h2"] = {"kind": "host", "host": "b"}
    data["links"] = {"h2": {"rate": "10mbit"}, "c1": {"mtu": 1400}}
    lab = Lab.from_dict(data, backend="sandbox", sandbox="rmnone", state_dir=tmp_path)
    lab.__dict__.setdefault("_host_backends", {})["a"] = _NoEngine()
    return lab


def test_a_namespace_host_on_a_remote_host_needs_its_docker_url(tmp_path) -> None:
    lab = _lab(tmp_path)                        # parses: b's agent makes it
    backend = multihost_apply.host_backend(lab, "b")           # contacts nothing yet
    share = multihost_apply.resources_by_host(lab, lab._assign({}))["b"]
    assert {("host", "h2"), ("link", "h2"), ("link", "c1")} <= {r.key for r in share}
    assert multihost_apply._usable(backend, share) == share          # nothing refused
    assert backend.drivers["link"].containers == backend.drivers["container"].netns_paths_there
    data = spread("ssh://lab@b")
    data["hosts"]["b"] = {"libvirt": "qemu+ssh://lab@b/system", "underlay": "192.168.250.2"}
    data["endpoints"] = {"h2": {"kind": "host", "host": "b"}}
    with pytest.raises(ValidationError) as info:
        Lab.from_dict(data, backend="sandbox", sandbox="rmnone", state_dir=tmp_path)
    assert "endpoints.h2.host: host 'b' names no docker engine for a host" in str(info.value)


def test_probes_reach_a_remote_hosts_namespace_hosts_as_seen_there(tmp_path) -> None:
    lab = _lab(tmp_path)
    backend = multihost_apply.host_backend(lab, "b")
    backend.drivers["container"] = RemoteEndpoints(_Docker(STATE, {"id1": 4242, "id2": 0}))
    backend.drivers["host"] = HostProxy("host", _Client(    # type: ignore[arg-type]
        observe={"h2": Observation("f")}))
    eps, _ = multihost_apply.probe_endpoints(lab, {lab.spec.network.bridge: "/run/netns/x"})
    assert [(e.name, e.netns, e.kind) for e in eps] == [
        ("c1", "/proc/4242/ns/net", "container"), ("h2", "/run/netns/hnb-rmu-h2", "host")]
