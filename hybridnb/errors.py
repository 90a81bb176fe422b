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
        ├── BootError          a VM did not come up (carries the console tail)
        └── BuildError         an image recipe did not build (names the recipe and the step)
"""

from __future__ import annotations

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
    """The lab description has one or more problems; all of them are in ``problems``."""

    exit_code = 2

    def __init__(self, problems: list[Problem], *, source: str | None = None) -> None:
        self.problems = sorted(set(problems))
        self.source = source
        where = f" in {source}" if source else ""
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''}{where}:"
        lines = [head] + [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))

    def __str__(self) -> str:
        return self.message


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


class BootError(EngineError):
    """A VM did not come up; ``console`` holds the tail of its serial console."""

    def __init__(self, message: str, *, console: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint, engine="libvirt")
        self.console = console

    def __str__(self) -> str:
        text = super().__str__()
        if self.console:
            tail = "\n".join("    | " + line for line in self.console.splitlines()[-20:])
            text += "\n  console tail:\n" + tail
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
