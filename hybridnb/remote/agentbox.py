"""The agent container on a remote host, the client that talks to it, and its driver proxies.

**The container** (:func:`ensure_agent`): one per Docker engine, named :data:`NAME`,
labelled :data:`~hybridnb.remote.image.LABEL` with its image's tag, made through that
engine's API from the agent image (:func:`~hybridnb.remote.image.ensure_agent_image`):

* ``cap_add: NET_ADMIN, NET_RAW, SYS_ADMIN`` (:data:`CAPABILITIES`) — it creates bridges
  and VXLAN devices and writes iptables/nftables (``NET_ADMIN``), opens raw sockets for
  ICMP probes (``NET_RAW``), and enters the network namespaces of that host's lab
  containers to run its share of the probe matrix there (``setns(CLONE_NEWNET)`` needs
  ``SYS_ADMIN``; Docker's default seccomp profile allows ``setns`` only with it) — not
  ``privileged``: every capability, devices and writable ``/sys`` (and ``privileged`` fails
  under a dockerd whose own bounding set lacks some capabilities, as on this project's CI
  machines);
* ``network_mode=host`` — it lives in the host's network namespace, so the fabric drivers
  (bound to a target without a namespace) act on *that* host's links and tables;
* ``pid_mode=host`` — a lab container's namespace is ``/proc/<pid>/ns/net`` with the pid
  the host's Docker API gives (``State.Pid``, a pid of dockerd's PID namespace): the
  probe share finds it only in that PID namespace.  Its mount namespace stays private;
* the host's ``/run/netns`` bind-mounted on its own with **shared** propagation
  (:data:`BINDS`) — a namespace host's namespace, which the agent mounts on
  ``/run/netns/NAME`` like ``ip netns add``, then appears in the host's ``/run/netns``
  (its mount namespace is a peer) and outlives the agent container: a new agent sees it
  and deletes it, and the unmount reaches the host too.  A private bind (Docker's default)
  leaves an empty file on the host and the namespace inside the agent; no bind leaves
  nothing on the host at all.  Docker refuses the shared bind where the host's mount
  holding ``/run/netns`` is not shared: the agent is then made without it
  (:data:`CONFIG_ALONE`, environment ``HYBRIDNB_AGENT_NETNS=alone``) and refuses namespace
  hosts.  ``/etc/netns`` (a namespace host's ``resolv.conf``) is an ordinary bind;
* ``/proc/sys`` writable (:data:`READONLY_PATHS`: Docker's read-only paths but that one) —
  a namespace host's ``net.ipv4.ping_group_range`` is written inside its namespace, and
  Docker mounts ``/proc/sys`` read-only in an unprivileged container (``EROFS``).  This
  also lets the agent write the host's other sysctls; Docker's masked paths stay masked;
* its main process idles (``python3 -m hybridnb.remote.agent --idle``); the server runs by
  ``docker exec`` with stdio attached (:class:`~hybridnb.drivers.runner.DockerExecRunner`).

It is **kept and reused** while any hybridnb lab owns a bridge, VXLAN device, namespace
host, Docker network or container on that engine's host (starting it costs an image inspect and a container
start, ~0.5 s), and removed by the destroy that leaves none (:func:`release_if_unused`);
the image stays in the engine, like every image hybridnb imports — :func:`remove_agents`
and :func:`hybridnb.remote.image.remove_images` remove both.  A container of an older
image (another hybridnb) is replaced.

**The client** (:class:`AgentClient`) starts one server process per backend, lazily, and
sends one request at a time (a lock); :class:`AgentDriver` and its subclasses are the
Driver protocol (and the capabilities the real fabric drivers have) forwarded to it.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable, Mapping

from hybridnb.core.resource import Observation, Resource
from hybridnb.errors import EngineError, EngineUnavailable
from hybridnb.remote import wire
from hybridnb.remote.wire import NETNS_ENV
from hybridnb.remote.image import LABEL, drop_stale, ensure_agent_image
from hybridnb.drivers.runner import DockerExecRunner, ModuleProcess, Runner

NAME = "hnb-agent"
#: what the agent may do beyond an ordinary container: configure the network (links,
#: addresses, FDB, iptables, nftables), open raw sockets, enter other containers' network
#: namespaces (probes) — not ``privileged``, which would hand it every capability (and
#: fails under a dockerd whose own bounding set lacks some, as on this project's CI
#: machines)
CAPABILITIES = ("NET_ADMIN", "NET_RAW", "SYS_ADMIN")
#: where a host's named network namespaces are, there and in its agent container
NETNS_DIR = "/run/netns"
#: the agent shares the host's PID namespace (the lab containers' pids are dockerd's)
PID_MODE = "host"
#: the host's directory of named network namespaces, bind-mounted with **shared**
#: propagation: a namespace host's namespace (``hnb-<lab>-<endpoint>``), made by the agent
#: bind-mounting it on ``/run/netns/NAME``, is then a mount of the host's ``/run/netns`` —
#: ``ip netns`` there lists it, and it outlives the agent container (a new agent sees it
#: and deletes it).  A private bind leaves only an empty file on the host, no bind at all
#: not even that; measured in notes 17-remotens.  ``/etc/netns`` (a namespace host's
#: ``resolv.conf``, what ``ip netns exec`` shows) is a plain bind.
BINDS = ("/run/netns:/run/netns:rshared", "/etc/netns:/etc/netns")
#: Docker's read-only paths of an unprivileged container but ``/proc/sys``: a namespace
#: host's namespace-local sysctl (``net.ipv4.ping_group_range``) is written from a thread
#: inside that namespace (masked paths stay Docker's default)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sysrq-trigger")
#: the label saying how the agent container was made (an agent made with other
#: capabilities — an older hybridnb's — is replaced)
CONFIG_LABEL = "hybridnb.agent.config"
CONFIG = (f"cap_add={','.join(CAPABILITIES)};pid={PID_MODE};network=host;"
          f"binds={','.join(BINDS)};readonly={','.join(READONLY_PATHS)}")
#: the config of an agent made where Docker refused the shared bind of ``/run/netns``
CONFIG_ALONE = CONFIG + ";netns=alone"

MODULE = "hybridnb.remote.agent"
#: an agent server nobody asked anything for this long ends (a Lab object dropped without
#: ``close`` leaves no process on the host); the client starts a new one when it asks again
EXIT_AFTER = 300.0


def _find(api: Any) -> dict[str, Any] | None:
    found = api.containers(all=True, filters={"name": f"^/{NAME}$"})
    return found[0] if found else None


def ensure_agent(api: Any, *, progress: Callable[[str], None] | None = None) -> str:
    """The id of the running agent container of the engine behind ``api``, made (and its
    image imported) first when missing or stale.  Where Docker refuses the shared bind of
    the host's ``/run/netns`` (that host's mount holding it is not shared), the agent is
    made without it (:data:`CONFIG_ALONE`): the fabric works, namespace hosts are refused
    there by the agent, naming the cause."""
    import docker.errors

    tag = ensure_agent_image(api, progress=progress)
    shared = True
    for _attempt in range(4):
        found = _find(api)
        labels = (found or {}).get("Labels") or {}
        if found is not None and (labels.get(LABEL) != tag or
                                  labels.get(CONFIG_LABEL) not in (CONFIG, CONFIG_ALONE)):
            api.remove_container(found["Id"], force=True)      # another hybridnb's agent
            drop_stale(api, tag)
            found = None
        if found is not None:
            if found.get("State") != "running":
                api.start(found["Id"])
            return str(found["Id"])
        made = None
        try:
            made = api.create_container(
                tag, name=NAME, labels={LABEL: tag, CONFIG_LABEL: CONFIG if shared
                                        else CONFIG_ALONE},
                environment={NETNS_ENV: "host" if shared else "alone"},
                host_config=host_config_of(api, shared=shared), detach=True)
            api.start(made["Id"])
            return str(made["Id"])
        except docker.errors.APIError as exc:
            if shared and made is not None and not_shared(exc):
                api.remove_container(made["Id"], force=True)
                shared = False                       # again, without b's /run/netns
                continue
            if exc.status_code != 409:                # 409: another process made it first
                raise
    raise EngineError(f"cannot make the agent container {NAME}", engine="docker")


def not_shared(exc: Exception) -> bool:
    """Docker refused a bind with shared propagation: the host's mount holding its source
    is not a shared mount (``path /run/netns is mounted on / but it is not a shared
    mount``)."""
    text = str(getattr(exc, "explanation", None) or exc)
    return "not a shared" in text


def host_config_of(api: Any, *, shared: bool = True) -> dict[str, Any]:
    """The agent container's host config (:data:`CAPABILITIES`, host network and PID
    namespaces, :data:`BINDS` — ``shared=False``: without the host's ``/run/netns`` —
    :data:`READONLY_PATHS`)."""
    binds = [b for b in BINDS if shared or not b.startswith(f"{NETNS_DIR}:")]
    config = dict(api.create_host_config(cap_add=list(CAPABILITIES), network_mode="host",
                                         pid_mode=PID_MODE, binds=binds))
    config["ReadonlyPaths"] = list(READONLY_PATHS)
    return config


def agents(api: Any) -> list[dict[str, Any]]:
    """The agent containers of an engine (``docker ps -a`` rows)."""
    return list(api.containers(all=True, filters={"label": LABEL}))


def remove_agents(api: Any) -> list[str]:
    """Remove every agent container of the engine behind ``api``; their names."""
    out = []
    for row in agents(api):
        api.remove_container(row["Id"], force=True)
        out.append((row.get("Names") or [row["Id"]])[0].lstrip("/"))
    return sorted(out)


# ------------------------------------------------------------------------------- client

class AgentClient:
    """One agent server process on a host (started on first use), one request at a time."""

    def __init__(self, runner_factory: Callable[[], Runner], where: str, *,
                 exit_after: float = EXIT_AFTER) -> None:
        self._factory, self.where, self.exit_after = runner_factory, where, exit_after
        self._proc: ModuleProcess | None = None
        self._lock = threading.Lock()
        self._next = 0

    def _process(self) -> ModuleProcess:
        if self._proc is None:
            self._proc = self._factory().run_module(
                MODULE, ["--exit-after", f"{self.exit_after:g}"])
        return self._proc

    def call(self, kind: str, method: str, *args: Any) -> Any:
        """``driver(kind).method(*args)`` on the host; its error re-raised here."""
        with self._lock:
            doing = f"{method} {kind}" + (f" {args[1]}" if len(args) > 1 and
                                          isinstance(args[1], str) else "")
            line = self._ask(wire.request(self._next_id(), kind, method, *args).encode(),
                             doing)
            if line == wire.BYE.encode():           # it ended, idle, before our request
                self._drop()
                line = self._ask(wire.request(self._next_id(), kind, method, *args).encode(),
                                 doing)
            reply = json.loads(line)
        if not reply.get("ok"):
            raise wire.error_from(reply.get("error") or {})
        return wire.decode(reply.get("value"))

    def _next_id(self) -> int:
        self._next += 1
        return self._next

    def _drop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()

    def _ask(self, request: bytes, doing: str) -> bytes:
        """Send one request, read one line (caller holds the lock)."""
        proc = self._process()
        why = ""
        try:
            proc.stdin.write(request)
            proc.stdin.flush()
        except OSError as exc:                # it ended: what it said last is still there
            why = str(exc)
        try:
            line = proc.stdout.readline()
        except OSError as exc:
            line, why = b"", why or str(exc)
        if not line:
            tail = proc.stderr_tail().strip()[-400:]
            self._drop()
            raise EngineUnavailable(
                f"{doing}: the hybridnb agent on {self.where} stopped answering"
                + (f" ({why})" if why else "") + (f": {tail}" if tail else ""),
                hint="is that host's Docker engine up? the next command starts the agent "
                     "again")
        return line

    def hello(self) -> dict[str, Any]:
        return dict(self.call("agent", "hello"))

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.stdin.close()
                proc.wait(5)
            except Exception:
                proc.kill()


def docker_runner(api_factory: Callable[[], Any], where: str,
                  progress: Callable[[str], None] | None = None) -> Callable[[], Runner]:
    """A runner factory that makes sure the agent container runs, then execs in it."""
    def make() -> Runner:
        from hybridnb.drivers.docker import docker_errors

        with docker_errors(f"start the hybridnb agent on {where}"):
            api = api_factory()
            cid = ensure_agent(api, progress=progress)
        return DockerExecRunner(api, cid, where=f"the agent container {NAME} on {where}")
    return make


class AgentRunner:
    """A :class:`~hybridnb.drivers.runner.Runner` into a host's agent container, made on first
    use (the container started if needed) and kept; when the container is gone (a destroy
    released it) the next module starts it again."""

    def __init__(self, factory: Callable[[], Runner], where: str) -> None:
        self._factory = factory
        self._runner: Runner | None = None
        self._lock = threading.Lock()
        self.where = f"the agent container {NAME} on {where}"

    def run_module(self, module: str, args: Any = ()) -> ModuleProcess:
        for attempt in (1, 2):
            with self._lock:
                if self._runner is None:
                    self._runner = self._factory()
                runner = self._runner
            try:
                return runner.run_module(module, list(args))
            except EngineError:
                with self._lock:
                    self._runner = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def __repr__(self) -> str:
        return f"AgentRunner({self.where!r})"


# ------------------------------------------------------------------------------ drivers

class AgentDriver:
    """The Driver protocol of the ``kind`` driver the agent holds."""

    concurrent = False

    def __init__(self, kind: str, client: AgentClient) -> None:
        self.kind, self.client = kind, client

    def observe(self, lab: str) -> Mapping[str, Observation]:
        return dict(self.client.call(self.kind, "observe", lab))

    def create(self, lab: str, resource: Resource) -> None:
        self.client.call(self.kind, "create", lab, resource)

    def delete(self, lab: str, name: str) -> None:
        self.client.call(self.kind, "delete", lab, name)

    def close(self) -> None:
        self.client.close()


class _Checked(AgentDriver):
    def check(self, lab: str, resource: Resource) -> None:
        self.client.call(self.kind, "check", lab, resource)

    def update(self, lab: str, resource: Resource) -> None:
        self.client.call(self.kind, "update", lab, resource)


class BridgeProxy(_Checked):
    """The bridge: check, update (no ``netns_paths``: its namespace is not this machine's);
    the links of its host read there (:class:`~hybridnb.drivers.base.LinksThere`), and the
    doctor's other reads of that host (:class:`~hybridnb.drivers.base.HostThere`)."""

    def links_there(self, netns: str | None = None) -> dict[int, Any]:
        """Every link of the host's namespace (or of ``netns``, a path as seen there), with
        its counters, read by the agent."""
        return links_from(self.client.call("links", "dump", netns))

    def read_there(self, what: str, *args: Any) -> Any:
        """One of the doctor's read-only reads of the host, answered by the agent there
        (:mod:`hybridnb.remote.hostread`; :class:`~hybridnb.drivers.base.HostThere`)."""
        return self.client.call("hostread", what, *args)


def links_from(raw: Mapping[str, Any]) -> dict[int, Any]:
    """The agent's ``links dump`` answer as :class:`~hybridnb.drivers.linkstats.Link` objects."""
    from hybridnb.drivers.linkstats import Counters, Link

    return {int(i): Link(**{**fields, "counters": Counters(**fields.get("counters") or {})})
            for i, fields in raw.items()}


class VxlanProxy(AgentDriver):
    def update(self, lab: str, resource: Resource) -> None:
        self.client.call(self.kind, "update", lab, resource)

    def flood_list(self, device: str) -> list[str]:
        return list(self.client.call(self.kind, "flood_list", device))


class FirewallProxy(AgentDriver):
    """The DOCKER-USER rule (create and delete only)."""


class PolicyProxy(_Checked):
    def counters(self, lab: str) -> dict[str, tuple[int, int]]:
        return {k: (int(v[0]), int(v[1])) for k, v in
                dict(self.client.call(self.kind, "counters", lab)).items()}

    def ruleset(self, lab: str) -> Any:
        return self.client.call(self.kind, "ruleset", lab)


class HostProxy(AgentDriver):
    """Namespace hosts (kind ``host``), made by the agent's
    :class:`~hybridnb.drivers.netns.NetnsHostDriver` on that host: their namespaces are
    that host's ``/run/netns/hnb-<lab>-<endpoint>``.  No ``update`` (a changed host is made
    anew, as locally) and no ``netns_paths`` (nothing here may open them)."""

    def check(self, lab: str, resource: Resource) -> None:
        self.client.call(self.kind, "check", lab, resource)

    def labs(self) -> set[str]:
        return set(self.client.call(self.kind, "labs"))

    def netns_paths_there(self, lab: str) -> dict[str, str]:
        """Per whole namespace host of the lab: its namespace **as seen on that host** (for
        its probe share there, which the agent container runs); never opened here."""
        from hybridnb.core.naming import object_name

        return {name: f"{NETNS_DIR}/{object_name(lab, name)}" for name in self.observe(lab)}


ContainerPaths = Callable[[str], Mapping[str, str]]


class LinkProxy(_Checked):
    """Link impairments (kind ``link``), applied by the agent's link driver on that host
    (:class:`~hybridnb.remote.agent.ServedLinks`).  ``containers(lab)`` gives the lab's
    containers' namespaces as seen there (from that host's Docker API), sent with each
    request that looks for a container's bridge port.  A VM's ``mtu`` is refused: it is set
    inside the guest, through libvirt, which the agent does not reach."""

    def __init__(self, kind: str, client: AgentClient,
                 containers: ContainerPaths | None = None) -> None:
        super().__init__(kind, client)
        self.containers = containers

    def _paths(self, lab: str, spec: Mapping[str, Any] | None, *, strict: bool) -> dict:
        if self.containers is None or (spec is not None and spec.get("kind") != "container"):
            return {}
        try:
            return dict(self.containers(lab))
        except EngineError:
            if strict:
                raise
            return {}               # delete: restoring a container's MTU is best effort

    def check(self, lab: str, resource: Resource) -> None:
        spec = resource.spec
        if spec.get("kind") == "vm" and spec.get("mtu") is not None:
            from hybridnb.errors import Unsupported

            raise Unsupported(f"cannot set the mtu of vm {spec['endpoint']!r} on "
                              f"{self.client.where}: it is set inside the guest, which "
                              "hybridnb's agent there does not reach",
                              hint="place the VM on a sandbox or engine: local host, or "
                                   "drop its mtu", capability="hosts", kind="link")
        super().check(lab, resource)

    def create(self, lab: str, resource: Resource) -> None:
        self.client.call(self.kind, "create", lab, resource,
                         self._paths(lab, resource.spec, strict=True))

    def update(self, lab: str, resource: Resource) -> None:
        self.client.call(self.kind, "update", lab, resource,
                         self._paths(lab, resource.spec, strict=True))

    def delete(self, lab: str, name: str) -> None:
        self.client.call(self.kind, "delete", lab, name, self._paths(lab, None, strict=False))

    def link_report(self, lab: str) -> dict[str, Any]:
        return dict(self.client.call(self.kind, "link_report", lab))


PROXIES: dict[str, type[AgentDriver]] = {"bridge": BridgeProxy, "vxlan": VxlanProxy,
                                         "firewall": FirewallProxy, "policy": PolicyProxy,
                                         "host": HostProxy, "link": LinkProxy}


def agent_labs(client: AgentClient) -> set[str]:
    """Labs owning a bridge or VXLAN device on the agent's host (what every share has)."""
    return set(client.call("agent", "labs"))


def remove_from(docker_url: str) -> list[str]:
    """Remove hybridnb's agent containers and agent images from the engine at
    ``docker_url`` (what ``hybridnb images prune --docker URL`` does); what was removed.
    Labs applied there keep their fabric (the kernel holds it); the next command that needs
    the agent imports and starts it again."""
    import docker

    from hybridnb.drivers.docker import client_kwargs, docker_errors
    from hybridnb.remote.image import remove_images

    with docker_errors(f"remove the hybridnb agent from {docker_url}"):
        api = docker.APIClient(base_url=docker_url, version="auto", timeout=60,
                               **client_kwargs(docker_url))
        try:
            return [f"container {n}" for n in remove_agents(api)] + \
                [f"image {t}" for t in remove_images(api)]
        finally:
            api.close()
