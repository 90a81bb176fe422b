"""Random valid labs and random valid edits of any of their fields, applied one at a time and
checked (:func:`run_sequence`: one sequence per seed).

Issue 11's property: from a random valid lab, any valid edit of any field converges with one
apply.  The edits come from the declarations, so a new field is covered without touching this
module:

* endpoint fields from the kinds registry (:func:`hybridnb.core.kinds.kinds`, each kind's
  declared fields): a value is drawn by the field's *type* (:data:`BY_TYPE`: integers within
  the field's bounds, one of a choice's options, strings matching an item pattern, ...) and
  kept only when the field's own parser accepts it; :data:`BY_FIELD` overrides the few fields
  whose values must also exist in the engine (a container's image, a command that keeps
  running, a kernel file) — and addresses are drawn free in the lab;
* network keys from the lab parser's list (``core.spec._NET_KEYS``): :data:`NETWORK`.

What is deliberately not edited is listed with the reason (:data:`NOT_EDITED`); the unit test
``test_every_field_has_a_way_to_be_edited`` fails for a field (or a new field *type*, or a new
network key) that has neither a way nor a reason.  Every drawn lab is validated with the real
parser and address assignment (given the addresses the lab already holds), so only valid labs
are applied.

Every choice comes from one ``random.Random`` per sequence, seeded with the sequence's seed
(a seeded generator, not hypothesis: each sequence applies labs on real engines, so none may
be thrown away or replayed, and hypothesis' bias towards the simplest values made most
sequences edit the same few fields); strings matching an item pattern come from ``rstr``
with the same generator.  A failing sequence names its seed; ``HYBRIDNB_EDIT_SEED`` moves
the first seed.
"""

from __future__ import annotations

import copy
import ipaddress
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import rstr

from hybridnb.core import kinds as registry
from hybridnb.core.ipam import assign_addresses, pools_for
from hybridnb.core.kinds.base import (
    AbsolutePath,
    Address,
    Argv,
    Choice,
    Field,
    Integer,
    Items,
    KeyValues,
    Text,
)
from hybridnb.core.problems import Collector
from hybridnb.core.spec import parse_lab
from hybridnb.errors import ValidationError

#: A second tag of the sandbox's busybox image (made by the real test's fixture).
ALT_IMAGE = "hnb-test/busybox-alt:1"
IMAGES = ("busybox", "busybox:latest", ALT_IMAGE)
#: Commands that keep running (None: the image's own, busybox httpd on port 80).
COMMANDS: tuple[Any, ...] = (None, "sleep 3600", "httpd -f -p 80 -h /",
                             "httpd -f -p 8080 -h /", ["sh", "-c", "sleep 3600"])
SUBNETS = ("10.92.1.0/24", "10.92.2.0/24", "10.92.4.0/23", "10.92.6.0/25", "10.92.7.0/24")
BRIDGES = ("cvgp0", "cvgp1", "cvgp2")
DOMAINS = ("hybrid.local", "lab.test", "edit-2.example")
NAMES = {"host": ("h1", "h2", "h3"), "container": ("c1", "c2", "c3"), "vm": ("v1",)}
Edit = tuple[str, dict[str, Any]]


