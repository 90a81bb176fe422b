"""Libvirt domain XML for a lab VM, generated from its ``vm`` resource spec (pure).

One function, :func:`domain_xml`, turns the spec that :mod:`hybridnb.core.compile` produces
for a VM into the XML the libvirt driver defines.  The shape is what works without hardware
virtualization (measured in ``notes/engines-here.md``):

* ``<domain type='qemu'>`` (TCG), machine ``pc``;
* the test template boots its kernel directly (``<kernel>``/``<initrd>``/``<cmdline>``) and
  reads its identity from the command line (``hybrid.ip=10.0.1.200/24 hybrid.gw=...``, see
  :func:`kernel_cmdline`); cloud templates boot a disk plus a NoCloud seed ISO (cdrom);
* a VM of an image recipe (spec ``boot: disk``, see :mod:`hybridnb.images.vmdisk`) boots the
  kernel bundle directly too, with its root disk as ``vda`` (the VM's qcow2 overlay on the
  recipe's ext4 image) and the same ``hybrid.*`` identity (:func:`disk_cmdline`); with
  ``cloud_init`` the identity comes from a NoCloud seed attached as ``vdb`` instead;
* one NIC: ``<interface type='bridge'>`` on the lab bridge, virtio, the endpoint's stable MAC;
* the serial console goes to a file (readiness marker, boot errors) and a virtio-serial channel
  carries the QEMU guest agent (``org.qemu.guest_agent.0``); given ``probe_socket``, a second
  one (``org.hybridnb.probe.0``, host side a unix socket at that path) reaches the test VM's
  resident probe helper (:mod:`hybridnb.services.probe.vmhelper`);
* every lifecycle event (poweroff, reboot, crash) destroys the test VM, so a kernel panic
  (``panic=1``) shows as "not running" at once; no USB, balloon, graphics or video (the USB
  controller alone costs ~0.35 s of boot under TCG).

Ownership and the resource fingerprint live in the domain's ``<metadata>``::

    <hybridnb:lab xmlns:hybridnb="https://hybridnb.dev/xmlns/lab/1"
                  name="LAB" endpoint="vm1" fingerprint="0123456789ab"/>
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from typing import Any, Mapping

from hybridnb.core.resource import Resource

#: XML namespace of our domain metadata.
METADATA_NS = "https://hybridnb.dev/xmlns/lab/1"
METADATA_PREFIX = "hybridnb"
#: virtio-serial port name of the QEMU guest agent.
AGENT_CHANNEL = "org.qemu.guest_agent.0"
#: virtio-serial port name of the test VM's resident probe helper (hnb-probe).
PROBE_CHANNEL = "org.hybridnb.probe.0"


def domain_uuid(lab: str, endpoint: str) -> str:
    """Stable UUID of a lab VM (same lab + name → same UUID)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://hybridnb.dev/lab/{lab}/vm/{endpoint}"))


def kernel_cmdline(spec: Mapping[str, Any]) -> str:
    """Kernel command line of the test VM: console, panic behaviour and ``hybrid.*`` keys."""
    parts = ["console=ttyS0", "panic=1", "quiet",
             f"hybrid.ip={spec['address']}/{spec['prefix']}",
             f"hybrid.gw={spec['gateway']}"]
    if spec.get("dns"):
        parts.append("hybrid.dns=" + ",".join(spec["dns"]))
    if spec.get("domain"):
        parts.append(f"hybrid.domain={spec['domain']}")
    parts.append(f"hybrid.name={spec['hostname']}")
    if spec.get("mtu") and int(spec["mtu"]) != 1500:
        parts.append(f"hybrid.mtu={int(spec['mtu'])}")
    return " ".join(parts)


