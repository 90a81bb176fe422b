"""Result objects the magics return where the Lab API itself has none to give.

* :class:`LabSummary` — the lab *as described* (not as the engines see it): network and one
  row per endpoint with the address it has or will get.  Editing commands (``create``,
  ``container``, ``vm``, ``host``, ``remove``) return it; it needs no engine.
* :class:`DnsRecords` — the records the lab's name server serves, built from the pure
  :class:`~hybridnb.core.dnszone.Zone`.
* :class:`DnsLog` — the tail of the name server's query log.
* :class:`HelpText` — ``%hybrid help``.

Each renders as text (``repr``) and as HTML (``_repr_html_``), like every hybridnb result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any


@dataclass(frozen=True)
class LabSummary:
    lab: str
    bridge: str
    subnet: str
    gateway: str
    domain: str
    rows: tuple[tuple[str, str, str, str], ...] = ()     # name, kind, address, details
    note: str = ""

    @classmethod
    def of(cls, lab: Any, note: str = "") -> "LabSummary":
        spec = lab.spec
        net = spec.network
        try:
            addresses = {k: str(v) for k, v in lab.addresses().items()}
        except Exception:  # an exhausted pool: show what we have
            addresses = {}
        rows = []
        for ep in spec.endpoints:
            if ep.kind == "container":
                details = ep.image + (f" {' '.join(ep.command)}" if ep.command else "")
            elif ep.kind == "vm":
                details = f"template {ep.template}, {ep.memory} MiB, {ep.vcpus} vCPU"
            else:
                details = "network namespace"
            rows.append((ep.name, ep.kind, addresses.get(ep.name, "?"), details))
        return cls(spec.name, net.bridge, str(net.subnet), str(net.gateway), net.domain,
                   tuple(rows), note)

    def headline(self) -> str:
        n = len(self.rows)
        head = (f"Lab {self.lab}: bridge {self.bridge} {self.subnet}, gateway {self.gateway}, "
                f"domain {self.domain}, {n} endpoint{'s' if n != 1 else ''}")
        return f"{head} — {self.note}" if self.note else head

    def to_text(self) -> str:
        from hybridnb.render.html import text_table

        text = self.headline()
        if self.rows:
            text += "\n" + text_table(["name", "kind", "address", "details"], self.rows)
        return text

    __repr__ = to_text
    __str__ = to_text

    def _repr_html_(self) -> str:
        from hybridnb.render.html import table

        return table(["name", "kind", "address", "details"], self.rows, caption=self.headline())


@dataclass(frozen=True)
class DnsRecords:
    """The lab's zone as a table: name, type, data."""

    domain: str
    server: str
    records: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def of(cls, lab: Any) -> "DnsRecords":
        """The records of ``lab``: what its running name server loaded when the backend runs
        one, else the zone the lab would serve (built from its description)."""
        net = lab.spec.network
        backend = lab.backend
        records = None
        driver = backend.drivers.get("dns") if backend.name != "dry-run" else None
        if driver is not None and hasattr(driver, "records"):
            from hybridnb.errors import NotFoundError

            try:
                records = driver.records(lab.name)
            except NotFoundError:          # not applied yet: show what it will serve
                records = None
        if records is None:
            from hybridnb.core.dnszone import Zone

            zone = Zone(domain=net.domain,
                        records={k: str(v) for k, v in lab.addresses().items()},
                        gateway=str(net.gateway), subnet=str(net.subnet),
                        upstream=tuple(net.upstream))
            records = zone.all_records
        rows = tuple((r.name, r.rtype, " ".join(str(d) for d in r.data))
                     for r in records if r.rtype in ("A", "PTR", "SRV", "NS"))
        return cls(net.domain, str(net.gateway), rows)

    def lookup(self, name: str, rtype: str = "A") -> list[str]:
        """The data of the records for ``name`` (relative names get the lab domain)."""
        fq = name if name.endswith(".") else (
            name + "." if name.endswith(self.domain) else f"{name}.{self.domain}.")
        return [d for n, t, d in self.records if n == fq.lower() and t == rtype]

    def headline(self) -> str:
        return (f"DNS for {self.domain} served on {self.server}:53 — "
                f"{len(self.records)} records")

    def to_text(self) -> str:
        from hybridnb.render.html import text_table

        return self.headline() + "\n" + text_table(["name", "type", "data"], self.records)

    __repr__ = to_text
    __str__ = to_text

    def _repr_html_(self) -> str:
        from hybridnb.render.html import table

        return table(["name", "type", "data"], self.records, caption=self.headline())


@dataclass(frozen=True)
class DnsLog:
    """The last queries the lab's name server answered (oldest first)."""

    lab: str
    entries: tuple[dict[str, Any], ...] = ()

    def rows(self) -> list[list[str]]:
        import time

        out = []
        for e in self.entries:
            when = time.strftime("%H:%M:%S", time.localtime(float(e.get("time", 0))))
            out.append([when, str(e.get("client", "")), str(e.get("name", "")),
                        str(e.get("type", "")), str(e.get("rcode", "")),
                        f"{e.get('latency_us', '')} µs"])
        return out

    def headline(self) -> str:
        return f"DNS query log of lab {self.lab}: last {len(self.entries)} queries"

    def to_text(self) -> str:
        from hybridnb.render.html import text_table

        return self.headline() + "\n" + text_table(
            ["time", "client", "name", "type", "rcode", "latency"], self.rows())

    __repr__ = to_text
    __str__ = to_text

    def _repr_html_(self) -> str:
        from hybridnb.render.html import table

        return table(["time", "client", "name", "type", "rcode", "latency"], self.rows(),
                     caption=self.headline())


@dataclass(frozen=True)
class HelpText:
    usage: tuple[tuple[str, str], ...] = field(default=())

    def to_text(self) -> str:
        width = max(len(u) for u, _ in self.usage)
        lines = ["%hybrid SUBCOMMAND [options]   (add -h to any subcommand for its options)"]
        lines += [f"  {u.ljust(width)}  {h}" for u, h in self.usage]
        lines.append("Options: %config HybridMagics.backend / .lab / .state_dir / .sandbox;"
                     " -o NAME stores the result in NAME; %%hybrid [--apply] takes a YAML lab.")
        return "\n".join(lines)

    __repr__ = to_text
    __str__ = to_text

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td><code>%hybrid {escape(u)}</code></td><td>{escape(h)}</td></tr>"
                       for u, h in self.usage)
        return (f'<table class="hnb"><caption>%hybrid — add -h to any subcommand</caption>'
                f"{rows}</table>")
