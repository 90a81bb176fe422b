"""The builder's own apt lists: which package versions a recipe would get today, cheaply.

An image is cached by its recipe *and* the versions of every package in it.  Asking the
mirror each time would make a cache hit cost seconds (and need the network), so the builder
keeps private apt lists per suite and mirror (``apt/<suite>-<hash>/`` in the cache: its own
``sources.list``, lists and an empty dpkg status; the host's apt is never touched) and

* refreshes them only when they are older than ``max_age`` (default a day,
  ``$HYBRIDNB_APT_MAX_AGE`` seconds) or when asked — offline, the old lists are kept;
* fingerprints them by their ``InRelease`` files: a build remembers the fingerprints under
  which its versions were checked, so while the lists do not change a hit is a file read;
* resolves a set of packages with ``apt-get --simulate`` against an empty status (every
  package and dependency with its candidate version, ~1-2 s) when they did change, and
  reports packages apt cannot locate — before a build starts, all of them at once.

The sources are Debian's: ``<suite>``, ``<suite>-updates`` and ``<suite>-security`` (main),
from ``$HYBRIDNB_DEBIAN_MIRROR`` (default ``http://deb.debian.org/debian``) and
``$HYBRIDNB_DEBIAN_SECURITY_MIRROR``; the same lines are given to mmdebstrap.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Iterable

from hybridnb.errors import EngineError, EngineUnavailable

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEFAULT_MAX_AGE = 24 * 3600.0
_NO_SECURITY = ("sid", "unstable", "experimental", "rc-buggy")
_INST = re.compile(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) ")
_MISSING = re.compile(r"^E: (?:Unable to locate package (\S+)|Package '?([^' ]+)'? has no "
                      r"installation candidate)")


def sources(suite: str) -> list[str]:
    """The one-line apt sources of a Debian suite (main, updates, security)."""
    mirror = os.environ.get("HYBRIDNB_DEBIAN_MIRROR") or DEFAULT_MIRROR
    security = os.environ.get("HYBRIDNB_DEBIAN_SECURITY_MIRROR") or DEFAULT_SECURITY_MIRROR
    opt = f"[signed-by={KEYRING}] " if os.path.exists(KEYRING) else ""
    lines = [f"deb {opt}{mirror} {suite} main"]
    if suite not in _NO_SECURITY:
        lines.append(f"deb {opt}{mirror} {suite}-updates main")
        lines.append(f"deb {opt}{security} {suite}-security main")
    return lines


def max_age() -> float:
    try:
        return float(os.environ.get("HYBRIDNB_APT_MAX_AGE", DEFAULT_MAX_AGE))
    except ValueError:
        return DEFAULT_MAX_AGE


class UnknownPackages(EngineError):
    """Packages apt cannot locate (or that only other packages provide)."""

    def __init__(self, packages: list[str], suite: str) -> None:
        super().__init__(f"unknown package{'s' if len(packages) > 1 else ''} in {suite}: "
                         f"{', '.join(packages)}", engine="images")
        self.packages = packages


class AptIndex:
    """Private apt lists of one suite (and mirror) under ``root``."""

    def __init__(self, cache: Path, suite: str) -> None:
        self.suite = suite
        self.lines = sources(suite)
        tag = hashlib.sha256("\n".join(self.lines).encode()).hexdigest()[:8]
        self.root = cache / "apt" / f"{suite}-{tag}"
        self.lists = self.root / "var/lib/apt/lists"

    # ---------------------------------------------------------------- apt plumbing

    def _prepare(self) -> None:
        for d in ("etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/sources.list.d",
                  "var/lib/apt/lists/partial", "var/cache/apt/archives/partial",
                  "var/lib/dpkg"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "etc/apt/sources.list").write_text("\n".join(self.lines) + "\n")
        status = self.root / "var/lib/dpkg/status"
        if not status.exists():
            status.write_text("")

    def _apt(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        self._prepare()
        argv = ["apt-get", "-o", f"Dir={self.root}",
                "-o", f"Dir::State::status={self.root}/var/lib/dpkg/status",
                "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root",
                "-o", "Acquire::Languages=none", *args]
        env = dict(os.environ, LC_ALL="C", DEBIAN_FRONTEND="noninteractive")
        try:
            return subprocess.run(argv, capture_output=True, text=True, env=env,
                                  timeout=timeout)
        except FileNotFoundError as exc:
            raise EngineUnavailable("apt-get not found: images are built from Debian packages",
                                    engine="images", hint="build on a Debian or Ubuntu host"
                                    ) from exc

    # ---------------------------------------------------------------- lists

    def release_files(self) -> list[Path]:
        return sorted(p for p in self.lists.glob("*Release") if p.is_file())

    def present(self) -> bool:
        return bool(self.release_files())

    def age(self) -> float:
        """Seconds since the lists were last refreshed (inf when there are none)."""
        try:
            return time.time() - (self.root / "updated").stat().st_mtime
        except OSError:
            return float("inf")

    def stale(self, limit: float | None = None) -> bool:
        return not self.present() or self.age() > (max_age() if limit is None else limit)

    def refresh(self) -> None:
        """``apt-get update`` of the private lists; EngineError when it fails (offline)."""
        out = self._apt("update", "-qq")
        errors = [ln for ln in (out.stderr or "").splitlines() if ln.startswith(("E:", "Err"))]
        if out.returncode != 0 or errors or not self.present():
            text = "\n".join(errors) or (out.stderr or out.stdout).strip()[-500:]
            raise EngineError(f"apt-get update for {self.suite} failed: {text}",
                              engine="images",
                              hint="the builder needs the Debian mirror "
                                   f"({self.lines[0].split()[-3]}); set "
                                   "HYBRIDNB_DEBIAN_MIRROR for another one")
        (self.root / "updated").write_text(f"{time.time()}\n")

    def fingerprint(self) -> str:
        """Identity of the lists: a hash of their Release files ('' when there are none)."""
        h = hashlib.sha256()
        for p in self.release_files():
            h.update(p.name.encode() + b"\0" + p.read_bytes())
        return h.hexdigest()[:16] if self.release_files() else ""

    # ---------------------------------------------------------------- resolution

    def resolve(self, packages: Iterable[str]) -> dict[str, str]:
        """``{package: version}`` apt would install for ``packages`` on an empty system
        (no recommends); UnknownPackages lists every name apt cannot locate."""
        names = sorted(set(packages))
        out = self._apt("--simulate", "-qq", "install", "--no-install-recommends", *names)
        missing = [m.group(1) or m.group(2) for m in map(_MISSING.match,
                                                          out.stderr.splitlines()) if m]
        if missing:
            raise UnknownPackages(sorted(set(missing)), self.suite)
        if out.returncode != 0:
            raise EngineError(f"apt cannot resolve {', '.join(names)}: "
                              f"{out.stderr.strip()[-800:]}", engine="images")
        versions = {}
        for line in out.stdout.splitlines():
            m = _INST.match(line)
            if m:
                versions[m.group(1)] = m.group(2)
        return dict(sorted(versions.items()))
