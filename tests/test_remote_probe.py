"""Probes from a remote host's endpoints (issue 17): named as seen on that host, run there.

No Docker engine here: the remote backend's container driver is given a stand-in Docker
driver (its ``state`` and ``inspect_container``), the agent container's creation a stand-in
API; the share really runs through a runner (a local subprocess) and the coordinator.  The
real thing — b's share in b's agent container — is ``tests/integration/test_remote_real.py``.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any, Iterator

import docker
import pytest

from hybridnb import multihost_apply
from hybridnb.errors import EngineError, Unsupported
from hybridnb.lab import Lab
from hybridnb.remote import agentbox, image
from hybridnb.remote.backend import RemoteEndpoints, share_runner
from hybridnb.services.probe.matrix import ConnectivityMatrix, ProbeResult
from tests.test_remote import _NoEngine, spread


class _Api:
    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.asked: list[str] = []

    def inspect_container(self, cid: str) -> dict[str, Any]:
        self.asked.append(cid)
        return {"State": {"Pid": self.pids[cid]}}


class _Docker:
    """The parts of :class:`hybridnb.drivers.docker.ContainerDriver` a remote backend uses."""

    kind, concurrent, settle, local_processes = "container", True, 0.0, True

    def __init__(self, state: dict[str, dict[str, Any]], pids: dict[str, int]) -> None:
        self._state, self.api = state, _Api(pids)

    def state(self, lab: str) -> dict[str, dict[str, Any]]:
        return self._state

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        yield


STATE = {"c1": {"state": "running", "id": "id1", "name": "hnb-rmu-c1"},
         "c3": {"state": "exited", "id": "id3", "name": "hnb-rmu-c3"},
         "c2": {"state": "running", "id": "id2", "name": "hnb-rmu-c2"}}


def test_a_remote_hosts_container_namespaces_are_named_as_seen_there() -> None:
    drv = _Docker(STATE, {"id1": 4242, "id2": 0})
    remote = RemoteEndpoints(drv)
    # the pid comes from that host's Docker API; a running container without a process
    # (just starting) and a stopped one have none; this machine's /proc is never read
    assert remote.netns_paths_there("rmu") == {"c1": "/proc/4242/ns/net"}
    assert sorted(drv.api.asked) == ["id1", "id2"]
    assert not hasattr(remote, "netns_paths")


def _lab(tmp_path: Path, **extra: Any) -> Lab:
    data = spread("ssh://lab@b", **({"libvirt": "qemu+ssh://lab@b/system"} if extra else {}))
    data["endpoints"].update(extra)
    lab = Lab.from_dict(data, backend="sandbox", sandbox="rmnone", state_dir=tmp_path)
    lab.__dict__.setdefault("_host_backends", {})["a"] = _NoEngine()
    return lab


def test_probe_endpoints_of_a_remote_host_come_from_its_docker_api(tmp_path) -> None:
    lab = _lab(tmp_path)
    backend = multihost_apply.host_backend(lab, "b")            # contacts nothing yet
    backend.drivers["container"] = RemoteEndpoints(_Docker(STATE, {"id1": 4242, "id2": 0}))
    eps, gateway = multihost_apply.probe_endpoints(lab, {lab.spec.network.bridge:
                                                         "/run/netns/hnb-x"})
    assert [(e.name, e.netns, e.kind, e.down) for e in eps] == [
        ("c1", "/proc/4242/ns/net", "container", None)]
    assert gateway.netns == "/run/netns/hnb-x" and gateway.address == str(lab.spec.network.gateway)


def test_a_vm_on_a_remote_host_cannot_be_probed_from_and_the_error_names_the_host(tmp_path):
    lab = _lab(tmp_path, v1={"kind": "vm", "template": "test", "host": "b"})
    with pytest.raises(Unsupported) as info:
        multihost_apply.probe_endpoints(lab, {lab.spec.network.bridge: None})
    text = str(info.value)
    assert text.startswith("host b (docker ssh://lab@b, libvirt qemu+ssh://lab@b/system) ")
    assert "probe from vm v1" in text, text
    assert "sandbox" in (info.value.hint or "")


def test_a_remote_host_gets_its_agents_runner_unless_told_otherwise(tmp_path) -> None:
    lab = _lab(tmp_path)
    agent = share_runner(multihost_apply.host_backend(lab, "b"))
    assert isinstance(agent, agentbox.AgentRunner)
    assert agent.where == "the agent container hnb-agent on host b"
    assert multihost_apply.share_runners(lab) == {"b": agent}
    other = object()
    assert multihost_apply.share_runners(lab, {"b": other}) == {"b": other}
    with pytest.raises(Unsupported, match="host b .* is another machine") as info:
        multihost_apply.share_runners(lab, {"b": None})     # ssh://: not this machine's pids
    assert "probe_runners['b'] unset" in (info.value.hint or "")
    assert multihost_apply.share_runners(lab, {"a": other}) == {"a": other, "b": agent}
    probe = multihost_apply.prober(lab)          # what Lab.test uses, no probe_runners set
    assert isinstance(probe, functools.partial) and probe.keywords["runners"] == {"b": agent}
    assert probe.keywords["placement"] == {"c1": "b", "gateway": "a"}


def test_a_remote_host_on_this_machine_may_run_its_share_here(tmp_path) -> None:
    data = spread("unix:///run/hybridnb/sandbox/x/docker.sock")
    lab = Lab.from_dict(data, backend="sandbox", sandbox="rmnone", state_dir=tmp_path)
    lab.__dict__.setdefault("_host_backends", {})["a"] = _NoEngine()
    assert multihost_apply.share_runners(lab, {"b": None}) == {}      # in this process
    assert multihost_apply.prober(lab, {"b": None}).__name__ == "probe_matrix"


def test_the_agent_runner_is_made_once_and_made_again_when_its_container_is_gone() -> None:
    made: list[int] = []

    class Fails:
        where = "x"

        def __init__(self, n: int) -> None:
            self.n = n

        def run_module(self, module: str, args: Any = ()) -> Any:
            if self.n == 1:
                raise EngineError("no such container", engine="docker")
            return (self.n, module, list(args))

    def factory() -> Any:
        made.append(len(made) + 1)
        return Fails(len(made))

    runner = agentbox.AgentRunner(factory, "host b")
    assert runner.run_module("m", ["x"]) == (2, "m", ["x"])       # 1 failed: made anew
    assert runner.run_module("m") == (2, "m", [])                 # kept
    assert made == [1, 2]


class _Engine(docker.APIClient):
    """An API client that talks to no engine: what the agent container is made with."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        super().__init__(base_url="unix:///nonexistent.sock", version="1.41")
        self.rows, self.made, self.removed = rows, [], []

    def containers(self, **kw: Any) -> list[dict[str, Any]]:        # type: ignore[override]
        return self.rows

    def remove_container(self, cid: str, **kw: Any) -> None:        # type: ignore[override]
        self.removed.append(cid)
        self.rows = []

    def create_container(self, tag: str, **kw: Any) -> dict[str, Any]:   # type: ignore
        self.made.append((tag, kw))
        return {"Id": "new"}

    def start(self, cid: str, **kw: Any) -> None:                    # type: ignore[override]
        pass

    def images(self, **kw: Any) -> list[dict[str, Any]]:             # type: ignore[override]
        return []


