"""What ``Lab.dns()`` and ``Lab.dns_logs()`` return: records and query logs that render
themselves (text for the CLI and ``repr``, an HTML table for Jupyter and reports)."""

from __future__ import annotations

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
        from hybridnb.render.html import text_table

        return self.headline() + "\n" + text_table(["name", "type", "data", "ttl"], self.rows())

    __repr__ = to_text
    __str__ = to_text

    def _repr_html_(self) -> str:
        from hybridnb.render.html import table

        return table(["name", "type", "data", "ttl"], self.rows(), caption=self.headline())


@dataclass(frozen=True)
class QueryLogView:
    """The last queries the lab's server answered (the seed's ``hybrid-logs``)."""

    lab: str
    entries: Sequence[QueryRecord]

    def rows(self) -> list[list[str]]:
        return [[time.strftime("%H:%M:%S", time.localtime(e.time)), e.client, e.name, e.type,
                 e.rcode, f"{e.latency_us}"] for e in self.entries]

    def records_list(self) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.entries]

    def to_text(self) -> str:
        from hybridnb.render.html import text_table

        head = f"DNS queries of lab {self.lab}: last {len(self.entries)}"
        return head + "\n" + text_table(["time", "client", "name", "type", "rcode", "µs"],
                                         self.rows())

    __repr__ = to_text
    __str__ = to_text

    def _repr_html_(self) -> str:
        from hybridnb.render.html import table

        return table(["time", "client", "name", "type", "rcode", "µs"], self.rows(),
                     caption=f"DNS queries of lab {self.lab}: last {len(self.entries)}")
