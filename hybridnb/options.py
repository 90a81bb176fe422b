"""Command-line options generated from the kinds registry, and usage lines from parsers.

The fronts never spell out an endpoint field: :func:`add_field_options` gives an argparse
parser one option per field of a kind (``--image IMAGE``, ``--env K=V`` repeatable,
``--template {test,base,docker,observer}``…; values are checked by the kind, like a lab file's) and
:func:`field_values` turns what argparse collected back into the keyword arguments of
``Lab.add`` (``None`` for what was not given, so the field keeps its default).  :func:`usage` renders a parser's usage compactly for
``%hybrid help``, so that text is generated and cannot drift from the options.
"""

from __future__ import annotations

import argparse
from typing import Any

from hybridnb.core.kinds import Kind


def add_field_options(parser: argparse.ArgumentParser, kind: Kind) -> None:
    """One option per field of ``kind`` (its name positional comes first).  Fixed choices
    show in the metavar but are checked by the kind (with a did-you-mean), not argparse."""
    parser.add_argument("name", help=f"the {kind.title}'s name (a DNS label)")
    for f in kind.fields():
        t = f.type
        default = f.describe_default()
        kw: dict[str, Any] = {"dest": f.name, "metavar": f.metavar,
                              "help": f.help + (f" (default: {default})" if default else "")}
        if t.option_type() is not None:
            kw["type"] = t.option_type()
        if t.repeat:
            kw["action"] = "append"
        parser.add_argument(f.option, **kw)


def field_values(kind: Kind, args: argparse.Namespace) -> dict[str, Any]:
    """The fields given on the command line, as YAML values (``Lab.add(kind, ...)``)."""
    return {f.name: f.type.from_option(getattr(args, f.dest)) for f in kind.fields()}


def _option_usage(action: argparse.Action) -> str:
    opt = max(action.option_strings, key=len)
    if action.nargs == 0:
        return f"[{opt}]"
    meta = action.metavar or ("{" + ",".join(map(str, action.choices)) + "}"
                              if action.choices else action.dest.upper())
    return f"[{opt} {meta}]"


def _positional_usage(action: argparse.Action) -> str:
    meta = action.metavar or ("|".join(map(str, action.choices)) if action.choices
                              else action.dest.upper())
    if action.nargs == "?":
        return f"[{meta}]"
    if action.nargs == "*":
        return f"[{meta} ...]"
    return f"{meta} [{meta} ...]" if action.nargs == "+" else str(meta)


def usage(parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = ("help", "output")) -> str:
    """``NAME [--image IMAGE] [--env K=V]…``: positionals first, hidden options left out."""
    positionals, options = [], []
    for action in parser._actions:          # argparse keeps no public list of its actions
        if action.dest in skip or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            options.append(_option_usage(action))
        else:
            positionals.append(_positional_usage(action))
    return " ".join(positionals + options)


__all__ = ["add_field_options", "field_values", "usage"]
