"""DNS wire format for the lab's name server: pre-encoded answers and a tiny hot path.

Every answer the zone can give is encoded once (with dnslib) into a :class:`Template`, keyed by
``(qtype+qclass bytes, lowercased qname wire bytes)``.  A template stores the response *minus*
the parts that depend on the query: the ID, the RD/CD bits (copied from the query), the
question (copied byte for byte, so the client's letter case is preserved; the answers'
compression pointers point at it, so they inherit that case too) and the EDNS OPT record.

:func:`answer_batch` is the hot path: it answers a whole batch of queries (what one
``recvmmsg`` returned) from the templates.  A *plain* query (RD set, no EDNS, lowercase name:
what stub resolvers send) is one dictionary hit on the query minus its ID
(:attr:`Answers.plain` holds the whole answer minus the ID).  Any other query is answered
when its header is an ordinary query's, the first zero byte after the header ends a name of
the table — a dictionary hit on that exact slice proves it a well-formed name (keys are
well-formed names, and lowercasing cannot turn a length byte into a letter), so the qname is
never walked — and what follows is nothing or one EDNS0 OPT record that runs to the end of
the packet (its options, such as dig's COOKIE, ignored).  Anything else — other opcodes,
extra sections, names not in the table, answers that do not fit — goes to
:func:`slow_answer`, a strict bounds-checked parser that answers FORMERR/NOTIMP/REFUSED/BADVERS
where the RFCs say so, truncates (TC) what does not fit in UDP, and signals out-of-zone
questions for forwarding.  Neither path raises on any input, and where both answer they
answer byte for byte the same (the fuzz tests check it).

dnslib is imported lazily, only to build templates.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

from hybridnb.daemons.dns.querylog import CLIENT_UNIT, text_code, text_of

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


class LogInfo(NamedTuple):
    """How the query log names an answer: question name, type and answer code."""

    name: str
    type: str
    rcode: str


class Plain(NamedTuple):
    """The whole answer to a plain query minus its ID, and its query log code and text."""

    answer: bytes
    logcode: float
    logtext: str


class Template:
    """A pre-encoded response for one (qname, qtype): see the module docstring."""

    __slots__ = ("flags", "counts", "counts_edns", "body", "length", "rcode", "info", "logtext",
                 "logcode")

    def __init__(self, rcode: int, ancount: int, nscount: int, body: bytes, qlen: int,
                 ra: bool, info: LogInfo) -> None:
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
    info = LogInfo(wire_to_text(qname), type_name(qtype), lookup.rcode)
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
        self.plain: dict[bytes, Plain] = {}
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
            hit = Plain(t.flags[1] + t.counts + question + t.body, t.logcode, t.logtext)  # RD
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
def plain_answer(plain: dict[bytes, Plain], data: bytes) -> tuple[bytes, str] | None:
    """Answer a plain query (see :attr:`Answers.plain`) and its log text, or ``None``.  An
    exact hit proves the query well-formed: every key is a well-formed query."""
    hit = plain.get(data[2:])
    if hit is None:
        return None
    return data[:2] + hit.answer, hit.logtext


def answer_batch(answers: Answers, acl: dict[str, float], datas: Sequence[bytes],
                 ips: Sequence[str], codes: list[float]) -> tuple[list[bytes | None], list[int]]:
    """The hot path: answer every query of a batch that a template answers as it stands.

    Returns the replies (``replies[i]`` answers ``datas[i]``) and the positions left to the
    slow path (their reply is ``None`` here).  ``acl`` maps a sender's address to its query
    log code (nonzero: allowed; see :meth:`QueryLog.client_code`); a sender not in it goes to
    the slow path, which decides.  For every answered query the log code of the client plus
    the template's text is appended to ``codes``.

    Two lookups, cheapest first.  A *plain* query (RD, no EDNS, lowercase name) is one
    dictionary hit on the query minus its ID.  Otherwise the header must say: a query,
    opcode 0, not truncated, one question, no answer or authority records; the first zero
    byte after the header must end a name of the table (keys are well-formed names, and
    lowercasing cannot turn a length byte into a letter, so a hit proves the question well
    formed and ends it there, exactly where the slow path's label walk ends); and then comes
    either nothing, or exactly one OPT record of EDNS version 0 with a root owner whose
    RDATA runs to the end of the packet (options, e.g. dig's COOKIE, are ignored, as the slow
    path ignores them: a server without cookie support answers without one, RFC 7873 5.2).
    What does not fit the client's UDP size goes to the slow path, which truncates.
    Everything else goes to the slow path too, so both agree byte for byte (the fuzz tests
    check it).  One function for the whole batch, with :class:`Template` attributes and the
    rest inlined: per query this is a handful of byte comparisons and two dictionary hits,
    and a call or a result object per query would be a measurable share of it.
    """
    plain, table = answers.plain, answers.table
    replies: list[bytes | None] = []
    reply = replies.append
    slow: list[int] = []
    code = codes.append
    for i, data in enumerate(datas):
        ok = acl.get(ips[i])
        if ok:
            hit = plain.get(data[2:])
            if hit is not None:
                code(ok + hit.logcode)
                reply(data[:2] + hit.answer)
                continue
            n = len(data)
            if n >= 17 and not data[2] & 0xFA and data[4:10] == _QD1:
                # -1 (no zero byte) makes a 0-byte name, which no table key is
                z = data.find(b"\x00", 12) + 1
                by_type = table.get(data[z:z + 4])
                t = by_type.get(data[12:z].lower()) if by_type else None
                if t is not None:
                    qe = z + 4
                    ar = data[10:12]
                    if ar == _AR0:
                        if qe == n and t.length <= 512:
                            code(ok + t.logcode)
                            reply(data[:2] + t.flags[(data[2] & 1) | ((data[3] & 0x10) >> 3)]
                                  + t.counts + data[12:] + t.body)
                            continue
                    elif ar == _AR1 and n >= qe + 11 and data[qe:qe + 3] == _OPT_HEAD \
                            and not data[qe + 6] \
                            and n - qe - 11 == (data[qe + 9] << 8) | data[qe + 10]:
                        payload = (data[qe + 3] << 8) | data[qe + 4]
                        if t.length + 11 <= (MAX_UDP if payload >= MAX_UDP else
                                             payload if payload > 512 else 512):
                            code(ok + t.logcode)
                            reply(b"".join((data[:2],
                                            t.flags[(data[2] & 1) | ((data[3] & 0x10) >> 3)],
                                            t.counts_edns, data[12:qe], t.body,
                                            _OPT[data[qe + 7] >> 7])))
                            continue
        slow.append(i)
        reply(None)
    return replies, slow


_ONE_CLIENT = {"": CLIENT_UNIT}


def fast_answer(answers: Answers, data: bytes) -> tuple[bytes, str] | None:
    """:func:`answer_batch` for one query from an allowed client: the answer and its log
    text (``"name\ttype\trcode"``), or ``None`` (then use :func:`slow_answer`)."""
    codes: list[float] = []
    replies, _ = answer_batch(answers, _ONE_CLIENT, (data,), ("",), codes)
    out = replies[0]
    if out is None:
        return None
    return out, text_of(codes[0] - CLIENT_UNIT)


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


class Edns(NamedTuple):
    """The EDNS OPT record of a query: the client's UDP payload size, version, DO bit."""

    payload: int
    version: int
    do: bool


class Question(NamedTuple):
    """A strictly parsed query: the question's bytes as sent, its name lowercased (wire
    form), type, class and the query's EDNS record if it has one."""

    question: bytes
    qname: bytes
    qtype: int
    qclass: int
    edns: Edns | None


def _question_end(data: bytes) -> int:
    """Offset just past the question's name: uncompressed labels only (a pointer here could
    only point at the header), 255 bytes at most, and room for type and class after it."""
    n = len(data)
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
    return i + 1


def _additional(data: bytes, j: int, count: int) -> Edns | None:
    """Walk ``count`` additional records from offset ``j``; the OPT record among them (at
    most one, with the root as owner)."""
    n = len(data)
    edns: Edns | None = None
    for _ in range(count):
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
            edns = Edns(rclass, (ttl >> 16) & 0xFF, bool(ttl & 0x8000))
    return edns


def parse_query(data: bytes) -> Question:
    """Strictly parse a query whose header :func:`slow_answer` accepted (one question, no
    answer or authority records); raises ``_Bad`` for anything malformed."""
    qname_end = _question_end(data)
    qend = qname_end + 4
    qtype, qclass = struct.unpack_from(">HH", data, qname_end)
    edns = _additional(data, qend, struct.unpack_from(">H", data, 10)[0])
    return Question(data[12:qend], data[12:qname_end].lower(), qtype, qclass, edns)


def _header_reply(data: bytes) -> Reply | None:
    """The reply a query's header alone decides (drop, NOTIMP, FORMERR), else ``None``."""
    if len(data) < 12 or data[2] & 0x80:     # too short to answer, or a response: drop
        return Reply(None, rcode="DROP")
    if (data[2] >> 3) & 0x0F != 0:
        return Reply(_header(data, RCODES["NOTIMP"]), rcode="NOTIMP")
    qd, an, ns = struct.unpack_from(">HHH", data, 4)
    if qd != 1 or an or ns:
        return Reply(_header(data, RCODES["FORMERR"]), rcode="FORMERR")
    return None


def slow_answer(answers: Answers, data: bytes, *, tcp: bool = False,
                allowed: bool = True) -> Reply:
    """Strictly parse any packet and decide the reply.  Never raises.  A client that is not
    ``allowed`` gets REFUSED for every well-formed query (the reply is never larger than
    the query: no amplification)."""
    early = _header_reply(data)
    if early is not None:
        return early
    try:
        q = parse_query(data)
    except Exception:  # noqa: BLE001 - _Bad, or anything else: parsing must never kill us
        return Reply(_header(data, RCODES["FORMERR"]), rcode="FORMERR")
    name, tname = wire_to_text(q.qname), type_name(q.qtype)
    if q.edns is not None and q.edns.version != 0:
        wire = _header(data, 0, qd=1, ar=1) + q.question + _opt(q.edns.do, RCODES["BADVERS"])
        return Reply(wire, name, tname, "BADVERS")
    opt = _opt(q.edns.do) if q.edns is not None else b""

    def refuse(rcode: str) -> Reply:
        return Reply(_header(data, RCODES[rcode], qd=1, ar=1 if opt else 0) + q.question + opt,
                     name, tname, rcode)

    if not allowed or q.qclass != 1 or q.qtype in (251, 252):   # no zone transfers
        return refuse("REFUSED")
    if q.qtype == 41:
        return refuse("FORMERR")
    try:
        t = answers.template(q.qname, q.qtype)
    except Exception:  # pragma: no cover - defensive
        return refuse("SERVFAIL")
    if t is None:
        if answers.zone.upstream:       # wire: the SERVFAIL to send if no upstream answers
            return Reply(refuse("SERVFAIL").wire, name, tname, "FWD", forward=True)
        return refuse("REFUSED")
    return _from_template(data, q, t, opt, tcp)


def _from_template(data: bytes, q: Question, t: Template, opt: bytes, tcp: bool) -> Reply:
    """The answer a template gives to a query, truncated (TC) if it does not fit."""
    if tcp:
        limit = 65535
    elif q.edns is not None:
        limit = min(max(q.edns.payload, 512), MAX_UDP)
    else:
        limit = 512
    flags = t.flags[(data[2] & 1) | ((data[3] & 0x10) >> 3)]
    arc = 1 if opt else 0
    if t.length + len(opt) > limit:
        b2 = flags[0] | 0x02                # TC: retry over TCP
        wire = data[:2] + bytes((b2, flags[1])) + struct.pack(">HHHH", 1, 0, 0, arc) \
            + q.question + opt
        return Reply(wire, t.info.name, t.info.type, t.info.rcode + "+TC")
    counts = t.counts_edns if opt else t.counts
    return Reply(b"".join((data[:2], flags, counts, q.question, t.body, opt)), t.info.name,
                 t.info.type, t.info.rcode)


def answer(answers: Answers, data: bytes, *, tcp: bool = False) -> Reply:
    """Fast path if it applies, else the slow path (used by TCP and tests)."""
    data = bytes(data)
    if not tcp:
        hit = fast_answer(answers, data)
        if hit is not None:
            return Reply(hit[0], *hit[1].split("\t"))
    return slow_answer(answers, data, tcp=tcp)