def test_the_agent_container_may_enter_the_hosts_namespaces_and_no_more(monkeypatch) -> None:
    monkeypatch.setattr(agentbox, "ensure_agent_image", lambda api, progress=None: "img:1")
    old = {"Id": "old", "State": "running", "Labels": {image.LABEL: "img:1"}}   # no config
    api = _Engine([old])
    assert agentbox.ensure_agent(api) == "new" and api.removed == ["old"]
    tag, kw = api.made[0]
    hc = kw["host_config"]
    assert tag == "img:1" and hc["PidMode"] == "host" and hc["NetworkMode"] == "host"
    assert sorted(hc["CapAdd"]) == ["NET_ADMIN", "NET_RAW", "SYS_ADMIN"]
    assert not hc.get("Privileged")
    assert kw["labels"] == {image.LABEL: "img:1", agentbox.CONFIG_LABEL: agentbox.CONFIG}
    same = {"Id": "same", "State": "running", "Labels": kw["labels"]}
    again = _Engine([same])
    assert agentbox.ensure_agent(again) == "same" and again.made == [] == again.removed


def _rootfs(tmp: Path, suffix: str, libc: str) -> Path:
    dyn = tmp / "usr/lib/python3.11/lib-dynload"
    dyn.mkdir(parents=True)
    (dyn / f"_json{suffix}").write_text("")
    (tmp / "var/lib/dpkg").mkdir(parents=True)
    (tmp / "var/lib/dpkg/status").write_text(
        "Package: libc6-dev\nVersion: 9.99\n\nPackage: libc6\nStatus: install ok installed\n"
        f"Version: {libc}\n\nPackage: zlib1g\nVersion: 1:1.2.13\n")
    return tmp