class Draw:
    """How edits choose: everything from one seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.xeger = rstr.Rstr(rng).xeger

    def choice(self, options: Sequence[Any]) -> Any:
        return options[self.rng.randrange(len(options))]

    def chance(self, n: int) -> bool:
        """True one time in ``n``."""
        return self.rng.randrange(n) == 0

    def word(self) -> str:
        return self.xeger(r"[a-z][a-z0-9]{0,6}")

    def text(self) -> str:
        return self.xeger(r"[A-Za-z0-9 ._:/-]{0,12}")


@dataclass
class Ctx:
    """What drawing a value may look at: the lab being edited and the addresses it holds."""

    doc: dict[str, Any]
    previous: Mapping[str, str] = field(default_factory=dict)
    #: paths of the test VM image's kernel and initrd (None: no VM fields of that sort)
    kernel: tuple[str, str] | None = None

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network((self.doc.get("network") or {}).get("subnet",
                                                                          "10.0.1.0/24"))


def _free_addresses(ctx: Ctx, kind: str, name: str) -> list[Any]:
    """``None`` (allocated) and a few addresses of the kind's pool nobody else holds."""
    spec = parse_lab(copy.deepcopy(ctx.doc))
    pool = pools_for(spec.network)[kind]
    try:
        assigned = assign_addresses(spec, ctx.previous)
    except ValidationError:             # e.g. the kind's pool is empty: no address to offer,
        return [None]                   # and the edit's validity check refuses the lab
    taken = {str(a) for n, a in assigned.items() if n != name}
    taken.add(str(spec.network.gateway))
    free = [str(ipaddress.IPv4Address(int(pool.first) + i)) for i in range(min(pool.size, 40))]
    return [None] + [a for a in free if a not in taken][:6]


def _kernel_file(which: int) -> Callable[[Ctx], list[Any]]:
    return lambda ctx: [None] if ctx.kernel is None else [None, ctx.kernel[which]]


#: Host directories the generated ``mounts:`` bind (they must exist on the engine's machine).
MOUNT_SOURCES = (Path(tempfile.gettempdir()) / "hnb-edit-mounts" / "a",
                 Path(tempfile.gettempdir()) / "hnb-edit-mounts" / "b")


def _mounts(ctx: Ctx) -> list[Any]:
    for source in MOUNT_SOURCES:
        source.mkdir(parents=True, exist_ok=True)
    a, b = (str(s) for s in MOUNT_SOURCES)
    return [[], [f"{a}:/srv/a"], [f"{a}:/srv/a:ro", f"{b}:/mnt/b"]]


#: Candidate values of fields that must also exist in the engine (chosen uniformly).
BY_FIELD: dict[tuple[str, str], Callable[[Ctx], list[Any]]] = {
    ("container", "image"): lambda ctx: list(IMAGES),
    ("container", "command"): lambda ctx: list(COMMANDS),
    ("container", "ports"): lambda ctx: [["80"], ["8080/tcp", "53/udp"], ["7"], []],
    ("container", "mounts"): _mounts,
    ("vm", "memory"): lambda ctx: [96, 128, 160],
    ("vm", "vcpus"): lambda ctx: [1, 2],
    ("vm", "kernel"): _kernel_file(0),
    ("vm", "initrd"): _kernel_file(1),
}

#: Fields and network keys not edited at random, and why (each is tested on its own).
NOT_EDITED: dict[tuple[str, str], str] = {
    ("vm", "template"): "base/docker boot a cloud image the test machine does not have "
                        "(validation refuses them without image:, test_kinds); only 'test' "
                        "boots here",
    ("vm", "image"): "a cloud image (qcow2) for base/docker: none on the test machine",
    ("network", "adopt"): "adopts a bridge made outside the lab; adopted -> owned is refused "
                          "before acting (bridge check)",
    ("network", "vxlan"): "joins hosts: of a lab spread over machines; the drawn labs live on "
                          "one (placement is tested in tests/core/test_multihost.py and on two "
                          "sandboxes in tests/drivers/test_vxlan.py)",
    **{(kind.name, "host"): "which machine of hosts: runs the endpoint; the drawn labs live on "
                            "one machine (see network.vxlan)" for kind in registry.kinds()},
}

def _by_integer(d: Draw, f: Field) -> Any:
    t: Integer = f.type  # type: ignore[assignment]
    low = t.minimum if t.minimum is not None else 0
    return d.rng.randint(low, t.maximum if t.maximum is not None else low + 1000)


def _by_items(d: Draw, f: Field) -> Any:
    t: Items = f.type  # type: ignore[assignment]
    return sorted({d.xeger(t.pattern) for _ in range(d.rng.randint(1, 3))})


