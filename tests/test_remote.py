"""Remote hosts (issue 17): the wire format, the runner, the agent, the remote backend's rules.

Everything here runs without a Docker engine: the agent is started as a local subprocess
(:class:`~hybridnb.drivers.runner.LocalRunner`) — in a network namespace of its own
(``unshare --net``) where it makes anything — and the Docker URL forms are checked for the
client arguments they give.  The agent in a real remote Docker engine is
``tests/integration/test_remote_real.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from hybridnb import multihost_apply
from hybridnb.core.resource import Observation, Resource
from hybridnb.drivers.base import GuestExec, NamespaceSource
from hybridnb.errors import (ConflictError, EngineError, EngineUnavailable, Unsupported,
                             ValidationError)
from hybridnb.lab import Lab
from hybridnb.remote import wire
from hybridnb.remote.agentbox import PROXIES, AgentClient
from hybridnb.drivers.runner import LocalRunner
from tests.gating import require_real

ROOT = str(Path(__file__).resolve().parents[1])


# ----------------------------------------------------------------------------- wire format

def test_wire_round_trips_resources_observations_sets_and_errors():
    res = Resource("bridge", "hybr0", {"bridge": "hybr0", "remotes": ("10.0.0.2",),
                                       "nested": {"a": [1, 2]}}, "summary")
    line = json.loads(wire.request(7, "bridge", "create", "lab", res))
    assert line["id"] == 7 and line["method"] == "create"
    lab, back = wire.decode(line["args"])
    assert lab == "lab" and back.key == res.key and back.fingerprint == res.fingerprint
    obs = {"hybr0": Observation("abc", running=False, reason="down", mtu=1450)}
    assert wire.decode(json.loads(wire.answer(1, obs))["value"]) == obs
    assert wire.decode(json.loads(wire.answer(2, {"b", "a"}))["value"]) == {"a", "b"}
    err = json.loads(wire.failure(3, ConflictError("taken", hint="rename")))["error"]
    again = wire.error_from(err)
    assert isinstance(again, ConflictError) and again.message == "taken" and again.hint == "rename"
    other = wire.error_from(json.loads(wire.failure(4, KeyError("x")))["error"])
    assert type(other) is EngineError and "KeyError" in other.message


# ---------------------------------------------------------------------- runner and agent

def local_agent(**kw) -> AgentClient:
    return AgentClient(lambda: LocalRunner(env={"PYTHONPATH": ROOT}, **kw), "test host")


def test_agent_over_a_local_runner_answers_and_refuses():
    client = local_agent()
    try:
        hello = client.hello()
        assert hello["kinds"] == ["bridge", "firewall", "host", "link", "policy", "vxlan"]
        assert hello["python"] == sys.version.split()[0]
        with pytest.raises(Unsupported, match="no 'dns' driver"):
            client.call("dns", "observe", "x")
        with pytest.raises(Exception, match="does not serve 'guest_exec'"):
            client.call("bridge", "guest_exec", "x")
        assert client.hello()["pid"] == hello["pid"]          # one process, reused
    finally:
        client.close()


def test_a_dead_agent_is_an_error_naming_the_host_and_the_next_call_restarts_it():
    client = local_agent()
    try:
        first = client.hello()["pid"]
        client._proc.kill()                                # type: ignore[union-attr]
        with pytest.raises(EngineUnavailable, match="hello agent: the hybridnb agent on test host "
                                                   "stopped answering"):
            client.hello()
        assert client.hello()["pid"] != first
    finally:
        client.close()


def test_the_runner_runs_any_module_with_stdio_attached():
    proc = LocalRunner(env={"PYTHONPATH": ROOT}).run_module(
        "json.tool", ["--compact"])
    proc.stdin.write(b'{"a": [1, 2]}')
    proc.stdin.close()
    assert proc.stdout.read() == b'{"a":[1,2]}\n' and proc.wait(10) == 0


@pytest.mark.real
def test_agent_makes_a_bridge_in_its_own_namespace():
    """The agent's drivers act on the namespace it runs in (here one of its own)."""
    require_real(tools=("unshare",))
    client = local_agent(prefix=("unshare", "--net"))
    br = PROXIES["bridge"]("bridge", client)
    res = Resource("bridge", "hybr0", {"bridge": "hybr0", "address": "10.9.0.1/24",
                                       "subnet": "10.9.0.0/24", "mtu": 1450, "adopt": False})
    try:
        br.check("t1", res)
        br.create("t1", res)
        assert br.observe("t1") == {"hybr0": Observation(res.fingerprint)}
        assert client.call("agent", "labs") == {"t1"}
        with pytest.raises(ConflictError, match="belongs to lab 't1'"):
            br.create("t2", res)
        br.delete("t1", "hybr0")
        assert br.observe("t1") == {} and client.call("agent", "labs") == set()
    finally:
        client.close()


# ----------------------------------------------------------------------- remote backend

def spread(url: str, **b) -> dict:
    return {"name": "rmu", "hosts": {
        "a": {"engine": "local", "underlay": "192.168.250.1"},
        "b": {"docker": url, "underlay": "192.168.250.2", **b}},
        "endpoints": {"c1": {"kind": "container", "image": "busybox", "host": "b"}}}


