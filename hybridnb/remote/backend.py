"""The backend of a host reached only through its Docker API (and its libvirt URI, for VMs).

:func:`remote_backend` bundles

* the Docker drivers (``network``, ``container``) given the host's Docker URL — ``unix://``,
  ``tcp://`` with TLS, ``ssh://`` passed to the docker SDK unchanged
  (:func:`hybridnb.drivers.docker.client_kwargs`) — behind :class:`RemoteContainers`, which
  leaves out what would act on *this* machine (the containers' namespace paths, processes
  found under this machine's ``/proc``);
* the drivers of what that host's kernel holds — the fabric (``bridge``, ``vxlan``,
  ``firewall``, ``policy``), namespace hosts (``host``) and link impairments (``link``) —
  as proxies of the agent's (:mod:`hybridnb.remote.agentbox`): made, observed and deleted
  on that host by the agent container.  A namespace host's namespace is that host's
  ``/run/netns/hnb-<lab>-<endpoint>``; an impaired container's bridge port is found inside
  its namespace as seen there (:meth:`RemoteEndpoints.netns_paths_there`, sent along).

Its target has **no namespace and no path into one**: nothing of this backend opens a
netlink socket, runs iptables or enters a namespace on this machine.  VMs, when the host has a
``libvirt:`` URI, are the ordinary :class:`~hybridnb.drivers.libvirt.LibvirtDriver` in its
remote mode: their boot files uploaded into a storage pool of that libvirt, their console
read through libvirt (:mod:`hybridnb.drivers.vmpool`, :mod:`hybridnb.drivers.vmconsole`).
Without a ``libvirt:`` URI a lab that places a VM there is refused naming the host
(:func:`refuse_unserved`).  The lab's DNS
server lives on the primary host, so a remote host needs none.

Probes from the host's containers and namespace hosts run **on that host**: their
namespaces are named as seen there (:meth:`RemoteEndpoints.netns_paths_there`,
:meth:`~hybridnb.remote.agentbox.HostProxy.netns_paths_there`) and the host's share of the
probe matrix runs in the agent container (:func:`share_runner`).  Probes from VMs there are
not run (their guest agents are reached through libvirt, not from the agent).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from hybridnb.core.resource import Observation, Resource
from hybridnb.drivers.base import Backend
from hybridnb.errors import HybridError, Unsupported
from hybridnb.target import Target


class RemoteContainers:
    """A Docker driver seen from afar: the Driver protocol, ``check``, ``labs`` — not
    ``netns_paths`` or ``interfaces``, which use this machine's ``/proc``."""

    def __init__(self, driver: Any) -> None:
        self._d = driver
        self.kind = driver.kind
        self.concurrent = driver.concurrent
        self.settle = driver.settle

    def observe(self, lab: str) -> Mapping[str, Observation]:
        return self._d.observe(lab)

    def create(self, lab: str, resource: Resource) -> None:
        self._d.create(lab, resource)

    def delete(self, lab: str, name: str) -> None:
        self._d.delete(lab, name)

    def check(self, lab: str, resource: Resource) -> None:
        self._d.check(lab, resource)

    def labs(self) -> set[str]:
        return set(self._d.labs())

    def version(self) -> dict[str, str]:
        """The engine's version (asked through its API: the doctor's ``docker`` check)."""
        return dict(self._d.version())

    def close(self) -> None:
        self._d.close()

    @property
    def api(self) -> Any:
        return self._d.api


class RemoteEndpoints(RemoteContainers):
    """Containers: also started, stopped, their output read, commands run in them
    (``docker exec``; one that times out is left running, not killed by a pid of this
    machine) — all through the API."""

    def __init__(self, driver: Any) -> None:
        super().__init__(driver)
        driver.local_processes = False

    def guest_exec(self, lab: str, endpoint: str, argv: Sequence[str],
                   timeout: float = 10.0) -> tuple[int, str, str]:
        return self._d.guest_exec(lab, endpoint, argv, timeout=timeout)

    def start(self, lab: str, endpoint: str) -> None:
        self._d.start(lab, endpoint)

    def stop(self, lab: str, endpoint: str) -> None:
        self._d.stop(lab, endpoint)

    def logs(self, lab: str, endpoint: str, *, since: float | None = None,
             tail: int | None = None) -> Sequence[tuple[str, str]]:
        return self._d.logs(lab, endpoint, since=since, tail=tail)

    def state(self, lab: str) -> dict[str, dict[str, Any]]:
        return self._d.state(lab)

    def netns_paths_there(self, lab: str) -> dict[str, str]:
        """Per running endpoint: its network namespace **as seen on its host** —
        ``/proc/<pid>/ns/net`` with the pid that host's Docker API gives (``State.Pid``, a
        pid of dockerd's PID namespace, which the agent container shares).  For a probe
        share running there (:func:`share_runner`); never opened on this machine."""
        out: dict[str, str] = {}
        for endpoint, info in sorted(self._d.state(lab).items()):
            if info.get("state") != "running":
                continue
            with self._d._errors(f"inspect container {info['name']}"):
                pid = int(self._d.api.inspect_container(info["id"])["State"].get("Pid") or 0)
            if pid:
                out[endpoint] = f"/proc/{pid}/ns/net"
        return out


