"""The lab drawn as a graph: the bridge in the middle, the gateway (and its DNS) beside it,
every endpoint (containers, VMs, hosts: the kinds of the registry, each in its own colour)
around them, failed probe pairs in red, and pairs the lab's policy lets nothing through
between (either way) as dashed grey lines.

:func:`topology_graph` turns a :class:`~hybridnb.lab.LabStatus` (and optionally a
connectivity matrix) into a networkx graph whose nodes carry ``kind``, ``state``, ``address``
and ``label``; :func:`draw_topology` draws it with matplotlib and returns a :class:`Topology`
that shows itself as a PNG in Jupyter.

Layout is fixed, not force-directed: each endpoint kind owns a sector of a set of concentric
rings around the bridge (containers on top, VMs bottom left, hosts bottom right), and a
:class:`RingLayout` remembers the slot it gave each name.  Adding or removing an endpoint never
moves another one, and the same names always land on the same spots — so a live view that
redraws every few seconds does not jump, and pictures in reports diff cleanly.

Drawing uses one scatter per kind and one line collection per edge class (no per-node artists
besides the labels): 200 endpoints draw and encode to PNG in a fraction of a second.  The
figure is a bare :class:`matplotlib.figure.Figure` on the Agg canvas — no pyplot, no GUI
backend, safe in threads and headless runs.  matplotlib and networkx are imported on use.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from hybridnb.core.kinds import KINDS, kinds

#: The endpoint kinds of the registry, in their listing order.
ENDPOINT_KINDS: tuple[str, ...] = KINDS
KIND_COLOURS: dict[str, str] = {"bridge": "#7f7f7f", "gateway": "#d4a017",
                                **{k.name: k.colour for k in kinds()}}
#: Node border by state (up: thin dark; missing: thick red; differs/stopped: thick orange).
STATE_EDGES: dict[str, tuple[str, float]] = {
    "up": ("#222222", 0.8), "not applied": ("#aaaaaa", 0.8), "missing": ("#d62728", 2.2),
    "differs": ("#ff7f0e", 2.2), "stopped": ("#ff7f0e", 2.2),
}
FAILED_COLOUR = "#d62728"
DENIED_COLOUR = "#8c8c8c"
RATE_COLOUR = "#1565c0"
#: Sector (start angle, span) in degrees per endpoint kind: the circle shared in listing
#: order (three kinds: containers on top, VMs bottom left, hosts bottom right).
SECTORS: dict[str, tuple[float, float]] = {
    k: (35.0 + i * 360.0 / len(KINDS), 360.0 / len(KINDS) - 10.0) for i, k in enumerate(KINDS)}


class RingLayout:
    """Stable positions: a name keeps its slot for the life of the layout object.

    Slot ``s`` of a kind is the ``i``-th place of ring ``k`` inside that kind's sector; ring
    ``k`` has radius ``inner + k * step`` and room for as many nodes as fit at ``spacing``.
    New names (sorted, so the result does not depend on arrival order within one call) take
    the lowest free slot of their kind; a removed name keeps its slot reserved and gets it back.
    """

    def __init__(self, *, inner: float = 1.0, step: float = 0.42, spacing: float = 0.2) -> None:
        self.inner = inner
        self.step = step
        self.spacing = spacing
        self.slots: dict[str, tuple[str, int]] = {}          # name -> (kind, slot)
        #: one layout per host of a lab spread over hosts (:meth:`for_host`)
        self.hosts: dict[str, RingLayout] = {}

    def for_host(self, host: str) -> RingLayout:
        """The layout of one host's group (kept, like the slots, for the life of this one)."""
        got = self.hosts.get(host)
        if got is None:
            got = self.hosts[host] = RingLayout(inner=self.inner, step=self.step,
                                                spacing=self.spacing)
        return got

    def capacity(self, ring: int) -> int:
        span = math.radians(110.0)
        return max(3, int(span * (self.inner + ring * self.step) / self.spacing))

    def place(self, kind: str, slot: int) -> tuple[float, float]:
        ring = 0
        while slot >= self.capacity(ring):
            slot -= self.capacity(ring)
            ring += 1
        start, span = SECTORS.get(kind, (0.0, 360.0))
        cap = self.capacity(ring)
        cell = _spread_order(cap)[slot]
        angle = math.radians(start + (cell + 0.5) / cap * span)
        radius = self.inner + ring * self.step
        return (round(radius * math.cos(angle), 6), round(radius * math.sin(angle), 6))

    def positions(self, nodes: Iterable[tuple[str, str]]) -> dict[str, tuple[float, float]]:
        """``{name: (x, y)}`` for ``(name, kind)`` endpoints, plus ``bridge`` and ``gateway``."""
        nodes = sorted(set(nodes))
        used: dict[str, set[int]] = {}
        for kind, slot in self.slots.values():
            used.setdefault(kind, set()).add(slot)
        for name, kind in nodes:
            known = self.slots.get(name)
            if known is not None and known[0] == kind:
                continue
            taken = used.setdefault(kind, set())
            slot = 0
            while slot in taken:
                slot += 1
            taken.add(slot)
            self.slots[name] = (kind, slot)
        out = {"bridge": (0.0, 0.0), "gateway": (0.0, round(self.inner * 0.45, 6))}
        for name, kind in nodes:
            out[name] = self.place(kind, self.slots[name][1])
        return out