def disk_cmdline(spec: Mapping[str, Any]) -> str:
    """Kernel command line of a recipe VM booted from its disk (``boot: disk``): the test
    VM's identity keys plus the root disk, or only the name when cloud-init configures it."""
    if spec.get("cloud_init"):
        base = f"console=ttyS0 panic=1 quiet hybrid.name={spec['hostname']} hybrid.cloudinit=1"
    else:
        base = kernel_cmdline(spec)
    return f"{base} root=/dev/vda hybrid.rootmode={spec.get('rootmode') or 'rw'}"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def domain_xml(lab: str, resource_spec: Mapping[str, Any], *, kernel: str | None,
               initrd: str | None, console_log: str | None, seed_iso: str | None = None,
               disk: str | None = None, fingerprint: str | None = None,
               probe_socket: str | None = None) -> str:
    """The domain XML of one lab VM.

    ``kernel``/``initrd`` (direct boot) are required for the ``test`` template; cloud
    templates need ``disk`` (the VM's qcow2 overlay) and ``seed_iso`` (NoCloud seed); recipe
    VMs (``boot: disk``) need all three of kernel, initrd and disk (the seed when
    ``cloud_init``).  ``fingerprint`` defaults to the fingerprint of a ``vm`` resource with
    this spec.  ``probe_socket``: the host-side unix socket of a :data:`PROBE_CHANNEL` port.
    ``console_log`` None: the serial console is a pty, read through libvirt's console stream
    (``virDomainOpenConsole``) — for a libvirt on another host, where a file is out of reach.
    """
    spec = dict(resource_spec)
    endpoint = spec["endpoint"]
    template = spec.get("template", "test")
    recipe_vm = spec.get("boot") == "disk"
    if fingerprint is None:
        fingerprint = Resource("vm", endpoint, spec).fingerprint
    if (template == "test" or recipe_vm) and not (kernel and initrd):
        raise ValueError(f"{'a recipe VM' if recipe_vm else 'the test template'} boots a "
                         "kernel directly: kernel and initrd needed")
    if template != "test" and not disk:
        raise ValueError(f"template {template!r} boots a disk image: disk needed")

    dom = ET.Element("domain", type="qemu")
    _sub(dom, "name", spec["domain_name"])
    _sub(dom, "uuid", domain_uuid(lab, endpoint))
    _sub(dom, "title", f"hybridnb lab {lab}: {endpoint}")
    _sub(dom, "description", f"{template} VM {endpoint} at {spec['address']}/{spec['prefix']}"
                             f" on bridge {spec['bridge']}, managed by hybridnb")
    meta = _sub(dom, "metadata")
    _sub(meta, f"{METADATA_PREFIX}:lab", **{f"xmlns:{METADATA_PREFIX}": METADATA_NS,
                                            "name": lab, "endpoint": endpoint,
                                            "fingerprint": fingerprint})
    _sub(dom, "memory", str(int(spec["memory"])), unit="MiB")
    _sub(dom, "vcpu", str(int(spec.get("vcpus", 1))))
    os_ = _sub(dom, "os")
    _sub(os_, "type", "hvm", arch="x86_64", machine="pc")
    if template == "test" and not recipe_vm:
        _sub(os_, "kernel", kernel)
        _sub(os_, "initrd", initrd)
        _sub(os_, "cmdline", kernel_cmdline(spec))
    elif recipe_vm:
        _sub(os_, "kernel", kernel)
        _sub(os_, "initrd", initrd)
        _sub(os_, "cmdline", disk_cmdline(spec))
    else:
        _sub(os_, "boot", dev="hd")
    feats = _sub(dom, "features")
    _sub(feats, "acpi")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "destroy" if template == "test" or recipe_vm else "restart")
    _sub(dom, "on_crash", "destroy")

    dev = _sub(dom, "devices")
    _sub(dev, "controller", type="usb", model="none")
    if disk:
        d = _sub(dev, "disk", type="file", device="disk")
        _sub(d, "driver", name="qemu", type="qcow2")
        _sub(d, "source", file=disk)
        _sub(d, "target", dev="vda", bus="virtio")
    if seed_iso and recipe_vm:              # the initramfs has virtio_blk, not IDE
        d = _sub(dev, "disk", type="file", device="disk")
        _sub(d, "driver", name="qemu", type="raw")
        _sub(d, "source", file=seed_iso)
        _sub(d, "target", dev="vdb", bus="virtio")
        _sub(d, "readonly")
    elif seed_iso:
        d = _sub(dev, "disk", type="file", device="cdrom")
        _sub(d, "driver", name="qemu", type="raw")
        _sub(d, "source", file=seed_iso)
        _sub(d, "target", dev="hdc", bus="ide")
        _sub(d, "readonly")
    nic = _sub(dev, "interface", type="bridge")
    _sub(nic, "source", bridge=spec["bridge"])
    _sub(nic, "mac", address=spec["mac"])
    _sub(nic, "model", type="virtio")
    if spec.get("mtu") and int(spec["mtu"]) != 1500:
        _sub(nic, "mtu", size=str(int(spec["mtu"])))
    serial = _sub(dev, "serial", type="file" if console_log else "pty")
    if console_log:
        _sub(serial, "source", path=console_log)
    _sub(serial, "target", port="0")
    chan = _sub(dev, "channel", type="unix")
    _sub(chan, "target", type="virtio", name=AGENT_CHANNEL)
    if probe_socket:
        chan = _sub(dev, "channel", type="unix")
        _sub(chan, "source", mode="bind", path=probe_socket)
        _sub(chan, "target", type="virtio", name=PROBE_CHANNEL)
    if template != "test":
        rng = _sub(dev, "rng", model="virtio")
        _sub(rng, "backend", "/dev/urandom", model="random")
    video = _sub(dev, "video")
    _sub(video, "model", type="none")
    _sub(dev, "memballoon", model="none")

    ET.indent(dom, space="  ")
    return ET.tostring(dom, encoding="unicode") + "\n"


def parse_metadata(xml: str) -> dict[str, str] | None:
    """``{name, endpoint, fingerprint}`` from our metadata element (as libvirt returns it from
    ``virDomainGetMetadata``, or inside a whole domain XML); None when absent."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    tag = f"{{{METADATA_NS}}}lab"
    # virDomainGetMetadata returns the bare element, without its namespace: <lab .../>
    el = root if root.tag in (tag, "lab") else root.find(f".//{tag}")
    if el is None:
        return None
    return {k: el.get(k, "") for k in ("name", "endpoint", "fingerprint")}
