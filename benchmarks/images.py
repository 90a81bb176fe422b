"""Recipe images: build time (cold and cache hit), VM boot-to-ready, container start.

Per recipe (the built-in templates ``base``, ``docker``, ``observer`` and the test recipes
``pg``, ``web``, ``cloud``):

* build     — ``ensure_build`` into a cold cache (``--cold``: a fresh cache directory, every
              recipe built from the Debian mirror) and again (the cache hit; goal < 1 s);
* baseline  — plain ``mmdebstrap --variant=minbase --include=...`` of the same packages (no
              unsafe-io, no slimming), for the recipes given in ``--baseline`` (cold only);
* shapes    — the VM disk (``mkfs.ext4 -d``) and the ``docker import`` of the rootfs;
* VM boot   — libvirt create until the ready marker and the guest agent (all services
              accepting connections), median of ``--rounds``, against the busybox test VM
              booted in the same run (the baseline: ratio recipe / test VM);
* container — create + start until the init prints its ready marker, against the busybox
              container (``docker run`` until it serves HTTP);
* labs      — (``--labs recipes,templates,cloud-init``, instead of the above) the example lab
              files through ``Lab.apply``: with ``--cold``, first into an empty image cache
              (``$HYBRIDNB_IMAGE_DIR`` a fresh directory, the recipes' images removed from the
              sandbox's Docker engine, so apply builds, imports and makes every disk itself;
              the first lab also pays the kernel bundle), then destroyed and applied again
              with the images cached (warm); how long the images step and every endpoint
              took.  The labs are renamed ``<sandbox><lab>``.

Runs in its own sandbox (``$HYBRIDNB_BENCH_SANDBOX``, default ``bench``); root; the builds
need the Debian mirror.  ``python benchmarks/images.py [--recipes a,b] [--rounds N] [--cold]
[--labs recipes,templates,cloud-init]``
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hybridnb.core import naming  # noqa: E402
from hybridnb.core.resource import Resource  # noqa: E402
from hybridnb.drivers.libvirt import LibvirtDriver  # noqa: E402
from hybridnb.images import testvm  # noqa: E402
from hybridnb.images.builder import ensure_build  # noqa: E402
from hybridnb.images.container import image_tag  # noqa: E402
from hybridnb.images.recipes import ensure_image  # noqa: E402
from hybridnb.sandbox import Sandbox  # noqa: E402
from tests.images.recipes import recipe  # noqa: E402

SANDBOX = os.environ.get("HYBRIDNB_BENCH_SANDBOX", "bench")
BRIDGE, NET = "hbench0", "10.98.0"
MEMORY = {"docker": 512, "observer": 192, "cloud": 256, "pg": 192}


def vm_spec(name: str, template: str, fields: dict, memory: int) -> dict:
    return {"endpoint": name, "hostname": name, "address": f"{NET}.200", "prefix": 24,
            "gateway": f"{NET}.1", "bridge": BRIDGE, "mtu": 1500, "dns": [f"{NET}.1"],
            "domain": "hybrid.local", "domain_name": naming.object_name("bench", name),
            "template": template, "memory": memory, "vcpus": 1,
            "mac": naming.mac_address("bench", name), "image": None, "kernel": None,
            "initrd": None, "boot_timeout": 300, **fields}


def boot(drv: LibvirtDriver, spec: dict) -> tuple[float, float]:
    """(seconds until create returned, guest uptime the init printed with the marker)."""
    res = Resource("vm", spec["endpoint"], spec, "bench")
    t0 = time.monotonic()
    drv.create("bench", res)
    took = time.monotonic() - t0
    m = re.search(r"HYBRIDNB-READY.* uptime=([0-9.]+)", drv.console("bench", spec["endpoint"]))
    drv.delete("bench", spec["endpoint"])
    return took, float(m.group(1)) if m else float("nan")


def container_start(api, image: str, ready: str, command=None) -> float:
    t0 = time.monotonic()
    c = api.create_container(image, command=command, detach=True,
                             host_config=api.create_host_config(init=True, network_mode="none"))
    try:
        api.start(c["Id"])
        while ready not in api.logs(c["Id"]).decode(errors="replace"):
            if time.monotonic() - t0 > 120:
                raise RuntimeError(f"{image}: no ready marker: {api.logs(c['Id'])[-500:]}")
            time.sleep(0.02)
        return time.monotonic() - t0
    finally:
        api.remove_container(c["Id"], force=True)


def plain_mmdebstrap(packages: tuple[str, ...], work: Path) -> float:
    t0 = time.monotonic()
    subprocess.run(["mmdebstrap", "--mode=unshare", "--variant=minbase", "-q",
                    "--include=" + ",".join(packages), "bookworm", str(work / "plain"),
                    "http://deb.debian.org/debian"], check=True)
    took = time.monotonic() - t0
    shutil.rmtree(work / "plain")
    return took


def apply_timed(lab) -> tuple[float, float, dict[str, float]]:
    """(whole apply, images step, {endpoint: seconds}) of one ``Lab.apply``."""
    first: list[float] = []
    t0 = time.monotonic()

    def progress(event) -> None:
        if not first and getattr(event, "phase", "") != "image":
            first.append(time.monotonic() - t0)

    try:
        result = lab.apply(progress=progress)
    except BaseException:
        lab.destroy()
        raise
    took = time.monotonic() - t0
    ends = {o.action.name: o.seconds for o in result.outcomes
            if o.action.kind in ("vm", "container")}
    return took, first[0] if first else took, ends


def bench_labs(names: list[str], cold: bool, work: Path) -> None:
    """The example labs applied cold (empty image cache) and warm, through ``Lab``."""
    from hybridnb.images.recipes import list_images
    from hybridnb.lab import Lab
    from hybridnb.labfile import load_lab_document

    examples = Path(__file__).resolve().parents[1] / "examples"
    box = Sandbox(SANDBOX)
    box.down()
    box.up()
    import docker

    api = docker.APIClient(base_url=box.target().docker_url, version="auto", timeout=300)
    rows = []
    try:
        if cold:
            os.environ["HYBRIDNB_IMAGE_DIR"] = str(work / "cache")
            for img in api.images(name="hybridnb/*"):
                api.remove_image(img["Id"], force=True)
        for name in names:
            doc = dict(load_lab_document(examples / f"{name}.yaml").data)
            doc["name"] = SANDBOX + str(doc["name"])
            for label in (["cold"] if cold else []) + ["warm"]:
                lab = Lab.from_dict(doc, backend="sandbox", sandbox=SANDBOX,
                                    state_dir=work / "state" / name)
                took, images, ends = apply_timed(lab)
                lab.destroy()
                rows.append((name, label, took, images, ends))
                print(f"   {name} {label}: apply {took:.1f} s (images step {images:.1f} s); "
                      + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(ends.items())),
                      flush=True)
        listing = list_images() if cold else None
    finally:
        api.close()
        box.down()
    print(f"\n{'lab':11} {'cache':5} {'apply':>7} {'images':>7}  endpoints")
    for name, label, took, images, ends in rows:
        print(f"{name:11} {label:5} {took:6.1f}s {images:6.1f}s  "
              + ", ".join(f"{k} {v:.1f}s" for k, v in sorted(ends.items())))
    if listing is not None:
        print(f"\n{listing}\nbuild seconds (cold): " + ", ".join(
            f"{r['name']} {r['seconds']:.1f} s" for r in listing.rows if r.get("seconds")))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", default="base,docker,observer,pg,web,cloud")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="build into a fresh cache")
    ap.add_argument("--baseline", default="pg", help="recipes to build with plain mmdebstrap")
    ap.add_argument("--labs", default="", help="example labs to apply (cold with --cold, "
                    "then warm) instead of the recipe measurements")
    args = ap.parse_args()
    names = [n for n in args.recipes.split(",") if n]
    work = Path(tempfile.mkdtemp(prefix="hnb-bench-images-", dir="/var/tmp"))
    if args.labs:
        print(f"== labs ({'cold, then warm' if args.cold else 'warm'})", flush=True)
        try:
            bench_labs([n for n in args.labs.split(",") if n], args.cold, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    cache = work / "cache" if args.cold else None
    rows: dict[str, dict[str, float]] = {n: {} for n in names}
    print(f"== builds ({'cold cache ' + str(cache) if cache else 'default cache'})", flush=True)
    for n in names:
        t0 = time.monotonic()
        b = ensure_build(recipe(n), cache=cache)
        rows[n]["build"] = time.monotonic() - t0
        t0 = time.monotonic()
        ensure_build(recipe(n), cache=cache)
        rows[n]["hit"] = time.monotonic() - t0
        rows[n]["size"] = b.size / 2**20
        if args.cold and n in args.baseline.split(","):
            rows[n]["plain"] = plain_mmdebstrap(recipe(n).all_packages(), work)
        print(f"   {n}: {rows[n]['build']:.1f} s, hit {rows[n]['hit'] * 1000:.1f} ms, "
              f"{rows[n]['size']:.0f} MiB", flush=True)

    box = Sandbox(SANDBOX)
    box.up()
    target = box.target()
    ns = target.netns
    subprocess.run(f"ip -n {ns} link add {BRIDGE} type bridge && ip -n {ns} addr add "
                   f"{NET}.1/24 dev {BRIDGE} && ip -n {ns} link set {BRIDGE} up", shell=True,
                   check=True)
    drv = LibvirtDriver(target, files_dir=work / "vms", boot_timeout=300)
    import docker

    api = docker.APIClient(base_url=target.docker_url, version="auto", timeout=300)
    try:
        print("== shapes and starts", flush=True)
        img = testvm.build()
        base_vm = [boot(drv, vm_spec("tvm", "test", {"kernel": str(img.kernel),
                                                      "initrd": str(img.initrd)}, 128))
                   for _ in range(args.rounds)]
        base_ct = [container_start(api, "busybox:latest", "", ["sh", "-c", "echo up; "
                                                                "sleep 60"])
                   for _ in range(args.rounds)]
        for n in names:
            t0 = time.monotonic()
            vm = ensure_image(recipe(n), target, "vm", cache=cache)
            rows[n]["disk"] = time.monotonic() - t0
            tag = image_tag(ensure_build(recipe(n), cache=cache), recipe(n))
            if api.images(name=tag):                     # measure the import, not a hit
                api.remove_image(tag, force=True)
            t0 = time.monotonic()
            ct = ensure_image(recipe(n), target, "container", cache=cache)
            rows[n]["import"] = time.monotonic() - t0
            boots = [boot(drv, vm_spec(f"b{n}", n, vm.spec(), MEMORY.get(n, 160)))
                     for _ in range(args.rounds)]
            rows[n]["boot"] = statistics.median(b[0] for b in boots)
            rows[n]["uptime"] = statistics.median(b[1] for b in boots)
            if n not in ("docker", "cloud"):     # dockerd needs a privileged container
                rows[n]["start"] = statistics.median(
                    container_start(api, ct.tag, "HYBRIDNB-READY") for _ in range(args.rounds))
            print(f"   {n}: disk {rows[n]['disk']:.1f} s, import {rows[n]['import']:.1f} s, "
                  f"boot {rows[n]['boot']:.1f} s", flush=True)
    finally:
        drv.close()
        api.close()
        box.down()
        shutil.rmtree(work, ignore_errors=True)

    tvm = statistics.median(b[0] for b in base_vm)
    tct = statistics.median(base_ct)
    print(f"\nbaselines: busybox test VM boot {tvm:.2f} s (uptime at marker "
          f"{statistics.median(b[1] for b in base_vm):.2f} s); busybox container start "
          f"{tct:.2f} s\n")
    head = (f"{'recipe':9} {'build':>7} {'hit':>8} {'size':>8} {'disk':>6} {'import':>7} "
            f"{'VM boot':>8} {'x test VM':>9} {'uptime':>7} {'start':>6} {'x busybox':>9}")
    print(head)
    print("-" * len(head))
    for n in names:
        r = rows[n]
        start = f"{r['start']:.2f}" if "start" in r else "-"
        ratio = f"{r['start'] / tct:.1f}" if "start" in r else "-"
        print(f"{n:9} {r['build']:6.1f}s {r['hit'] * 1000:6.1f}ms {r['size']:5.0f}MiB "
              f"{r['disk']:5.1f}s {r['import']:6.1f}s {r['boot']:7.1f}s "
              f"{r['boot'] / tvm:8.1f}x {r['uptime']:6.1f}s {start:>6} {ratio:>8}x")
    plain = {n: r["plain"] for n, r in rows.items() if "plain" in r}
    for n, t in plain.items():
        print(f"\nbuild baseline {n}: plain mmdebstrap {t:.1f} s vs hybridnb "
              f"{rows[n]['build']:.1f} s (ratio {rows[n]['build'] / t:.2f})")


if __name__ == "__main__":
    main()