#: Labels are drawn as glyph outlines of a monospaced font, one path per label, all in one
#: PathCollection: composing cached per-character outlines is ~10x cheaper than laying out
#: and rasterising hundreds of Text artists, and monospace keeps addresses aligned.
LABEL_FONT = "DejaVu Sans Mono"
_GLYPHS: dict[str, tuple[Any, Any]] = {}
_ADVANCE: list[float] = []


_ORDERS: dict[int, tuple[int, ...]] = {}


def _spread_order(cells: int) -> tuple[int, ...]:
    """The order in which a ring's cells are handed out: middle first, then halving the gaps
    (van der Corput), so a few endpoints spread over their sector instead of bunching at one
    end — while a slot's place still depends on nothing but its number."""
    order = _ORDERS.get(cells)
    if order is None:
        seen: list[int] = []
        used = set()
        i = 1
        while len(seen) < cells:
            f, denom, k = 0.0, 1.0, i
            while k:
                denom *= 2
                f += (k & 1) / denom
                k >>= 1
            cell = min(int(f * cells), cells - 1)
            if cell not in used:
                used.add(cell)
                seen.append(cell)
            i += 1
            if i > 64 * cells:                   # cannot happen; never loop forever
                seen += [c for c in range(cells) if c not in used]
        order = _ORDERS[cells] = tuple(seen)
    return order


def _glyph(ch: str) -> tuple[Any, Any]:
    """Outline (vertices, codes) of one character at size 1 pt, cached."""
    got = _GLYPHS.get(ch)
    if got is None:
        from matplotlib.font_manager import FontProperties
        from matplotlib.textpath import TextPath

        p = TextPath((0, 0), ch, size=10, prop=FontProperties(family=LABEL_FONT))
        got = (p.vertices / 10.0, p.codes)
        _GLYPHS[ch] = got
    return got


def _advance() -> float:
    """Horizontal advance of one character (monospace) at size 1 pt."""
    if not _ADVANCE:
        from matplotlib.font_manager import FontProperties
        from matplotlib.textpath import TextPath

        prop = FontProperties(family=LABEL_FONT)
        one = TextPath((0, 0), "M", size=10, prop=prop).vertices[:, 0].max()
        ten = TextPath((0, 0), "M" * 10, size=10, prop=prop).vertices[:, 0].max()
        _ADVANCE.append((ten - one) / 9 / 10.0)
    return _ADVANCE[0]


def _label_paths(texts: list[str], size: float, drops: list[float]) -> list[Any]:
    """One Path per label, in points, centred horizontally under its anchor (``drops[i]``
    points below it), lines stacked downwards."""
    import numpy as np
    from matplotlib.path import Path

    adv = _advance() * size
    line_height = 1.1 * size
    out = []
    for text, drop in zip(texts, drops):
        verts, codes = [], []
        for row, line in enumerate(text.split("\n")):
            x0 = -len(line) * adv / 2.0
            y0 = -drop - size * 0.8 - row * line_height
            for i, ch in enumerate(line):
                if ch == " ":
                    continue
                v, c = _glyph(ch)
                if len(v):
                    verts.append(v * size + (x0 + i * adv, y0))
                    codes.append(c)
        if verts:
            out.append(Path(np.concatenate(verts), np.concatenate(codes)))
        else:
            out.append(Path(np.zeros((1, 2)), [Path.MOVETO]))
    return out


def _node_id(name: str) -> str:
    return f"ep:{name}"


