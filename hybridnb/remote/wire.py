"""The agent's wire format: JSON lines, one request, one response (pure data, no I/O).

A request names a driver kind and one of its methods with JSON arguments::

    {"id": 3, "kind": "bridge", "method": "create", "args": ["lab", {"$resource": {...}}]}

and is answered by exactly one line (or, by an agent that ends because nobody asked it
anything for a while, :data:`BYE` — the client starts a new one and asks again)::

    {"id": 3, "ok": true, "value": ...}
    {"id": 3, "ok": false, "error": {"type": "ConflictError", "message": "...", "hint": "..."}}

:class:`~hybridnb.core.resource.Resource` and :class:`~hybridnb.core.resource.Observation`
travel as ``{"$resource": {...}}`` / ``{"$observation": {...}}``, sets as sorted lists
(``{"$set": [...]}``); an error of :mod:`hybridnb.errors` comes back as the same class with
its message and hint (anything else as an :class:`~hybridnb.errors.EngineError`).  The
method a request may call is one of :data:`METHODS`, nothing else.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from hybridnb.core.resource import Observation, Resource
from hybridnb import errors

#: what a request may call on a driver (the Driver protocol and the capabilities the
#: fabric drivers have)
METHODS = frozenset({"observe", "create", "update", "delete", "check", "labs", "counters",
                     "ruleset", "link_report", "flood_list"})


def encode(value: Any) -> Any:
    """A JSON-able form of ``value`` (resources, observations, sets, tuples, mappings)."""
    if isinstance(value, Resource):
        return {"$resource": {"kind": value.kind, "name": value.name,
                              "spec": encode(dict(value.spec)), "summary": value.summary}}
    if isinstance(value, Observation):
        return {"$observation": dataclasses.asdict(value)}
    if isinstance(value, (set, frozenset)):
        return {"$set": sorted(encode(v) for v in value)}
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value


def decode(value: Any) -> Any:
    """The inverse of :func:`encode`."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "$resource" in value:
        raw = value["$resource"]
        return Resource(raw["kind"], raw["name"], decode(raw["spec"]), raw.get("summary", ""))
    if "$observation" in value:
        return Observation(**value["$observation"])
    if "$set" in value:
        return set(decode(value["$set"]))
    return {k: decode(v) for k, v in value.items()}


#: the line an agent writes before it ends on its own (idle): not an answer
BYE = '{"bye":"idle"}\n'
#: the agent container's environment variable saying whose ``/run/netns`` it sees: ``host``
#: (the host's, a shared bind) or ``alone`` (its own: namespace hosts are refused there)
NETNS_ENV = "HYBRIDNB_AGENT_NETNS"


def request(ident: int, kind: str, method: str, *args: Any) -> str:
    return json.dumps({"id": ident, "kind": kind, "method": method,
                       "args": encode(list(args))}, separators=(",", ":")) + "\n"


def answer(ident: Any, value: Any) -> str:
    return json.dumps({"id": ident, "ok": True, "value": encode(value)},
                      separators=(",", ":")) + "\n"


def failure(ident: Any, exc: BaseException) -> str:
    if isinstance(exc, errors.HybridError):
        err = {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint}
    else:
        err = {"type": "EngineError", "message": f"{type(exc).__name__}: {exc}", "hint": None}
    return json.dumps({"id": ident, "ok": False, "error": err}, separators=(",", ":")) + "\n"


def error_from(raw: dict[str, Any]) -> errors.HybridError:
    """The error a failure line carries, as its own class where the constructor allows."""
    cls = getattr(errors, str(raw.get("type")), None)
    message, hint = str(raw.get("message", "")), raw.get("hint")
    if isinstance(cls, type) and issubclass(cls, errors.HybridError):
        try:
            return cls(message, hint=hint)
        except TypeError:                  # classes with required extra fields
            pass
    return errors.EngineError(message, hint=hint)
