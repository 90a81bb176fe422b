"""Collecting validation problems while reading a lab: every problem, with a path and a hint.

Parsers never stop at the first mistake.  They report each one to a :class:`Collector`
(``endpoints.web.address: '10.0.1' is not an IPv4 address (hint: write it like 10.0.1.100)``)
and carry on with a default, so one :class:`~hybridnb.errors.ValidationError` at the end lists
everything that is wrong.  The helpers here are shared by the network and top-level sections
(:mod:`hybridnb.core.spec`) and by every endpoint kind (:mod:`hybridnb.core.kinds`).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from typing import Any, Iterable, Mapping

from hybridnb.errors import Problem

#: A DNS label: endpoint names and the labels of the lab domain.
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def one_of(words: Iterable[str]) -> str:
    """``a, b or c``."""
    items = list(words)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def typename(value: Any) -> str:
    if value is None:
        return "nothing"
    return {str: "a string", int: "a number", float: "a decimal number", bool: "a boolean",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def text_value(value: Any) -> tuple[str, str] | None:
    """An env or label value: a string or a number (written as text); true/false, nothing,
    lists and mappings are refused rather than turned into 'True', 'None' or '[1]'.
    Returns ``(message, hint)`` for a bad value."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return None
    return (f"expected a string value, got {typename(value)}",
            "quote it, e.g. 'true'" if isinstance(value, bool) else "quote it")


class Collector:
    """Accumulates problems while parsing; helpers return ``None`` for a bad value."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, path: str, message: str, hint: str | None = None) -> None:
        self.problems.append(Problem(path, message, hint))

    def unknown_keys(self, data: Mapping[Any, Any], allowed: Iterable[str], path: str) -> None:
        allowed = tuple(allowed)
        for key in data:
            if key not in allowed:
                where = f"{path}.{key}" if path else str(key)
                hint = did_you_mean(str(key), allowed) or f"allowed keys: {', '.join(allowed)}"
                self.add(where, f"unknown key {key!r}", hint)

    def mapping(self, value: Any, path: str) -> Mapping[Any, Any] | None:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.add(path, f"expected a mapping, got {typename(value)}",
                     "write it as 'key: value' lines indented under it")
            return None
        return value

    def typed(self, value: Any, kind: type | tuple[type, ...], path: str, what: str,
              hint: str | None = None) -> Any:
        if isinstance(value, bool) and kind is int:
            self.add(path, f"expected {what}, got a boolean", hint)
            return None
        if not isinstance(value, kind):
            self.add(path, f"expected {what}, got {typename(value)}", hint)
            return None
        return value

    def address(self, value: Any, path: str) -> ipaddress.IPv4Address | None:
        if not isinstance(value, (str, ipaddress.IPv4Address)):
            self.add(path, f"expected an IPv4 address, got {typename(value)}",
                     "write it like 10.0.1.100")
            return None
        try:
            return ipaddress.IPv4Address(str(value))
        except ValueError:
            self.add(path, f"{value!r} is not an IPv4 address", "write it like 10.0.1.100")
            return None
