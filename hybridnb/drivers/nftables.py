"""nftables in a namespace (libnftables JSON), and the ``policy`` driver that enforces policies.

:class:`Nft` runs libnftables JSON commands inside a network namespace: the library
(``libnftables.so.1``, Debian's ``libnftables1``, what the ``nft`` command itself is) is loaded
with ctypes and called on the namespace's worker thread (:mod:`hybridnb.drivers.nsutil`), so a
transaction costs no fork and no ``nsenter``.  The upstream Python binding (``python3-nftables``)
is the same ctypes wrapper but is packaged for Debian only, not for pip.  One batch is one
netlink transaction, committed by the kernel all at once.

:class:`PolicyDriver` handles resource kind ``policy`` (one per lab, named after the lab): its
spec carries the nftables body compiled by :func:`hybridnb.core.nftables.policy_body`.

* ``create``/``update`` replace the table ``inet hnb-<lab>`` whole in **one transaction**:
  ``add table; delete table; add table; owner record "hybridnb:<lab> <fingerprint>"; sets;
  chains; rules``.  The kernel's commit flips a generation counter: a packet is judged by the old
  ruleset or by the new one, never by neither (the base chains keep policy accept, so a chain
  hooked while the transaction is prepared lets packets on to the old rules).  The table's
  counters restart with each change (its rule numbers may have changed).
* ``observe`` reads the owner and fingerprint from the table's owner record (the comment of
  the one rule in its unhooked chain ``owner``; nft 1.0's JSON keeps no table comments).
* ``delete`` removes the table (add + delete in one batch: never fails on an absent table).
* ``check`` refuses before anything is made when this kernel cannot enforce the policy:
  bridged IPv4 must pass the IPv4 hooks (``net.bridge.bridge-nf-call-iptables=1``, br_netfilter),
  and the compiled ruleset must pass a kernel-validated dry run (inet family, forward/input
  hooks, conntrack expressions).
* ``counters(lab)`` reads the per-rule counters back (``rule N``, ``dns``, ``default``).

Nothing else in the namespace is touched: Docker's iptables rules (``ip filter``, iptables-nft
or legacy) and the DOCKER-USER accept rule stay as they are; a packet must pass both.
:func:`features` probes what the kernel offers (for ``doctor`` and the impairments driver).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import threading
from dataclasses import dataclass
from typing import Any, Mapping

from hybridnb.core import nftables as nftjson
from hybridnb.core.naming import owner_tag
from hybridnb.core.resource import Observation, Resource
from hybridnb.drivers import nsutil
from hybridnb.errors import EngineError, EngineUnavailable
from hybridnb.target import Target

LIBRARY = "libnftables.so.1"
_OUTPUT_JSON = 1 << 4                  # NFT_CTX_OUTPUT_JSON
_OUTPUT_NUMERIC_PROTO = 1 << 7         # NFT_CTX_OUTPUT_NUMERIC_PROTO
BR_NF_SYSCTL = "net.bridge.bridge-nf-call-iptables"

_lib: ctypes.CDLL | None = None
_lib_error: str | None = None
_lock = threading.Lock()               # libnftables keeps some global state: one call at a time


def _library() -> ctypes.CDLL:
    """libnftables, loaded once; EngineUnavailable when it is not installed."""
    global _lib, _lib_error
    if _lib is not None:
        return _lib
    if _lib_error is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("nftables") or LIBRARY)
            lib.nft_ctx_new.restype = ctypes.c_void_p
            lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
            lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
            lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
            lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
            lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_set_dry_run.argtypes = [ctypes.c_void_p, ctypes.c_bool]
            lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
            _lib = lib
            return lib
        except (OSError, AttributeError) as exc:
            _lib_error = str(exc)
    raise EngineUnavailable(f"libnftables is not available: {_lib_error}", engine="nftables",
                            hint="apt-get install nftables (it brings libnftables1)")


def available() -> bool:
    """libnftables can be loaded (without it no table of ours can have been made here)."""
    try:
        _library()
    except EngineUnavailable:
        return False
    return True


def _run(command: str, *, dry_run: bool) -> tuple[int, str, str]:
    """Run one libnftables command buffer in the calling thread's namespace."""
    lib = _library()
    with _lock:
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise EngineError("nft_ctx_new failed", engine="nftables")
        try:
            lib.nft_ctx_output_set_flags(ctx, _OUTPUT_JSON)
            lib.nft_ctx_buffer_output(ctx)
            lib.nft_ctx_buffer_error(ctx)
            if dry_run:
                lib.nft_ctx_set_dry_run(ctx, True)
            rc = lib.nft_run_cmd_from_buffer(ctx, command.encode())
            out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode()
            err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode()
        finally:
            lib.nft_ctx_free(ctx)
    return rc, out, err


