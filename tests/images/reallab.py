"""A lab of recipe images, made through the real drivers until the lab file learns ``image:``.

:class:`RecipeLab` compiles an ordinary lab (containers with a placeholder image, VMs of the
test template), then gives each endpoint its recipe image — a container the imported tag
(:meth:`~hybridnb.images.recipes.ContainerImage.spec`), a VM the kernel, initramfs and disk
(:meth:`~hybridnb.images.vmdisk.VMImage.spec`) — and creates the resources kind by kind with
the sandbox's drivers (VMs concurrently), the lab's DNS server included.  That is what
``apply`` will do once the lab file's ``images:`` section lands; here it proves the images
and the drivers.  ``down()`` deletes everything in reverse.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridnb.backends import real_backend
from hybridnb.core.compile import compile_lab
from hybridnb.core.ipam import assign_addresses
from hybridnb.core.resource import KIND_ORDER, Resource
from hybridnb.core.spec import parse_lab
from hybridnb.images.recipes import ensure_image
from hybridnb.target import Target
from tests.images.recipes import recipe


@dataclass
class Endpoint:
    kind: str                        # container | vm
    image: str                       # recipe name
    memory: int = 192
    command: list[str] | None = None
    address: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class RecipeLab:
    def __init__(self, name: str, subnet: str, target: Target, state_dir: Path,
                 endpoints: dict[str, Endpoint]) -> None:
        self.name = name
        self.target = target
        self.endpoints = endpoints
        self.backend = real_backend(target, state_dir=state_dir)
        base = subnet.rsplit(".", 1)[0]
        lab = {"name": name,
               "network": {"bridge": f"h{name}0"[:15], "subnet": subnet,
                           "gateway": f"{base}.1", "domain": "hybrid.local"},
               "endpoints": {}}
        for ep, e in endpoints.items():
            raw: dict[str, Any] = {"kind": e.kind}
            if e.address:
                raw["address"] = e.address
            if e.kind == "vm":
                raw["memory"] = e.memory
            lab["endpoints"][ep] = raw
        self.spec = parse_lab(lab)
        self.addresses = {k: str(v) for k, v in assign_addresses(self.spec).items()}
        self.resources: list[Resource] = []
        self.boot_seconds: dict[str, float] = {}
        self.image_seconds: dict[str, float] = {}

    @property
    def gateway(self) -> str:
        return str(self.spec.network.gateway)

    def images(self) -> dict[str, dict[str, Any]]:
        """Each endpoint's image fields (built and imported as needed)."""
        out = {}
        for ep, e in self.endpoints.items():
            t0 = time.monotonic()
            ref = ensure_image(recipe(e.image), self.target, e.kind)
            self.image_seconds[ep] = time.monotonic() - t0
            out[ep] = dict(ref.spec(), **({"template": e.image, "memory": e.memory}
                                          if e.kind == "vm" else {}))
        return out

    def up(self) -> "RecipeLab":
        fields = self.images()
        for res in compile_lab(self.spec, assign_addresses(self.spec)):
            spec = dict(res.spec)
            if res.kind in ("container", "vm"):
                spec.update(fields[res.name])
                spec.update(self.endpoints[res.name].extra)
                if res.kind == "container" and self.endpoints[res.name].command is not None:
                    spec["command"] = self.endpoints[res.name].command
            self.resources.append(Resource(res.kind, res.name, spec, res.summary))
        try:
            for kind in KIND_ORDER:
                batch = [r for r in self.resources if r.kind == kind]
                with ThreadPoolExecutor(max(1, len(batch))) as pool:
                    list(pool.map(self._create, batch))
        except BaseException:
            self.down()
            raise
        return self

    def _create(self, res: Resource) -> None:
        t0 = time.monotonic()
        self.backend.drivers[res.kind].create(self.name, res)
        if res.kind == "vm":
            self.boot_seconds[res.name] = time.monotonic() - t0

    def down(self) -> None:
        for kind in reversed(KIND_ORDER):
            driver = self.backend.drivers.get(kind)
            if driver is None:
                continue
            for name in sorted(driver.observe(self.name)):
                driver.delete(self.name, name)

    # ------------------------------------------------------------------ helpers

    @property
    def vms(self) -> Any:
        return self.backend.drivers["vm"]

    @property
    def docker(self) -> Any:
        return self.backend.drivers["container"].api

    def container_id(self, endpoint: str) -> str:
        return self.backend.drivers["container"].state(self.name)[endpoint]["id"]

    def cexec(self, endpoint: str, argv: list[str]) -> tuple[int, str]:
        api = self.docker
        ex = api.exec_create(self.container_id(endpoint), argv)
        out = api.exec_start(ex["Id"]).decode(errors="replace")
        return api.exec_inspect(ex["Id"])["ExitCode"], out

    def logs(self, endpoint: str) -> str:
        return self.docker.logs(self.container_id(endpoint)).decode(errors="replace")

    def wait_container_ready(self, endpoint: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.logs(endpoint)
            if "HYBRIDNB-READY" in text or "HYBRIDNB-FAILED" in text:
                return text
            time.sleep(0.1)
        raise AssertionError(f"{endpoint}: no ready marker after {timeout} s:\n{self.logs(endpoint)}")

    def gexec(self, endpoint: str, command: str, timeout: float = 30) -> tuple[int, str]:
        code, out, err = self.vms.guest_exec(self.name, endpoint, ["/bin/sh", "-c", command],
                                             timeout=timeout)
        return code, out + err
