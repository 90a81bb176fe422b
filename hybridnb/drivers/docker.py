"""Docker drivers: the lab's Docker network on the lab bridge, and one container per endpoint.

``network`` resources (see :mod:`hybridnb.core.compile`) become a Docker *bridge* network bound
to the existing lab bridge through ``com.docker.network.bridge.name``.  Its gateway must be
the bridge's own address (Docker replaces a bridge address that differs), the lab's container
pool is given as ``ip_range`` and the other endpoints' addresses inside that range are
reserved as ``aux_addresses``, so Docker never hands out an address a VM or host uses.  Only
one Docker network may use a bridge: a foreign one is reported as a :class:`ConflictError`.
Removing the network leaves the pre-existing bridge in place.

``container`` resources arrive compiled into the docker SDK's own vocabulary by the container
kind (:mod:`hybridnb.core.kinds.container`): ``create`` holds the keyword arguments of
``create_container`` (image, hostname, command, environment, exposed ports, ...),
``host_config`` those of ``create_host_config`` (network mode, ``init`` — PID 1 forwards
signals, so a stop takes ~0.1 s instead of the 10 s timeout —, the lab's DNS server and search
domain, port bindings) and ``endpoint_config`` those of ``create_endpoint_config`` (the static
address).  This driver passes them through without knowing any field; it adds the name, the
ownership labels and the network attachment, makes sure the image is there (pulled if
possible; otherwise the error says how to get it — the sandbox builds ``busybox`` from
Debian's busybox-static), starts the container and waits a short settle
(:attr:`ContainerDriver.settle_running`): a container whose command exits at once is an
error with its exit code and the tail of its output, and is removed — a failed create leaves
nothing, and apply never reports ``ok`` for a container that does not run.

``check`` (the preflight, before anything of the lab is deleted or changed) refuses what
would fail later: an image the engine does not have and cannot pull (it is pulled here if it
can be), a container or network name held by something not of this lab, and a foreign
Docker network already on the lab bridge.

A container of an image recipe (the spec has ``recipe``) counts as made once the image's init
printed its ready marker (``HYBRIDNB-READY``: every service of the recipe accepts
connections), like a recipe VM; ``HYBRIDNB-FAILED service=... reason=...``, an exit or no
marker within ``ready_timeout`` seconds is a :class:`~hybridnb.errors.BootError` naming the
service, with the container's output, and the container is removed.  Bind mounts
(``host_config.binds``) whose host path does not exist are refused before anything is made
(Docker would make an empty directory there).

Ownership and fingerprints live in labels on the objects: ``hybridnb.lab``,
``hybridnb.name`` (the resource name), ``hybridnb.endpoint`` and ``hybridnb.fingerprint``.
``observe`` is one list call with a label filter; a container that exists but does not run is
observed as not running (with Docker's status text as the reason), so the planner replaces it.

Both drivers are safe on concurrent threads: each thread gets its own API client (the SDK's
HTTP session is not meant to be shared), created from the API version negotiated once.
Docker SDK exceptions are translated into :mod:`hybridnb.errors` here.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any, Iterator, Mapping, Sequence

from hybridnb.core import naming
from hybridnb.core.resource import Observation, Resource
from hybridnb.errors import (BootError, ConflictError, EngineError, EngineUnavailable,
                             HybridError, NotFoundError)
from hybridnb.target import Target

LAB = "hybridnb.lab"
NAME = "hybridnb.name"
ENDPOINT = "hybridnb.endpoint"
FINGERPRINT = "hybridnb.fingerprint"
BRIDGE_OPT = "com.docker.network.bridge.name"
MTU_OPT = "com.docker.network.driver.mtu"
#: bind the network to the bridge without putting the gateway address on it (the bridge of a
#: non-primary host of a lab spread over several hosts: the gateway is on the primary's)
INHIBIT_OPT = "com.docker.network.bridge.inhibit_ipv4"
#: Seconds a container gets between SIGTERM and SIGKILL when it is deleted.
STOP_TIMEOUT = 3
HINT_UNAVAILABLE = "start the sandbox (`hybridnb sandbox up`) or the host's dockerd"
READY_MARKER, FAILED_MARKER = "HYBRIDNB-READY", "HYBRIDNB-FAILED"
#: Seconds a recipe container's services get to be ready (its init gives up after 120 s).
READY_TIMEOUT = 150.0


@contextlib.contextmanager
def docker_errors(action: str, hint: str = HINT_UNAVAILABLE) -> Iterator[None]:
    """Translate docker SDK / transport exceptions raised inside into hybridnb errors
    (``hint``: how to get the engine running, said when it cannot be reached)."""
    import docker.errors
    import requests.exceptions

    try:
        yield
    except HybridError:
        raise
    except docker.errors.NotFound as exc:
        raise NotFoundError(f"{action}: {_explain(exc)}") from exc
    except docker.errors.APIError as exc:
        text = _explain(exc)
        low = text.lower()
        if exc.status_code == 409 or "already in use" in low or "already exists" in low \
                or "active endpoints" in low or "conflict" in low:
            raise ConflictError(f"{action}: {text}") from exc
        raise EngineError(f"{action}: {text}", engine="docker") from exc
    except (docker.errors.DockerException, requests.exceptions.ConnectionError) as exc:
        raise EngineUnavailable(f"{action}: the Docker engine is not reachable ({exc})",
                                engine="docker", hint=hint) from exc
    except requests.exceptions.RequestException as exc:
        raise EngineError(f"{action}: {exc}", engine="docker") from exc


def _explain(exc: Any) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return text.decode() if isinstance(text, bytes) else str(text)


def client_kwargs(url: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for ``docker.APIClient`` besides ``base_url`` for an engine URL:
    TLS for ``https://`` and ``tcp://HOST:2376`` (the client certificate ``cert.pem`` /
    ``key.pem`` and the CA ``ca.pem`` from ``$DOCKER_CERT_PATH``, else ``~/.docker``, as
    the docker CLI finds them; the server is verified when there is a CA file); for
    ``ssh://`` the ``ssh`` binary (``use_ssh_client``) unless paramiko is installed."""
    import importlib.util

    env = os.environ if env is None else env
    scheme, _, rest = url.partition("://")
    port = rest.split("/", 1)[0].rpartition(":")[2]
    if scheme == "https" or (scheme == "tcp" and port == "2376"):
        import docker.tls

        certs = env.get("DOCKER_CERT_PATH") or os.path.expanduser("~/.docker")
        have = {n: os.path.join(certs, n) for n in ("ca.pem", "cert.pem", "key.pem")
                if os.path.exists(os.path.join(certs, n))}
        client_cert = (have["cert.pem"], have["key.pem"]) \
            if "cert.pem" in have and "key.pem" in have else None
        return {"tls": docker.tls.TLSConfig(client_cert=client_cert,
                                            ca_cert=have.get("ca.pem"),
                                            verify=have.get("ca.pem") or False)}
    if scheme == "ssh" and importlib.util.find_spec("paramiko") is None:
        return {"use_ssh_client": True}
    return {}