VXLAN_COLOUR = "#6a3d9a"
HOST_BOX_COLOUR = "#f4f0fa"
#: space between two hosts' groups (in layout units)
HOST_GAP = 0.9


def host_names(status: Any) -> list[str]:
    """The hosts drawn as groups, primary first: those of ``status.hosts`` when there are two
    or more, else [] (a one-machine lab is drawn as always)."""
    hosts = [h.name for h in getattr(status, "hosts", ())]
    return hosts if len(hosts) > 1 else []


def bridge_id(status: Any, host: str) -> str:
    """The node of ``host``'s lab bridge: ``bridge`` on the primary (where the gateway is),
    ``bridge@HOST`` on the others."""
    hosts = host_names(status)
    return "bridge" if not hosts or host == hosts[0] else f"bridge@{host}"


def _add_host_bridges(g: Any, status: Any, hosts: list[str], state: str) -> None:
    """Every other host's bridge, its hosts' group on every node, and the VXLAN mesh between
    the bridges (head-end replication: every bridge to every other)."""
    g.nodes["bridge"]["host"] = g.nodes["gateway"]["host"] = hosts[0]
    g.nodes["bridge"]["label"] = f"{status.bridge}@{hosts[0]}\n{status.subnet}"
    for host in hosts[1:]:
        g.add_node(bridge_id(status, host), kind="bridge", state=state, address=status.subnet,
                   host=host, label=f"{status.bridge}@{host}\n{status.subnet}")
    for i, a in enumerate(hosts):
        for b in hosts[i + 1:]:
            g.add_edge(bridge_id(status, a), bridge_id(status, b), kind="vxlan")


def failed_pairs(matrix: Any) -> list[tuple[str, str]]:
    """Unordered endpoint pairs with at least one failed probe (sorted, deduplicated)."""
    if matrix is None:
        return []
    pairs = set()
    for r in matrix.failures():
        a, b = sorted((r.source, r.target))
        if a != b:
            pairs.add((a, b))
    return sorted(pairs)


def topology_graph(status: Any, matrix: Any = None,
                   rates: Mapping[str, float] | None = None) -> Any:
    """A networkx Graph of the lab: ``bridge``, ``gateway`` and ``ep:NAME`` nodes; ``link``
    edges from every node to the bridge (a lab over hosts: one bridge per host —
    ``bridge@HOST`` beside the primary's ``bridge`` — every node's ``host``, each endpoint
    linked to its host's bridge, ``vxlan`` edges between the bridges), ``failed`` edges between endpoints that could
    not reach each other (``gateway`` as a probe target maps to the gateway node) and
    ``denied`` edges between endpoints the lab's policy lets nothing through between
    (``status.denied``; a pair that also failed a probe is drawn failed).  With
    ``rates`` (``{endpoint or "gateway": bytes/s}``, e.g. a traffic sample's ``rates()``) each
    link edge carries its endpoint's ``rate``."""
    import networkx as nx

    g = nx.Graph(lab=status.lab)
    g.add_node("bridge", kind="bridge", state=_infra_state(status, "bridge"),
               address=status.subnet, label=f"{status.bridge}\n{status.subnet}")
    dns = any(kind == "dns" for kind, _, _ in status.infra)
    g.add_node("gateway", kind="gateway", state=_infra_state(status, "bridge"),
               address=status.gateway,
               label=f"gateway{' + DNS' if dns else ''}\n{status.gateway}")
    rates = rates or {}
    g.add_edge("gateway", "bridge", kind="link", rate=float(rates.get("gateway", 0.0)))
    hosts = host_names(status)
    if hosts:
        _add_host_bridges(g, status, hosts, _infra_state(status, "bridge"))
    for ep in status.endpoints:
        nid = _node_id(ep.name)
        host = getattr(ep, "host", "") if hosts else ""
        g.add_node(nid, kind=ep.kind, state=ep.state, address=ep.address, name=ep.name,
                   label=f"{ep.name}\n{ep.address}", **({"host": host} if hosts else {}))
        g.add_edge(nid, bridge_id(status, host) if host else "bridge", kind="link",
                   rate=float(rates.get(ep.name, 0.0)))
    names = {ep.name for ep in status.endpoints}
    for a, b in failed_pairs(matrix):
        ids = [("gateway" if n == "gateway" else _node_id(n)) for n in (a, b)]
        if all(i == "gateway" or i[3:] in names for i in ids):
            g.add_edge(ids[0], ids[1], kind="failed")
    for a, b in getattr(status, "denied", ()):
        u, v = _node_id(a), _node_id(b)
        if a in names and b in names and not g.has_edge(u, v):
            g.add_edge(u, v, kind="denied")
    return g


