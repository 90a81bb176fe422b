"""Domain XML and cloud-init seed of VMs booted from an image recipe's disk (``boot: disk``).

The spec is a compiled lab VM plus the fields an image gives it
(:meth:`hybridnb.images.vmdisk.VMImage.spec`).  ``UPDATE_GOLDEN=1`` regenerates the files.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hybridnb.core import cloudinit, vmxml
from tests.core.vmlabs import vm_specs
from tests.golden import check_golden

GOLDEN = Path(__file__).resolve().parent / "golden"
CACHE = "/var/cache/hybridnb/images"
IMAGE = {"boot": "disk", "kernel": f"{CACHE}/vmkernel-6.1.0-57-amd64-x/vmlinux",
         "initrd": f"{CACHE}/vmkernel-6.1.0-57-amd64-x/initrd.img",
         "disk": f"{CACHE}/recipes/pg-a-b/vm-x/disk.img", "image_build": "pg-a-b"}


def recipe_spec(cloud: bool = False) -> dict:
    spec = dict(vm_specs("seed")["vm1"])
    spec.update(IMAGE, template="pg", memory=192, cloud_init=cloud)
    return spec


def xml_of(spec: dict) -> str:
    files = f"/var/lib/hybridnb/targets/t/vms/{spec['domain_name']}"
    return vmxml.domain_xml("seed", spec, kernel=spec["kernel"], initrd=spec["initrd"],
                            console_log=f"{files}/console.log", disk=f"{files}/disk.qcow2",
                            seed_iso=f"{files}/seed.iso" if spec["cloud_init"] else None)


@pytest.mark.parametrize("cloud", [False, True], ids=["cmdline", "cloud-init"])
def test_recipe_vm_xml_golden(cloud: bool) -> None:
    xml = xml_of(recipe_spec(cloud))
    check_golden(GOLDEN / "vmxml" / f"recipe-{'cloud' if cloud else 'pg'}.xml", xml)
    root = ET.fromstring(xml)
    assert root.findtext("os/kernel") == IMAGE["kernel"]
    cmdline = root.findtext("os/cmdline") or ""
    assert "root=/dev/vda hybrid.rootmode=rw" in cmdline and "hybrid.name=vm1" in cmdline
    assert ("hybrid.ip=10.0.1.200/24" in cmdline) is not cloud
    assert ("hybrid.cloudinit=1" in cmdline) is cloud
    disks = root.findall("devices/disk")
    assert disks[0].find("target").get("dev") == "vda"
    assert disks[0].find("driver").get("type") == "qcow2"
    if cloud:        # the seed is a virtio disk: the initramfs has no IDE/CD drivers
        assert disks[1].find("target").attrib == {"dev": "vdb", "bus": "virtio"}
        assert disks[1].find("readonly") is not None
    else:
        assert len(disks) == 1
    assert root.findtext("on_reboot") == "destroy"


def test_test_vm_unchanged_and_recipe_vm_needs_its_files() -> None:
    spec = recipe_spec()
    with pytest.raises(ValueError, match="kernel and initrd"):
        vmxml.domain_xml("seed", spec, kernel=None, initrd=None, console_log="/c",
                         disk="/d.qcow2")
    with pytest.raises(ValueError, match="disk needed"):
        vmxml.domain_xml("seed", spec, kernel="/k", initrd="/i", console_log="/c")
    assert vmxml.disk_cmdline(dict(spec, rootmode="tmpfs")).endswith("hybrid.rootmode=tmpfs")


def test_cloud_init_seed_of_a_recipe_vm_installs_nothing() -> None:
    spec = recipe_spec(cloud=True)
    files = cloudinit.seed_files("seed", spec, ssh_keys=[])
    check_golden(GOLDEN / "cloudinit" / "recipe.user-data", files["user-data"])
    user = files["user-data"]
    assert "packages" not in user and "package_update" not in user and "runcmd" not in user
    assert "hostname: vm1" in user and "fqdn: vm1.hybrid.local" in user
    assert "10.0.1.200/24" in files["network-config"]
    with pytest.raises(ValueError):                   # a cloud image still needs a template
        cloudinit.user_data("seed", dict(spec, boot=None, template="pg"))
