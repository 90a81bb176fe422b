"""Firewall driver: the one iptables rule a lab needs so traffic crosses its bridge.

dockerd sets the FORWARD policy to DROP, and bridged frames pass through iptables
(``bridge-nf-call-iptables=1``), so frames between two non-Docker ports of the lab bridge
(VMs, namespace hosts) would be dropped.  The targeted fix is one rule in ``DOCKER-USER``,
the chain Docker leaves to its users and jumps to first from FORWARD::

    -I DOCKER-USER -i BR -o BR -m comment --comment "hybridnb:<lab> <fingerprint>" -j ACCEPT

The comment carries the owner tag (:func:`hybridnb.core.naming.owner_tag`) and the resource
fingerprint, so ``observe`` reads ownership and state back from the rule itself
(``iptables -S``).  Nothing else is ever flushed or rewritten: ``create`` inserts the rule
(creating ``DOCKER-USER`` if it does not exist yet — dockerd adopts an existing one), and
``delete`` removes exactly the rules carrying our tag for that bridge, and the chain only
when it is left empty and nothing jumps to it (so a chain Docker made stays).  After a
create/delete round trip ``iptables-save`` of the namespace is what it was before.

iptables runs inside the target's network namespace (``nsenter --net=/run/netns/NS``); a
target without a namespace means the machine's own tables.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass

from hybridnb.core.naming import owner_tag
from hybridnb.core.resource import Resource
from hybridnb.errors import EngineError, EngineUnavailable
from hybridnb.target import Target

BUILTIN_CHAINS = ("INPUT", "FORWARD", "OUTPUT")
DEFAULT_CHAIN = "DOCKER-USER"
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Rule:
    """One of our rules as ``iptables -S`` prints it."""

    chain: str
    bridge: str
    fingerprint: str
    args: tuple[str, ...]                # everything after ``-A CHAIN``


class FirewallDriver:
    """Kind ``firewall``: the DOCKER-USER accept rule for the lab bridge, in the target netns."""

    kind = "firewall"
    concurrent = False                   # one iptables writer at a time (and cheap anyway)

    def __init__(self, target: Target) -> None:
        self.target = target

    # -- protocol -----------------------------------------------------------------------

    def observe(self, lab: str) -> dict[str, str]:
        return dict(sorted((r.bridge, r.fingerprint) for r in self.rules(lab)))

    def create(self, lab: str, resource: Resource) -> None:
        bridge = resource.spec["bridge"]
        chain = resource.spec.get("chain") or DEFAULT_CHAIN
        self._delete_rules(lab, bridge, drop_chains=False)       # leftovers of an earlier run
        if self._run("-S", chain, check=False).returncode != 0:
            self._run("-N", chain)
        comment = f"{owner_tag(lab)} {resource.fingerprint}"
        self._run("-I", chain, "1", "-i", bridge, "-o", bridge, "-m", "comment",
                  "--comment", comment, "-j", "ACCEPT")

    def delete(self, lab: str, name: str) -> None:
        self._delete_rules(lab, name, drop_chains=True)

    # -- reading ------------------------------------------------------------------------

    def rules(self, lab: str) -> list[Rule]:
        """This lab's rules in the filter table."""
        tag = owner_tag(lab)
        out = []
        for args in self._all_rules():
            chain, rest = args[1], tuple(args[2:])
            comment = _opt(rest, "--comment")
            if comment is None:
                continue
            words = comment.split()
            if not words or words[0] != tag:
                continue
            bridge = _opt(rest, "-i") or ""
            out.append(Rule(chain, bridge, words[1] if len(words) > 1 else "", rest))
        return out

    def save(self) -> str:
        """``iptables-save`` of the target namespace (all tables, counters omitted)."""
        return self._exec(["iptables-save"]).stdout

    # -- internals ----------------------------------------------------------------------

    def _delete_rules(self, lab: str, bridge: str, *, drop_chains: bool) -> None:
        chains = set()
        for rule in self.rules(lab):
            if rule.bridge != bridge:
                continue
            self._run("-D", rule.chain, *rule.args, check=False)
            chains.add(rule.chain)
        if drop_chains:
            for chain in sorted(chains):
                self._drop_chain_if_unused(chain)

    def _drop_chain_if_unused(self, chain: str) -> None:
        if chain in BUILTIN_CHAINS:
            return
        rules = self._all_rules()
        if any(a[1] == chain for a in rules):
            return                                               # not empty
        if any(_opt(tuple(a[2:]), "-j") == chain or _opt(tuple(a[2:]), "-g") == chain
               for a in rules):
            return                                               # something jumps to it
        self._run("-X", chain, check=False)

    def _all_rules(self) -> list[list[str]]:
        """Every ``-A`` line of the filter table, split like a shell would."""
        out = self._run("-S").stdout
        return [shlex.split(line) for line in out.splitlines() if line.startswith("-A ")]

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self._exec(["iptables", "-w", "10", "-t", "filter", *args], check=check)

    def _exec(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        tool = shutil.which(argv[0], path=_PATH)
        if tool is None:
            raise EngineUnavailable(f"{argv[0]} is not installed", engine="iptables",
                                    hint="apt-get install iptables")
        cmd = [tool, *argv[1:]]
        if self.target.netns:
            cmd = [shutil.which("nsenter", path=_PATH) or "nsenter",
                   f"--net=/run/netns/{self.target.netns}", *cmd]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True,
                                  env={"PATH": _PATH, "LANG": "C"})
        except OSError as exc:
            raise EngineUnavailable(f"cannot run {argv[0]}: {exc}", engine="iptables") from exc
        if check and done.returncode != 0:
            where = f" in {self.target.netns}" if self.target.netns else ""
            raise EngineError(f"{' '.join(argv)}{where} failed: {done.stderr.strip()}",
                              engine="iptables")
        return done


def _opt(args: tuple[str, ...] | list[str], flag: str) -> str | None:
    """The value following ``flag`` in an iptables argument list (None if absent)."""
    for i, a in enumerate(args[:-1]):
        if a == flag:
            return args[i + 1]
    return None
