"""The registry of endpoint kinds: one module per kind, found by looking at this package.

Each module here that defines ``KIND`` (an instance of :class:`~.base.Kind`) is an endpoint
kind: ``container.py``, ``vm.py``, ``host.py``.  The module owns everything about its kind —
the spec dataclass and its fields (YAML keys, validation, defaults, help, CLI/magic options,
form widgets), the compile step to resources, how its rows read in plans and summaries — and
the rest of hybridnb iterates this registry instead of naming kinds: the lab parser, the
compiler, IPAM pools, the creation order, the plan's replace cascade, ``Lab.add``, the
``%hybrid KIND`` magics, the forms, the topology drawing and ``hybridnb kinds``.  Adding a
kind is one new module here (and a driver for it in the backends).

``KINDS`` lists the kind names in listing order (``rank``): container, vm, host.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Mapping

from hybridnb.core.kinds.base import (INVALID, CompileContext, EndpointSpec, Field, FieldType, Kind,
                                      ServiceSpec, spec_field)
from hybridnb.core.problems import DNS_LABEL, Collector, did_you_mean, one_of

#: Endpoint names that are taken: the gateway answers to ``gateway.<domain>``.
RESERVED_ENDPOINT_NAMES = ("gateway",)


def _discover() -> dict[str, Kind]:
    found: list[Kind] = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in ("base", "reference"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        kind = vars(module).get("KIND")
        if isinstance(kind, Kind):
            found.append(kind)
    return {k.name: k for k in sorted(found, key=lambda k: (k.rank, k.name))}


REGISTRY: dict[str, Kind] = _discover()
KINDS: tuple[str, ...] = tuple(REGISTRY)


def kinds() -> tuple[Kind, ...]:
    """Every endpoint kind, in listing order."""
    return tuple(REGISTRY.values())


def get(name: str) -> Kind:
    """The kind called ``name`` (KeyError if there is none)."""
    return REGISTRY[name]


def is_endpoint_kind(name: str) -> bool:
    return name in REGISTRY


def parse_endpoint(c: Collector, name: Any, raw: Any) -> EndpointSpec | None:
    """One ``endpoints.NAME`` entry: the name, its kind, then the kind's own fields."""
    path = f"endpoints.{name}"
    ok = True
    if not isinstance(name, str) or not DNS_LABEL.match(name):
        c.add(path, f"{name!r} is not a valid endpoint name",
              "names are DNS labels: lowercase letters, digits and '-', at most 63, "
              "not starting or ending with '-'")
        ok = False
    if name in RESERVED_ENDPOINT_NAMES:
        c.add(path, f"the name {name!r} is reserved for the lab's gateway",
              "pick another name; the gateway is gateway.<domain> already")
        ok = False
    data = c.mapping(raw, path)
    if data is None:
        return None
    kind_name = data.get("kind")
    if kind_name is None:
        c.add(f"{path}.kind", "missing kind",
              "add " + one_of(f"'kind: {k}'" for k in KINDS))
        return None
    if not isinstance(kind_name, str) or kind_name not in REGISTRY:
        c.add(f"{path}.kind", f"unknown kind {kind_name!r}",
              did_you_mean(str(kind_name), KINDS) or f"use {one_of(KINDS)}")
        return None
    ep = REGISTRY[kind_name].parse(c, str(name), data, path)
    return ep if ok else None


def anchor_paths(doc: Any, base: str) -> Any:
    """A lab document read from a file in directory ``base`` with the relative paths its
    endpoints hold (a container's ``mounts:``) made absolute against ``base``, each kind
    saying which of its fields are paths (:meth:`~.base.Kind.anchor`).  Anything malformed is
    left for the parser to report."""
    endpoints = doc.get("endpoints") if isinstance(doc, dict) else None
    if not isinstance(endpoints, dict):
        return doc
    out = {}
    for name, raw in endpoints.items():
        kind = REGISTRY.get(raw.get("kind")) if isinstance(raw, dict) and \
            isinstance(raw.get("kind"), str) else None
        out[name] = dict(kind.anchor(raw, base)) if kind is not None else raw
    return {**doc, "endpoints": out}


def endpoint_to_dict(ep: EndpointSpec) -> dict[str, Any]:
    """Mapping form of an endpoint (what ``parse_endpoint`` reads back to the same spec)."""
    return REGISTRY[ep.kind].to_dict(ep)


def plain(value: Any) -> Any:
    """A Python value as YAML-like plain data (mappings → dict, tuples → list)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value


__all__ = ["INVALID", "KINDS", "REGISTRY", "RESERVED_ENDPOINT_NAMES", "CompileContext",
           "EndpointSpec", "Field", "FieldType", "Kind", "ServiceSpec", "anchor_paths",
           "endpoint_to_dict", "get", "is_endpoint_kind", "kinds", "parse_endpoint", "plain", "spec_field"]
