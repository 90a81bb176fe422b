"""NoCloud seeds for cloud-image VMs: golden files plus the properties cloud-init relies on.

Regenerate the golden files with ``UPDATE_GOLDEN=1 pytest tests/core/test_cloudinit.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hybridnb.core import cloudinit
from tests.core.vmlabs import vm_specs
from tests.golden import check_golden

GOLDEN = Path(__file__).resolve().parent / "golden" / "cloudinit"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHybridnbTestKeyOnlyForGoldenFiles0000 lab@example"


@pytest.mark.parametrize("name", ["db", "dock"])
@pytest.mark.parametrize("part", ["meta-data", "network-config", "user-data"])
def test_seed_golden(name: str, part: str) -> None:
    files = cloudinit.seed_files("cloud", vm_specs("cloud")[name], ssh_keys=[KEY])
    check_golden(GOLDEN / f"{name}.{part}", files[part])


def test_network_config_second_nic_golden() -> None:
    check_golden(GOLDEN / "db.network-config.second-nic",
                 cloudinit.network_config(vm_specs("cloud")["db"], only_nic=False))


def test_network_config_matches_mac_and_routes() -> None:
    spec = vm_specs("cloud")["db"]
    net = yaml.safe_load(cloudinit.network_config(spec))
    assert net["version"] == 2
    nic = net["ethernets"]["hybrid0"]
    assert nic["match"] == {"macaddress": spec["mac"]}
    assert nic["addresses"] == ["10.0.1.210/24"]
    assert nic["routes"] == [{"to": "0.0.0.0/0", "via": "10.0.1.1"}]
    assert nic["nameservers"] == {"addresses": ["10.0.1.1"], "search": ["hybrid.local"]}
    other = yaml.safe_load(cloudinit.network_config(spec, only_nic=False))
    assert "routes" not in other["ethernets"]["hybrid0"]


def test_user_data_templates() -> None:
    specs = vm_specs("cloud")
    base = cloudinit.user_data("cloud", specs["db"], ssh_keys=[KEY, KEY, " "])
    dock = cloudinit.user_data("cloud", specs["dock"])
    assert base.startswith("#cloud-config\n") and dock.startswith("#cloud-config\n")
    b, d = yaml.safe_load(base), yaml.safe_load(dock)
    assert b["hostname"] == "db" and b["fqdn"] == "db.hybrid.local"
    assert b["users"][0]["ssh_authorized_keys"] == [KEY]
    assert "ssh_authorized_keys" not in d["users"][0]
    assert "qemu-guest-agent" in b["packages"] and "docker.io" not in b["packages"]
    assert "docker.io" in d["packages"]
    assert any("HYBRIDNB-READY name=db ip=10.0.1.210" in " ".join(c) for c in b["runcmd"])
    with pytest.raises(ValueError):
        cloudinit.user_data("cloud", {**specs["db"], "template": "test"})


def test_meta_data() -> None:
    meta = yaml.safe_load(cloudinit.meta_data("cloud", vm_specs("cloud")["dock"]))
    assert meta == {"instance-id": "hnb-cloud-dock", "local-hostname": "dock"}
