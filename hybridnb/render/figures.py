"""matplotlib figures as SVG text that can be inlined in a page, byte for byte reproducible.

Reports embed pictures (the topology, latency heatmaps and distributions) as inline SVG, so
the document needs no external file and diffs cleanly: :func:`to_svg` writes a figure with a
fixed id salt and no date, drops the XML prologue (an inline ``<svg>`` in HTML takes none),
and prefixes every id the figure defines — glyph outlines, clip paths, markers — with its own
name, so several figures in one page never share an id.  Text is drawn as outlines
(``svg.fonttype = path``): the picture looks the same with no font installed.
"""

from __future__ import annotations

import io
import re
from typing import Any

_IDS = re.compile(r'\bid="([^"]+)"')
_PROLOGUE = re.compile(r"^.*?(?=<svg\b)", re.S)


def to_svg(figure: Any, *, prefix: str = "fig") -> str:
    """The figure as an ``<svg>`` element (text), reproducible for equal figures."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "hybridnb", "svg.fonttype": "path",
                                "svg.image_inline": True}):
        figure.savefig(buf, format="svg", metadata={"Date": None, "Creator": "hybridnb"})
    return scope_ids(_PROLOGUE.sub("", buf.getvalue(), count=1), prefix)


def scope_ids(svg: str, prefix: str) -> str:
    """Prefix every id defined in ``svg`` (and every reference to it) with ``prefix-``."""
    ids = set(_IDS.findall(svg))
    if not ids:
        return svg
    # longest first, so an id that is a prefix of another is never replaced inside it
    pattern = re.compile(r'(id="|#)(' + "|".join(re.escape(i) for i in
                                               sorted(ids, key=len, reverse=True)) + r')(?=[")])')
    return pattern.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", svg)


__all__ = ["to_svg", "scope_ids"]