class _Clients:
    """One low-level API client per thread for one engine URL."""

    def __init__(self, url: str | None, hint: str = HINT_UNAVAILABLE) -> None:
        if not url:
            raise EngineUnavailable("this target has no Docker engine", engine="docker",
                                    hint=hint)
        self.url = url
        self.hint = hint
        self._local = threading.local()
        self._version: str | None = None
        self._lock = threading.Lock()
        self._all: list[Any] = []

    def get(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            import docker

            with docker_errors(f"connect to {self.url}", self.hint):
                with self._lock:
                    if self._version is None:
                        probe = docker.APIClient(base_url=self.url, version="auto", timeout=60,
                                                 **client_kwargs(self.url))
                        self._version = probe.api_version
                        client = probe
                    else:
                        client = docker.APIClient(base_url=self.url, version=self._version,
                                                  timeout=60, **client_kwargs(self.url))
                    self._all.append(client)
            self._local.client = client
        return client

    def close(self) -> None:
        with self._lock:
            for client in self._all:
                with contextlib.suppress(Exception):
                    client.close()
            self._all.clear()
            self._local = threading.local()


class _DockerDriver:
    concurrent = True
    #: dockerd carries out a request whose client died; seconds it may still take to land
    settle = 2.0

    def __init__(self, target: Target) -> None:
        self.target = target
        self._clients = _Clients(target.docker_url, target.start_hint("dockerd"))

    @property
    def api(self) -> Any:
        return self._clients.get()

    def _errors(self, action: str) -> Any:
        """:func:`docker_errors` whose hint names this target (the sandbox to start)."""
        return docker_errors(action, self._clients.hint)

    def engine_version(self) -> dict[str, str]:
        """The engine's version and API version (for reports and diagnostics)."""
        with self._errors("ask the engine for its version"):
            info = self.api.version()
        return {"docker": str(info.get("Version", "?")),
                "docker API": str(info.get("ApiVersion", "?"))}

    def close(self) -> None:
        self._clients.close()


class NetworkDriver(_DockerDriver):
    """Kind ``network``: the lab's Docker network bound to the lab bridge."""

    kind = "network"

    def labs(self) -> set[str]:
        """Every lab that has a Docker network in this engine."""
        with self._errors("list docker networks"):
            nets = self.api.networks(filters={"label": LAB})
        return {(n.get("Labels") or {}).get(LAB) or "" for n in nets} - {""}

    def observe(self, lab: str) -> dict[str, Observation]:
        with self._errors("list docker networks"):
            nets = self.api.networks(filters={"label": f"{LAB}={lab}"})
        out = {}
        for net in nets:
            labels = net.get("Labels") or {}
            if labels.get(LAB) != lab:
                continue
            out[labels.get(NAME) or net["Name"]] = Observation(labels.get(FINGERPRINT, ""))
        return dict(sorted(out.items()))

    def bridges(self, lab: str) -> dict[str, str]:
        """``{network: the bridge it is bound to}`` for this lab's Docker networks."""
        with self._errors("list docker networks"):
            nets = self.api.networks(filters={"label": f"{LAB}={lab}"})
        return {(n.get("Labels") or {}).get(NAME) or n["Name"]:
                (n.get("Options") or {}).get(BRIDGE_OPT, "") for n in nets
                if (n.get("Labels") or {}).get(LAB) == lab}

    def check(self, lab: str, resource: Resource) -> None:
        """Refuse, before anything changes, a network name or a bridge another holds."""
        with self._errors(f"check docker network {resource.spec['network']}"):
            self._foreign(lab, resource, self.api.networks())

    @staticmethod
    def _foreign(lab: str, resource: Resource, nets: list[dict[str, Any]]) -> None:
        spec = resource.spec
        name, bridge = spec["network"], spec["bridge"]
        for net in nets:
            ours = (net.get("Labels") or {}).get(LAB) == lab
            if net["Name"] == name and not ours:
                raise ConflictError(
                    f"a docker network named {name} exists and does not belong to lab "
                    f"{lab}", hint=f"remove it: docker network rm {name}")
            if net["Name"] != name and (net.get("Options") or {}).get(BRIDGE_OPT) == bridge:
                raise ConflictError(
                    f"docker network {net['Name']} already uses bridge {bridge}; only one "
                    f"docker network may use a bridge",
                    hint=f"remove it (docker network rm {net['Name']}) or give the lab "
                         f"another bridge")

    def create(self, lab: str, resource: Resource) -> None:
        import docker.types

        spec = resource.spec
        name, bridge = spec["network"], spec["bridge"]
        with self._errors(f"create docker network {name}"):
            nets = self.api.networks()
            self._foreign(lab, resource, nets)
            for net in nets:
                if net["Name"] == name:
                    self._remove(net["Id"], name)           # leftover: recreate as wanted
            pool = docker.types.IPAMPool(
                subnet=spec["subnet"], gateway=spec["gateway"],
                iprange=spec.get("ip_range") or None,
                aux_addresses=dict(spec.get("aux_addresses") or {}) or None)
            options = {BRIDGE_OPT: bridge}
            if spec.get("mtu"):
                options[MTU_OPT] = str(spec["mtu"])
            if spec.get("inhibit_ipv4"):
                options[INHIBIT_OPT] = "true"
            self.api.create_network(
                name, driver="bridge", options=options,
                ipam=docker.types.IPAMConfig(driver="default", pool_configs=[pool]),
                check_duplicate=True, internal=False,
                labels={LAB: lab, NAME: resource.name, FINGERPRINT: resource.fingerprint})

    def delete(self, lab: str, name: str) -> None:
        with self._errors(f"delete docker network {name}"):
            for net in self.api.networks(filters={"label": f"{LAB}={lab}"}):
                labels = net.get("Labels") or {}
                if labels.get(LAB) == lab and (labels.get(NAME) or net["Name"]) == name:
                    self._remove(net["Id"], net["Name"])

    def _remove(self, net_id: str, name: str) -> None:
        import docker.errors

        try:
            self.api.remove_network(net_id)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "active endpoints" in _explain(exc):
                raise ConflictError(f"docker network {name} still has containers attached",
                                    hint="delete the lab's containers first") from exc
            raise


class ContainerDriver(_DockerDriver):
    """Kind ``container``: one container per endpoint with a static address on the network."""

    kind = "container"
    #: Seconds a started container must keep running to count as up (its command did not
    #: exit at once).
    settle_running = 0.5
    #: The engine's processes are this machine's (its ``/proc`` shows them): false for the
    #: engine of a remote host, where a timed-out exec cannot be killed from here.
    local_processes = True

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self._pid_cache: dict[str, tuple[int, str]] = {}     # id -> (pid, its start time)
        self._pool: Any = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        super().close()

    def labs(self) -> set[str]:
        """Every lab that has a container in this engine."""
        with self._errors("list containers"):
            found = self.api.containers(all=True, filters={"label": LAB})
        return {(c.get("Labels") or {}).get(LAB) or "" for c in found} - {""}

    def observe(self, lab: str) -> dict[str, Observation]:
        with self._errors("list containers"):
            found = self.api.containers(all=True, filters={"label": f"{LAB}={lab}"})
        out = {}
        for c in found:
            labels = c.get("Labels") or {}
            if labels.get(LAB) != lab or ENDPOINT not in labels:
                continue
            running = c.get("State") == "running"
            out[labels[ENDPOINT]] = Observation(
                labels.get(FINGERPRINT, ""), running=running,
                reason="" if running else str(c.get("Status") or c.get("State") or ""),
                detail=str(c.get("Status") or ""))
        return dict(sorted(out.items()))

    def state(self, lab: str) -> dict[str, dict[str, Any]]:
        """Per endpoint: container id, name, state, status text and the MAC address on the
        lab's network (one list call)."""
        with self._errors("list containers"):
            found = self.api.containers(all=True, filters={"label": f"{LAB}={lab}"})
        return {c["Labels"][ENDPOINT]: {"id": c["Id"], "name": c["Names"][0].lstrip("/"),
                                        "state": c.get("State"), "status": c.get("Status"),
                                        "mac": _mac(c, naming.docker_network(lab))}
                for c in sorted(found, key=lambda c: c["Names"][0])
                if (c.get("Labels") or {}).get(LAB) == lab and ENDPOINT in c["Labels"]}

    def netns_paths(self, lab: str) -> dict[str, str]:
        """Per running endpoint: its network namespace (``/proc/<pid>/ns/net``), where the
        probe engine opens sockets — no exec into the container, no tools in the image.

        The list call does not give a container's process; an inspect per container does
        (~3 ms each).  So a container's pid is remembered with the start time of that
        process (``/proc/<pid>/stat``): while the same process runs, no inspect is needed —
        a restarted container has another process, a reused pid another start time — and the
        containers not known yet are inspected a few at a time."""
        running = {endpoint: info for endpoint, info in self.state(lab).items()
                   if info.get("state") == "running"}
        pids = self._pids({info["id"]: info["name"] for info in running.values()})
        return {endpoint: f"/proc/{pids[info['id']]}/ns/net"
                for endpoint, info in running.items() if pids.get(info["id"])}

    def _pids(self, names: Mapping[str, str]) -> dict[str, int]:
        """``{container id: pid}`` of running containers (``names``: id -> name)."""
        cache = self._pid_cache
        out = {cid: cache[cid][0] for cid in names
               if cid in cache and _start_time(cache[cid][0]) == cache[cid][1]}
        missing = sorted(set(names) - set(out))

        def inspect(cid: str) -> tuple[str, int]:
            with self._errors(f"inspect container {names[cid]}"):
                return cid, int(self.api.inspect_container(cid)["State"].get("Pid") or 0)
        if len(missing) > 1:
            with self._lock:
                if self._pool is None:         # its threads keep their API clients
                    from concurrent.futures import ThreadPoolExecutor

                    self._pool = ThreadPoolExecutor(4, thread_name_prefix="hnb-inspect")
                pool = self._pool
            found = list(pool.map(inspect, missing))
        else:
            found = [inspect(cid) for cid in missing]
        for cid, pid in found:
            started = _start_time(pid) if pid else None
            if started is not None:
                cache[cid] = (pid, started)
            out[cid] = pid
        for cid in set(cache) - set(names):
            cache.pop(cid, None)               # gone or stopped
        return out

    # -- for the watching services (doctor, logs, the topology widget) --------------------

    def _one(self, lab: str, endpoint: str) -> dict[str, Any]:
        info = self.state(lab).get(endpoint)
        if info is None:
            raise NotFoundError(f"no container {endpoint} in lab {lab}")
        return info

    def start(self, lab: str, endpoint: str) -> None:
        """Start a stopped container of the lab (running is fine)."""
        info = self._one(lab, endpoint)
        with self._errors(f"start container {info['name']}"):
            self.api.start(info["id"])

    def stop(self, lab: str, endpoint: str) -> None:
        """Stop a container of the lab (it stays: ``start`` brings it back)."""
        info = self._one(lab, endpoint)
        with self._errors(f"stop container {info['name']}"):
            self.api.stop(info["id"], timeout=STOP_TIMEOUT)

    def logs(self, lab: str, endpoint: str, *, since: float | None = None,
             tail: int | None = None) -> list[tuple[str, str]]:
        """The container's output as ``(RFC 3339 timestamp, line)`` pairs, oldest first."""
        info = self._one(lab, endpoint)
        with self._errors(f"read the logs of {info['name']}"):
            raw = self.api.logs(info["id"], stdout=True, stderr=True, timestamps=True,
                                since=since if since else None,
                                tail=tail if tail is not None else "all")
        out = []
        for line in raw.decode(errors="replace").splitlines():
            stamp, _, text = line.partition(" ")
            if stamp:
                out.append((stamp, text))
        return out

    def guest_exec(self, lab: str, endpoint: str, argv: Sequence[str],
                   timeout: float = 10.0) -> tuple[int, str, str]:
        """Run ``argv`` inside a running container of the lab (``docker exec``) →
        ``(exit code, stdout, stderr)``; a command still running after ``timeout`` seconds is
        killed and reported as an :class:`~hybridnb.errors.EngineError`."""
        info = self._one(lab, endpoint)
        with docker_errors(f"run {argv[0] if argv else 'nothing'} in {info['name']}"):
            ex = self.api.exec_create(info["id"], list(argv))
        done: dict[str, Any] = {}

        def run() -> None:          # its own thread, so its own API client
            try:
                done["out"] = self.api.exec_start(ex["Id"], demux=True)
            except Exception as exc:  # noqa: BLE001 - re-raised below, translated
                done["error"] = exc

        worker = threading.Thread(target=run, name=f"exec-{endpoint}", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            if not self.local_processes:
                raise EngineError(f"{' '.join(argv)!r} in container {endpoint} did not "
                                  f"finish within {timeout:g} s (left running: its engine "
                                  "is another machine's)", engine="docker")
            with contextlib.suppress(Exception):
                pid = self.api.exec_inspect(ex["Id"]).get("Pid")
                if pid:
                    _kill_tree(int(pid))
            worker.join(5.0)
            raise EngineError(f"{' '.join(argv)!r} in container {endpoint} did not finish "
                              f"within {timeout:g} s (killed)", engine="docker")
        with docker_errors(f"run {argv[0] if argv else 'nothing'} in {info['name']}"):
            if "error" in done:
                raise done["error"]
            code = self.api.exec_inspect(ex["Id"])["ExitCode"]
        out, err = done["out"]
        return (int(code if code is not None else -1),
                (out or b"").decode(errors="replace"), (err or b"").decode(errors="replace"))

    def version(self) -> dict[str, str]:
        """The engine's version and API version."""
        with self._errors("read the Docker version"):
            v = self.api.version()
        return {"version": str(v.get("Version", "")), "api": str(v.get("ApiVersion", ""))}

    def check(self, lab: str, resource: Resource) -> None:
        """Before anything changes: the image is in the engine (pulled now if it can be),
        the container's name is free or this lab's, and its mounts' sources exist."""
        import docker.errors

        spec = resource.spec
        cname = spec["container"]
        check_mounts(spec)
        with self._errors(f"check container {cname}"):
            try:
                info = self.api.inspect_container(cname)
            except docker.errors.NotFound:
                info = None
            if info is not None and (info["Config"].get("Labels") or {}).get(LAB) != lab:
                raise ConflictError(f"a container named {cname} exists and does not belong to "
                                    f"lab {lab}", hint=f"remove it: docker rm -f {cname}")
            self._ensure_image(str((spec.get("create") or {}).get("image")),
                               endpoint=spec["endpoint"])

    def create(self, lab: str, resource: Resource) -> None:
        """Create and start the container from the compiled SDK keyword arguments; fail
        (leaving nothing) when its command exits within :attr:`settle_running` seconds."""
        spec = resource.spec
        cname = spec["container"]
        create = dict(spec.get("create") or {})
        check_mounts(spec)
        with self._errors(f"create container {cname}"):
            self._remove_leftover(lab, cname)
            self._ensure_image(create["image"])
            api = self.api
            labels = {str(k): str(v) for k, v in (spec.get("labels") or {}).items()}
            labels.update({LAB: lab, NAME: resource.name, ENDPOINT: spec["endpoint"],
                           FINGERPRINT: resource.fingerprint})
            host_config = api.create_host_config(**dict(spec.get("host_config") or {}))
            net_config = api.create_networking_config({spec["network"]: api.create_endpoint_config(
                **dict(spec.get("endpoint_config") or {}))})
            created = api.create_container(**create, name=cname, labels=labels,
                                           host_config=host_config,
                                           networking_config=net_config, detach=True)
            try:
                api.start(created["Id"])
                if spec.get("recipe"):
                    self._wait_ready(created["Id"], spec["endpoint"],
                                     float(spec.get("ready_timeout") or READY_TIMEOUT))
                else:
                    self._settle(api, created["Id"], spec["endpoint"])
            except Exception:
                with contextlib.suppress(Exception):
                    api.remove_container(created["Id"], force=True, v=True)
                raise

    def _wait_ready(self, cid: str, endpoint: str, timeout: float) -> None:
        """Until the image's init says every service of the recipe is ready."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            text = self.api.logs(cid, stdout=True, stderr=True).decode(errors="replace")
            if READY_MARKER in text:
                return
            if FAILED_MARKER in text:
                raise _failed(endpoint, text)
            state = self.api.inspect_container(cid)["State"]
            if not state.get("Running"):
                raise BootError(f"container {endpoint} exited with code "
                                f"{state.get('ExitCode')} before its services were ready",
                                console=_tail(text), hint="its output is above", engine="docker",
                                what="log")
            if time.monotonic() > deadline:
                raise BootError(f"container {endpoint}: its services were not ready after "
                                f"{timeout:.0f} s", console=_tail(text), what="log",
                                hint="its output is above; each service logs to "
                                     "/var/log/hybridnb/ in the container", engine="docker")
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def _settle(self, api: Any, cid: str, endpoint: str) -> None:
        """Wait :attr:`settle_running` seconds; a container that stops meanwhile is a
        :class:`BootError` with its exit code and the tail of its output."""
        deadline = time.monotonic() + self.settle_running
        while True:
            state = api.inspect_container(cid).get("State") or {}
            if not state.get("Running"):
                raw = api.logs(cid, stdout=True, stderr=True, tail=20)
                tail = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
                why = f" ({state['Error']})" if state.get("Error") else ""
                raise BootError(
                    f"container {endpoint} exited with code {state.get('ExitCode')} right "
                    f"after it started{why}", console=tail.rstrip(), engine="docker",
                    what="log", hint="its command must keep running (a server, or e.g. "
                                     "sleep 3600); the log tail shows why it stopped")
            if time.monotonic() >= deadline:
                return
            time.sleep(0.05)

    def delete(self, lab: str, name: str) -> None:
        with self._errors(f"delete container of endpoint {name}"):
            for c in self.api.containers(all=True, filters={"label": f"{ENDPOINT}={name}"}):
                if (c.get("Labels") or {}).get(LAB) == lab:
                    self._remove(c["Id"], running=c.get("State") == "running")

    def _remove(self, cid: str, running: bool) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.NotFound):
            if running:
                self.api.stop(cid, timeout=STOP_TIMEOUT)
            self.api.remove_container(cid, force=True, v=True)

    def _remove_leftover(self, lab: str, cname: str) -> None:
        import docker.errors

        try:
            info = self.api.inspect_container(cname)
        except docker.errors.NotFound:
            return
        if (info["Config"].get("Labels") or {}).get(LAB) != lab:
            raise ConflictError(f"a container named {cname} exists and does not belong to lab "
                                f"{lab}", hint=f"remove it: docker rm -f {cname}")
        with contextlib.suppress(docker.errors.NotFound):
            self.api.remove_container(info["Id"], force=True, v=True)

    def _ensure_image(self, image: str, endpoint: str | None = None) -> None:
        import docker.errors

        try:
            self.api.inspect_image(image)
            return
        except docker.errors.ImageNotFound:
            pass
        repo, tag = _split_image(image)
        try:
            self.api.pull(repo, tag=tag)
            self.api.inspect_image(image)
        except docker.errors.DockerException as exc:
            whose = f" (of container {endpoint})" if endpoint else ""
            where = f"sandbox {self.target.sandbox!r}" if self.target.sandbox else \
                f"the engine at {self.target.docker_url}"
            raise EngineError(
                f"image {image}{whose} is not in {where} and cannot be pulled "
                f"({_explain(exc).splitlines()[0] if _explain(exc) else exc})",
                engine="docker",
                hint="no registry is reachable from the sandbox: `hybridnb sandbox up` builds "
                     f"busybox:latest; other images must be loaded into this engine "
                     f"(docker -H {self.target.docker_url} load -i IMAGE.tar)") from exc


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (field 22 of ``/proc/<pid>/stat``), None if it is gone:
    a pid and its start time name one process for the machine's lifetime."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    return fields[19].decode() if len(fields) > 19 else None


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it (an exec'd shell's children too)."""
    from hybridnb.daemons import process

    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(process.children(p))
    process.signal_all(tree, 9)


def check_mounts(spec: Mapping[str, Any]) -> None:
    """Refuse bind mounts whose host path does not exist (Docker would make it, empty)."""
    for bind in (spec.get("host_config") or {}).get("binds") or ():
        host = str(bind).split(":", 1)[0]
        if not os.path.exists(host):
            raise NotFoundError(f"container {spec.get('endpoint')}: mount source {host} does "
                                "not exist", hint="make it first (mounts: bind a directory of "
                                                  "this machine), or fix the path")


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _failed(endpoint: str, text: str) -> BootError:
    """BootError from the init's ``HYBRIDNB-FAILED name=.. service=.. reason=..`` line."""
    line = next(ln for ln in text.splitlines() if FAILED_MARKER in ln)
    head, _, reason = line.partition(" reason=")
    fields = dict(p.split("=", 1) for p in head.split() if "=" in p)
    service = fields.get("service", "?")
    what = "did not boot" if service == "boot" else f"service {service} did not come up"
    return BootError(f"container {endpoint}: {what}: {reason.strip() or 'unknown'}",
                     console=_tail(text), engine="docker", what="log",
                     hint="the output above holds the service's log; its full log is "
                          "/var/log/hybridnb/ in the container")


def _mac(listed: Mapping[str, Any], network: str) -> str | None:
    """The MAC address a listed container has on ``network`` (None when not attached)."""
    nets = (listed.get("NetworkSettings") or {}).get("Networks") or {}
    return (nets.get(network) or {}).get("MacAddress") or None


def _split_image(image: str) -> tuple[str, str]:
    """``repo[:tag]`` → (repo, tag) with ``latest`` as the default tag (digests kept)."""
    if "@" in image:
        repo, digest = image.split("@", 1)
        return repo, digest
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = image.rsplit(":", 1)
        return repo, tag
    return image, "latest"


def drivers(target: Target) -> dict[str, Any]:
    """The Docker drivers for ``target``, keyed by kind."""
    return {"network": NetworkDriver(target), "container": ContainerDriver(target)}
