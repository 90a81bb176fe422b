"""Domain XML of lab VMs: golden files plus the properties libvirt and the driver rely on.

Regenerate the golden files with ``UPDATE_GOLDEN=1 pytest tests/core/test_vmxml.py``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hybridnb.core import vmxml
from hybridnb.core.resource import Resource
from tests.core.vmlabs import vm_specs
from tests.golden import check_golden

GOLDEN = Path(__file__).resolve().parent / "golden" / "vmxml"
KERNEL = "/var/cache/hybridnb/images/testvm-X/vmlinux"
INITRD = "/var/cache/hybridnb/images/testvm-X/initrd.cpio"


def _xml(lab: str, name: str) -> str:
    spec = vm_specs(lab)[name]
    files = f"/var/lib/hybridnb/targets/t/vms/{spec['domain_name']}"
    if spec["template"] == "test":
        return vmxml.domain_xml(lab, spec, kernel=KERNEL, initrd=INITRD,
                                console_log=f"{files}/console.log")
    return vmxml.domain_xml(lab, spec, kernel=None, initrd=None,
                            console_log=f"{files}/console.log", seed_iso=f"{files}/seed.iso",
                            disk=f"{files}/disk.qcow2")


CASES = [("seed", "vm1"), ("jumbo", "small"), ("cloud", "db"), ("cloud", "dock")]


@pytest.mark.parametrize("lab,name", CASES, ids=lambda v: v)
def test_domain_xml_golden(lab: str, name: str) -> None:
    check_golden(GOLDEN / f"{lab}-{name}.xml", _xml(lab, name))


def test_metadata_carries_owner_and_fingerprint() -> None:
    spec = vm_specs("seed")["vm1"]
    xml = _xml("seed", "vm1")
    meta = vmxml.parse_metadata(xml)
    assert meta == {"name": "seed", "endpoint": "vm1",
                    "fingerprint": Resource("vm", "vm1", spec).fingerprint}
    # libvirt hands back just the element from virDomainGetMetadata
    root = ET.fromstring(xml)
    element = ET.tostring(root.find(f".//{{{vmxml.METADATA_NS}}}lab"), encoding="unicode")
    assert vmxml.parse_metadata(element) == meta
    bare = f'<lab name="seed" endpoint="vm1" fingerprint="{meta["fingerprint"]}"/>'
    assert vmxml.parse_metadata(bare) == meta
    assert vmxml.parse_metadata("<domain/>") is None
    assert vmxml.parse_metadata("not xml") is None


def test_fingerprint_changes_with_the_spec() -> None:
    spec = vm_specs("seed")["vm1"]
    a = vmxml.parse_metadata(_xml("seed", "vm1"))
    b = vmxml.parse_metadata(vmxml.domain_xml("seed", {**spec, "memory": 256}, kernel=KERNEL,
                                              initrd=INITRD, console_log="/c"))
    assert a and b and a["fingerprint"] != b["fingerprint"]


def test_test_vm_shape() -> None:
    root = ET.fromstring(_xml("seed", "vm1"))
    assert root.get("type") == "qemu"
    assert root.findtext("name") == "hnb-seed-vm1"
    assert root.find("memory").text == "128" and root.find("memory").get("unit") == "MiB"
    cmdline = root.findtext("os/cmdline")
    for part in ("console=ttyS0", "hybrid.ip=10.0.1.200/24", "hybrid.gw=10.0.1.1",
                 "hybrid.dns=10.0.1.1", "hybrid.domain=hybrid.local", "hybrid.name=vm1"):
        assert part in cmdline.split()
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        assert root.findtext(event) == "destroy"
    nic = root.find("devices/interface")
    assert nic.get("type") == "bridge"
    assert nic.find("source").get("bridge") == "hybr0"
    assert nic.find("model").get("type") == "virtio"
    assert nic.find("mac").get("address") == vm_specs("seed")["vm1"]["mac"]
    assert root.find("devices/channel/target").get("name") == "org.qemu.guest_agent.0"
    assert root.find("devices/memballoon").get("model") == "none"
    assert root.find("devices/graphics") is None
    assert root.find("devices/serial").get("type") == "file"


def test_mtu_and_no_dns() -> None:
    root = ET.fromstring(_xml("jumbo", "small"))
    cmdline = root.findtext("os/cmdline").split()
    assert "hybrid.mtu=9000" in cmdline
    assert not any(p.startswith("hybrid.dns=") for p in cmdline)
    assert root.find("devices/interface/mtu").get("size") == "9000"


def test_cloud_vm_boots_disk_with_seed() -> None:
    root = ET.fromstring(_xml("cloud", "db"))
    assert root.find("os/kernel") is None
    disks = root.findall("devices/disk")
    assert [d.get("device") for d in disks] == ["disk", "cdrom"]
    assert root.findtext("on_reboot") == "restart"


def test_stable_uuid_and_inputs_checked() -> None:
    assert vmxml.domain_uuid("a", "b") == vmxml.domain_uuid("a", "b")
    assert vmxml.domain_uuid("a", "b") != vmxml.domain_uuid("a", "c")
    spec = vm_specs("seed")["vm1"]
    with pytest.raises(ValueError):
        vmxml.domain_xml("seed", spec, kernel=None, initrd=None, console_log="/c")
    with pytest.raises(ValueError):
        vmxml.domain_xml("cloud", vm_specs("cloud")["db"], kernel=None, initrd=None,
                         console_log="/c")


def test_probe_helper_channel_only_when_given_a_socket() -> None:
    spec = vm_specs("seed")["vm1"]
    kw = dict(kernel="/k", initrd="/i", console_log="/c.log")
    root = ET.fromstring(vmxml.domain_xml("seed", spec, probe_socket="/v/probe.sock", **kw))
    chans = {c.find("target").get("name"): c for c in root.findall("devices/channel")}
    assert set(chans) == {vmxml.AGENT_CHANNEL, vmxml.PROBE_CHANNEL}
    probe = chans[vmxml.PROBE_CHANNEL]
    assert probe.get("type") == "unix"
    assert probe.find("source").attrib == {"mode": "bind", "path": "/v/probe.sock"}
    assert probe.find("target").get("type") == "virtio"
    root = ET.fromstring(vmxml.domain_xml("seed", spec, **kw))
    assert [c.find("target").get("name") for c in root.findall("devices/channel")] == [
        vmxml.AGENT_CHANNEL]
