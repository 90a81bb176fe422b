"""The ``images:`` section of a lab file (pure): recipes checked with the lab, endpoints that
run them, what the recipe decides for them, and what they compile to."""

from __future__ import annotations

from typing import Any

import pytest

from hybridnb.core.compile import compile_lab
from hybridnb.core.ipam import assign_addresses
from hybridnb.core.kinds import get
from hybridnb.core.recipe import LabImages
from hybridnb.core.sections.images import recipe_of, used_images
from hybridnb.core.spec import lab_to_dict, parse_lab
from hybridnb.errors import ValidationError

PG = {"packages": ["postgresql", "postgresql-client"], "services": ["postgresql"]}
WEB = {"packages": ["nginx-light"], "services": ["nginx"],
       "files": {"/var/www/html/index.html": "hello from {{name}}"}}


def lab(endpoints: dict[str, Any], images: dict[str, Any] | None = None, **extra: Any):
    doc: dict[str, Any] = {"name": "t", "endpoints": endpoints, **extra}
    if images is not None:
        doc["images"] = images
    return parse_lab(doc)


def problems(endpoints: dict[str, Any], images: dict[str, Any] | None = None) -> list[str]:
    with pytest.raises(ValidationError) as err:
        lab(endpoints, images)
    return [str(p) for p in err.value.problems]


def resources(spec) -> dict[str, Any]:
    return {r.name: r for r in compile_lab(spec, assign_addresses(spec))}


def test_the_issue_example() -> None:
    spec = lab({"db": {"kind": "vm", "image": "pg", "memory": 256,
                       "services": ["postgresql/5432"]},
                "api": {"kind": "container", "image": "tools", "command": ["sleep", "1d"]}},
               {"pg": PG, "web": WEB,
                "tools": {"packages": ["iproute2", "dnsutils", "curl", "tcpdump", "iperf3"]}})
    images = spec.sections["images"]
    assert isinstance(images, LabImages) and sorted(images.own) == ["pg", "tools", "web"]
    assert recipe_of(spec.endpoint("db"), images).name == "pg"
    assert recipe_of(spec.endpoint("api"), images).name == "tools"
    assert {n: shapes for n, (_, shapes) in used_images(spec).items()} == {
        "pg": ("vm",), "tools": ("container",), "web": ("rootfs",)}
    assert parse_lab(lab_to_dict(spec)) == spec
    assert lab_to_dict(spec)["images"]["pg"] == PG


def test_recipe_problems_are_in_the_labs_one_error_with_paths() -> None:
    found = problems({"db": {"kind": "vm", "image": "pgg"},
                      "web": {"kind": "container", "address": "10.0.1"}},
                     {"pg": {"packages": ["PostgreSQL"], "servics": []}})
    assert found == [
        "endpoints.db.image: unknown image recipe 'pgg' (hint: recipes: base, docker, "
        "observer; a cloud image is a file path, e.g. ./debian-12.qcow2)",
        "endpoints.web.address: '10.0.1' is not an IPv4 address (hint: write it like "
        "10.0.1.100)",
        "images.pg.packages[0]: 'PostgreSQL' is not a Debian package name (hint: package "
        "names as apt knows them, without versions, e.g. postgresql-client)",
        "images.pg.servics: unknown key 'servics' (hint: did you mean 'services'?)"]
    # a VM of a recipe that has problems of its own is not also told the recipe is unknown
    assert problems({"db": {"kind": "vm", "image": "pg"}}, {"pg": {"packages": 7}}) == [
        "images.pg.packages: expected a list (a Debian package name each), got a number (hint: "
        "package names as apt knows them, without versions, e.g. postgresql-client)"]
    assert "did you mean 'pg'?" in problems({"db": {"kind": "vm", "image": "pgg"}},
                                            {"pg": PG})[0]


def test_what_runs_a_recipe() -> None:
    spec = lab({"c1": {"kind": "container", "image": "web"},
                "c2": {"kind": "container", "image": "busybox"},
                "c3": {"kind": "container", "image": "nginx:alpine"},
                "v1": {"kind": "vm", "template": "base"},
                "v2": {"kind": "vm", "template": "observer"},
                "v3": {"kind": "vm"},
                "v4": {"kind": "vm", "template": "docker", "image": "/srv/debian.qcow2"},
                "v5": {"kind": "vm", "image": "base"}}, {"web": WEB})
    images = spec.sections["images"]
    ran = {ep.name: getattr(recipe_of(ep, images), "name", None) for ep in spec.endpoints}
    assert ran == {"c1": "web", "c2": None, "c3": None, "v1": "base", "v2": "observer",
                   "v3": None, "v4": None, "v5": "base"}
    own = lab({"v": {"kind": "vm", "template": "base"}}, {"base": {"packages": ["curl"]}})
    assert recipe_of(own.endpoint("v"), own.sections["images"]).packages == ("curl",)


