"""Docker drivers: the lab's Docker network on the lab bridge, and one container per endpoint.

``network`` resources (see :mod:`hybridnb.core.compile`) become a Docker *bridge* network bound
to the existing lab bridge through ``com.docker.network.bridge.name``.  Its gateway must be
the bridge's own address (Docker replaces a bridge address that differs), the lab's container
pool is given as ``ip_range`` and the other endpoints' addresses inside that range are
reserved as ``aux_addresses``, so Docker never hands out an address a VM or host uses.  Only
one Docker network may use a bridge: a foreign one is reported as a :class:`ConflictError`.
Removing the network leaves the pre-existing bridge in place.

``container`` resources become containers with a static IPv4 address on that network,
``init`` (PID 1 forwards signals, so a stop takes ~0.1 s instead of the 10 s timeout), the
endpoint's hostname, the lab's DNS server and search domain, env, command, labels and
published ports.  A missing image is pulled if possible; otherwise the error says how to get
it (the sandbox builds ``busybox`` from Debian's busybox-static).

Ownership and fingerprints live in labels on the objects: ``hybridnb.lab``,
``hybridnb.name`` (the resource name), ``hybridnb.endpoint`` and ``hybridnb.fingerprint``.
``observe`` is one list call with a label filter; a container that exists but does not run is
reported with the fingerprint suffix ``:stopped``, so the planner replaces it.

Both drivers are safe on concurrent threads: each thread gets its own API client (the SDK's
HTTP session is not meant to be shared), created from the API version negotiated once.
Docker SDK exceptions are translated into :mod:`hybridnb.errors` here.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator, Mapping

from hybridnb.core import naming
from hybridnb.core.resource import Resource
from hybridnb.errors import ConflictError, EngineError, EngineUnavailable, HybridError, \
    NotFoundError
from hybridnb.target import Target

LAB = "hybridnb.lab"
NAME = "hybridnb.name"
ENDPOINT = "hybridnb.endpoint"
FINGERPRINT = "hybridnb.fingerprint"
BRIDGE_OPT = "com.docker.network.bridge.name"
MTU_OPT = "com.docker.network.driver.mtu"
STOPPED = ":stopped"
#: Seconds a container gets between SIGTERM and SIGKILL when it is deleted.
STOP_TIMEOUT = 3
HINT_UNAVAILABLE = "start the sandbox (`hybridnb sandbox up`) or the host's dockerd"


@contextlib.contextmanager
def docker_errors(action: str) -> Iterator[None]:
    """Translate docker SDK / transport exceptions raised inside into hybridnb errors."""
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
                                engine="docker", hint=HINT_UNAVAILABLE) from exc
    except requests.exceptions.RequestException as exc:
        raise EngineError(f"{action}: {exc}", engine="docker") from exc


def _explain(exc: Any) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return text.decode() if isinstance(text, bytes) else str(text)


class _Clients:
    """One low-level API client per thread for one engine URL."""

    def __init__(self, url: str | None) -> None:
        if not url:
            raise EngineUnavailable("this target has no Docker engine", engine="docker",
                                    hint=HINT_UNAVAILABLE)
        self.url = url
        self._local = threading.local()
        self._version: str | None = None
        self._lock = threading.Lock()
        self._all: list[Any] = []

    def get(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            import docker

            with docker_errors(f"connect to {self.url}"):
                with self._lock:
                    if self._version is None:
                        probe = docker.APIClient(base_url=self.url, version="auto", timeout=60)
                        self._version = probe.api_version
                        client = probe
                    else:
                        client = docker.APIClient(base_url=self.url, version=self._version,
                                                  timeout=60)
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
        self._clients = _Clients(target.docker_url)

    @property
    def api(self) -> Any:
        return self._clients.get()

    def engine_version(self) -> dict[str, str]:
        """The engine's version and API version (for reports and diagnostics)."""
        with docker_errors("ask the engine for its version"):
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
        with docker_errors("list docker networks"):
            nets = self.api.networks(filters={"label": LAB})
        return {(n.get("Labels") or {}).get(LAB) or "" for n in nets} - {""}

    def observe(self, lab: str) -> dict[str, str]:
        with docker_errors("list docker networks"):
            nets = self.api.networks(filters={"label": f"{LAB}={lab}"})
        out = {}
        for net in nets:
            labels = net.get("Labels") or {}
            if labels.get(LAB) != lab:
                continue
            out[labels.get(NAME) or net["Name"]] = labels.get(FINGERPRINT, "")
        return dict(sorted(out.items()))

    def bridges(self, lab: str) -> dict[str, str]:
        """``{network: the bridge it is bound to}`` for this lab's Docker networks."""
        with docker_errors("list docker networks"):
            nets = self.api.networks(filters={"label": f"{LAB}={lab}"})
        return {(n.get("Labels") or {}).get(NAME) or n["Name"]:
                (n.get("Options") or {}).get(BRIDGE_OPT, "") for n in nets
                if (n.get("Labels") or {}).get(LAB) == lab}

    def create(self, lab: str, resource: Resource) -> None:
        import docker.types

        spec = resource.spec
        name, bridge = spec["network"], spec["bridge"]
        with docker_errors(f"create docker network {name}"):
            for net in self.api.networks():
                opts = net.get("Options") or {}
                if net["Name"] == name:
                    if (net.get("Labels") or {}).get(LAB) != lab:
                        raise ConflictError(
                            f"a docker network named {name} exists and does not belong to lab "
                            f"{lab}", hint=f"remove it: docker network rm {name}")
                    self._remove(net["Id"], name)           # leftover: recreate as wanted
                elif opts.get(BRIDGE_OPT) == bridge:
                    raise ConflictError(
                        f"docker network {net['Name']} already uses bridge {bridge}; only one "
                        f"docker network may use a bridge",
                        hint=f"remove it (docker network rm {net['Name']}) or give the lab "
                             f"another bridge")
            pool = docker.types.IPAMPool(
                subnet=spec["subnet"], gateway=spec["gateway"],
                iprange=spec.get("ip_range") or None,
                aux_addresses=dict(spec.get("aux_addresses") or {}) or None)
            options = {BRIDGE_OPT: bridge}
            if spec.get("mtu"):
                options[MTU_OPT] = str(spec["mtu"])
            self.api.create_network(
                name, driver="bridge", options=options,
                ipam=docker.types.IPAMConfig(driver="default", pool_configs=[pool]),
                check_duplicate=True, internal=False,
                labels={LAB: lab, NAME: resource.name, FINGERPRINT: resource.fingerprint})

    def delete(self, lab: str, name: str) -> None:
        with docker_errors(f"delete docker network {name}"):
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

    def labs(self) -> set[str]:
        """Every lab that has a container in this engine."""
        with docker_errors("list containers"):
            found = self.api.containers(all=True, filters={"label": LAB})
        return {(c.get("Labels") or {}).get(LAB) or "" for c in found} - {""}

    def observe(self, lab: str) -> dict[str, str]:
        with docker_errors("list containers"):
            found = self.api.containers(all=True, filters={"label": f"{LAB}={lab}"})
        out = {}
        for c in found:
            labels = c.get("Labels") or {}
            if labels.get(LAB) != lab or ENDPOINT not in labels:
                continue
            fp = labels.get(FINGERPRINT, "")
            if c.get("State") != "running":
                fp += STOPPED
            out[labels[ENDPOINT]] = fp
        return dict(sorted(out.items()))

    def state(self, lab: str) -> dict[str, dict[str, Any]]:
        """Per endpoint: container id, name, state, status text and the MAC address on the
        lab's network (one list call)."""
        with docker_errors("list containers"):
            found = self.api.containers(all=True, filters={"label": f"{LAB}={lab}"})
        return {c["Labels"][ENDPOINT]: {"id": c["Id"], "name": c["Names"][0].lstrip("/"),
                                        "state": c.get("State"), "status": c.get("Status"),
                                        "mac": _mac(c, naming.docker_network(lab))}
                for c in sorted(found, key=lambda c: c["Names"][0])
                if (c.get("Labels") or {}).get(LAB) == lab and ENDPOINT in c["Labels"]}

    def netns_paths(self, lab: str) -> dict[str, str]:
        """Per running endpoint: its network namespace (``/proc/<pid>/ns/net``), where the
        probe engine opens sockets — no exec into the container, no tools in the image."""
        out: dict[str, str] = {}
        for endpoint, info in self.state(lab).items():
            if info.get("state") != "running":
                continue
            with docker_errors(f"inspect container {info['name']}"):
                pid = self.api.inspect_container(info["id"])["State"].get("Pid") or 0
            if pid:
                out[endpoint] = f"/proc/{pid}/ns/net"
        return out

    def create(self, lab: str, resource: Resource) -> None:
        spec = resource.spec
        cname = spec["container"]
        with docker_errors(f"create container {cname}"):
            self._remove_leftover(lab, cname)
            self._ensure_image(spec["image"])
            api = self.api
            labels = {str(k): str(v) for k, v in (spec.get("labels") or {}).items()}
            labels.update({LAB: lab, NAME: resource.name, ENDPOINT: spec["endpoint"],
                           FINGERPRINT: resource.fingerprint})
            ports, bindings = [], {}
            for p in spec.get("ports") or []:
                key = (int(p["container"]), p.get("protocol") or "tcp")
                ports.append(key)
                bindings[f"{key[0]}/{key[1]}"] = p.get("host") or None
            network = spec["network"]
            host_config = api.create_host_config(
                network_mode=network, init=bool(spec.get("init", True)),
                dns=list(spec.get("dns") or []) or None,
                dns_search=[spec["domain"]] if spec.get("domain") else None,
                port_bindings=bindings or None)
            net_config = api.create_networking_config(
                {network: api.create_endpoint_config(ipv4_address=spec["address"])})
            created = api.create_container(
                spec["image"], name=cname, hostname=spec.get("hostname") or spec["endpoint"],
                command=list(spec["command"]) if spec.get("command") is not None else None,
                environment={str(k): str(v) for k, v in (spec.get("env") or {}).items()},
                labels=labels, ports=ports or None, host_config=host_config,
                networking_config=net_config, detach=True)
            try:
                api.start(created["Id"])
            except Exception:
                with contextlib.suppress(Exception):
                    api.remove_container(created["Id"], force=True, v=True)
                raise

    def delete(self, lab: str, name: str) -> None:
        with docker_errors(f"delete container of endpoint {name}"):
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

    def _ensure_image(self, image: str) -> None:
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
            raise EngineError(
                f"image {image} is not in the engine at {self.target.docker_url} and cannot be "
                f"pulled ({_explain(exc).splitlines()[0] if _explain(exc) else exc})",
                engine="docker",
                hint="no registry is reachable from the sandbox: `hybridnb sandbox up` builds "
                     "busybox:latest; other images must be loaded into this engine "
                     "(docker -H <its socket> load -i IMAGE.tar)") from exc


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