def _infra_state(status: Any, kind: str) -> str:
    for k, _, state in status.infra:
        if k == kind:
            if state == "up":
                return "up"
            return "not applied" if not any(s == "up" for _, _, s in status.infra) else state
    return "not applied"


@dataclass
class Topology:
    """A drawn lab: the graph, the node positions and the matplotlib figure."""

    lab: str
    graph: Any
    positions: dict[str, tuple[float, float]]
    figure: Any
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: endpoint pairs drawn as denied by the policy
    denied: list[tuple[str, str]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {k: 0 for k in ENDPOINT_KINDS}
        for _, data in self.graph.nodes(data=True):
            if data["kind"] in out:
                out[data["kind"]] += 1
        return out

    def to_png(self, dpi: int | None = None) -> bytes:
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=dpi or self.figure.dpi)
        return buf.getvalue()

    def to_svg(self, *, prefix: str = "topology") -> str:
        """The drawing as inline SVG text, reproducible (see :mod:`hybridnb.render.figures`)."""
        from hybridnb.render.figures import to_svg

        return to_svg(self.figure, prefix=prefix)

    def _repr_png_(self) -> bytes:
        return self.to_png()

    def __repr__(self) -> str:
        c = self.counts()
        parts = ", ".join(f"{c[k.name]} {k.plural}" for k in kinds())
        return f"<Topology of lab {self.lab}: {parts}, {len(self.failed)} failed pair(s)>"


def draw_topology(status: Any, matrix: Any = None, *, layout: RingLayout | None = None,
                  title: str | None = None, figsize: tuple[float, float] | None = None,
                  rates: Mapping[str, float] | None = None) -> Topology:
    """Draw the lab from its status (and failed pairs from ``matrix``) on a new Figure;
    with ``rates`` (bytes/s per endpoint) busy links are drawn thicker and labelled."""
    from matplotlib.collections import LineCollection, PathCollection
    from matplotlib.colors import to_rgba
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.transforms import Affine2D

    layout = layout or RingLayout()
    graph = topology_graph(status, matrix, rates)
    hosts = host_names(status)
    if hosts:
        pos, groups = _host_positions(status, layout, hosts)
    else:
        pos, groups = _positions(status, layout), {}

    n = len(status.endpoints)
    (x0, y0, x1, y1), auto = _frame(pos, groups)
    fig = Figure(figsize=figsize or auto, dpi=80)
    ax = fig.add_axes((0.0, 0.0, 1.0, 0.94))
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.axis("off")
    if groups:
        _draw_host_boxes(ax, status, groups)

    links, failed, denied, vxlan = [], [], [], []
    for u, v, data in graph.edges(data=True):
        {"failed": failed, "denied": denied, "vxlan": vxlan}.get(data["kind"], links).append(
            (pos[u], pos[v]))
    ax.add_collection(LineCollection(links, colors="#c8c8c8", linewidths=0.8, zorder=1))
    if vxlan:
        _draw_vxlan(ax, vxlan, status.mtu)
    if denied:
        ax.add_collection(LineCollection(denied, colors=DENIED_COLOUR, linewidths=1.0,
                                         linestyles="dashed", alpha=0.7, zorder=1))
    if rates:
        _draw_rates(ax, graph, pos)
    if failed:
        ax.add_collection(LineCollection(failed, colors=FAILED_COLOUR, linewidths=1.6,
                                         alpha=0.8, zorder=2))

    size = 260 if n <= 30 else (140 if n <= 80 else 70)
    for kind in ("bridge", "gateway") + ENDPOINT_KINDS:
        nodes = [(nid, d) for nid, d in graph.nodes(data=True) if d["kind"] == kind]
        if not nodes:
            continue
        xs = [pos[nid][0] for nid, _ in nodes]
        ys = [pos[nid][1] for nid, _ in nodes]
        edges = [STATE_EDGES.get(d["state"], STATE_EDGES["differs"]) for _, d in nodes]
        alphas = [1.0 if d["state"] == "up" else 0.45 for _, d in nodes]
        base = KIND_COLOURS[kind]
        ax.scatter(xs, ys, s=size * (3 if kind == "bridge" else 1.4 if kind == "gateway" else 1),
                   c=[to_rgba(base, a) for a in alphas], edgecolors=[e[0] for e in edges],
                   linewidths=[e[1] for e in edges], marker="s" if kind == "bridge" else "o",
                   zorder=3)
    # big labs: one-line labels (they fit between ring neighbours)
    fontsize = 8.0 if n <= 30 else (6.0 if n <= 80 else 4.5)
    texts, offsets, drops = [], [], []
    radius = math.sqrt(size) / 2.0                     # marker radius in points
    for nid, d in graph.nodes(data=True):
        texts.append(d["label"] if n <= 60 else d["label"].replace("\n", " "))
        offsets.append(pos[nid])
        scale = 3.0 if d["kind"] == "bridge" else 1.4 if d["kind"] == "gateway" else 1.0
        drops.append(radius * math.sqrt(scale) + 1.5)
    labels = PathCollection(_label_paths(texts, fontsize, drops), offsets=offsets,
                            offset_transform=ax.transData, facecolors="#222222",
                            edgecolors="none", linewidths=0.0, zorder=4)
    labels.set_transform(Affine2D().scale(fig.dpi / 72.0))
    ax.add_artist(labels)

    handles = [Line2D([], [], marker="o", linestyle="", color=KIND_COLOURS[k], label=k)
               for k in ("gateway",) + ENDPOINT_KINDS]
    handles += [Line2D([], [], marker="o", linestyle="", markerfacecolor="white",
                       markeredgecolor=c, markeredgewidth=w, label=s)
                for s, (c, w) in STATE_EDGES.items() if s in ("up", "not applied", "missing",
                                                              "differs")]
    if vxlan:
        handles.append(Line2D([], [], color=VXLAN_COLOUR, linestyle="dashed", linewidth=2.4,
                              label="VXLAN between hosts"))
    if failed:
        handles.append(Line2D([], [], color=FAILED_COLOUR, label="failed probes"))
    if denied:
        handles.append(Line2D([], [], color=DENIED_COLOUR, linestyle="dashed",
                              label="denied by the policy"))
    ax.legend(handles=handles, loc="lower left", fontsize=7, frameon=False, ncol=2)
    head = title or (f"lab {status.lab} — {status.bridge} {status.subnet} on {status.backend}"
                     + (f" over {len(hosts)} hosts, mtu {status.mtu}" if hosts else "")
                     + (f" — {len(failed)} failed pair(s)" if failed else ""))
    fig.suptitle(head, fontsize=10)
    return Topology(status.lab, graph, pos, fig, failed_pairs(matrix),
                    sorted((graph.nodes[u]["name"], graph.nodes[v]["name"])
                           for u, v, d in graph.edges(data=True) if d["kind"] == "denied"))


