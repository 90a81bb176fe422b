"""One error tree for hybridnb.

Every failure a user can meet is a :class:`HybridError` with a one-line ``message`` and, where
we know one, a ``hint`` that says how to fix it.  Backend exceptions (docker, libvirt, netlink,
OS errors) are translated into this tree at the driver edge, so the layers above never see a
``docker.errors.APIError`` or a ``libvirt.libvirtError``.  Each class carries the exit code
the command line uses for it.

    HybridError
    ├── ValidationError      the lab description is wrong (every problem at once)
    ├── StateError           the persisted state cannot be read, written or locked
    ├── ConflictError        the lab collides with something on the host (route, name, address)
    ├── NotFoundError        a lab, endpoint or file that does not exist
    └── EngineError          an engine (kernel, Docker, libvirt, a daemon) refused or failed
        ├── EngineUnavailable  the engine is not installed / not running / not reachable
        │   └── Unsupported    the backend cannot do this at all (a capability it lacks)
        ├── BootError          an endpoint did not come up: a VM that did not boot, a
        │                      container whose command exited (carries the console or log tail)
        └── BuildError         an image recipe did not build (names the recipe and the step)
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class HybridError(Exception):
    """Base of every error hybridnb raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


@dataclass(frozen=True, order=True)
class Problem:
    """One validation problem: where it is (``path`` like ``endpoints.web.address``), what is
    wrong and how to fix it."""

    path: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class ValidationError(HybridError):
    """The lab description has one or more problems; all of them are in ``problems``.

    ``problems`` is complete and in natural order (``h2`` before ``h10``).  The message groups
    near-identical problems — same path and message but for their numbers, same hint, at
    least :data:`GROUP_MIN` of them — into one line, so 210 endpoints with an address outside
    the subnet read as one line (``endpoints.h10..h219.address (210 problems): ...``)."""

    exit_code = 2

    def __init__(self, problems: list[Problem], *, source: str | None = None) -> None:
        self.problems = sorted(set(problems), key=_problem_order)
        self.source = source
        where = f" in {source}" if source else ""
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''}{where}:"
        lines = [head] + [f"  - {line}" for line in group_problems(self.problems)]
        super().__init__("\n".join(lines))

    def __str__(self) -> str:
        return self.message


GROUP_MIN = 3
_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple[object, ...]:
    """Sort key that orders the numbers inside ``text`` by value: ``h2`` before ``h10``
    (digits compare by length, then digit by digit: no int() of a 5000-digit run)."""
    return tuple((len(t.lstrip("0")), t.lstrip("0"), t) if i % 2 else t
                 for i, t in enumerate(_DIGITS.split(text)))


def _problem_order(p: Problem) -> tuple[object, ...]:
    return (natural_key(p.path), natural_key(p.message), p.hint or "")


def _span(values: list[str], sep: str) -> str:
    """Join parts of the first and last text part by part; a part that differs becomes
    ``first..last``."""
    first, last = values[0].split(sep), values[-1].split(sep)
    if len(first) != len(last):
        return values[0]
    return sep.join(a if a == b else f"{a}..{b}" for a, b in zip(first, last))


def group_problems(problems: list[Problem]) -> list[str]:
    """One text line per problem, near-identical problems (equal but for their numbers,
    same hint) folded into one line with the range they span and their count."""
    shape = {p: (_DIGITS.sub("#", p.path), _DIGITS.sub("#", p.message), p.hint)
             for p in problems}
    groups: dict[tuple[str, str, str | None], list[Problem]] = {}
    for p in problems:
        groups.setdefault(shape[p], []).append(p)
    lines: list[str] = []
    for p in problems:
        members = groups[shape[p]]
        if len(members) < GROUP_MIN:
            lines.append(str(p))
        elif members[0] is p:
            path = _span([m.path for m in members], ".")
            message = _span([m.message for m in members], " ")
            lines.append(str(Problem(f"{path} ({len(members)} problems)", message, p.hint)))
    return lines


class StateError(HybridError):
    """The lab's persisted state cannot be read, written or locked."""

    exit_code = 3


class ConflictError(HybridError):
    """The lab collides with something that already exists on the target host."""

    exit_code = 3


class NotFoundError(HybridError):
    """Something named by the user does not exist."""

    exit_code = 2


class EngineError(HybridError):
    """An engine (kernel, Docker, libvirt, one of our daemons) refused or failed an action."""

    exit_code = 4

    def __init__(self, message: str, *, hint: str | None = None, engine: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.engine = engine


class EngineUnavailable(EngineError):
    """The engine is not installed, not running or not reachable."""

    exit_code = 5


class Unsupported(EngineUnavailable):
    """The backend lacks a capability the operation needs (the dry-run backend sends no
    packets; a driver that cannot change a resource in place); ``capability`` names it."""

    def __init__(self, message: str, *, hint: str | None = None, capability: str = "",
                 kind: str = "") -> None:
        super().__init__(message, hint=hint)
        self.capability = capability
        self.kind = kind


class BootError(EngineError):
    """An endpoint did not come up (a VM did not boot, a container's command exited, a recipe
    container's service never came up); ``console`` holds the tail of its serial console
    (``what="log"``: of its output)."""

    def __init__(self, message: str, *, console: str = "", hint: str | None = None,
                 engine: str = "libvirt", what: str = "console") -> None:
        super().__init__(message, hint=hint, engine=engine)
        self.console = console
        self.what = what

    def __str__(self) -> str:
        text = super().__str__()
        if self.console:
            tail = "\n".join("    | " + line for line in self.console.splitlines()[-20:])
            text += f"\n  {self.what} tail:\n" + tail
        return text


class BuildError(EngineError):
    """An image recipe did not build; ``recipe`` and ``step`` (resolve, download, install,
    setup, files, run, disk, import...) say where, ``log`` holds the tail of the build log."""

    def __init__(self, message: str, *, recipe: str, step: str, log: str = "",
                 hint: str | None = None) -> None:
        super().__init__(f"image {recipe}: {step} failed: {message}", hint=hint,
                         engine="images")
        self.recipe = recipe
        self.step = step
        self.log = log

    def __str__(self) -> str:
        text = super().__str__()
        if self.log:
            tail = "\n".join("    | " + line for line in self.log.splitlines()[-15:])
            text += "\n  build log tail:\n" + tail
        return text