def test_recipe_decides_services_and_memory() -> None:
    spec = lab({"db": {"kind": "vm", "image": "pg"},
                "w": {"kind": "container", "image": "web"},
                "own": {"kind": "container", "image": "web", "services": ["web/80"]},
                "dock": {"kind": "vm", "template": "docker"},
                "big": {"kind": "vm", "template": "docker", "memory": 1024},
                "obs": {"kind": "vm", "template": "observer"}}, {"pg": PG, "web": WEB})
    services = {ep.name: [str(s) for s in ep.services] for ep in spec.endpoints}
    assert services == {"big": [], "db": ["postgresql/5432"], "dock": [],
                        "obs": ["node-exporter/9100"], "own": ["web/80"], "w": ["http/80"]}
    assert spec.endpoint("dock").memory == 512 and spec.endpoint("big").memory == 1024
    assert spec.endpoint("db").memory == 128
    zone = resources(spec)["t"].spec["services"]
    assert {"service": "postgresql", "proto": "tcp", "endpoint": "db", "port": 5432,
            "weight": 1} in zone
    assert {"service": "http", "proto": "tcp", "endpoint": "w", "port": 80, "weight": 1} in zone


def test_what_a_recipe_refuses() -> None:
    found = problems({"a": {"kind": "vm", "template": "docker", "memory": 256},
                      "b": {"kind": "vm", "image": "pg", "template": "base"},
                      "c": {"kind": "vm", "image": "pg", "kernel": "/boot/vmlinuz"},
                      "d": {"kind": "container", "image": "docker"},
                      "e": {"kind": "container", "image": "cloud"}},
                     {"pg": PG, "cloud": {"cloud_init": True}})
    text = "\n".join(found)
    for needle in ("endpoints.a.memory: 256 MiB is less than image 'docker' needs (512 MiB)",
                   "endpoints.b.template: template 'base' and image 'pg' both say what the VM "
                   "boots", "endpoints.c.kernel: kernel/initrd do not apply to a VM of image "
                   "recipe 'pg'", "endpoints.d.image: image 'docker' runs dockerd, which needs "
                   "its own kernel", "endpoints.e.image: image 'cloud' is configured by "
                   "cloud-init"):
        assert needle in text, needle
    assert len(found) == 5


def test_compiled_resources_carry_the_recipe() -> None:
    spec = lab({"db": {"kind": "vm", "image": "pg", "memory": 192},
                "api": {"kind": "container", "image": "pg", "env": {"A": "1"}},
                "bb": {"kind": "container"},
                "tv": {"kind": "vm"},
                "ci": {"kind": "vm", "image": "cloud"}},
               {"pg": PG, "cloud": {"cloud_init": True}})
    res = resources(spec)
    api, db, ci = res["api"].spec, res["db"].spec, res["ci"].spec
    assert api["create"]["image"] == "hybridnb/pg" and api["create"]["environment"] == {"A": "1"}
    assert api["recipe"]["name"] == "pg" and len(api["recipe"]["digest"]) == 16
    assert api["recipe"]["ports"] == [5432]
    assert db["boot"] == "disk" and "image" not in db and db["memory"] == 192
    assert db["recipe"] == api["recipe"] and db["boot_timeout"] == 180
    assert ci["cloud_init"] is True and ci["boot_timeout"] == 300
    assert "recipe" not in res["bb"].spec and res["bb"].spec["create"]["image"] == "busybox"
    assert "boot" not in res["tv"].spec
    assert res["db"].summary == f"{db['address']} image pg 192 MiB"
    assert get("vm").probe_services(res["db"]) == ("tcp/5432",)
    assert get("vm").probe_services(res["tv"]) == ("http/80", "tcp/80", "udp/7")
    # a changed recipe changes the endpoints' fingerprints (they are replaced)
    other = lab({"db": {"kind": "vm", "image": "pg", "memory": 192}},
                {"pg": {**PG, "packages": ["postgresql"]}})
    assert resources(other)["db"].fingerprint != res["db"].fingerprint
    assert get("vm").explain([("recipe", "digest"), ("disk",)]) == ["image"]


def test_srv_names_of_custom_services() -> None:
    spec = lab({"app": {"kind": "container", "image": "flask"}},
               {"flask": {"packages": ["python3-flask"], "services": [
                   {"name": "flask-dev-server-x", "command": "flask run", "port": 5000},
                   {"name": "app", "command": "flask run", "port": 5001, "srv": "http"}]}})
    assert [str(s) for s in spec.endpoint("app").services] == ["http/5001"]
    assert "is not an SRV service name" in problems(
        {}, {"x": {"services": [{"name": "a", "command": "b", "srv": "HTTP"}]}})[0]
