"""Link impairments (resource kind ``link``): delay, jitter, loss, rate and MTU per endpoint.

One resource per impaired endpoint, named after it; its spec is the endpoint's identity plus
:meth:`hybridnb.core.impairments.Impairment.to_spec`::

    {"endpoint": "db", "kind": "vm", "bridge": "hybr0", "default_mtu": 1500,
     "mac": "52:54:00:..", "guest_netem": true,              # vm: the guest has tc + netem
     "veth": "hv0123456789", "netns": "hnb-lab-h1",           # host: its port and namespace
     "delay_us": 50000, "jitter_us": 0, "loss": 2000, "rate": 10000000, "mtu": 1400}

Where each impairment goes is decided by :func:`hybridnb.core.impairments.placement` from the
kernel's capabilities (:func:`tc_features`, probed once in a throwaway namespace):

* the endpoint's **bridge port** is found from the endpoint: a host's veth by name, a VM's tap
  by MAC (libvirt gives the tap the guest's MAC with the first byte ``fe``), a container's
  veth as the peer (``IFLA_LINK``) of ``eth0`` in its namespace;
* ``delay``/``jitter``: ``netem`` as the port's root qdisc (what the port sends to the
  endpoint) when the host kernel has it; otherwise, for a VM, ``tc qdisc replace dev eth0 root
  netem ...`` inside the guest through its agent; otherwise :meth:`LinkDriver.check` refuses;
* ``rate``: ``tbf`` on the port's egress (under netem when both), and for what the endpoint
  sends an IFB device ``hq<hash>`` its ingress is redirected to (``ingress`` qdisc, ``u32``
  match-all, ``mirred`` redirect) with its own ``tbf``;
* ``loss``: an nftables rule ``oifname PORT numgen random mod 10000 < N drop`` in the lab's
  ``bridge hnb-<lab>-links`` table (:func:`hybridnb.core.nftables.loss_update`);
* ``mtu``: the port, the IFB and the endpoint's own ``eth0`` (a host's or container's
  namespace, or ``ip link set`` in a VM guest).

The record of what was applied — owner, fingerprint, port name and index, whether an IFB, a
guest qdisc or an MTU was set — is the comment of a rule in the endpoint's chain ``ep-<name>``
of the links table, so ``observe`` reads it back from the kernel; a port that is gone or has
another index (the endpoint was re-created) reports a changed fingerprint, and the next apply
updates it.  ``create`` and ``update`` are the same convergent step and never touch the
endpoint itself (no restart); ``delete`` removes qdiscs, filters, the IFB, the guest qdisc, the
loss chains and restores the MTU.
"""

from __future__ import annotations

import errno
import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from hybridnb.core import nftables as nftjson
from hybridnb.core.impairments import (Capabilities, Impairment, Placement, format_time,
                                       placement)
from hybridnb.core.naming import object_name, owner_tag
from hybridnb.core.resource import Observation, Resource
from hybridnb.drivers import nsutil
from hybridnb.drivers.links import get_link, link_kind, netlink_errors
from hybridnb.drivers.nftables import Feature, Nft
from hybridnb.drivers.nftables import available as nft_available
from hybridnb.errors import EngineError, EngineUnavailable, NotFoundError
from hybridnb.target import Target

log = logging.getLogger(__name__)

ROOT = 0x10000                 # 1:0
CHILD_PARENT = 0x10001         # 1:1 (netem's inner qdisc)
CHILD = 0x100000               # 10:0
INGRESS = 0xFFFF0000           # ffff:
TC_ROOT = 0xFFFFFFFF           # parent of a root qdisc
TC_INGRESS = 0xFFFFFFF1        # parent of the ingress qdisc
ETH_P_ALL = 0x0003
NETEM_LIMIT = 10000            # packets netem may hold (1000 is too few for 50 ms at speed)
TBF_LATENCY = "100ms"          # how long tbf may queue (its limit in time)
MOVED = "~moved"

GuestExec = Callable[[str, str, Sequence[str]], Any]     # (lab, endpoint, argv) → ExecResult
ContainerNetns = Callable[[str], Mapping[str, str]]      # lab → {endpoint: /proc/PID/ns/net}


def ifb_name(lab: str, endpoint: str) -> str:
    """The IFB device carrying what an endpoint sends through its rate limit (≤ 15 bytes)."""
    return "hq" + hashlib.sha256(f"ifb/{lab}/{endpoint}".encode()).hexdigest()[:10]


