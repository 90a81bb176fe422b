"""Lab specs shared by the VM golden tests (domain XML and cloud-init)."""

from __future__ import annotations

from typing import Any

from hybridnb.core.compile import compile_lab
from hybridnb.core.ipam import assign_addresses
from hybridnb.core.spec import parse_lab

LABS: dict[str, dict[str, Any]] = {
    "seed": {
        "name": "seed",
        "network": {"bridge": "hybr0", "subnet": "10.0.1.0/24", "gateway": "10.0.1.1",
                    "domain": "hybrid.local"},
        "endpoints": {
            "web": {"kind": "container", "image": "busybox", "address": "10.0.1.100"},
            "vm1": {"kind": "vm", "template": "test", "address": "10.0.1.200", "memory": 128},
        },
    },
    "jumbo": {
        "name": "jumbo",
        "network": {"bridge": "lab9", "subnet": "172.20.0.0/16", "gateway": "172.20.0.1",
                    "domain": "lab.test", "mtu": 9000, "dns": False},
        "endpoints": {
            "small": {"kind": "vm", "memory": 96, "vcpus": 2, "address": "172.20.0.50"},
        },
    },
    "cloud": {
        "name": "cloud",
        "network": {"bridge": "hybr0", "subnet": "10.0.1.0/24", "gateway": "10.0.1.1"},
        "endpoints": {
            "db": {"kind": "vm", "template": "base", "memory": 1024, "vcpus": 2,
                   "image": "/var/lib/images/debian-12-genericcloud-amd64.qcow2",
                   "address": "10.0.1.210"},
            "dock": {"kind": "vm", "template": "docker", "memory": 2048,
                     "image": "/var/lib/images/ubuntu-24.04-server-cloudimg-amd64.img",
                     "address": "10.0.1.211"},
        },
    },
}


def vm_specs(lab: str) -> dict[str, dict[str, Any]]:
    """{endpoint: vm resource spec} of one of :data:`LABS`."""
    spec = parse_lab(LABS[lab])
    return {r.name: dict(r.spec) for r in compile_lab(spec, assign_addresses(spec))
            if r.kind == "vm"}