def _frame(pos: Mapping[str, tuple[float, float]],
           groups: Mapping[str, tuple[float, float, float, float]]
           ) -> tuple[tuple[float, float, float, float], tuple[float, float]]:
    """((x0, y0, x1, y1) of the axes, the figure size that fits them): a square around the
    bridge for one machine, the hosts' boxes side by side for a lab over hosts."""
    reach = max((abs(v) for p in pos.values() for v in p), default=1.0) + 0.5
    x0, y0, x1, y1 = (-reach, -reach, reach, reach)
    if groups:
        boxes = list(groups.values())
        x0, y0 = min(b[0] for b in boxes) - 0.1, min(b[1] for b in boxes) - 0.1
        x1, y1 = max(b[2] for b in boxes) + 0.1, max(b[3] for b in boxes) + 0.1
    side = min(14.0, max(6.0, 3.0 + max(x1 - x0, y1 - y0) / 2.0 * 2.2))
    size = (min(20.0, side * (x1 - x0) / (y1 - y0)), side) if groups else (side, side)
    return (x0, y0, x1, y1), size


def _draw_vxlan(ax: Any, segments: list[Any], mtu: int) -> None:
    """The VXLAN between the hosts' bridges: thick dashed lines, labelled with the MTU."""
    from matplotlib.collections import LineCollection

    ax.add_collection(LineCollection(segments, colors=VXLAN_COLOUR, linewidths=2.4,
                                     linestyles="dashed", zorder=1))
    for (ax0, ay0), (ax1, ay1) in segments:
        ax.text((ax0 + ax1) / 2, (ay0 + ay1) / 2 + 0.08, f"VXLAN, mtu {mtu}", fontsize=7,
                color=VXLAN_COLOUR, ha="center", va="bottom", zorder=5)