class Nft:
    """libnftables JSON inside one network namespace (``None``: the caller's own)."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns

    @property
    def where(self) -> str:
        return f"namespace {self.netns}" if self.netns else "the host namespace"

    def run(self, batch: Mapping[str, Any] | str, *, dry_run: bool = False,
            what: str = "nftables transaction") -> dict[str, Any]:
        """Run a JSON batch (or a JSON/``nft`` text command); the JSON answer ({} if none)."""
        text = batch if isinstance(batch, str) else json.dumps(batch)
        rc, out, err = nsutil.run_in_netns(self.netns, _run, text, dry_run=dry_run)
        if rc != 0:
            raise EngineError(f"{what} in {self.where} failed: {_first_error(err)}",
                              engine="nftables")
        return json.loads(out) if out.strip() else {}

    def list_table(self, family: str, table: str) -> dict[str, Any] | None:
        """``nft -j list table FAMILY TABLE``; None when the table does not exist."""
        cmd = {"nftables": [{"list": {"table": {"family": family, "name": table}}}]}
        text = json.dumps(cmd)
        rc, out, err = nsutil.run_in_netns(self.netns, _run, text, dry_run=False)
        if rc != 0:
            if "No such file or directory" in err or "does not exist" in err:
                return None
            raise EngineError(f"cannot list table {family} {table} in {self.where}: "
                              f"{_first_error(err)}", engine="nftables")
        return json.loads(out) if out.strip() else None

    def tables(self) -> list[tuple[str, str]]:
        """(family, name) of every table in the namespace."""
        answer = self.run({"nftables": [{"list": {"tables": None}}]}, what="list tables")
        return [(t["table"]["family"], t["table"]["name"])
                for t in answer.get("nftables", []) if "table" in t]


def _first_error(err: str) -> str:
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    msgs = [line for line in lines if line.startswith("Error")] or lines
    return msgs[0] if msgs else "unknown error"


# ------------------------------------------------------------------------------ the driver

class PolicyDriver:
    """Kind ``policy``: the lab's nftables table ``inet hnb-<lab>`` in the target namespace."""

    kind = "policy"
    concurrent = False

    def __init__(self, target: Target) -> None:
        self.target = target
        self.nft = Nft(target.netns)

    # -- protocol -----------------------------------------------------------------------

    def observe(self, lab: str) -> dict[str, Observation]:
        if not available():                 # every plan observes: no nftables, no policy
            return {}
        listing = self.nft.list_table(nftjson.INET, nftjson.policy_table(lab))
        mark = _owner(listing, lab)
        return {lab: Observation(mark)} if mark is not None else {}

    def check(self, lab: str, resource: Resource) -> None:
        """Refuse before anything is made when this host cannot enforce the policy."""
        value = nsutil.read_sysctl(self.target.netns, BR_NF_SYSCTL)
        if value != "1":
            state = "missing (br_netfilter is not loaded)" if value is None else value
            raise EngineUnavailable(
                f"policies cannot be enforced in {self.nft.where}: bridged IPv4 does not pass "
                f"the IPv4 hooks ({BR_NF_SYSCTL} is {state}), so no inet table sees the traffic "
                "between the lab's endpoints", engine="nftables",
                hint="modprobe br_netfilter and set net.bridge.bridge-nf-call-iptables=1 in "
                     "the lab host (the sandbox has it)")
        batch = self._batch(lab, resource)
        try:
            self.nft.run(batch, dry_run=True, what=f"checking the policy of lab {lab!r}")
        except EngineError as exc:
            raise EngineUnavailable(
                f"this kernel refuses the policy table: {exc.message}", engine="nftables",
                hint="policies need nf_tables with the inet family, the forward and input "
                     "hooks and conntrack (nft_ct)") from exc

    def create(self, lab: str, resource: Resource) -> None:
        self.nft.run(self._batch(lab, resource), what=f"applying the policy of lab {lab!r}")

    def update(self, lab: str, resource: Resource) -> None:
        """The same one-transaction replacement as ``create``."""
        self.create(lab, resource)

    def delete(self, lab: str, name: str) -> None:
        table = nftjson.policy_table(lab)
        listing = self.nft.list_table(nftjson.INET, table)
        if listing is None or _owner(listing, lab) is None:
            return                                   # gone, or not ours: leave it
        self.nft.run(nftjson.delete_table(nftjson.INET, table),
                     what=f"removing the policy of lab {lab!r}")

    # -- reading ------------------------------------------------------------------------

    def counters(self, lab: str) -> dict[str, tuple[int, int]]:
        """Packets and bytes per ``rule N``, ``dns`` and ``default`` ({} without a table)."""
        listing = self.nft.list_table(nftjson.INET, nftjson.policy_table(lab))
        if listing is None or _owner(listing, lab) is None:
            return {}
        return nftjson.policy_counters(listing)

    def ruleset(self, lab: str) -> dict[str, Any] | None:
        """The table as the kernel holds it (JSON), or None."""
        return self.nft.list_table(nftjson.INET, nftjson.policy_table(lab))

    def _batch(self, lab: str, resource: Resource) -> dict[str, Any]:
        comment = f"{owner_tag(lab)} {resource.fingerprint}"
        return nftjson.replace_table(nftjson.INET, nftjson.policy_table(lab), comment,
                                     list(resource.spec["body"]))


