"""Where a lab's endpoints live and which MTU it has, as the views show it.

``status``, ``test``, ``graph``, ``monitor`` and the report all say which host each endpoint
runs on (for a lab with a ``hosts:`` section) and which MTU the lab has and why.  They take
it from here, from the lab file alone (:func:`hybridnb.core.multihost.placement`), so the
answer is the same before and after apply and on a dry run:

* :func:`host_of` — endpoint name → host name, the gateway (and its DNS) on the primary; an
  empty mapping for a lab without ``hosts:`` (the views then look as they always did);
* :class:`HostRow` / :func:`host_rows` — one row per host: primary or not, its engines (and
  how they are reached: local, a sandbox, ``ssh``/``tls``/``tcp`` URLs), its underlay
  address and MTU, how many endpoints it runs;
* :func:`mtu_reason` — the lab MTU in a few words (``VXLAN headroom`` or ``network.mtu``)
  and :func:`mtu_why`, the whole sentence (:func:`hybridnb.core.multihost.mtu_note` for a lab
  stretched over VXLAN);
* :func:`bridge_mtu_drift` — the line a view shows when the bridge's observed MTU is not the
  lab's (a port with a smaller MTU joined it, or someone changed it);
* :func:`vxlan_line` — the segment joining the hosts, in one line;
* :func:`cross_host_counts` — probe results split into same-host and cross-host pairs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from hybridnb.core.multihost import Hosts, LabHost, mtu_note, placement

if TYPE_CHECKING:  # pragma: no cover
    from hybridnb.core.spec import LabSpec

#: the name probes and the topology give the lab's gateway (it lives on the primary host)
GATEWAY = "gateway"


def _hosts(lab: LabSpec) -> Hosts | None:
    hosts = lab.sections.get("hosts")
    return hosts if isinstance(hosts, Hosts) and hosts.hosts else None


def host_of(lab: LabSpec) -> dict[str, str]:
    """Endpoint name → the host it runs on, plus ``gateway`` → the primary; {} without
    ``hosts:``."""
    hosts = _hosts(lab)
    if hosts is None:
        return {}
    return {**placement(lab), GATEWAY: hosts.primary.name}


def engines_kind(host: LabHost) -> str:
    """How a host's engines are reached, in a word or two: ``local``, ``sandbox``, or the
    URLs' transports (``docker ssh, libvirt ssh``)."""
    if host.engine:
        return host.engine
    if host.sandbox:
        return "sandbox"
    return ", ".join(f"{u.engine} {u.transport}" for u in (host.docker, host.libvirt)
                     if u is not None)


@dataclass(frozen=True)
class HostRow:
    """One host of a lab, as status and the report show it."""

    name: str
    primary: bool
    engines: str              # where: "local", "sandbox mha", the URLs
    reached: str              # how: "local", "sandbox", "docker ssh, libvirt ssh"
    underlay: str             # "" when not given (a one-host lab)
    underlay_mtu: int
    endpoints: int

    def record(self) -> dict[str, Any]:
        return asdict(self)


HOST_COLUMNS = ["host", "role", "engines", "underlay", "underlay MTU", "endpoints"]


def host_rows(lab: LabSpec) -> tuple[HostRow, ...]:
    """One row per host in the order written (the primary first); () without ``hosts:``."""
    hosts = _hosts(lab)
    if hosts is None:
        return ()
    count = Counter(placement(lab).values())
    return tuple(HostRow(h.name, h is hosts.primary, h.where, engines_kind(h),
                         h.underlay or "", h.underlay_mtu, count.get(h.name, 0))
                 for h in hosts.hosts)


def host_table_rows(rows: Iterable[HostRow]) -> list[list[str]]:
    """:data:`HOST_COLUMNS` cells of :func:`host_rows`."""
    return [[r.name, "primary" if r.primary else "", r.engines, r.underlay or "-",
             str(r.underlay_mtu), str(r.endpoints)] for r in rows]


def mtu_reason(lab: LabSpec) -> str:
    """Why the lab has its MTU, in a few words: ``VXLAN headroom`` (stretched over hosts,
    the MTU left by VXLAN's 50 bytes), ``network.mtu, under VXLAN's limit`` (written
    smaller) or ``network.mtu`` (the network's own, a one-machine lab)."""
    vx = lab.network.vxlan
    if vx is None:
        return "network.mtu"
    return "VXLAN headroom" if lab.network.mtu >= vx.lab_mtu else "network.mtu, under VXLAN's"


def mtu_why(lab: LabSpec) -> str:
    """The whole sentence: :func:`~hybridnb.core.multihost.mtu_note` for a lab stretched
    over VXLAN, else the network's own MTU."""
    vx = lab.network.vxlan
    if vx is not None:
        return mtu_note(vx, lab.network.mtu)
    return (f"lab MTU {lab.network.mtu}: the network's own (network.mtu); one machine, no "
            "VXLAN to leave room for")


def bridge_mtu_drift(bridge: str, intended: int, observed: int | None) -> str:
    """The drift line when the bridge's MTU (as observed) is not the lab's; "" otherwise."""
    if observed is None or observed == intended:
        return ""
    why = ("a port with a smaller MTU joined it, or it was changed by hand" if observed
           < intended else "it was changed by hand")
    return (f"bridge {bridge} has MTU {observed}, not the lab's {intended}: {why} (a re-apply "
            f"does not change it back: see its ports with ip link show master {bridge}, set it "
            f"with ip link set {bridge} mtu {intended})")


def vxlan_line(lab: LabSpec) -> str:
    """The VXLAN segment joining the hosts in one line; "" for a one-machine lab."""
    vx, hosts = lab.network.vxlan, _hosts(lab)
    if vx is None or hosts is None or not hosts.multi:
        return ""
    under = ", ".join(f"{h.name}={h.underlay}" for h in hosts.hosts)
    return (f"VXLAN vni {vx.vni} udp/{vx.port} joins {len(hosts)} hosts' {lab.network.bridge} "
            f"bridges over the underlay ({under})")


def cross_host_counts(results: Iterable[Any], hosts: Mapping[str, str],
                      status_of: Any = None) -> dict[str, dict[str, int]]:
    """Probe results (``source``, ``target``, ``status``) by where they crossed: ``{"same
    host": {"ok": n, "fail": n, "skip": n, ...}, "cross host": {...}}``, plus one entry per
    ordered pair of different hosts (``"a -> b"``).  ``status_of(r)`` overrides ``r.status`` (a judged
    matrix's ``blocked``).  Pairs whose ends have no host are left out."""
    out: dict[str, dict[str, int]] = {}
    for r in results:
        a, b = hosts.get(r.source), hosts.get(r.target)
        if a is None or b is None:
            continue
        status = status_of(r) if status_of is not None else r.status
        for key in ("same host",) if a == b else ("cross host", f"{a} -> {b}"):
            counts = out.setdefault(key, {"ok": 0, "fail": 0, "skip": 0})
            counts[status] = counts.get(status, 0) + 1
    head = [k for k in ("same host", "cross host") if k in out]
    return {k: out[k] for k in head + sorted(k for k in out if k not in head)}


__all__ = ["GATEWAY", "HOST_COLUMNS", "HostRow", "bridge_mtu_drift", "cross_host_counts",
           "engines_kind", "host_of", "host_rows", "host_table_rows", "mtu_reason", "mtu_why",
           "vxlan_line"]