def _positions(status: Any, layout: RingLayout) -> dict[str, tuple[float, float]]:
    """Node id → position of a one-machine lab: one set of rings around the bridge."""
    by_name = layout.positions((ep.name, ep.kind) for ep in status.endpoints)
    pos = {"bridge": by_name["bridge"], "gateway": by_name["gateway"]}
    for ep in status.endpoints:
        pos[_node_id(ep.name)] = by_name[ep.name]
    return pos


def _host_positions(status: Any, layout: RingLayout, hosts: list[str]
                    ) -> tuple[dict[str, tuple[float, float]],
                               dict[str, tuple[float, float, float, float]]]:
    """(node id → position, host → its group's box ``(x0, y0, x1, y1)``) of a lab over hosts:
    each host's rings around its own bridge, the groups side by side in the hosts' order
    (the primary, with the gateway, first)."""
    pos: dict[str, tuple[float, float]] = {}
    groups: dict[str, tuple[float, float, float, float]] = {}
    left = 0.0
    for host in hosts:
        mine = [ep for ep in status.endpoints if getattr(ep, "host", "") == host]
        by_name = layout.for_host(host).positions((ep.name, ep.kind) for ep in mine)
        pts = [by_name["bridge"]] + [by_name[ep.name] for ep in mine] + (
            [by_name["gateway"]] if host == hosts[0] else [])
        half = max(0.9, max(max(abs(x), abs(y)) for x, y in pts) + 0.45)
        dx = left + half
        shift = lambda p: (round(p[0] + dx, 6), p[1])  # noqa: E731
        pos[bridge_id(status, host)] = shift(by_name["bridge"])
        if host == hosts[0]:
            pos["gateway"] = shift(by_name["gateway"])
        for ep in mine:
            pos[_node_id(ep.name)] = shift(by_name[ep.name])
        groups[host] = (left, -half, left + 2 * half, half)
        left += 2 * half + HOST_GAP
    return pos, groups


def _draw_host_boxes(ax: Any, status: Any, groups: Mapping[str, tuple[float, ...]]) -> None:
    """A rounded box around each host's group, titled with the host, its engines and its
    underlay address."""
    from matplotlib.patches import FancyBboxPatch

    rows = {h.name: h for h in status.hosts}
    for host, (x0, y0, x1, y1) in groups.items():
        ax.add_patch(FancyBboxPatch((x0 + 0.05, y0 + 0.05), x1 - x0 - 0.1, y1 - y0 - 0.1,
                                    boxstyle="round,pad=0.02,rounding_size=0.15",
                                    fc=HOST_BOX_COLOUR, ec=VXLAN_COLOUR, lw=1.0, zorder=0))
        row = rows.get(host)
        what = ""
        if row is not None:
            what = (" (primary)" if row.primary else "") + f" — {row.engines}" + (
                f", underlay {row.underlay}" if row.underlay else "")
        ax.text(x0 + 0.2, y1 - 0.15, f"host {host}{what}", fontsize=8, color=VXLAN_COLOUR,
                ha="left", va="top", zorder=5)


def _draw_rates(ax: Any, graph: Any, pos: Mapping[str, tuple[float, float]]) -> None:
    """Busy links: thickness grows with the log of the rate, a label says the rate."""
    from matplotlib.collections import LineCollection

    from hybridnb.render.traffic import rate as rate_text

    busy = [(u, v, d["rate"]) for u, v, d in graph.edges(data=True)
            if d["kind"] == "link" and d.get("rate", 0.0) > 0]
    if not busy:
        return
    segs = [(pos[u], pos[v]) for u, v, _ in busy]
    widths = [1.0 + 1.2 * max(0.0, math.log10(r * 8) - 2) for _, _, r in busy]
    ax.add_collection(LineCollection(segs, colors=RATE_COLOUR, linewidths=widths, alpha=0.7,
                                     zorder=2))
    for (u, v, r) in busy:
        (x0, y0), (x1, y1) = pos[u], pos[v]
        ax.text(x0 * 0.6 + x1 * 0.4, y0 * 0.6 + y1 * 0.4, rate_text(r), fontsize=6,
                color=RATE_COLOUR, ha="center", va="center", zorder=5,
                bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})


__all__ = ["RingLayout", "Topology", "draw_topology", "topology_graph", "failed_pairs",
           "KIND_COLOURS", "STATE_EDGES", "bridge_id", "host_names"]
