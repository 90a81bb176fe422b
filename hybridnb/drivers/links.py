"""Small helpers shared by the netlink drivers (bridge, namespace hosts, VXLAN).

Ownership of a link is written on the link itself, in its *ifalias*, which starts with the lab's
owner tag (``hybridnb:<lab>:``).  The kernel cannot set an alias in the request that creates a
link, so a link is created with :data:`CREATING_GROUP` as its device group (that attribute *is*
applied atomically at creation) and gets its alias right after: a link with our group and no
alias is a half-made leftover of a crashed earlier attempt and may be removed safely.

``InTargetNamespace`` is their common start: the target whose namespace they work in, and how
a message names it.  ``netlink_errors(what)`` translates pyroute2's ``NetlinkError`` and ``OSError`` into
:class:`~hybridnb.errors.EngineError` at the driver edge.

Observing reads every link of a namespace, and a lab host holds two per endpoint.  Two things
keep that cheap as labs grow:

* :func:`link_snapshot` dumps the links with one raw ``RTM_GETLINK`` request and decodes
  only the attributes observing needs (:mod:`hybridnb.drivers.linkstats`) —
  pyroute2 decodes every attribute of every message, ~0.5 ms a link, which was 80 % of a
  200-endpoint ``status``;
* inside :func:`observe_pass` (one observing pass over all drivers: a plan, a status, the
  endpoints of a probe run) the snapshot of a namespace is taken once and shared by every
  driver that asks for it; outside a pass every call dumps afresh.
"""

from __future__ import annotations

import contextvars
import errno
import os
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

from hybridnb.drivers.linkstats import Link, dump_links
from hybridnb.errors import EngineError, HybridError

if TYPE_CHECKING:  # pragma: no cover
    from hybridnb.target import Target

#: Device group stamped on links while hybridnb creates them ("hnb" in ASCII).
CREATING_GROUP = 0x686E62


class InTargetNamespace:
    """A driver that works in ``target.netns`` (``None``: the host's own namespace)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.netns = target.netns

    @property
    def _where(self) -> str:
        return f"namespace {self.netns}" if self.netns else "the host namespace"


@contextmanager
def netlink_errors(what: str, *, hint: str | None = None) -> Iterator[None]:
    """Re-raise netlink / OS failures inside the block as ``EngineError("<what>: ...")``."""
    try:
        yield
    except HybridError:
        raise
    except OSError as exc:  # NetlinkError is not an OSError; handled below
        raise EngineError(f"{what}: {exc.strerror or exc}", engine="kernel", hint=hint) from exc
    except Exception as exc:
        code = getattr(exc, "code", None)
        if isinstance(code, int) and code > 0:
            raise EngineError(f"{what}: {os.strerror(code)}", engine="kernel",
                              hint=hint) from exc
        raise


def is_missing(exc: BaseException) -> bool:
    """True for the netlink errors that mean "no such object"."""
    return getattr(exc, "code", None) in (errno.ENODEV, errno.ENOENT, errno.ESRCH,
                                          errno.EADDRNOTAVAIL)


def link_kind(link: Any) -> str | None:
    return link.get(("linkinfo", "kind"))


def link_alias(link: Any) -> str:
    return link.get("ifalias") or ""


def get_link(ipr: Any, name: str) -> Any | None:
    """The link called ``name`` or None."""
    try:
        return ipr.link("get", ifname=name)[0]
    except Exception as exc:
        if is_missing(exc):
            return None
        raise


def half_made(link: Any) -> bool:
    """A link we started creating but never labelled (crash between create and alias)."""
    return link.get("group") == CREATING_GROUP and not link_alias(link)


# -- link snapshots ------------------------------------------------------------------------

_PASS: contextvars.ContextVar[dict[str | None, tuple[Link, ...]] | None] = \
    contextvars.ContextVar("hybridnb_observe_pass", default=None)


@contextmanager
def observe_pass() -> Iterator[None]:
    """One observing pass: :func:`link_snapshot` dumps each namespace once inside it.  Use it
    only around reading (what a pass saw is not refreshed after a change); a pass inside a
    pass shares the outer one."""
    if _PASS.get() is not None:
        yield
        return
    token = _PASS.set({})
    try:
        yield
    finally:
        _PASS.reset(token)


def link_snapshot(netns: str | None) -> tuple[Link, ...]:
    """Every link of ``netns`` (``None``: ours) by index: this pass's
    snapshot (dumped now if it is the pass's first ask), or a fresh dump outside a pass."""
    seen = _PASS.get()
    if seen is not None and netns in seen:
        return seen[netns]
    links = tuple(link for _, link in sorted(dump_links(netns).items()))
    if seen is not None:
        seen[netns] = links
    return links