def test_a_host_given_by_its_docker_url_gets_a_remote_backend_without_namespace(tmp_path):
    lab = Lab.from_dict(spread("ssh://lab@b", libvirt="qemu+ssh://lab@b/system"),
                        backend="sandbox", sandbox="rmnone", state_dir=tmp_path)
    backend = multihost_apply.host_backend(lab, "b")      # contacts nothing yet
    assert backend.name == "remote" and backend.target.netns is None
    assert backend.target.docker_url == "ssh://lab@b"
    assert sorted(backend.drivers) == ["bridge", "container", "firewall", "host", "link",
                                       "network", "policy", "vm", "vxlan"]
    # nothing of it reaches into this machine's namespaces or processes; commands in its
    # containers run by docker exec, and one that times out is not killed by a local pid
    assert not backend.having(NamespaceSource) and sorted(backend.having(GuestExec)) == [
        "container", "vm"]
    assert backend.drivers["container"]._d.local_processes is False
    assert multihost_apply.is_remote(backend)


def test_an_unreachable_engine_is_an_error_naming_the_host(tmp_path):
    url = f"unix://{tmp_path}/none.sock"
    lab = Lab.from_dict(spread(url), backend="sandbox", sandbox="rmnone", state_dir=tmp_path)
    with pytest.raises(EngineUnavailable) as info:
        multihost_apply.plan(_only_b(lab))
    assert str(info.value).startswith(f"host b (docker {url}): "), info.value


def _only_b(lab: Lab) -> Lab:
    """Host a of these labs is 'engine: local' (the sandbox rmnone, not up): plan b only."""
    lab.__dict__.setdefault("_host_backends", {})["a"] = _NoEngine()
    return lab


class _NoEngine:
    """A stand-in backend for host a that holds nothing and makes nothing."""

    name = "none"
    drivers: dict = {}

    def supports(self, kind: str) -> bool:
        return True

    def updatable(self) -> list[str]:
        return []


def test_vms_on_a_remote_host_without_libvirt_are_refused_naming_the_host(tmp_path):
    data = spread("tcp://b.example:2376")
    data["endpoints"]["v1"] = {"kind": "vm", "template": "test", "host": "b"}
    with pytest.raises(ValidationError) as info:       # the lab file says so already
        Lab.from_dict(data, backend="sandbox", sandbox="rmnone", state_dir=tmp_path)
    assert "endpoints.v1.host: host 'b' names no libvirt engine" in str(info.value)


def test_a_url_host_without_docker_is_refused(tmp_path):
    data = spread("x")
    data["hosts"]["b"] = {"libvirt": "qemu+ssh://lab@b/system", "underlay": "192.168.250.2"}
    data["endpoints"]["c1"]["host"] = "a"
    lab = Lab.from_dict(data, backend="sandbox", sandbox="rmnone", state_dir=tmp_path)
    with pytest.raises(Unsupported) as info:
        multihost_apply.host_backend(lab, "b")
    assert "names no Docker engine" in str(info.value) and \
        str(info.value).startswith("host b (libvirt qemu+ssh://lab@b/system): ")


# ------------------------------------------------------------------------ engine URLs

def test_docker_client_arguments_per_url_form(tmp_path, monkeypatch):
    import importlib.util

    from hybridnb.drivers.docker import client_kwargs

    assert client_kwargs("unix:///var/run/docker.sock") == {}
    assert client_kwargs("tcp://b:2375") == {}
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    tls = client_kwargs("tcp://b:2376", env={"DOCKER_CERT_PATH": str(tmp_path)})["tls"]
    assert tls.cert == (str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    assert tls.ca_cert == str(tmp_path / "ca.pem") and tls.verify == str(tmp_path / "ca.pem")
    bare = client_kwargs("https://b:2376", env={"DOCKER_CERT_PATH": str(tmp_path / "no")})
    assert bare["tls"].cert is None and bare["tls"].verify is False
    ssh = client_kwargs("ssh://lab@b")
    if importlib.util.find_spec("paramiko") is None:
        assert ssh == {"use_ssh_client": True}
    else:
        assert ssh == {}


def test_a_remote_primary_is_refused_and_a_remote_host_is_watched_through_its_agent(tmp_path):
    data = spread("ssh://lab@b")
    data["hosts"] = {"b": data["hosts"]["b"], "a": data["hosts"]["a"]}     # b first
    lab = Lab.from_dict(data, backend="sandbox", sandbox="rmnone", state_dir=tmp_path)
    lab.__dict__.setdefault("_host_backends", {})["a"] = _NoEngine()
    with pytest.raises(Unsupported) as info:
        multihost_apply.plan(lab)
    assert str(info.value).startswith("host b (docker ssh://lab@b): ") and \
        "dns rmu" in str(info.value) and "primary" in (info.value.hint or ""), info.value
    # watching b goes through its agent: its part reads links there, never enters here
    from hybridnb.drivers.base import LinksThere

    part = {p.host: p for p in multihost_apply.host_views(lab)}["b"]
    assert isinstance(part.driver("bridge"), LinksThere)
    with pytest.raises(Unsupported, match="host b: its lab host is on another machine"):
        part.lab_host("capture packets")


def test_an_idle_agent_ends_and_the_client_asks_a_new_one():
    import time

    client = AgentClient(lambda: LocalRunner(env={"PYTHONPATH": ROOT}), "test host",
                         exit_after=0.3)
    try:
        first = client.hello()["pid"]
        proc = client._proc
        time.sleep(0.8)                        # it said bye and ended meanwhile
        assert proc.wait(5) == 0                # type: ignore[union-attr]
        assert client.hello()["pid"] != first
    finally:
        client.close()
