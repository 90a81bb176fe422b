"""Firewall driver: the one iptables rule a lab needs so traffic crosses its bridge.

dockerd sets the FORWARD policy to DROP, and bridged frames pass through iptables
(``bridge-nf-call-iptables=1``), so frames between two non-Docker ports of the lab bridge
(VMs, namespace hosts) would be dropped.  The targeted fix is one rule in ``DOCKER-USER``,
the chain Docker leaves to its users and jumps to first from FORWARD::

    -I DOCKER-USER -i BR -o BR -m comment --comment "hybridnb:<lab> <fingerprint>" -j ACCEPT

The comment carries the owner tag (:func:`hybridnb.core.naming.owner_tag`) and the resource
fingerprint, so ``observe`` reads ownership and state back from the rule itself
(``iptables -S``).  Nothing else is ever flushed or rewritten: ``create`` inserts the rule
(creating ``DOCKER-USER`` if it does not exist yet — dockerd adopts an existing one — and,
while dockerd has not put its own ``FORWARD -j DOCKER-USER`` jump in place, which it does only
when it creates its first network, a jump of ours tagged ``jump:BR``), and
``delete`` removes exactly the rules carrying our tag for that bridge, and the chain only if
we created it (the rule's comment records ``+chain``) and it is empty and unreferenced — and
then, with iptables-nft, the ``ip filter`` table if we created that too (``+table``) and it
holds only empty built-in chains.
After a create/delete round trip ``iptables-save`` of the namespace is what it was before.

iptables runs inside the target's network namespace (``nsenter --net=/run/netns/NS``); a
target without a namespace means the machine's own tables.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from dataclasses import dataclass

from hybridnb.core.naming import owner_tag
from hybridnb.core.resource import Observation, Resource
from hybridnb.errors import EngineError, EngineUnavailable
from hybridnb.target import Target

BUILTIN_CHAINS = ("INPUT", "FORWARD", "OUTPUT")
DEFAULT_CHAIN = "DOCKER-USER"
JUMP = "jump:"                           # comment word marking our FORWARD -> chain jump
MADE_CHAIN = "+chain"                    # comment words: we created the chain / the table
MADE_TABLE = "+table"
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Rule:
    """One of our rules as ``iptables -S`` prints it."""

    chain: str
    bridge: str
    fingerprint: str
    args: tuple[str, ...]                # everything after ``-A CHAIN``
    jump: bool = False                   # our FORWARD -> DOCKER-USER jump, not the accept rule
    made: frozenset[str] = frozenset()   # MADE_CHAIN / MADE_TABLE: what create had to make


class FirewallDriver:
    """Kind ``firewall``: the DOCKER-USER accept rule for the lab bridge, in the target netns."""

    kind = "firewall"
    concurrent = False                   # one iptables writer at a time (and cheap anyway)

    def __init__(self, target: Target) -> None:
        self.target = target

    # -- protocol -----------------------------------------------------------------------

    def observe(self, lab: str) -> dict[str, Observation]:
        return {r.bridge: Observation(r.fingerprint)
                for r in sorted(self.rules(lab), key=lambda r: r.bridge) if not r.jump}

    def create(self, lab: str, resource: Resource) -> None:
        bridge = resource.spec["bridge"]
        chain = resource.spec.get("chain") or DEFAULT_CHAIN
        # leftovers of an earlier run go first; what they recorded having made carries over
        made = set().union(*[r.made for r in self.rules(lab) if r.bridge == bridge])
        self._delete_rules(lab, bridge, drop=False)
        if not self._table_shown():
            made.add(MADE_TABLE)
        if self._run("-S", chain, check=False).returncode != 0:
            self._run("-N", chain)
            made.add(MADE_CHAIN)
        words = [owner_tag(lab), resource.fingerprint, *sorted(made)]
        self._run("-I", chain, "1", "-i", bridge, "-o", bridge, "-m", "comment",
                  "--comment", " ".join(words), "-j", "ACCEPT")
        if chain not in BUILTIN_CHAINS and not self._jumped_to_by_others(chain):
            # dockerd adds its FORWARD jump only once it creates a network; until then (a lab
            # of VMs and hosts only) the rule would never be reached
            self._run("-I", "FORWARD", "1", "-m", "comment", "--comment",
                      " ".join(words[:2] + [JUMP + bridge]), "-j", chain)

    def delete(self, lab: str, name: str) -> None:
        self._delete_rules(lab, name, drop=True)

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
            jump = next((w[len(JUMP):] for w in words[2:] if w.startswith(JUMP)), None)
            bridge = jump if jump is not None else (_opt(rest, "-i") or "")
            made = frozenset(w for w in words[2:] if w in (MADE_CHAIN, MADE_TABLE))
            out.append(Rule(chain, bridge, words[1] if len(words) > 1 else "", rest,
                            jump is not None, made))
        return out

    def save(self) -> str:
        """``iptables-save`` of the target namespace (all tables)."""
        return self._exec(["iptables-save"]).stdout

    # -- internals ----------------------------------------------------------------------

    def _delete_rules(self, lab: str, bridge: str, *, drop: bool) -> None:
        """Delete this lab's rules for ``bridge``; with ``drop`` also the chain and table
        they recorded having made, when nothing else uses them any more."""
        made: dict[str, set[str]] = {}
        for rule in self.rules(lab):
            if rule.bridge != bridge:
                continue
            self._run("-D", rule.chain, *rule.args, check=False)
            if not rule.jump:
                made.setdefault(rule.chain, set()).update(rule.made)
        if not drop:
            return
        for chain, what in sorted(made.items()):
            if MADE_CHAIN in what and self._drop_chain_if_unused(chain) and MADE_TABLE in what:
                self._drop_table_if_empty()

    def _table_shown(self) -> bool:
        """True when ``iptables-save`` lists the filter table (with iptables-nft an absent or
        chain-less table is not shown)."""
        # (not ``-t filter``: asked for one table, iptables-nft prints it even when absent)
        out = self._exec(["iptables-save"], check=False).stdout
        return any(line.startswith("*filter") for line in out.splitlines())

    def _jumped_to_by_others(self, chain: str) -> bool:
        """True when a FORWARD rule that is not ours (dockerd's) jumps to ``chain``."""
        for args in self._all_rules():
            rest = args[2:]
            if args[1] == "FORWARD" and _opt(rest, "-j") == chain:
                comment = _opt(rest, "--comment") or ""
                if not comment.startswith("hybridnb:"):
                    return True
        return False

    def _drop_chain_if_unused(self, chain: str) -> bool:
        """Remove ``chain`` if it is empty and nothing jumps to it; True if removed."""
        if chain in BUILTIN_CHAINS:
            return False
        rules = self._all_rules()
        if any(a[1] == chain for a in rules):
            return False                                         # not empty
        if any(_opt(a[2:], "-j") == chain or _opt(a[2:], "-g") == chain for a in rules):
            return False                                         # something jumps to it
        return self._run("-X", chain, check=False).returncode == 0

    def _drop_table_if_empty(self) -> None:
        """With iptables-nft, making our chain also made the ``ip filter`` table (and adding
        our jump its FORWARD chain).  When we recorded that the table was not there before and
        it now holds only empty built-in chains with policy ACCEPT, remove it, so that
        ``iptables-save`` shows what it showed before."""
        if shutil.which("nft", path=_PATH) is None:
            return
        if "nf_tables" not in self._exec(["iptables", "--version"], check=False).stdout:
            return
        listed = self._exec(["nft", "-j", "list", "table", "ip", "filter"], check=False)
        if listed.returncode != 0:
            return
        try:
            items = json.loads(listed.stdout).get("nftables", [])
        except ValueError:
            return
        for item in items:
            if "metainfo" in item or "table" in item:
                continue
            chain = item.get("chain")
            if chain is None or chain.get("name") not in BUILTIN_CHAINS \
                    or chain.get("policy", "accept") != "accept":
                return                                           # a rule, set, other chain
        self._exec(["nft", "delete", "table", "ip", "filter"], check=False)

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