def _by_key_values(d: Draw, f: Field) -> Any:
    return {d.xeger(r"[A-Za-z][A-Za-z0-9_]{0,6}"): d.text()
            for _ in range(d.rng.randint(1, 3))}


#: Values by field type, for every field without a :data:`BY_FIELD` entry.
BY_TYPE: dict[type, Callable[[Draw, Field], Any]] = {
    Text: lambda d, f: d.word(),
    AbsolutePath: lambda d, f: f"/srv/{d.word()}",
    Integer: _by_integer,
    Choice: lambda d, f: d.choice(f.type.option_choices()),
    Argv: lambda d, f: d.choice([["sleep", "3600"], "sleep 60"]),
    KeyValues: _by_key_values,
    Items: _by_items,
    Address: lambda d, f: None,                   # drawn free in the lab: _free_addresses
}


def edited_fields(kind: registry.Kind) -> list[Field]:
    return [f for f in kind.fields() if (kind.name, f.name) not in NOT_EDITED]


#: What :func:`field_value` returns when no valid, different value was found.
NO_VALUE = object()


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _problems(f: Field, value: Any) -> list[Any]:
    c = Collector()
    f.parse(c, value, "e")
    return c.problems


def field_value(d: Draw, ctx: Ctx, kind: str, name: str, f: Field, current: Any = None) -> Any:
    """A value for field ``f`` of endpoint ``name`` that its parser accepts and that differs
    from ``current``: ``None`` (unset: the default) one time in four when set, else one of
    :data:`BY_FIELD`'s candidates or a value of :data:`BY_TYPE`'s strategy; :data:`NO_VALUE`
    when none was found."""
    if current is not None and d.chance(4):
        return None
    candidates: list[Any] | None = None
    if f.name == "address":
        candidates = _free_addresses(ctx, kind, name)
    elif (kind, f.name) in BY_FIELD:
        candidates = BY_FIELD[(kind, f.name)](ctx)
    for _ in range(8):
        value = d.choice(candidates) if candidates is not None else \
            BY_TYPE[type(f.type)](d, f)
        if value is not None and _problems(f, value):
            continue
        if _plain(value) != _plain(current):
            return value
    return NO_VALUE


def _remap(addr: str, new: ipaddress.IPv4Network) -> str:
    old_offset = int(ipaddress.IPv4Address(addr)) & 0xFF
    return str(new.network_address + (old_offset % (new.num_addresses - 2) + 1))


def _with_subnet(doc: dict[str, Any], subnet: str) -> dict[str, Any]:
    """``doc`` moved to ``subnet``: the gateway, pool starts and explicit addresses keep their
    offset where they can."""
    new = ipaddress.IPv4Network(subnet)
    net = doc.setdefault("network", {})
    net["subnet"] = subnet
    if "gateway" in net:
        net["gateway"] = _remap(net["gateway"], new)
    if net.get("pools"):
        net["pools"] = {k: _remap(v, new) for k, v in net["pools"].items()}
    for ep in (doc.get("endpoints") or {}).values():
        if ep.get("address"):
            ep["address"] = _remap(ep["address"], new)
    return doc


def valid(doc: Mapping[str, Any], previous: Mapping[str, str]) -> bool:
    try:
        assign_addresses(parse_lab(copy.deepcopy(dict(doc))), previous)
    except ValidationError:
        return False
    return True


def _network_values(key: str, ctx: Ctx, d: Draw) -> Any:
    subnet = ctx.subnet
    if key == "gateway":
        return d.choice([str(subnet.network_address + o)
                         for o in (1, 2, 5, subnet.num_addresses - 2)])
    if key == "pools":
        starts = [str(subnet.network_address + o) for o in (10, 40, 60, 100, 120)
                  if o < subnet.num_addresses - 1]
        return {k: d.choice(starts) for k in registry.KINDS if d.chance(2)}
    if key == "upstream":
        return d.choice([[], ["192.0.2.53"], ["192.0.2.53", "192.0.2.54"]])
    return d.choice({"bridge": BRIDGES,
                     "subnet": [s for s in SUBNETS if s != str(subnet)],
                     "domain": DOMAINS, "mtu": (576, 1400, 1500, 9000),
                     "dns": (True, False)}[key])


