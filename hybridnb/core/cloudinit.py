"""NoCloud cloud-init seed for lab VMs booted from cloud images (templates ``base``/``docker``).

A cloud image (Ubuntu/Debian ``genericcloud``) configures itself on first boot from a *seed*:
a small ISO labelled ``cidata`` holding three files, all generated here from the VM's resource
spec (pure, deterministic — golden-tested):

* ``meta-data``      — instance id and local hostname;
* ``network-config`` — netplan v2: the NIC matched by its MAC, the static lab address, the lab
  DNS server and search domain; a default route via the lab gateway only when the lab NIC is
  the VM's only NIC (otherwise only the on-link lab subnet is routed through it);
* ``user-data``      — ``#cloud-config``: hostname/FQDN, a ``hybridnb`` user with the given SSH
  keys, the template's packages (``base``: network tools + qemu-guest-agent; ``docker``: the
  same plus ``docker.io``), and a last step that prints the ready marker
  (``HYBRIDNB-READY name=... ip=...``) on the serial console, as the test VM does.

A VM of an image recipe (spec ``boot: disk``, an image built with ``cloud_init: true``) gets
the same three files, but its user-data installs nothing, enables no systemd units and
prints no marker: the image holds its packages already, and hybridnb's init runs the agent
and the services and prints the ready marker once they accept connections.

The libvirt driver writes these into an ISO (:func:`seed_files` → genisoimage).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

SEED_LABEL = "cidata"
READY_MARKER = "HYBRIDNB-READY"
USER = "hybridnb"

#: Packages per template (the seed's Vagrantfile.hybrid-base / -docker provisioned these).
BASE_PACKAGES = ("qemu-guest-agent", "iputils-ping", "iproute2", "curl", "dnsutils",
                 "netcat-openbsd", "tcpdump", "traceroute")
TEMPLATE_PACKAGES: dict[str, tuple[str, ...]] = {
    "base": BASE_PACKAGES,
    "docker": BASE_PACKAGES + ("docker.io",),
}


def _dump(data: Any) -> str:
    import yaml  # noqa: PLC0415  (kept out of `import hybridnb`)

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100)


def meta_data(lab: str, spec: Mapping[str, Any]) -> str:
    return _dump({"instance-id": f"{spec['domain_name']}", "local-hostname": spec["hostname"]})


def network_config(spec: Mapping[str, Any], *, only_nic: bool = True) -> str:
    """Netplan v2 for the lab NIC (matched by MAC)."""
    nic: dict[str, Any] = {
        "match": {"macaddress": spec["mac"]},
        "set-name": "hybrid0",
        "dhcp4": False,
        "dhcp6": False,
        "addresses": [f"{spec['address']}/{spec['prefix']}"],
    }
    if only_nic:
        # 0.0.0.0/0 rather than "default": cloud-init 22.4's ENI renderer (Debian 12)
        # rejects "default" as an address
        nic["routes"] = [{"to": "0.0.0.0/0", "via": spec["gateway"]}]
    ns: dict[str, Any] = {}
    if spec.get("dns"):
        ns["addresses"] = list(spec["dns"])
    if spec.get("domain"):
        ns["search"] = [spec["domain"]]
    if ns:
        nic["nameservers"] = ns
    if spec.get("mtu") and int(spec["mtu"]) != 1500:
        nic["mtu"] = int(spec["mtu"])
    return _dump({"version": 2, "ethernets": {"hybrid0": nic}})


def user_data(lab: str, spec: Mapping[str, Any], *, ssh_keys: Iterable[str] = ()) -> str:
    """``#cloud-config`` for the VM's template."""
    template = spec.get("template", "base")
    recipe_vm = spec.get("boot") == "disk"
    if template not in TEMPLATE_PACKAGES and not recipe_vm:
        raise ValueError(f"no cloud-init template {template!r} "
                         f"(have: {', '.join(sorted(TEMPLATE_PACKAGES))})")
    keys = sorted({k.strip() for k in ssh_keys if k.strip()})
    fqdn = f"{spec['hostname']}.{spec['domain']}" if spec.get("domain") else spec["hostname"]
    user: dict[str, Any] = {"name": USER, "groups": ["sudo"], "shell": "/bin/bash",
                            "sudo": "ALL=(ALL) NOPASSWD:ALL", "lock_passwd": True}
    if keys:
        user["ssh_authorized_keys"] = keys
    if template == "docker":
        user["groups"] = ["sudo", "docker"]
    runcmd: list[Any] = [] if recipe_vm else [["systemctl", "enable", "--now",
                                                "qemu-guest-agent"]]
    if template == "docker" and not recipe_vm:
        runcmd.append(["systemctl", "enable", "--now", "docker"])
    marker = f"{READY_MARKER} name={spec['hostname']} ip={spec['address']}"
    if not recipe_vm:               # hybridnb's init prints it once the services are up
        runcmd.append(["sh", "-c", f"echo '{marker}' > /dev/ttyS0"])
    data: dict[str, Any] = {
        "hostname": spec["hostname"],
        "fqdn": fqdn,
        "manage_etc_hosts": True,
        "users": [user],
        "ssh_pwauth": False,
        "package_update": True,
        "packages": list(TEMPLATE_PACKAGES.get(template, ())),
        "runcmd": runcmd,
        "final_message": f"hybridnb lab {lab}: {spec['endpoint']} up after $UPTIME s",
    }
    if recipe_vm:
        del data["package_update"], data["packages"], data["runcmd"]
    if template == "docker" and not recipe_vm:
        data["groups"] = ["docker"]
    return "#cloud-config\n" + _dump(data)


def seed_files(lab: str, spec: Mapping[str, Any], *, ssh_keys: Iterable[str] = (),
               only_nic: bool = True) -> dict[str, str]:
    """The files of the NoCloud seed ISO, by name."""
    return {
        "meta-data": meta_data(lab, spec),
        "network-config": network_config(spec, only_nic=only_nic),
        "user-data": user_data(lab, spec, ssh_keys=ssh_keys),
    }