def tbf_burst(rate: int) -> int:
    """tbf bucket size in bytes: 10 ms worth of the rate, at least two full frames."""
    return max(rate // 8 // 100, 3200)


# ------------------------------------------------------------------------------ records

@dataclass(frozen=True)
class Record:
    """What was applied to one endpoint (the comment of its record rule)."""

    lab: str
    endpoint: str
    fingerprint: str
    kind: str
    port: str = "-"
    index: int = 0
    ifb: bool = False
    guest: bool = False
    mtu: int | None = None               # the MTU to restore on delete (None: not changed)

    def text(self) -> str:
        return (f"{owner_tag(self.lab)}:{self.endpoint} {self.fingerprint} kind={self.kind} "
                f"port={self.port}/{self.index} ifb={int(self.ifb)} guest={int(self.guest)} "
                f"mtu={self.mtu if self.mtu is not None else '-'}")

    @classmethod
    def parse(cls, text: str) -> "Record | None":
        words = text.split()
        if len(words) < 3 or not words[0].startswith("hybridnb:") or words[0].count(":") != 2:
            return None
        _, lab, endpoint = words[0].split(":")
        kv = dict(w.split("=", 1) for w in words[2:] if "=" in w)
        port, _, index = kv.get("port", "-/0").rpartition("/")
        try:
            return cls(lab, endpoint, words[1], kv.get("kind", ""), port or "-", int(index),
                       kv.get("ifb") == "1", kv.get("guest") == "1",
                       None if kv.get("mtu", "-") == "-" else int(kv["mtu"]))
        except ValueError:
            return None


# ------------------------------------------------------------------------------ tc plans

@dataclass(frozen=True)
class TcCall:
    """One pyroute2 ``tc`` call: ``ipr.tc(command, kind, index, **kwargs)``."""

    command: str
    kind: str | None
    index: int
    kwargs: Mapping[str, Any]

    def run(self, ipr: Any) -> Any:
        return ipr.tc(self.command, self.kind, self.index, **dict(self.kwargs))


def netem_args(delay_us: int, jitter_us: int) -> dict[str, Any]:
    return {"delay": delay_us, "jitter": jitter_us, "limit": NETEM_LIMIT}


def tbf_args(rate: int) -> dict[str, Any]:
    return {"rate": f"{rate}bit", "burst": tbf_burst(rate), "latency": TBF_LATENCY}


def egress_calls(place: Placement, port: int) -> list[TcCall]:
    """The qdiscs of the port's egress (what it sends to the endpoint), from scratch: the
    caller removes the old root first when the shape (kinds) changes."""
    calls = []
    if place.port_netem is not None:
        calls.append(TcCall("replace", "netem", port, {"handle": ROOT,
                                                        **netem_args(*place.port_netem)}))
        if place.rate is not None:
            calls.append(TcCall("replace", "tbf", port, {"handle": CHILD, "parent": CHILD_PARENT,
                                                          **tbf_args(place.rate)}))
    elif place.rate is not None:
        calls.append(TcCall("replace", "tbf", port, {"handle": ROOT, **tbf_args(place.rate)}))
    return calls


def egress_shape(place: Placement) -> tuple[str, ...]:
    """The qdisc kinds :func:`egress_calls` makes, root first (``()``: none)."""
    kinds = ("netem",) if place.port_netem is not None else ()
    return kinds + (("tbf",) if place.rate is not None else ())


def ingress_calls(rate: int, port: int, ifb: int) -> list[TcCall]:
    """What the endpoint sends, shaped: the port's ingress redirected to the IFB, tbf there."""
    return [
        TcCall("replace", "tbf", ifb, {"handle": ROOT, **tbf_args(rate)}),
        TcCall("add", "ingress", port, {"handle": INGRESS}),
        TcCall("add-filter", "u32", port, {
            "parent": INGRESS, "prio": 1, "protocol": ETH_P_ALL, "target": 0x1,
            "keys": ["0x0/0x0+0"],
            "action": [{"kind": "mirred", "direction": "egress", "action": "redirect",
                        "ifindex": ifb}]}),
    ]


def guest_netem_argv(delay_us: int, jitter_us: int) -> list[str]:
    argv = ["tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay",
            f"{delay_us}us"]
    if jitter_us:
        argv.append(f"{jitter_us}us")
    return argv + ["limit", str(NETEM_LIMIT)]


# ------------------------------------------------------------------------------ the driver

class LinkDriver:
    """Kind ``link``: impairments on endpoints' bridge ports in ``target.netns``."""

    kind = "link"
    concurrent = False

    def __init__(self, target: Target, *, container_netns: ContainerNetns | None = None,
                 guest_exec: GuestExec | None = None,
                 capabilities: Capabilities | None = None) -> None:
        self.target = target
        self.netns = target.netns
        self.nft = Nft(target.netns)
        self.container_netns = container_netns
        self.guest_exec = guest_exec
        self._caps = capabilities
        self._ipr_handle: Any = None

    def _ipr(self) -> Any:
        if self._ipr_handle is None:
            self._ipr_handle = nsutil.iproute(self.netns)
        return self._ipr_handle

    def close(self) -> None:
        if self._ipr_handle is not None:
            self._ipr_handle.close()
            self._ipr_handle = None

    @property
    def capabilities(self) -> Capabilities:
        if self._caps is None:
            self._caps = capabilities_of(tc_features())
        return self._caps

    # -- observe --------------------------------------------------------------------------

    def records(self, lab: str) -> dict[str, Record]:
        if not nft_available():             # every plan observes: no nftables, no records
            return {}
        listing = self.nft.list_table(nftjson.BRIDGE, nftjson.links_table(lab))
        out: dict[str, Record] = {}
        for rule in nftjson.rules_of(listing or {}):
            rec = Record.parse(str(rule.get("comment", "")))
            if rec is not None and rec.lab == lab and rule.get("chain") == \
                    nftjson.endpoint_chains(rec.endpoint)[0]:
                out[rec.endpoint] = rec
        return dict(sorted(out.items()))

    def observe(self, lab: str) -> dict[str, Observation]:
        """The impaired endpoints; one whose port is gone or is another link now (the
        endpoint was re-created) reports a changed fingerprint, so the plan updates it."""
        out = {}
        for name, rec in self.records(lab).items():
            link = self._link_by_index(rec.index) if rec.index else None
            same = rec.port == "-" or (link is not None and
                                       link.get_attr("IFLA_IFNAME") == rec.port)
            out[name] = (Observation(rec.fingerprint) if same else
                         Observation(rec.fingerprint + MOVED, detail="its bridge port changed"))
        return out

    # -- check ----------------------------------------------------------------------------

    def check(self, lab: str, resource: Resource) -> None:
        """Refuse, before anything is made, an impairment this host cannot give."""
        spec = resource.spec
        caps = self._caps_for(spec)
        _, problems = placement(Impairment.from_spec(spec["endpoint"], spec), spec["kind"], caps)
        if problems:
            lines = "; ".join(f"{p.path}: {p.message}" for p in problems)
            raise EngineUnavailable(f"cannot impair {spec['endpoint']!r} here: {lines}",
                                    engine="kernel", hint=problems[0].hint)

    def _caps_for(self, spec: Mapping[str, Any]) -> Capabilities:
        caps = self.capabilities
        guest = bool(spec.get("guest_netem")) and self.guest_exec is not None
        return Capabilities(caps.netem, caps.tbf, caps.ifb, caps.nft_numgen, guest)

    # -- create / update ------------------------------------------------------------------

    def create(self, lab: str, resource: Resource) -> None:
        spec = resource.spec
        ep, kind = spec["endpoint"], spec["kind"]
        place, problems = placement(Impairment.from_spec(ep, spec), kind, self._caps_for(spec))
        if problems:
            self.check(lab, resource)
        old = self.records(lab).get(ep)
        ipr = self._ipr()
        with netlink_errors(f"cannot impair the link of {ep!r}"):
            port = self.find_port(lab, spec)
            self._egress(ipr, place, port["index"])
            ifb = self._ingress(ipr, lab, ep, place, port)
            restore = old.mtu if old is not None and old.mtu is not None else port["mtu"]
            if place.mtu is not None:
                self._set_mtu(lab, spec, port, place.mtu)
            elif old is not None and old.mtu is not None:
                self._set_mtu(lab, spec, port, old.mtu)
        guest = self._guest(lab, ep, place, old)
        record = Record(lab, ep, resource.fingerprint, kind, port["name"], port["index"],
                        ifb, guest, restore if place.mtu is not None else None)
        self.nft.run(nftjson.loss_update(lab, ep, record.text(), port["name"], place.loss),
                     what=f"setting the loss of {ep!r}")

    update = create

    def _egress(self, ipr: Any, place: Placement, index: int) -> None:
        want = egress_shape(place)
        have = _root_shape(ipr, index)
        if have != want and have:
            _del_qdisc(ipr, index, root=True)
        for call in egress_calls(place, index):
            call.run(ipr)

    def _ingress(self, ipr: Any, lab: str, ep: str, place: Placement,
                 port: Mapping[str, Any]) -> bool:
        name = ifb_name(lab, ep)
        _del_qdisc(ipr, port["index"], root=False)           # our ingress (and its filter)
        if place.rate is None:
            link = get_link(ipr, name)
            if link is not None and link_kind(link) == "ifb":
                ipr.link("del", index=link["index"])
            return False
        link = get_link(ipr, name)
        if link is None:
            ipr.link("add", ifname=name, kind="ifb")
            link = get_link(ipr, name)
        ipr.link("set", index=link["index"], mtu=port["mtu"], state="up",
                 ifalias=f"{owner_tag(lab)}:{ep}:ifb")
        for call in ingress_calls(place.rate, port["index"], link["index"]):
            call.run(ipr)
        return True

    def _guest(self, lab: str, ep: str, place: Placement, old: Record | None) -> bool:
        if place.guest_netem is not None:
            self._exec(lab, ep, guest_netem_argv(*place.guest_netem),
                       f"delay {format_time(place.guest_netem[0])} inside the guest")
            return True
        if old is not None and old.guest:
            self._exec(lab, ep, ["tc", "qdisc", "del", "dev", "eth0", "root"],
                       "removing the guest's netem", missing_ok=True)
        return False

    def _exec(self, lab: str, ep: str, argv: list[str], what: str,
              missing_ok: bool = False) -> None:
        if self.guest_exec is None:
            raise EngineUnavailable(f"{what} of {ep!r}: no guest agent access",
                                    engine="libvirt")
        code, out, err = self.guest_exec(lab, ep, argv)
        if code != 0 and not (missing_ok and ("No such file" in err or "Invalid handle" in err
                                              or "Cannot find" in err)):
            raise EngineError(f"{what} of {ep!r} failed ({' '.join(argv)}): "
                              f"{(err or out).strip()[-300:]}", engine="guest")

    # -- MTU ------------------------------------------------------------------------------

    def _set_mtu(self, lab: str, spec: Mapping[str, Any], port: Mapping[str, Any],
                 mtu: int) -> None:
        ipr = self._ipr()
        ipr.link("set", index=port["index"], mtu=mtu)
        ifb = get_link(ipr, ifb_name(lab, spec["endpoint"]))
        if ifb is not None:
            ipr.link("set", index=ifb["index"], mtu=mtu)
        self._endpoint_mtu(lab, spec["endpoint"], spec["kind"], mtu)

    def _endpoint_mtu(self, lab: str, ep: str, kind: str, mtu: int) -> None:
        if kind == "vm":
            self._exec(lab, ep, ["ip", "link", "set", "dev", "eth0", "mtu", str(mtu)],
                       f"setting mtu {mtu}")
            return
        path = self._endpoint_netns(lab, ep, kind)
        if path is None:
            return
        nsutil.run_in_netns(path, _set_eth0_mtu, mtu)

    def _endpoint_netns(self, lab: str, ep: str, kind: str) -> str | None:
        if kind == "host":
            return object_name(lab, ep)
        if kind == "container" and self.container_netns is not None:
            return self.container_netns(lab).get(ep)
        return None

    # -- ports ----------------------------------------------------------------------------

    def find_port(self, lab: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """The endpoint's bridge port: ``{"name", "index", "mtu"}``; NotFoundError if none."""
        ipr = self._ipr()
        ep, kind, bridge = spec["endpoint"], spec["kind"], spec["bridge"]
        link = None
        if spec.get("veth"):
            link = get_link(ipr, spec["veth"])
        elif spec.get("mac"):
            link = self._tap_by_mac(ipr, bridge, spec["mac"])
        elif kind == "container" and self.container_netns is not None:
            path = self.container_netns(lab).get(ep)
            peer = nsutil.run_in_netns(path, _eth0_peer_index) if path else None
            link = self._link_by_index(peer) if peer else None
        if link is None:
            raise NotFoundError(f"the bridge port of {kind} {ep!r} was not found on {bridge}",
                                hint="the endpoint must be up before its link is impaired")
        return {"name": link.get_attr("IFLA_IFNAME"), "index": link["index"],
                "mtu": link.get_attr("IFLA_MTU")}

    def _tap_by_mac(self, ipr: Any, bridge: str, mac: str) -> Any | None:
        br = get_link(ipr, bridge)
        if br is None:
            return None
        want = "fe" + mac.lower()[2:]
        for link in ipr.get_links():
            if link.get_attr("IFLA_MASTER") == br["index"] and \
                    (link.get_attr("IFLA_ADDRESS") or "").lower() == want:
                return link
        return None

    def _link_by_index(self, index: int) -> Any | None:
        try:
            return self._ipr().link("get", index=index)[0]
        except Exception as exc:
            if getattr(exc, "code", None) in (errno.ENODEV, errno.ENOENT):
                return None
            raise

    # -- delete ---------------------------------------------------------------------------

    def delete(self, lab: str, name: str) -> None:
        records = self.records(lab)
        rec = records.get(name)
        ipr = self._ipr()
        with netlink_errors(f"cannot remove the impairments of {name!r}"):
            link = self._link_by_index(rec.index) if rec is not None and rec.index else None
            if link is not None and link.get_attr("IFLA_IFNAME") == rec.port:
                if _root_shape(ipr, link["index"]):
                    _del_qdisc(ipr, link["index"], root=True)
                _del_qdisc(ipr, link["index"], root=False)
                if rec.mtu is not None:
                    ipr.link("set", index=link["index"], mtu=rec.mtu)
                    self._restore_endpoint_mtu(lab, rec)
            ifb = get_link(ipr, ifb_name(lab, name))
            if ifb is not None and link_kind(ifb) == "ifb":
                ipr.link("del", index=ifb["index"])
        if rec is not None and rec.guest and link is not None:
            self._try_guest(lab, name, ["tc", "qdisc", "del", "dev", "eth0", "root"])
        if rec is not None or self._table_exists(lab):
            last = set(records) <= {name}
            self.nft.run(nftjson.loss_remove(lab, name, last=last),
                         what=f"removing the loss rules of {name!r}")

    def _restore_endpoint_mtu(self, lab: str, rec: Record) -> None:
        assert rec.mtu is not None
        if rec.kind == "vm":
            self._try_guest(lab, rec.endpoint, ["ip", "link", "set", "dev", "eth0", "mtu",
                                                str(rec.mtu)])
            return
        path = self._endpoint_netns(lab, rec.endpoint, rec.kind)
        if path is not None:
            try:
                nsutil.run_in_netns(path, _set_eth0_mtu, rec.mtu)
            except (OSError, EngineError) as exc:         # endpoint going away with us
                log.debug("mtu of %s not restored: %s", rec.endpoint, exc)

    def _try_guest(self, lab: str, ep: str, argv: list[str]) -> None:
        if self.guest_exec is None:
            return
        try:
            self.guest_exec(lab, ep, argv)
        except EngineError as exc:                        # the VM is gone or going
            log.debug("%s in %s: %s", " ".join(argv), ep, exc)

    def _table_exists(self, lab: str) -> bool:
        return self.nft.list_table(nftjson.BRIDGE, nftjson.links_table(lab)) is not None

    # -- reading --------------------------------------------------------------------------

    def qdiscs(self, index: int) -> list[tuple[str, int, int]]:
        """(kind, handle, parent) of every qdisc on a link (for tests and status)."""
        return [(q.get_attr("TCA_KIND"), q["handle"], q["parent"])
                for q in self._ipr().get_qdiscs(index=index) if q["index"] == index]

    def link_report(self, lab: str) -> dict[str, dict[str, Any]]:
        """Per impaired endpoint: its bridge port, whether rate shaping has an IFB, whether
        the delay is applied inside the guest, and the frames its loss rule dropped."""
        dropped = self.loss_counters(lab)
        return {name: {"port": rec.port, "ifb": rec.ifb, "guest": rec.guest,
                       "mtu_restore": rec.mtu, "dropped": dropped.get(name, (0, 0))[0]}
                for name, rec in self.records(lab).items()}

    def loss_counters(self, lab: str) -> dict[str, tuple[int, int]]:
        """Packets and bytes dropped by each endpoint's loss rules."""
        listing = self.nft.list_table(nftjson.BRIDGE, nftjson.links_table(lab)) or {}
        out: dict[str, tuple[int, int]] = {}
        for name in self.records(lab):
            _, fwd, out_chain = nftjson.endpoint_chains(name)
            c = nftjson.counters(listing, chains=(fwd, out_chain)).get("loss", (0, 0))
            out[name] = c
        return out


# ------------------------------------------------------------------------------ helpers

def _root_shape(ipr: Any, index: int) -> tuple[str, ...]:
    """Kinds of our qdiscs on ``index``: the root (handle 1:) and its child, if any."""
    qs = [q for q in ipr.get_qdiscs(index=index) if q["index"] == index]
    root = [q for q in qs if q["parent"] == 0xFFFFFFFF and q["handle"] == ROOT]
    if not root:
        return ()
    child = [q for q in qs if q["parent"] == CHILD_PARENT]
    return tuple(q.get_attr("TCA_KIND") for q in root + child)


def _del_qdisc(ipr: Any, index: int, *, root: bool) -> None:
    try:
        if root:
            ipr.tc("del", None, index, handle=ROOT, parent=TC_ROOT)
        else:
            ipr.tc("del", "ingress", index, handle=INGRESS, parent=TC_INGRESS)
    except Exception as exc:
        if getattr(exc, "code", None) not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
            raise


def _eth0_peer_index() -> int | None:
    """Inside an endpoint's namespace: the ifindex of eth0's veth peer (in the lab host)."""
    from pyroute2 import IPRoute

    with IPRoute(groups=0) as ipr:
        idx = ipr.link_lookup(ifname="eth0")
        if not idx:
            return None
        return ipr.link("get", index=idx[0])[0].get_attr("IFLA_LINK")


def _set_eth0_mtu(mtu: int) -> None:
    from pyroute2 import IPRoute

    with IPRoute(groups=0) as ipr:
        idx = ipr.link_lookup(ifname="eth0")
        if idx:
            ipr.link("set", index=idx[0], mtu=mtu)


# ------------------------------------------------------------------------------ features

_probe_counter = 0


def tc_features() -> list[Feature]:
    """What the host kernel offers for impairments, tried in a throwaway namespace: tbf,
    netem, IFB with ingress redirection.  Nothing outside that namespace is touched."""
    import os

    from pyroute2 import IPRoute

    global _probe_counter
    _probe_counter += 1
    ns = f"hnb-probe-{os.getpid()}-{_probe_counter}"
    nsutil.create_netns(ns)
    try:
        return nsutil.run_in_netns(ns, _probe_tc, IPRoute)
    finally:
        nsutil.delete_netns(ns)


def _probe_tc(iproute: Any) -> list[Feature]:
    out = []
    with iproute(groups=0) as ipr:
        ipr.link("add", ifname="probe0", kind="veth", peer="probe0p")   # what lab ports are
        dummy = ipr.link_lookup(ifname="probe0")[0]
        for kind, kwargs in (("tbf", tbf_args(10_000_000)), ("netem", netem_args(1000, 0))):
            try:
                ipr.tc("replace", kind, dummy, handle=ROOT, **kwargs)
            except Exception as exc:                  # NetlinkError: the kernel's answer
                out.append(Feature(f"qdisc {kind}", False, _why(exc, f"sch_{kind}")))
                continue
            out.append(Feature(f"qdisc {kind}", True, "kernel accepts it"))
            _del_qdisc(ipr, dummy, root=True)
        try:
            ipr.link("add", ifname="probe1", kind="ifb")
            ifb = ipr.link_lookup(ifname="probe1")[0]
            for call in ingress_calls(10_000_000, dummy, ifb):
                call.run(ipr)
            out.append(Feature("ifb + ingress redirect", True,
                               "ifb, sch_ingress, cls_u32, act_mirred"))
        except Exception as exc:
            out.append(Feature("ifb + ingress redirect", False,
                               _why(exc, "ifb, sch_ingress, cls_u32 or act_mirred")))
    return out


def _why(exc: BaseException, what: str) -> str:
    code = getattr(exc, "code", None)
    if code in (errno.ENOENT, errno.EOPNOTSUPP, errno.ENOTSUP):
        return f"the kernel has no {what}"
    return f"{what}: {exc}"


def capabilities_of(features: Sequence[Feature], *, nft_numgen: bool = True) -> Capabilities:
    ok = {f.name: f.ok for f in features}
    return Capabilities(netem=ok.get("qdisc netem", False), tbf=ok.get("qdisc tbf", False),
                        ifb=ok.get("ifb + ingress redirect", False), nft_numgen=nft_numgen)


__all__ = ["LinkDriver", "Record", "TcCall", "capabilities_of", "egress_calls",
           "guest_netem_argv", "ifb_name", "ingress_calls", "tc_features"]