#: How each network key is edited (every key of the parser's list has a way or a reason).
NETWORK: tuple[str, ...] = ("bridge", "subnet", "gateway", "domain", "mtu", "dns", "upstream",
                            "pools")


def network_edit(d: Draw, ctx: Ctx) -> Edit | None:
    """(what changed, the edited lab), or None when the drawn edit changes nothing or is not
    valid."""
    key = d.choice(NETWORK)
    doc = copy.deepcopy(ctx.doc)
    value = _network_values(key, ctx, d)
    if key == "subnet":
        doc = _with_subnet(doc, value)
    else:
        doc.setdefault("network", {})[key] = value
    if doc == ctx.doc or not valid(doc, ctx.previous):
        return None
    return f"network.{key} = {value!r}", doc


def endpoint_edit(d: Draw, ctx: Ctx) -> Edit | None:
    """Any field of any endpoint (a field of the kinds in the lab first, then an endpoint of
    its kind), from the kinds' declared fields (None: no valid edit)."""
    eps = ctx.doc.get("endpoints") or {}
    if not eps:
        return None
    here = sorted({ep["kind"] for ep in eps.values()})
    kind, f = d.choice([(registry.get(k), f) for k in here
                        for f in edited_fields(registry.get(k))])
    name = d.choice(sorted(n for n, ep in eps.items() if ep["kind"] == kind.name))
    value = field_value(d, ctx, kind.name, name, f, eps[name].get(f.name))
    if value is NO_VALUE:
        return None
    doc = copy.deepcopy(ctx.doc)
    entry = doc["endpoints"][name]
    if value is None:
        entry.pop(f.name, None)
    else:
        entry[f.name] = _plain(value)
    if entry == ctx.doc["endpoints"][name] or not valid(doc, ctx.previous):
        return None
    return f"endpoints.{name}.{f.name} = {value!r}", doc


def new_endpoint(d: Draw, ctx: Ctx, kind: str, name: str) -> dict[str, Any]:
    """A new endpoint of ``kind``, each of its fields set one time in three."""
    entry: dict[str, Any] = {"kind": kind}
    probe = Ctx({**ctx.doc, "endpoints": {**(ctx.doc.get("endpoints") or {}), name: entry}},
                ctx.previous, ctx.kernel)
    for f in edited_fields(registry.get(kind)):
        if d.chance(3):
            value = field_value(d, probe, kind, name, f)
            if value is not None and value is not NO_VALUE:
                entry[f.name] = _plain(value)
    return entry


def add_or_remove(d: Draw, ctx: Ctx, vms: bool) -> Edit | None:
    doc = copy.deepcopy(ctx.doc)
    eps = doc.setdefault("endpoints", {})
    free = [(k, n) for k, names in NAMES.items() if vms or k != "vm" for n in names
            if n not in eps]
    if len(eps) > 1 and (not free or d.chance(2)):
        name = d.choice(sorted(eps))
        del eps[name]
        what = f"remove {name}"
    elif free:
        kind, name = d.choice(free)
        eps[name] = new_endpoint(d, ctx, kind, name)
        what = f"add {name} = {eps[name]!r}"
    else:
        return None
    return (what, doc) if valid(doc, ctx.previous) else None


def any_edit(d: Draw, ctx: Ctx, vms: bool) -> Edit:
    """One valid edit: of an endpoint's field (one time in two), of the network (one in
    three), or adding or removing an endpoint — drawn again when it is not valid (DNS on/off
    always is)."""
    for _ in range(30):
        what = d.choice(("endpoint", "endpoint", "endpoint", "network", "network", "count"))
        edit = {"network": network_edit, "endpoint": endpoint_edit,
                "count": lambda d, ctx: add_or_remove(d, ctx, vms)}[what](d, ctx)
        if edit is not None:
            return edit
    doc = copy.deepcopy(ctx.doc)
    net = doc.setdefault("network", {})
    net["dns"] = not net.get("dns", True)
    return f"network.dns = {net['dns']!r}", doc