def test_the_fast_engine_goes_into_the_agent_image_only_when_its_python_loads_it(
        tmp_path, monkeypatch) -> None:
    import os
    import sysconfig

    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    package = tmp_path / "pkg"                     # a hybridnb whose engine is built
    (package / "services/probe").mkdir(parents=True)
    (package / f"services/probe/_fast{suffix}").write_bytes(b"\x7fELF")
    real = image._package_dir
    monkeypatch.setattr(image, "_package_dir",
                        lambda name: package if name == "hybridnb" else real(name))
    monkeypatch.setattr(os, "confstr", lambda name: "glibc 2.36")
    assert image.image_glibc(_rootfs(tmp_path / "a", suffix, "2.36-9+deb12u14")) == (2, 36)
    assert image.fast_extension(tmp_path / "a").name == f"_fast{suffix}"
    # another ABI tag (another Python), an older C library, no rootfs: the portable engine
    assert image.fast_extension(_rootfs(tmp_path / "b", ".cpython-312-x86_64-linux-gnu.so",
                                        "2.36-9")) is None
    assert image.fast_extension(_rootfs(tmp_path / "c", suffix, "2.31-13")) is None
    assert image.fast_extension(None) is None
    monkeypatch.setattr(image, "_package_dir", real)
    monkeypatch.setattr(image, "fast_extension",
                        lambda rootfs: package / f"services/probe/_fast{suffix}"
                        if rootfs == tmp_path / "a" else None)
    layer = tmp_path / "layer"
    image.write_layer(layer, tmp_path / "a")
    probe = layer / image.LAYER_DIR / "hybridnb/services/probe"
    assert (probe / f"_fast{suffix}").is_file() and not list(probe.glob("*.c"))
    assert (layer / image.LAYER_DIR / "dnslib" / "__init__.py").is_file()
    bare = tmp_path / "bare"
    image.write_layer(bare, tmp_path / "b")
    assert not list((bare / image.LAYER_DIR).rglob("*.so"))


def test_the_layer_is_byte_compiled_only_for_the_images_python(tmp_path) -> None:
    import sys

    for name in ("same", "other"):
        (tmp_path / name / "opt/hybridnb/pkg").mkdir(parents=True)
        (tmp_path / name / "opt/hybridnb/pkg/__init__.py").write_text("X = 1\n")
    same = tmp_path / f"rootfs/usr/lib/python{sys.version_info[0]}.{sys.version_info[1]}"
    same.mkdir(parents=True)
    other = tmp_path / "rootfs2/usr/lib/python2.7"
    other.mkdir(parents=True)
    assert image.compile_layer(tmp_path / "same", tmp_path / "rootfs")
    pyc = list((tmp_path / "same/opt/hybridnb/pkg/__pycache__").glob("__init__.*.pyc"))
    assert len(pyc) == 1
    assert int.from_bytes(pyc[0].read_bytes()[4:8], "little") == 0b01   # hash, unchecked
    assert not image.compile_layer(tmp_path / "other", tmp_path / "rootfs2")
    assert not list((tmp_path / "other").rglob("*.pyc"))
    assert not image.compile_layer(tmp_path / "other", None)


