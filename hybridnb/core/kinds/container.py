"""Kind ``container``: a Docker container with a static address on the lab bridge.

The spec compiles straight into the Docker engine's own vocabulary — the keyword arguments of
the docker SDK's ``create_container`` (``create``), ``create_host_config`` (``host_config``)
and ``create_endpoint_config`` (``endpoint_config``) — and the container driver passes them
through without knowing any field.  A new field that maps to a Docker option is therefore one
``spec_field(..., to=("create", "<sdk keyword>"))`` line here: it appears in lab files, in
``%hybrid container NAME --FIELD``, in the form and in ``hybridnb kinds``, and reaches the
engine.  The driver adds only what is about ownership and mechanics: the name, the ownership
labels, the network attachment, image availability, start and clean-up.

An ``image:`` that names an image recipe (the lab's ``images:`` section, or a built-in one)
runs that recipe: the resource carries the recipe's identity (``recipe``) and the image
``hybridnb/<recipe>``, which the images layer binds to the imported build's tag before the
container is made (:mod:`hybridnb.images.binding`); the driver then waits for the recipe's
services (the image's init prints a ready marker).  Any other ``image:`` is an image the
engine has or can pull.

Containers share one Docker network per lab (``network`` resource, made by
:meth:`ContainerKind.compile_shared`): Docker binds it to the lab bridge, its IPAM range lies
inside the container pool, and the other endpoints' addresses in that range are reserved.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from hybridnb.core import naming
from hybridnb.core.kinds.base import (AbsolutePath, Argv, CompileContext, EndpointSpec, Items,
                                      KeyValues, Kind, Path, Text, spec_field)
from hybridnb.core.problems import text_value
from hybridnb.core.recipe import endpoint_recipe, recipe_identity, recipe_image
from hybridnb.core.resource import Resource

_PORT = re.compile(r"^(?:(?P<host>\d{1,5}):)?(?P<container>\d{1,5})(?:/(?P<proto>tcp|udp))?$", re.ASCII)
_ENVKEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_LABEL_PREFIX = "hybridnb."


@dataclass(frozen=True)
class PortMap:
    container: int
    host: int | None = None
    protocol: str = "tcp"

    def __str__(self) -> str:
        head = f"{self.host}:" if self.host is not None else ""
        return f"{head}{self.container}/{self.protocol}"


def _env_item(key: Any, value: Any) -> tuple[str, str] | None:
    if not isinstance(key, str) or not _ENVKEY.match(key):
        return (f"{key!r} is not a valid variable name",
                "use letters, digits and '_', not starting with a digit")
    return text_value(value)


def _label_item(key: Any, value: Any) -> tuple[str, str] | None:
    if str(key).startswith(RESERVED_LABEL_PREFIX):
        return (f"labels starting with {RESERVED_LABEL_PREFIX!r} are reserved",
                "choose another prefix")
    return text_value(value)


def _ports(value: Sequence[PortMap]) -> Mapping[Path, Any]:
    """Exposed ports and their host bindings (no host port: Docker picks one)."""
    keys = [f"{p.container}/{p.protocol}" for p in value]
    return {("create", "ports"): {k: {} for k in keys},
            ("host_config", "port_bindings"): {k: p.host for k, p in zip(keys, value)}}


_MOUNT = re.compile(r"^(?P<host>/[^:\0]*):(?P<container>/[^:\0]*)(?::(?P<mode>ro|rw))?$")


@dataclass(frozen=True)
class Mount:
    """A directory (or file) of the machine bound into the container (``docker -v``)."""

    host: str
    container: str
    mode: str = "rw"

    def __str__(self) -> str:
        return f"{self.host}:{self.container}" + (":ro" if self.mode == "ro" else "")


def _mounts(value: Sequence[Mount]) -> Mapping[Path, Any]:
    return {("host_config", "binds"): [f"{m.host}:{m.container}:{m.mode}" for m in value]}


@dataclass(frozen=True)
class ContainerSpec(EndpointSpec):
    kind: str = "container"
    image: str = spec_field(
        Text(what="an image name", hint="e.g. nginx:alpine",
             empty_hint="e.g. busybox or nginx:alpine"),
        default="busybox", to=("create", "image"),
        help="image recipe (of images: or built in), or a Docker image (the sandbox has "
             "busybox; others must be in its engine)")
    command: tuple[str, ...] | None = spec_field(
        Argv(), to=("create", "command"), example="e.g. httpd -f -p 80",
        help="command line (one quoted string, or a list in YAML); default: the image's")
    env: Mapping[str, str] = spec_field(
        KeyValues(check=_env_item), default={}, to=("create", "environment"),
        help="environment variables")
    ports: tuple[PortMap, ...] = spec_field(
        Items(pattern=_PORT, ports=("host", "container"), what="a port mapping",
              hint="write HOST:CONTAINER/PROTO, e.g. '8080:80/tcp', with ports 1-65535",
              build=lambda m: PortMap(int(m.group("container")),
                                      int(m.group("host")) if m.group("host") else None,
                                      m.group("proto") or "tcp")),
        default=(), to=_ports, paths=(("create", "ports"), ("host_config", "port_bindings")),
        option="port", metavar="[HOST:]PORT[/PROTO]", example="e.g. 8080:80/tcp, 53/udp",
        help="published ports (on the lab host), e.g. 8080:80/tcp")
    labels: Mapping[str, str] = spec_field(
        KeyValues(check=_label_item), default={}, to=("labels",), option="label",
        help="Docker labels (the hybridnb. prefix is reserved)")
    workdir: str | None = spec_field(
        AbsolutePath(), to=("create", "working_dir"), example="e.g. /srv",
        help="working directory of the command (made if missing); default: the image's")
    mounts: tuple[Mount, ...] = spec_field(
        Items(pattern=_MOUNT, what="a bind mount",
              hint="write HOST:CONTAINER or HOST:CONTAINER:ro with absolute paths, e.g. "
                   "/srv/app:/app:ro (the host path must exist)",
              build=lambda m: Mount(m.group("host"), m.group("container"),
                                    m.group("mode") or "rw")),
        default=(), to=_mounts, paths=(("host_config", "binds"),), option="mount",
        metavar="HOST:CONTAINER[:ro]", example="e.g. /srv/app:/app:ro",
        help="directories of this machine bound into the container (rw unless :ro); the "
             "host path must exist (in a lab file, a relative one is the file's neighbour)")


def anchor_mount(item: Any, base: str) -> Any:
    """``app:/app:ro`` in a lab file in ``/srv/lab`` → ``/srv/lab/app:/app:ro``: a relative
    host path is the lab file's neighbour (absolute ones, and anything else, are left)."""
    if not isinstance(item, str) or item.startswith("/") or ":" not in item:
        return item
    host, rest = item.split(":", 1)
    return posixpath.normpath(posixpath.join(base, host)) + ":" + rest


