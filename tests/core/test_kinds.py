"""The registry of endpoint kinds: what each kind declares, and what the generic code does
with it (parse, write back, compile, name changes, order, pools, registered sections)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from hybridnb.core.compile import compile_lab
from hybridnb.core.ipam import assign_addresses, pools_for
from hybridnb.core.kinds import KINDS, REGISTRY, CompileContext, get, kinds
from hybridnb.core.kinds.reference import KindReference
from hybridnb.core.plan import explain
from hybridnb.core.problems import Collector
from hybridnb.core.resource import Resource
from hybridnb.core.sections import Section, register, unregister
from hybridnb.core.spec import lab_to_dict, parse_lab
from hybridnb.core.stages import dependents, kind_order
from hybridnb.errors import ValidationError


def test_the_registry_finds_one_module_per_kind():
    assert KINDS == ("container", "vm", "host")
    for kind in kinds():
        assert type(kind).__module__ == f"hybridnb.core.kinds.{kind.name}"
    assert kind_order() == ("bridge", "vxlan", "firewall", "policy", "network", "host", "container", "vm",
                            "link", "dns")
    assert dependents("bridge") == kind_order()[1:]
    assert dependents("network") == ("container",)
    assert dependents("vm") == ("link",)              # impairments live on its port


def test_spec_classes_carry_their_kind():
    for kind in kinds():
        assert kind.spec(name="x").kind == kind.name


def test_every_field_round_trips_through_yaml():
    """A value other than the default for every field of every kind survives
    parse -> write back -> parse (a new field needs its sample here)."""
    samples: dict[str, Any] = {
        "image": "nginx:alpine", "command": ["httpd", "-f"], "env": {"A": "1"},
        "ports": ["8080:80/tcp", "53/udp"], "labels": {"team": "net"}, "workdir": "/srv",
        "mounts": ["/srv/app:/app:ro", "/srv/data:/data"],
        "template": "base",
        "memory": 256, "vcpus": 2, "kernel": None, "initrd": None,
        "address": "10.0.1.77", "services": ["http/80", "dns/53/udp"], "host": "b",
    }
    for kind in kinds():
        entry: dict[str, Any] = {"kind": kind.name}
        for f in kind.fields():
            assert f.name in samples, f"no sample value for {kind.name}.{f.name}"
            if samples[f.name] is not None:
                entry[f.name] = samples[f.name]
        if kind.name == "vm":
            entry["image"] = "/var/lib/images/debian.qcow2"
        spec = parse_lab({"hosts": {"b": {"engine": "local"}}, "endpoints": {"e": entry}})
        assert parse_lab(lab_to_dict(spec)) == spec
        assert lab_to_dict(spec)["endpoints"]["e"] == entry


def test_unknown_key_lists_the_kinds_own_fields():
    with pytest.raises(ValidationError) as info:
        parse_lab({"endpoints": {"h": {"kind": "host", "image": "busybox"}}})
    (problem,) = info.value.problems
    assert problem.path == "endpoints.h.image"
    assert problem.hint == "allowed keys: kind, labels, address, services, host"


def test_the_container_kind_compiles_to_the_docker_sdk_vocabulary():
    spec = parse_lab({"name": "k", "endpoints": {"web": {
        "kind": "container", "image": "nginx", "command": "nginx -g 'daemon off;'",
        "env": {"B": "2", "A": "1"}, "ports": ["8080:80", "53/udp"], "labels": {"t": "v"}}}})
    res = {r.key: r for r in compile_lab(spec, assign_addresses(spec))}
    web = res[("container", "web")].spec
    assert web["create"] == {
        "hostname": "web", "image": "nginx", "command": ["nginx", "-g", "'daemon", "off;'"],
        "environment": {"A": "1", "B": "2"}, "ports": {"80/tcp": {}, "53/udp": {}}}
    assert web["host_config"] == {"network_mode": "hnb-k", "init": True, "dns": ["10.0.1.1"],
                                  "dns_search": ["hybrid.local"],
                                  "port_bindings": {"80/tcp": 8080, "53/udp": None}}
    assert web["endpoint_config"] == {"ipv4_address": "10.0.1.100"}
    assert web["labels"] == {"t": "v"}
    assert ("network", "hnb-k") in res                # the kind's shared Docker network


def test_compiled_container_arguments_are_what_the_docker_sdk_accepts():
    """Every keyword the container kind compiles is one the SDK's builders take — checked
    offline (the builders run without talking to an engine)."""
    docker = pytest.importorskip("docker")
    spec = parse_lab({"endpoints": {"web": {"kind": "container", "command": ["sleep", "1"],
                                            "env": {"A": "1"}, "ports": ["8080:80"],
                                            "labels": {"t": "v"}}}})
    (web,) = [r for r in compile_lab(spec, assign_addresses(spec)) if r.kind == "container"]
    api = docker.APIClient(base_url="unix:///nonexistent/docker.sock", version="1.41")
    host_config = api.create_host_config(**web.spec["host_config"])
    assert host_config["Init"] is True and host_config["PortBindings"]["80/tcp"]
    endpoint = api.create_endpoint_config(**web.spec["endpoint_config"])
    config = api.create_container_config(**web.spec["create"], host_config=host_config,
                                         networking_config=api.create_networking_config(
                                             {web.spec["network"]: endpoint}))
    assert config["Image"] == "busybox" and config["ExposedPorts"] == {"80/tcp": {}}


def test_an_unset_field_compiles_to_nothing():
    """So adding a field to a kind never changes the fingerprints of existing labs."""
    spec = parse_lab({"endpoints": {"c": {"kind": "container"}, "v": {"kind": "vm"}}})
    res = {r.name: r.spec for r in compile_lab(spec, assign_addresses(spec)) if r.name in "cv"}
    assert set(res["c"]["create"]) == {"hostname", "image"}
    assert not {"image", "kernel", "initrd"} & set(res["v"])


def test_kinds_name_the_fields_behind_changed_paths():
    assert explain("container", [("create", "image"), ("create", "environment", "A"),
                                 ("host_config", "port_bindings", "80/tcp"),
                                 ("endpoint_config", "ipv4_address"), ("address",)]) == \
        ["image", "env", "ports", "address"]
    assert explain("vm", [("memory",), ("mac",)]) == ["memory", "name"]
    assert explain("bridge", [("mtu",)]) == ["mtu"]
    assert explain("dns", [("records", "web"), ("records", "db")]) == ["records"]


def test_pools_come_from_the_kinds():
    pools = pools_for(parse_lab({}).network)
    assert {k: str(p.first) for k, p in pools.items()} == {
        "host": "10.0.1.10", "container": "10.0.1.100", "vm": "10.0.1.200"}
    assert {k.name: k.pool_offset for k in kinds()} == {"container": 100, "vm": 200, "host": 10}
    with pytest.raises(ValidationError) as info:
        parse_lab({"network": {"pools": {"contianer": "10.0.1.50"}}})
    assert "did you mean 'container'" in str(info.value)


def test_reference_lists_every_field_with_its_option():
    ref = KindReference.of()
    keys = {(r[0], r[1]) for r in ref.rows}
    assert keys == {(k.name, f.name) for k in kinds() for f in k.fields()}
    row = next(r for r in ref.rows if r[:2] == ("container", "env"))
    assert row[4] == "--env K=V (repeatable)"
    assert "vm" not in {r[0] for r in KindReference.of(["container"]).rows}
    assert "<table" in ref._repr_html_() and "--memory MiB" in ref.to_text()


def test_cross_field_rules_stay_with_their_kind():
    c = Collector()
    assert get("vm").parse(c, "v", {"kind": "vm", "template": "base", "initrd": "/i",
                                    "image": "/d.qcow2"}, "endpoints.v") is None
    assert [p.path for p in c.problems] == ["endpoints.v.kernel"]
    c = Collector()                 # without image: the template is a built-in image recipe
    assert get("vm").parse(c, "v", {"kind": "vm", "template": "docker"}, "endpoints.v")
    assert c.problems == []


class Assets(Section):
    """A stand-in for a future section (``assets:``, shaped like the images one): items by
    name, endpoints must name one of them, and each item compiles to a resource made before
    the containers."""

    key = "assets"
    order = 15
    stages = {"asset": 35}

    def parse(self, c, raw, parsed):
        data = c.mapping(raw, "assets")
        return dict(data or {})

    def check(self, c, lab):
        for ep in lab.endpoints:
            image = getattr(ep, "image", None)
            if image and image.startswith("recipe:") and image[7:] not in lab.sections["assets"]:
                c.add(f"{ep.path}.image", f"no recipe {image[7:]!r}", "add it under assets:")

    def dump(self, value):
        return value or None

    def compile(self, lab, ctx: CompileContext) -> list[Resource]:
        return [Resource("asset", name, {"packages": list(r.get("packages", []))}, name)
                for name, r in sorted(lab.sections["assets"].items())]


@pytest.fixture
def assets_section():
    register(Assets())
    yield
    unregister("assets")


def test_a_registered_section_needs_no_parser_edit(assets_section):
    doc = {"name": "s", "assets": {"web": {"packages": ["nginx"]}},
           "endpoints": {"w": {"kind": "container", "image": "recipe:web"}}}
    spec = parse_lab(doc)
    assert spec.sections["assets"] == {"web": {"packages": ["nginx"]}}
    assert lab_to_dict(spec)["assets"] == doc["assets"] and parse_lab(lab_to_dict(spec)) == spec
    assert kind_order().index("network") < kind_order().index("asset") < \
        kind_order().index("host")
    kinds_made = [r.kind for r in compile_lab(spec, assign_addresses(spec))]
    assert kinds_made.index("asset") < kinds_made.index("container")
    with pytest.raises(ValidationError) as info:
        parse_lab({**doc, "endpoints": {"w": {"kind": "container", "image": "recipe:db"}}})
    assert [p.path for p in info.value.problems] == ["endpoints.w.image"]
    with pytest.raises(ValidationError) as info:
        parse_lab({"asets": {}})
    assert "did you mean 'assets'" in str(info.value)


def test_without_the_section_its_key_is_unknown():
    with pytest.raises(ValidationError, match="unknown key 'assets'"):
        parse_lab({"assets": {}})
    assert "asset" not in kind_order()


def test_every_kind_is_registered_under_its_name():
    assert all(REGISTRY[name].name == name for name in KINDS)
    assert isinstance(get("host").compile(
        parse_lab({"endpoints": {"h": {"kind": "host"}}}).endpoint("h"),
        CompileContext("t", parse_lab({}).network, {"h": ipaddress.IPv4Address("10.0.1.10")},
                       {"h": "host"})), Resource)