def _owner(listing: Mapping[str, Any] | None, lab: str) -> str | None:
    """The fingerprint in a table's owner record when it belongs to ``lab``, else None."""
    words = (nftjson.owner_of(listing) or "").split()
    if len(words) >= 2 and words[0] == owner_tag(lab):
        return words[1]
    return None


# ------------------------------------------------------------------------------ features

@dataclass(frozen=True)
class Feature:
    name: str
    ok: bool
    detail: str = ""


def nft_features(netns: str | None) -> list[Feature]:
    """What nftables offers in ``netns`` for policies and loss (kernel-validated dry runs;
    nothing is made)."""
    nft = Nft(netns)
    out: list[Feature] = []
    try:
        _library()
    except EngineUnavailable as exc:
        return [Feature("libnftables", False, exc.message)]
    out.append(Feature("libnftables", True, LIBRARY))
    value = nsutil.read_sysctl(netns, BR_NF_SYSCTL)
    out.append(Feature("br_netfilter", value == "1",
                       f"{BR_NF_SYSCTL} = {value if value is not None else 'missing'}"))
    probes = {
        "nft inet forward + conntrack": {"nftables": [
            {"add": {"table": {"family": "inet", "name": "hnb-probe"}}},
            {"add": {"chain": {"family": "inet", "table": "hnb-probe", "name": "f",
                               "type": "filter", "hook": "forward", "prio": 0,
                               "policy": "accept"}}},
            {"add": {"rule": {"family": "inet", "table": "hnb-probe", "chain": "f", "expr": [
                {"match": {"op": "==", "left": {"ct": {"key": "ip saddr", "dir": "original"}},
                           "right": "10.0.0.1"}}, {"counter": None}, {"accept": None}]}}}]},
        "nft bridge numgen": {"nftables": [
            {"add": {"table": {"family": "bridge", "name": "hnb-probe"}}},
            {"add": {"chain": {"family": "bridge", "table": "hnb-probe", "name": "f",
                               "type": "filter", "hook": "forward", "prio": 0,
                               "policy": "accept"}}},
            {"add": {"rule": {"family": "bridge", "table": "hnb-probe", "chain": "f", "expr": [
                {"match": {"op": "<", "left": {"numgen": {"mode": "random", "mod": 10000,
                                                           "offset": 0}}, "right": 100}},
                {"drop": None}]}}}]},
    }
    for name, batch in probes.items():
        try:
            nft.run(batch, dry_run=True, what=name)
            out.append(Feature(name, True, "kernel accepts it"))
        except EngineError as exc:
            out.append(Feature(name, False, exc.message))
    return out
