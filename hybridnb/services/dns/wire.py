"""DNS wire format for the lab's name server: pre-encoded answers and a tiny hot path.

Every answer the zone can give is encoded once (with dnslib) into a :class:`Template`, keyed by
``(qtype+qclass bytes, lowercased qname wire bytes)``.  A template stores the response *minus*
the parts that depend on the query: the ID, the RD/CD bits (copied from the query), the
question (copied byte for byte, so the client's letter case is preserved; the answers'
compression pointers point at it, so they inherit that case too) and the EDNS OPT record.

:func:`plain_answer` is the hot path for the commonest query (RD set, no EDNS, lowercase
name): the whole query minus its ID is the key of a dictionary holding the whole answer minus
the ID.  :func:`fast_answer` is the hot path for the rest.  It looks only at the header, the
byte ranges of a question and, optionally, a bare 11-byte OPT record at the very end; the
qname is never walked: a dictionary hit on the exact byte slice proves the slice is a
well-formed name (keys are well-formed names, and lowercasing cannot turn a length byte into
a letter).  Anything else — other opcodes, extra sections, EDNS options, names not in the
table, answers that do not fit — returns ``None`` and goes to :func:`slow_answer`, a strict
bounds-checked parser that answers FORMERR/NOTIMP/REFUSED/BADVERS where the RFCs say so,
truncates (TC) what does not fit in UDP, and signals out-of-zone questions for forwarding.
Neither path raises on any input.

dnslib is imported lazily, only to build templates.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hybridnb.services.dns.querylog import text_code

if TYPE_CHECKING:  # pragma: no cover
    from hybridnb.core.dnszone import Lookup, Zone

QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28,
          "SRV": 33, "OPT": 41, "SVCB": 64, "HTTPS": 65, "IXFR": 251, "AXFR": 252, "ANY": 255}
TYPE_NAMES = {v: k for k, v in QTYPES.items()}
RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4,
          "REFUSED": 5, "BADVERS": 16}
RCODE_NAMES = {v: k for k, v in RCODES.items()}
#: Types pre-encoded for every name of the zone; other types are encoded on first use.
PREENCODED = ("A", "AAAA", "NS", "SOA", "PTR", "SRV", "TXT", "MX", "CNAME", "HTTPS", "ANY")
#: Largest UDP answer we send (DNS flag day 2020); larger answers are truncated (TC).
MAX_UDP = 1232
#: Templates built on demand (other types, NXDOMAIN names) are cached up to this many.
CACHE_LIMIT = 20000

_CLASS_IN = b"\x00\x01"
_QD1 = b"\x00\x01\x00\x00\x00\x00"          # qdcount 1, ancount 0, nscount 0
_AR1 = b"\x00\x01"
_AR0 = b"\x00\x00"
_OPT_HEAD = b"\x00\x00\x29"                  # root owner name + type OPT
_OPT = (b"\x00\x00\x29" + struct.pack(">HBBHH", MAX_UDP, 0, 0, 0, 0),
        b"\x00\x00\x29" + struct.pack(">HBBHH", MAX_UDP, 0, 0, 0x8000, 0))
#: Bytes 2-11 of the header of a *plain* query — what stub resolvers send: RD set, AD clear
#: or set, one question, nothing else.  The answers to those are looked up whole, see
#: :attr:`Answers.plain`.
_PLAIN_HEADS = (b"\x01\x00" + _QD1 + _AR0, b"\x01\x20" + _QD1 + _AR0)


class Template:
    """A pre-encoded response for one (qname, qtype): see the module docstring."""

    __slots__ = ("flags", "counts", "counts_edns", "body", "length", "rcode", "info", "logtext",
                 "logcode")

    def __init__(self, rcode: int, ancount: int, nscount: int, body: bytes, qlen: int,
                 ra: bool, info: tuple[str, str, str]) -> None:
        b3 = (0x80 if ra else 0) | (rcode & 0x0F)
        # index: RD bit of the query | CD bit of the query << 1
        self.flags = tuple(bytes((0x84 | (i & 1), b3 | (0x10 if i & 2 else 0))) for i in range(4))
        self.counts = struct.pack(">HHHH", 1, ancount, nscount, 0)
        self.counts_edns = struct.pack(">HHHH", 1, ancount, nscount, 1)
        self.body = body
        self.length = 12 + qlen + len(body)
        self.rcode = rcode
        self.info = info
        self.logtext = "\t".join(info)          # name, type, rcode as the query log writes them
        self.logcode = text_code(self.logtext)  # its number in the query log's text table


# ------------------------------------------------------------------------------ names
def name_to_wire(name: str) -> bytes:
    """``web.hybrid.local.`` → ``\\x03web\\x06hybrid\\x05local\\x00`` (lowercased)."""
    out = bytearray()
    for label in name.lower().rstrip(".").split("."):
        if label:
            raw = label.encode("ascii")
            out.append(len(raw))
            out += raw
    out.append(0)
    return bytes(out)


def wire_labels(wire: bytes) -> list[bytes]:
    """Labels of an uncompressed, already validated wire name."""
    out, i = [], 0
    while wire[i]:
        out.append(wire[i + 1:i + 1 + wire[i]])
        i += 1 + wire[i]
    return out


def wire_to_text(wire: bytes) -> str:
    """Presentation form of a validated wire name; odd bytes escaped as ``\\DDD``."""
    parts = []
    for label in wire_labels(wire):
        parts.append("".join(chr(c) if 0x21 <= c <= 0x7E and c not in (0x2E, 0x5C)
                             else f"\\{c:03d}" for c in label))
    return ".".join(parts) + "."


_HOSTCHARS = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-_")


def type_name(qtype: int) -> str:
    return TYPE_NAMES.get(qtype, f"TYPE{qtype}")


# ------------------------------------------------------------------------- templates
def encode_rdata(rec: Any) -> bytes:
    """RDATA of one zone record, encoded by dnslib (names uncompressed)."""
    from dnslib import NS, PTR, SOA, SRV, A, DNSBuffer

    d = rec.data
    if rec.rtype == "A":
        rdata = A(d[0])
    elif rec.rtype == "PTR":
        rdata = PTR(d[0])
    elif rec.rtype == "NS":
        rdata = NS(d[0])
    elif rec.rtype == "SRV":
        rdata = SRV(priority=d[0], weight=d[1], port=d[2], target=d[3])
    elif rec.rtype == "SOA":
        rdata = SOA(d[0], d[1], tuple(d[2:7]))
    else:  # pragma: no cover - the zone only makes the types above
        raise ValueError(f"cannot encode {rec.rtype}")
    buf = DNSBuffer()
    buf.encode_name = buf.encode_name_nocompress  # type: ignore[method-assign]  # standalone
    rdata.pack(buf)
    return bytes(buf.data)


def _owner(name: bytes, qname: bytes) -> bytes:
    """An owner name as a pointer into the question when it is a suffix of the qname (so it
    carries the client's case), else in full."""
    i = 0
    while True:
        if qname[i:] == name:
            return struct.pack(">H", 0xC000 | (12 + i))
        if not qname[i]:
            return name
        i += 1 + qname[i]


def encode_template(lookup: "Lookup", qname: bytes, qtype: int, ra: bool,
                    rdata: dict[Any, bytes] | None = None) -> Template:
    """Encode one authoritative answer; ``qname`` is the lowercased wire question name.
    ``rdata`` caches encoded RDATA per record across templates."""
    rdata = {} if rdata is None else rdata
    parts = []
    for rec in lookup.answer + lookup.authority:
        rd = rdata.get(rec)
        if rd is None:
            rd = rdata[rec] = encode_rdata(rec)
        parts.append(_owner(name_to_wire(rec.name), qname)
                     + struct.pack(">HHIH", QTYPES[rec.rtype], 1, rec.ttl, len(rd)) + rd)
    info = (wire_to_text(qname), type_name(qtype), lookup.rcode)
    return Template(RCODES[lookup.rcode], len(lookup.answer), len(lookup.authority),
                    b"".join(parts), len(qname) + 4, ra, info)


class Answers:
    """Every pre-encoded answer of one zone, plus the origin test for other names.

    ``table`` maps qtype+qclass bytes → lowercased wire qname → :class:`Template`.
    ``plain`` maps a whole plain query minus its ID (``data[2:]``: header flags and counts,
    the question exactly as a lowercase client sends it) → (the whole answer minus the ID,
    the query log's text code and text), for every template that fits in 512 bytes: the
    commonest query is answered with one slice, one dictionary lookup and one concatenation.
    """

    def __init__(self, zone: "Zone", *, ra: bool | None = None) -> None:
        self.zone = zone
        self.ra = bool(zone.upstream) if ra is None else ra
        self.origins = {name_to_wire(o): o for o in zone.origins}
        self.table: dict[bytes, dict[bytes, Template]] = {}
        self.plain: dict[bytes, tuple[bytes, float, str]] = {}
        self.cached = 0
        self._rdata: dict[Any, bytes] = {}
        for name in sorted(self._all_names()):
            wire = name_to_wire(name)
            for t in PREENCODED:
                self._put(wire, QTYPES[t], self._build(wire, name, QTYPES[t]))

    def _all_names(self) -> set[str]:
        names = set(self.zone.names())
        for name in list(names):                    # empty non-terminals answer NODATA
            origin = self.zone.origin_of(name)
            while name != origin:
                names.add(name)
                name = name.split(".", 1)[1]
        return names

    def _put(self, qname: bytes, qtype: int, t: Template) -> None:
        qtail = struct.pack(">HH", qtype, 1)
        self.table.setdefault(qtail, {})[qname] = t
        if t.length <= 512:
            question = qname + qtail
            hit = (t.flags[1] + t.counts + question + t.body, t.logcode, t.logtext)  # RD
            for head in _PLAIN_HEADS:
                self.plain[head + question] = hit

    def _build(self, qname: bytes, text: str | None, qtype: int) -> Template:
        from hybridnb.core.dnszone import Lookup

        origin = self.origin(qname)
        assert origin is not None
        if text is None:
            labels = wire_labels(qname)
            if all(c in _HOSTCHARS for lb in labels for c in lb):
                text = ".".join(lb.decode() for lb in labels) + "."
        lookup = self.zone.lookup(text, type_name(qtype)) if text is not None else None
        if lookup is None:  # a label no zone name can have: the name cannot exist
            lookup = Lookup("NXDOMAIN", (), (self.zone.soa(origin),))
        return encode_template(lookup, qname, qtype, self.ra, self._rdata)

    def origin(self, qname: bytes) -> str | None:
        """The zone origin a (lowercased, validated) wire name belongs to, or ``None``."""
        i = 0
        while True:
            hit = self.origins.get(qname[i:])
            if hit is not None:
                return hit
            if not qname[i]:
                return None
            i += 1 + qname[i]

    def template(self, qname: bytes, qtype: int) -> Template | None:
        """The answer for an in-zone question (built and cached on first use); ``None`` for
        names outside the lab's zones."""
        by_type = self.table.get(struct.pack(">HH", qtype, 1))
        t = by_type.get(qname) if by_type else None
        if t is not None:
            return t
        if self.origin(qname) is None:
            return None
        t = self._build(qname, None, qtype)
        if self.cached < CACHE_LIMIT:
            self.cached += 1
            self._put(qname, qtype, t)
        return t


# ------------------------------------------------------------------------- hot path
def plain_answer(plain: dict[bytes, tuple[bytes, float, str]],
                 data: bytes) -> tuple[bytes, str] | None:
    """Answer a plain query (see :attr:`Answers.plain`) and its log text, or ``None``.  An
    exact hit proves the query well-formed: every key is a well-formed query."""
    hit = plain.get(data[2:])
    if hit is None:
        return None
    return data[:2] + hit[0], hit[2]


def fast_answer(table: dict[bytes, dict[bytes, Template]], data: bytes
                ) -> tuple[bytes, Template] | None:
    """Answer a plain query from the table, or ``None`` (then use :func:`slow_answer`)."""
    n = len(data)
    if n < 17 or data[2] & 0xFA or data[4:10] != _QD1:
        return None
    ar = data[10:12]
    if ar == _AR0:
        qe = n
        opt = None
        limit = 512
    elif ar == _AR1 and n >= 28 and data[n - 11:n - 8] == _OPT_HEAD \
            and data[n - 2:] == _AR0 and not data[n - 5]:
        qe = n - 11
        payload = (data[n - 8] << 8) | data[n - 7]
        limit = MAX_UDP if payload >= MAX_UDP else (payload if payload > 512 else 512)
        opt = _OPT[data[n - 4] >> 7]
    else:
        return None
    by_type = table.get(data[qe - 4:qe])
    if by_type is None:
        return None
    t = by_type.get(data[12:qe - 4].lower())
    if t is None:
        return None
    flags = t.flags[(data[2] & 1) | ((data[3] & 0x10) >> 3)]
    if opt is None:
        if t.length > limit:
            return None
        return data[:2] + flags + t.counts + data[12:qe] + t.body, t
    if t.length + 11 > limit:
        return None
    return b"".join((data[:2], flags, t.counts_edns, data[12:qe], t.body, opt)), t


# ------------------------------------------------------------------------- slow path
@dataclass(frozen=True)
class Reply:
    """What the slow path decided: ``wire`` to send (``None``: send nothing), the log fields,
    and ``forward`` when the question is outside the lab and should go upstream (then
    ``wire`` is the SERVFAIL to send if no upstream answers in time)."""

    wire: bytes | None
    name: str = ""
    qtype: str = ""
    rcode: str = ""
    forward: bool = False


class _Bad(Exception):
    pass


def _skip_name(data: bytes, i: int) -> int:
    """Offset after a (possibly compressed) name starting at ``i``; never follows pointers."""
    n = len(data)
    while True:
        if i >= n:
            raise _Bad
        c = data[i]
        if c == 0:
            return i + 1
        if c & 0xC0 == 0xC0:
            if i + 2 > n:
                raise _Bad
            return i + 2
        if c & 0xC0:
            raise _Bad                       # 0x40/0x80 label types are obsolete
        i += 1 + c


def _header(data: bytes, rcode: int, *, tc: bool = False, qd: int = 0, an: int = 0,
            ns: int = 0, ar: int = 0, aa: bool = False) -> bytes:
    b2 = 0x80 | (data[2] & 0x79) | (0x04 if aa else 0) | (0x02 if tc else 0)
    b3 = (data[3] & 0x10) | (rcode & 0x0F)
    return data[:2] + bytes((b2, b3)) + struct.pack(">HHHH", qd, an, ns, ar)


def _opt(do: bool, rcode: int = 0) -> bytes:
    return b"\x00\x00\x29" + struct.pack(">HBBHH", MAX_UDP, rcode >> 4, 0,
                                         0x8000 if do else 0, 0)


def slow_answer(answers: Answers, data: bytes, *, tcp: bool = False,
                allowed: bool = True) -> Reply:
    """Strictly parse any packet and decide the reply.  Never raises.  A client that is not
    ``allowed`` gets REFUSED for every well-formed query (the reply is never larger than
    the query: no amplification)."""
    n = len(data)
    if n < 12 or data[2] & 0x80:             # too short to answer, or a response: drop
        return Reply(None, rcode="DROP")
    opcode = (data[2] >> 3) & 0x0F
    if opcode != 0:
        return Reply(_header(data, RCODES["NOTIMP"]), rcode="NOTIMP")
    qd, an, ns, ar = struct.unpack_from(">HHHH", data, 4)
    if qd != 1 or an or ns:
        return Reply(_header(data, RCODES["FORMERR"]), rcode="FORMERR")
    try:
        # question: uncompressed labels only (a pointer here could only point at the header)
        i = 12
        while True:
            if i >= n:
                raise _Bad
            c = data[i]
            if c == 0:
                break
            if c > 63:
                raise _Bad
            i += 1 + c
        if i + 1 - 12 > 255 or i + 5 > n:
            raise _Bad
        qname_end = i + 1
        qend = qname_end + 4
        qtype, qclass = struct.unpack_from(">HH", data, qname_end)
        edns: tuple[int, int, bool] | None = None      # (payload, version, do)
        j = qend
        for _ in range(ar):
            owner = j
            j = _skip_name(data, j)
            if j + 10 > n:
                raise _Bad
            rtype, rclass, ttl, rdlen = struct.unpack_from(">HHIH", data, j)
            j += 10 + rdlen
            if j > n:
                raise _Bad
            if rtype == 41:
                if edns is not None or data[owner] != 0:
                    raise _Bad
                edns = (rclass, (ttl >> 16) & 0xFF, bool(ttl & 0x8000))
    except _Bad:
        return Reply(_header(data, RCODES["FORMERR"]), rcode="FORMERR")
    except Exception:  # pragma: no cover - defensive: parsing must never kill the server
        return Reply(_header(data, RCODES["FORMERR"]), rcode="FORMERR")

    question = data[12:qend]
    qname = data[12:qname_end].lower()
    name, tname = wire_to_text(qname), type_name(qtype)
    opt = b""
    if edns is not None:
        if edns[1] != 0:
            wire = _header(data, 0, qd=1, ar=1) + question + _opt(edns[2], RCODES["BADVERS"])
            return Reply(wire, name, tname, "BADVERS")
        opt = _opt(edns[2])
    arc = 1 if opt else 0

    def refuse(rcode: str) -> Reply:
        return Reply(_header(data, RCODES[rcode], qd=1, ar=arc) + question + opt,
                     name, tname, rcode)

    if not allowed:
        return refuse("REFUSED")
    if qtype == 41:
        return refuse("FORMERR")
    if qclass != 1:
        return refuse("REFUSED")
    if qtype in (251, 252):                 # zone transfers are not offered
        return refuse("REFUSED")
    try:
        t = answers.template(qname, qtype)
    except Exception:  # pragma: no cover - defensive
        return refuse("SERVFAIL")
    if t is None:
        if answers.zone.upstream:       # wire: the SERVFAIL to send if no upstream answers
            return Reply(refuse("SERVFAIL").wire, name, tname, "FWD", forward=True)
        return refuse("REFUSED")
    if tcp:
        limit = 65535
    elif edns is not None:
        limit = min(max(edns[0], 512), MAX_UDP)
    else:
        limit = 512
    flags = t.flags[(data[2] & 1) | ((data[3] & 0x10) >> 3)]
    if t.length + len(opt) > limit:
        b2 = flags[0] | 0x02                # TC: retry over TCP
        wire = data[:2] + bytes((b2, flags[1])) + struct.pack(">HHHH", 1, 0, 0, arc) \
            + question + opt
        return Reply(wire, name, tname, t.info[2] + "+TC")
    counts = t.counts_edns if opt else t.counts
    return Reply(b"".join((data[:2], flags, counts, question, t.body, opt)), name, tname,
                 t.info[2])


def answer(answers: Answers, data: bytes, *, tcp: bool = False) -> Reply:
    """Fast path if it applies, else the slow path (used by TCP and tests)."""
    data = bytes(data)
    if not tcp:
        plain = plain_answer(answers.plain, data)
        if plain is not None:
            return Reply(plain[0], *plain[1].split("\t"))
        hit = fast_answer(answers.table, data)
        if hit is not None:
            wire, t = hit
            return Reply(wire, t.info[0], t.info[1], t.info[2])
    return slow_answer(answers, data, tcp=tcp)
