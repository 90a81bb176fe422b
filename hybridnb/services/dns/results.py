"""What ``Lab.dns()`` and ``Lab.dns_query_log()`` return: records and query logs that render
themselves (text for the CLI and ``repr``, an HTML table for Jupyter and reports)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

from hybridnb.core.dnszone import Record
from hybridnb.daemons.dns.querylog import QueryRecord


@dataclass(frozen=True)
class DnsRecords:
    """Every record the lab's DNS serves: A, PTR, SRV, SOA and NS."""

    lab: str
    domain: str
    server: str
    records: tuple[Record, ...]

    def headline(self) -> str:
        return (f"DNS of lab {self.lab}: {self.domain} served on {self.server}:53, "
                f"{len(self.records)} records")

    def rows(self) -> list[list[str]]:
        return [[r.name, r.rtype, " ".join(str(d) for d in r.data), str(r.ttl)]
                for r in self.records]

    def lookup(self, name: str, rtype: str = "A") -> list[str]:
        """The data of the records for ``name`` (relative names get the lab domain)."""
        domain = self.domain.rstrip(".")
        fq = name if name.endswith(".") else (
            name + "." if name.endswith(domain) else f"{name}.{domain}.")
        return [" ".join(str(d) for d in r.data) for r in self.records
                if r.name == fq.lower() and r.rtype == rtype]

    def records_list(self) -> list[dict[str, Any]]:
        return [{"name": r.name, "type": r.rtype, "data": list(r.data), "ttl": r.ttl}
                for r in self.records]

    def to_text(self) -> str:
        from hybridnb.core.tables import text_table

        return self.headline() + "\n" + text_table(["name", "type", "data", "ttl"], self.rows())

    __repr__ = to_text
    __str__ = to_text

    def _repr_html_(self) -> str:
        from hybridnb.core.tables import table

        return table(["name", "type", "data", "ttl"], self.rows(), caption=self.headline())


@dataclass(frozen=True)
class QueryLogView:
    """The last queries the lab's server answered (the seed's ``hybrid-logs``)."""

    lab: str
    entries: Sequence[QueryRecord]

    def records(self) -> list[dict[str, Any]]:
        """The entries as plain records (the query log's own fields)."""
        return [e.to_dict() for e in self.entries]

    def summary(self, top: int = 10) -> dict[str, Any]:
        """What the log says in a few numbers: how many queries, from when to when, how
        they were answered (per answer code and type), the busiest clients and names, and
        the answer latency (median, p90, p99, max µs)."""
        from collections import Counter

        def ranked(counter: Counter[str], n: int | None = None) -> list[dict[str, Any]]:
            items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
            return [{"value": k, "count": c} for k, c in items[:n]]

        times = [float(e.time) for e in self.entries]
        lat = sorted(float(e.latency_us) for e in self.entries)

        def pct(q: float) -> float | None:          # nearest rank
            return lat[max(1, math.ceil(q / 100 * len(lat))) - 1] if lat else None

        def field(key: str) -> Counter[str]:
            return Counter(str(e[key]) for e in self.entries)

        return {"queries": len(self.entries),
                "first": min(times) if times else None, "last": max(times) if times else None,
                "rcodes": ranked(field("rcode")), "types": ranked(field("type")),
                "clients": ranked(field("client"), top), "names": ranked(field("name"), top),
                "latency_us": {"median": pct(50), "p90": pct(90), "p99": pct(99),
                               "max": lat[-1] if lat else None}}

    def rows(self) -> list[list[str]]:
        return [[time.strftime("%H:%M:%S", time.localtime(e.time)), e.client, e.name, e.type,
                 e.rcode, f"{e.latency_us}"] for e in self.entries]

    def records_list(self) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.entries]

    def to_text(self) -> str:
        from hybridnb.core.tables import text_table

        head = f"DNS queries of lab {self.lab}: last {len(self.entries)}"
        return head + "\n" + text_table(["time", "client", "name", "type", "rcode", "µs"],
                                         self.rows())

    __repr__ = to_text
    __str__ = to_text

    def _repr_html_(self) -> str:
        from hybridnb.core.tables import table

        return table(["time", "client", "name", "type", "rcode", "µs"], self.rows(),
                     caption=f"DNS queries of lab {self.lab}: last {len(self.entries)}")