class ContainerKind(Kind):
    name = "container"
    spec = ContainerSpec
    title = "container"
    plural = "containers"
    description = "a Docker container on the lab bridge (Docker network bound to it)"
    rank = 1
    stage = 50
    pool_offset = 100
    colour = "#1f77b4"
    needs = ("network",)
    shared = {"network": 30}
    names = {("container",): "name", ("create", "hostname"): "name", ("recipe",): "image",
             ("endpoint_config",): "address", ("network",): "network",
             ("host_config", "network_mode"): "network", ("host_config", "init"): "init",
             ("host_config", "dns"): "dns", ("host_config", "dns_search"): "domain"}


    def anchor(self, raw: Mapping[str, Any], base: str) -> Mapping[str, Any]:
        mounts = raw.get("mounts")
        if not isinstance(mounts, list):
            return raw
        return {**raw, "mounts": [anchor_mount(m, base) for m in mounts]}
    def base_spec(self, ep: EndpointSpec, ctx: CompileContext) -> dict[str, Any]:
        net = ctx.network
        network = naming.docker_network(ctx.lab)
        address = ctx.address(ep.name)
        host_config: dict[str, Any] = {"network_mode": network, "init": True,
                                       "dns_search": [net.domain]}
        if net.dns:
            host_config["dns"] = [str(net.gateway)]
        return {"endpoint": ep.name, "address": address,
                "container": naming.object_name(ctx.lab, ep.name), "network": network,
                "create": {"hostname": ep.name}, "host_config": host_config,
                "endpoint_config": {"ipv4_address": address}}

    def compile_shared(self, endpoints: Sequence[EndpointSpec],
                       ctx: CompileContext) -> list[Resource]:
        if not endpoints:
            return []
        from hybridnb.core.ipam import docker_ipam

        net = ctx.network
        ip_range, aux = docker_ipam(net, ctx.addresses, ctx.kinds, kind=self.name)
        dnet = naming.docker_network(ctx.lab)
        return [Resource("network", dnet, {
            "network": dnet, "bridge": net.bridge, "subnet": str(net.subnet),
            "gateway": str(net.gateway), "ip_range": str(ip_range), "aux_addresses": aux,
            "mtu": net.mtu}, f"{net.subnet} on {net.bridge}, docker range {ip_range}")]

    def compile(self, ep: EndpointSpec, ctx: CompileContext) -> Resource:
        res = super().compile(ep, ctx)
        assert isinstance(ep, ContainerSpec)
        recipe = endpoint_recipe("container", ep.image, None, ctx.sections.get("images"))
        if recipe is None:
            return res
        spec = dict(res.spec)
        spec["create"] = {**spec["create"], "image": recipe_image(recipe)}
        spec["recipe"] = recipe_identity(recipe)
        return Resource(self.name, ep.name, spec, res.summary)

    def summary(self, ep: EndpointSpec, spec: Mapping[str, Any]) -> str:
        assert isinstance(ep, ContainerSpec)
        return f"{spec['address']} image {ep.image}"

    def details(self, ep: EndpointSpec) -> str:
        assert isinstance(ep, ContainerSpec)
        return ep.image + (f" {' '.join(ep.command)}" if ep.command else "")


KIND = ContainerKind()