def test_a_matrix_says_where_each_hosts_share_ran() -> None:
    rows = [ProbeResult("icmp", "c1", "c2", True, "", (0.001,), 1, 1, None, "10.0.1.3", ""),
            ProbeResult("icmp", "c2", "c1", True, "", (0.001,), 1, 1, None, "10.0.1.2", "")]
    m = ConnectivityMatrix(rows, ["c1", "c2"], ["c1", "c2"], ["icmp"],
                           hosts={"c1": "a", "c2": "b"},
                           shares={"b": {"where": "the agent container hnb-agent on host b",
                                         "engine": "portable", "process": {"pid": 7}},
                                   "a": {"where": "this process", "engine": "fast"}})
    assert m.share_lines() == [
        "share of a: this process, fast engine",
        "share of b: the agent container hnb-agent on host b, portable engine"]
    assert "share of b: the agent container" in m.to_text()
    import json

    doc = json.loads(m.to_json())
    assert doc["shares"] == {"a": {"engine": "fast", "where": "this process"},
                             "b": {"engine": "portable",
                                   "where": "the agent container hnb-agent on host b"}}


# ---------------------------------------------- the coordinator over the agent's runner shape

class _BytesRunner:
    """hybridnb.remote's runner shape (byte pipes, ``stderr_tail()``, no ``stderr``), as
    ``docker exec`` into the agent gives it — here a local subprocess."""

    def __init__(self, module: str | None = None) -> None:
        from hybridnb.drivers.runner import LocalRunner

        self.runner, self.module = LocalRunner(), module
        self.where = "a test agent"
        self.procs: list[Any] = []

    def run_module(self, module: str, args: Any = ()) -> Any:
        proc = self.runner.run_module(self.module or module, list(args))
        self.procs.append(proc)
        return proc


def _unreachable() -> list[Any]:
    from hybridnb.services.probe import ProbeEndpoint

    return [ProbeEndpoint(f"x{i}", f"10.9.9.{i}", kind="vm") for i in range(1, 4)]


def test_a_share_through_the_agents_runner_shape_merges_and_says_where_it_ran() -> None:
    from hybridnb.services.probe import probe_matrix
    from hybridnb.services.probe.coordinate import probe_shares

    eps, where = _unreachable(), {"x1": "a", "x2": "b", "x3": "b"}
    one = probe_matrix(eps, ("icmp", "udp"), timeout=0.2, count=1)
    runner = _BytesRunner()
    m = probe_shares(eps, ("icmp", "udp"), placement=where, runners={"b": runner},
                     timeout=0.2, count=1)
    assert [(r.check, r.source, r.target, r.status) for r in m.results] == \
        [(r.check, r.source, r.target, r.status) for r in one.results]
    assert m.shares["a"]["where"] == "this process" and m.shares["b"]["where"] == "a test agent"
    assert m.shares["a"]["engine"] == m.shares["b"]["engine"]        # the same machine
    assert m.shares["b"]["process"]["pid"] == runner.procs[0].proc.pid
    assert runner.procs[0].wait(5) == 0


def test_a_share_that_cannot_start_on_its_host_says_why_from_its_error_output() -> None:
    from hybridnb.services.probe.coordinate import probe_shares

    with pytest.raises(EngineError) as info:
        probe_shares(_unreachable(), ("icmp",), placement={"x1": "a", "x2": "b", "x3": "b"},
                     runners={"b": _BytesRunner("hybridnb_no_such_module")}, timeout=0.2,
                     count=1, ready_timeout=10)
    assert str(info.value).startswith("host b: the probe share in a test agent ended"), info.value
    assert "No module named hybridnb_no_such_module" in (info.value.hint or ""), info.value.hint