def remote_backend(host: str, docker_url: str, *, where: str = "",
                   progress: Callable[[str], None] | None = None,
                   libvirt_uri: str | None = None, state_dir: Path | None = None) -> Backend:
    """The backend of ``host`` through the Docker engine at ``docker_url`` (and its VMs
    through the libvirt at ``libvirt_uri``, when given; ``state_dir``: where the VMs'
    console copies are kept on this machine)."""
    from hybridnb.drivers.docker import ContainerDriver, NetworkDriver
    from hybridnb.remote.agentbox import PROXIES, AgentClient, AgentRunner, docker_runner

    where = where or f"docker {docker_url}"
    target = Target(name=f"remote:{host}", netns=None, docker_url=docker_url,
                    libvirt_uri=libvirt_uri)
    network = NetworkDriver(target)
    containers = ContainerDriver(target)
    runners = docker_runner(lambda: network.api, f"host {host}", progress)
    client = AgentClient(runners, where=f"host {host}")
    drivers: dict[str, Any] = {kind: cls(kind, client) for kind, cls in PROXIES.items()}
    drivers["network"] = RemoteContainers(network)
    drivers["container"] = RemoteEndpoints(containers)
    # a container's bridge port is found inside its namespace, which b's Docker API names
    drivers["link"].containers = drivers["container"].netns_paths_there
    if libvirt_uri:
        from hybridnb.drivers.libvirt import LibvirtDriver

        drivers["vm"] = LibvirtDriver(target, remote=f"host {host}",
                                      files_dir=Path(state_dir) / "vms" if state_dir else None)
    backend = Backend("remote", target, drivers,
                      extras={"agent": client, "docker": network, "where": where,
                              "runner": AgentRunner(runners, f"host {host}")},
                      hint=f"host {host} is reached through its Docker API ({where}): "
                           "this needs the host's own namespaces")
    return backend


def share_runner(backend: Backend) -> Any:
    """The runner a probe share of the remote host's endpoints runs through: ``docker exec``
    of ``python3 -m hybridnb.services.probe.share`` in its agent container
    (:class:`~hybridnb.remote.agentbox.AgentRunner`)."""
    return backend.extras["runner"]


def refuse_unserved(host: str, where: str, backend: Backend,
                    resources: Iterable[Resource]) -> None:
    """Refuse, naming the host, a share holding kinds the remote backend cannot make."""
    missing = sorted({(r.kind, r.name) for r in resources if not backend.supports(r.kind)})
    if not missing:
        return
    what = ", ".join(f"{k} {n}" for k, n in missing)
    kinds = {k for k, _ in missing}
    if "dns" in kinds:
        hint = ("the first host (the primary) holds the gateway and the lab's DNS server: "
                "make it a sandbox or engine: local host and list it first")
    elif "vm" in kinds:
        hint = (f"give host {host} a libvirt: URI too, or place VMs on another host "
                "(endpoint key host:)")
    else:
        hint = "place these endpoints on a sandbox or engine: local host"
    raise Unsupported(
        f"host {host} ({where}) is reached through its engines' URLs, where hybridnb makes "
        "containers, namespace hosts, link impairments, the fabric and (given a libvirt: "
        f"URI) VMs only, not {what}", hint=hint, capability="hosts",
        kind=missing[0][0])


def release_if_unused(backend: Backend) -> bool:
    """After a destroy: remove the host's agent container when no hybridnb lab owns a
    bridge, VXLAN device, Docker network or container there any more (the image stays
    cached).  True when it was removed."""
    from hybridnb.drivers.docker import docker_errors
    from hybridnb.remote.agentbox import agent_labs, agents, remove_agents

    client = backend.extras["agent"]
    try:                  # best effort: the lab is destroyed; a kept agent is harmless
        with docker_errors("list the hybridnb agent containers"):
            if not agents(backend.extras["docker"].api):
                return False
        owners = agent_labs(client)
        owners |= backend.drivers["network"].labs()        # type: ignore[attr-defined]
        owners |= backend.drivers["container"].labs()      # type: ignore[attr-defined]
        if owners:
            return False
        client.close()
        with docker_errors("remove the hybridnb agent container"):
            remove_agents(backend.extras["docker"].api)
    except HybridError:
        return False
    return True
