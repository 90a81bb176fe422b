"""Address management: static, collision-free IPv4 addresses for every endpoint.

The subnet is split into one pool per endpoint kind (each kind declares where its pool starts
in a /24: ``Kind.pool_offset``).  The defaults mirror the seed: gateway ``.1``, hosts from
``.10``, containers from ``.100``, VMs from ``.200``; other prefix lengths scale the same
offsets (a /16 puts containers from ``x.y.100.0``).  A pool runs up to
the start of the next one.  ``network.pools`` moves the starts.

Allocation is deterministic: explicit addresses first, then every endpoint keeps the address it
had before (``previous``, from the persisted state), then new endpoints take the lowest free
address of their pool in name order.  The same inputs always give the same addresses, so plans
diff cleanly and a re-run never moves anyone.

Docker runs its own IPAM on the network it binds to the bridge; :func:`docker_ipam` derives an
``ip_range`` that lies inside the container pool (never the VM pool) and ``aux_addresses`` for
every reserved non-container address that still falls inside it, so Docker can never hand a
VM's address to a container started outside hybridnb.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping

from hybridnb.core.kinds import KINDS, get
from hybridnb.errors import Problem, ValidationError

if TYPE_CHECKING:  # pragma: no cover
    from hybridnb.core.spec import LabSpec, NetworkSpec

IPv4 = ipaddress.IPv4Address


@dataclass(frozen=True)
class Pool:
    kind: str
    first: IPv4
    last: IPv4

    @property
    def size(self) -> int:
        return int(self.last) - int(self.first) + 1 if self.last >= self.first else 0

    def __contains__(self, addr: object) -> bool:
        return isinstance(addr, IPv4) and self.first <= addr <= self.last

    def __str__(self) -> str:
        return f"{self.kind} {self.first}-{self.last}"


def pools_for(net: NetworkSpec) -> dict[str, Pool]:
    """The pool of each kind for this network (explicit starts override the scaled defaults)."""
    subnet = net.subnet
    base = int(subnet.network_address)
    scale = subnet.num_addresses / 256
    starts: dict[str, int] = {}
    for kind in KINDS:
        if kind in net.pools:
            starts[kind] = int(net.pools[kind])
        else:
            # scaled starts skip the ".0" of a block in subnets larger than a /24
            starts[kind] = base + max(2, int(get(kind).pool_offset * scale) + (scale > 1))
    order = sorted(KINDS, key=lambda k: (starts[k], k))
    last_host = int(subnet.broadcast_address) - 1
    pools: dict[str, Pool] = {}
    for i, kind in enumerate(order):
        end = starts[order[i + 1]] - 1 if i + 1 < len(order) else last_host
        pools[kind] = Pool(kind, IPv4(starts[kind]), IPv4(min(end, last_host)))
    return pools


def assign_addresses(spec: LabSpec, previous: Mapping[str, str] | None = None) -> dict[str, IPv4]:
    """Address of every endpoint of ``spec``: explicit, else the previous one, else allocated.

    Raises :class:`ValidationError` when a pool is full.
    """
    net = spec.network
    pools = pools_for(net)
    taken: dict[IPv4, str] = {net.gateway: "(gateway)"}
    result: dict[str, IPv4] = {}
    for ep in spec.endpoints:
        if ep.address is not None:
            result[ep.name] = ep.address
            taken[ep.address] = ep.name
    previous = previous or {}
    pending = []
    for ep in spec.endpoints:
        if ep.name in result:
            continue
        old = previous.get(ep.name)
        addr = IPv4(old) if old else None
        if (addr is not None and addr in net.subnet and addr not in taken
                and addr not in (net.subnet.network_address, net.subnet.broadcast_address)):
            result[ep.name] = addr
            taken[addr] = ep.name
        else:
            pending.append(ep)
    problems: list[Problem] = []
    for ep in pending:                                    # endpoints are sorted by name
        addr = _first_free(pools[ep.kind], taken)
        if addr is None:
            pool = pools[ep.kind]
            problems.append(Problem(
                f"{ep.path}.address", f"the {ep.kind} pool {pool.first}-{pool.last} is full "
                f"({pool.size} address{'es' if pool.size != 1 else ''})",
                "use a larger subnet, move the pool starts (network.pools), or give explicit "
                "addresses"))
            continue
        result[ep.name] = addr
        taken[addr] = ep.name
    if problems:
        raise ValidationError(problems)
    return dict(sorted(result.items()))


def _first_free(pool: Pool, taken: Mapping[IPv4, str]) -> IPv4 | None:
    for n in range(int(pool.first), int(pool.last) + 1):
        addr = IPv4(n)
        if addr not in taken:
            return addr
    return None


def docker_ipam(net: NetworkSpec, addresses: Mapping[str, IPv4], kinds: Mapping[str, str],
                *, kind: str) -> tuple[ipaddress.IPv4Network, dict[str, str]]:
    """``(ip_range, aux_addresses)`` for the Docker network on the lab bridge.

    ``ip_range`` is the largest aligned block inside the pool of ``kind`` (the containers');
    ``aux_addresses`` reserves the addresses of the other endpoints that lie inside it
    (normally none).
    """
    pool = pools_for(net)[kind]
    blocks = list(ipaddress.summarize_address_range(pool.first, pool.last)) if pool.size else []
    if not blocks:
        ip_range = ipaddress.IPv4Network(f"{pool.first}/32")
    else:
        ip_range = min(blocks, key=lambda b: (b.prefixlen, int(b.network_address)))
    aux = {name: str(addr) for name, addr in sorted(addresses.items())
           if kinds.get(name) != kind and addr in ip_range}
    return ip_range, aux


def duplicates(addresses: Iterable[tuple[str, IPv4]]) -> list[tuple[IPv4, list[str]]]:
    """Addresses held by more than one name (used by checks and tests)."""
    seen: dict[IPv4, list[str]] = {}
    for name, addr in addresses:
        seen.setdefault(addr, []).append(name)
    return sorted(((a, sorted(n)) for a, n in seen.items() if len(n) > 1), key=lambda x: x[0])


def allocate_one(net: NetworkSpec, kind: str, taken: Iterable[IPv4]) -> IPv4:
    """Lowest free address of ``kind``'s pool given the ``taken`` ones (used under the state
    lock by :meth:`hybridnb.state.StateStore.allocate`)."""
    pool = pools_for(net)[kind]
    held = {a: "" for a in taken}
    held[net.gateway] = "(gateway)"
    addr = _first_free(pool, held)
    if addr is None:
        raise ValidationError([Problem("network.pools", f"the {kind} pool {pool.first}-"
                                       f"{pool.last} is full ({pool.size} addresses)",
                                       "use a larger subnet or move the pool starts")])
    return addr