def initial_lab(d: Draw, name: str, *, vm_chance: int = 0,
                kernel: tuple[str, str] | None = None) -> dict[str, Any]:
    """A random valid lab: a subnet, a bridge, DNS on or off, 1-2 hosts, 1-2 containers and
    (one time in ``vm_chance``; 0: never) a test VM, each with some fields set."""
    net: dict[str, Any] = {"subnet": d.choice(SUBNETS), "bridge": d.choice(BRIDGES),
                           "dns": d.choice((True, False))}
    doc: dict[str, Any] = {"name": name, "network": net, "endpoints": {}}
    counts = {"host": d.choice((1, 2)), "container": d.choice((1, 2)),
              "vm": int(bool(vm_chance) and d.chance(vm_chance))}
    for kind, n in counts.items():
        for ep in NAMES[kind][:n]:
            doc["endpoints"][ep] = new_endpoint(d, Ctx(doc, {}, kernel), kind, ep)
            if not valid(doc, {}):
                doc["endpoints"][ep] = {"kind": kind}
    return doc


def listens(doc: Mapping[str, Any], port: int) -> set[str]:
    """The endpoints with a real server on TCP ``port`` (busybox httpd; the test VM's)."""
    out = set()
    for name, ep in (doc.get("endpoints") or {}).items():
        if ep["kind"] == "vm":
            if port == 80:
                out.add(name)
            continue
        if ep["kind"] != "container":
            continue
        command = ep.get("command")
        words = command.split() if isinstance(command, str) else list(command or [])
        if command is None and ep.get("image", "busybox") in IMAGES:
            words = ["httpd", "-f", "-p", "80"]          # the sandbox busybox image's CMD
        if words[:1] == ["httpd"] and words[words.index("-p") + 1] == str(port):
            out.add(name)
    return out


# ------------------------------------------------------------------------ one sequence

@dataclass
class Sequence_:
    """One random lab and its edits, applied one at a time (see :func:`run_sequence`)."""

    seed: int
    steps: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        return f"seed {self.seed}:\n  " + "\n  ".join(self.steps)


def run_sequence(seed: int, *, make_lab: Callable[[dict[str, Any]], Any],
                 check: Callable[[Any, dict[str, Any]], None], edits: int, name: str = "cvgp",
                 vm_chance: int = 0, kernel: tuple[str, str] | None = None) -> Sequence_:
    """Apply a random valid lab, then ``edits`` random valid edits, each followed by
    ``check(lab, doc)``; destroy the lab at the end (also after a failure, which is raised
    with the sequence so far)."""
    import time

    d = Draw(random.Random(seed))
    seq = Sequence_(seed)
    t0 = time.perf_counter()
    doc = initial_lab(d, name, vm_chance=vm_chance, kernel=kernel)
    lab = None
    try:
        for i in range(edits + 1):
            if i == 0:
                what = "start: " + repr(doc)
            else:
                previous = {k: str(v) for k, v in lab.addresses().items()}
                what, doc = any_edit(d, Ctx(doc, previous, kernel), vms=bool(vm_chance))
            seq.steps.append(what)
            lab = make_lab(copy.deepcopy(doc))
            result = lab.apply()
            assert result.ok, result.to_text()
            check(lab, doc)
    except BaseException as exc:
        raise AssertionError(f"{type(exc).__name__}: {exc}\nafter {seq}") from exc
    finally:
        if lab is not None:
            lab.destroy()
        seq.seconds = time.perf_counter() - t0
    return seq


__all__ = ["ALT_IMAGE", "BY_FIELD", "BY_TYPE", "Ctx", "Draw", "NETWORK", "NOT_EDITED",
           "Sequence_", "add_or_remove", "any_edit", "edited_fields", "endpoint_edit",
           "initial_lab", "listens", "network_edit", "run_sequence", "valid"]
