"""Latency plots of a connectivity matrix: a per-pair heatmap and per-pair distributions.

Both functions take a :class:`~hybridnb.services.probe.matrix.ConnectivityMatrix` (or anything
with its ``sources``/``targets``/``get``/``of`` interface) and one check, and return a
matplotlib ``Figure`` — never showing it, so they work headless (Agg) in CI, in reports and in
Jupyter alike.  matplotlib is imported here, inside the functions, only when a plot is drawn.
"""

from __future__ import annotations

from typing import Any


def _figure(width: float, height: float) -> Any:
    # The object-oriented API needs no pyplot state and no display: safe headless.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def heatmap(matrix: Any, check: str = "icmp", *, title: str | None = None) -> Any:
    """Median RTT (ms) per source → target pair; failed pairs are drawn red and marked ✗,
    pairs not probed or skipped are left blank."""
    import numpy as np
    from matplotlib.colors import ListedColormap

    sources, targets = list(matrix.sources), list(matrix.targets)
    values = np.full((len(sources), len(targets)), np.nan)
    failed = np.zeros_like(values, dtype=bool)
    for i, src in enumerate(sources):
        for j, dst in enumerate(targets):
            r = matrix.get(check, src, dst)
            if r is None or r.ok is None:
                continue
            if r.ok and r.rtt_median is not None:
                values[i, j] = r.rtt_median * 1000.0
            elif r.ok is False:
                failed[i, j] = True
    n = max(len(sources), len(targets))
    fig = _figure(min(2 + 0.35 * len(targets), 16), min(1.5 + 0.3 * len(sources), 14))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto")
    if failed.any():
        ax.imshow(np.ma.masked_where(~failed, failed.astype(float)),
                  cmap=ListedColormap(["#d62728"]), aspect="auto", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label=f"{check} median RTT (ms)")
    show_labels = n <= 60
    if show_labels:
        label = getattr(matrix, "label", str)          # web@a for a lab over hosts
        ax.set_xticks(range(len(targets)), [label(t) for t in targets], rotation=90, fontsize=7)
        ax.set_yticks(range(len(sources)), [label(s) for s in sources], fontsize=7)
        if n <= 25:
            for i, j in zip(*np.nonzero(failed)):
                ax.text(j, i, "✗", ha="center", va="center", color="white", fontsize=8)
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    c = matrix.counts(check) if hasattr(matrix, "counts") else None
    ax.set_title(title or (f"{check}: {c['ok']} ok, {c['fail']} failed" if c else check))
    return fig


def distribution(matrix: Any, check: str = "icmp", *, max_pairs: int = 40,
                 title: str | None = None) -> Any:
    """A box plot of the RTT samples of each pair (ms), the slowest ``max_pairs`` pairs by
    median; pairs without samples are left out."""
    results = [r for r in matrix.of(check) if r.rtts]
    results.sort(key=lambda r: (-(r.rtt_median or 0.0), r.source, r.target))
    shown = results[:max_pairs]
    fig = _figure(10, max(2.0, 0.25 * len(shown) + 1.2))
    ax = fig.add_subplot()
    if shown:
        data = [[x * 1000.0 for x in r.rtts] for r in shown]
        try:
            ax.boxplot(data, orientation="horizontal", showfliers=True)   # matplotlib ≥ 3.10
        except TypeError:
            ax.boxplot(data, vert=False, showfliers=True)
        # tick labels set separately: boxplot's keyword for them changed across versions
        label = getattr(matrix, "label", str)          # web@a for a lab over hosts
        ax.set_yticks(range(1, len(shown) + 1),
                      [f"{label(r.source)} → {label(r.target)}" for r in shown])
        ax.tick_params(axis="y", labelsize=7)
        ax.invert_yaxis()
    else:
        ax.text(0.5, 0.5, "no RTT samples", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"{check} RTT (ms)")
    more = f" (slowest {len(shown)} of {len(results)})" if len(results) > len(shown) else ""
    ax.set_title(title or f"{check} RTT per pair{more}")
    return fig
