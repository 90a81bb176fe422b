"""Probing from inside an endpoint the engine cannot enter: one shell script per source.

A VM's network stack is out of this process's reach, so a VM source probes with a POSIX shell
script that its :class:`~hybridnb.services.probe.endpoint.Executor` runs inside the guest
(qemu-guest-agent ``guest-exec`` for libvirt domains).  The script uses only what a minimal
busybox guest has (a recipe VM keeps busybox's applets in ``/usr/lib/hybridnb/probe``, which
the script puts first on its ``PATH``) — ``ping``, ``nc`` (the small variant: no ``-z``, no ``-u``), ``nslookup``,
``awk`` and ``timeout`` — starts every probe as a background job so that they run
concurrently (one timeout for all), and prints one line per pair::

    R <index> ok|fail|skip <rtt ms,rtt ms,...|-> <detail or reason>

Busybox has no datagram client, so UDP uses :data:`UDP_HELPER` (``hnb-udp``, a small static
program the test VM image carries, see ``hybridnb/images/guest/hnb-udp.c``): ``hnb-udp probe
ADDR PORT COUNT TIMEOUT_MS`` prints ``reply SEQ RTT_US`` / ``timeout SEQ`` / ``refused SEQ``
/ ``error SEQ TEXT`` lines, which the script folds into its ``R`` line.  A guest without the
helper reports its UDP pairs as skipped.

:func:`build_script` writes it, :func:`parse_output` reads it back, :func:`run_script` is what
the engine calls: it takes planned pairs (:class:`~hybridnb.services.probe.plan.PairSpec`) and
returns their results, touching nothing of the engine's.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from typing import NamedTuple, Sequence

from hybridnb.services.probe.endpoint import ProbeEndpoint
from hybridnb.services.probe.matrix import ProbeResult
from hybridnb.services.probe.plan import PairSpec

#: Where the UDP helper lives in the guest (the test VM image installs it there).
UDP_HELPER = "/bin/hnb-udp"
#: Why UDP from a guest without the helper is skipped ({} is the helper's path).
NO_UDP_HELPER = ("UDP probes need {} in the guest (rebuild the test VM image: "
                 "hybridnb images build)")

_PRELUDE = r"""
[ -d /usr/lib/hybridnb/probe ] && PATH=/usr/lib/hybridnb/probe:$PATH
T=%(t)d
TM=%(tm)d
C=%(c)d
W=%(w)d
U=%(u)s
NOU=%(nou)s
rs() { tr '\n' ',' | sed 's/,$//'; }
fail_reason() {
  case "$1" in
    *refused*) echo refused ;;
    *"timed out"*|*imeout*) echo timeout ;;
    *"No route"*|*"unreachable"*) echo "host unreachable" ;;
    *"Network is unreachable"*) echo "network unreachable" ;;
    *) echo "$1" | head -n1 | tr -s ' ' | cut -c1-60 ;;
  esac
}
p_icmp() {
  o=$(ping -c "$C" -i 0.2 -W "$T" -w "$W" "$2" 2>&1)
  r=$(echo "$o" | sed -n 's/.*time[=<]\([0-9.]*\).*/\1/p' | rs)
  if [ -n "$r" ]; then echo "R $1 ok $r -"; else echo "R $1 fail - timeout"; fi
}
p_tcp() {
  o=$(timeout "$W" nc -w "$T" "$2" "$3" </dev/null 2>&1 >/dev/null)
  case "$o" in
    *"can't connect"*|*"nc:"*) echo "R $1 fail - $(fail_reason "$o")" ;;
    *) echo "R $1 ok - -" ;;
  esac
}
p_http() {
  o=$(printf 'GET / HTTP/1.0\r\nHost: %%s\r\nConnection: close\r\n\r\n' "$4" |
      timeout "$W" nc -w "$T" "$2" "$3" 2>&1 | head -n1 | tr -d '\r')
  case "$o" in
    HTTP/*) s=$(echo "$o" | cut -d' ' -f2)
            if [ "$s" -lt 400 ] 2>/dev/null; then echo "R $1 ok - HTTP_$s";
            else echo "R $1 fail - HTTP_$s"; fi ;;
    *"can't connect"*|*"nc:"*) echo "R $1 fail - $(fail_reason "$o")" ;;
    "") echo "R $1 fail - timeout" ;;
    *) echo "R $1 fail - not_an_HTTP_response" ;;
  esac
}
p_udp() {
  if [ ! -x "$U" ]; then echo "R $1 skip - $NOU"; return; fi
  o=$(timeout "$W" "$U" probe "$2" "$3" "$C" "$TM" 2>&1)
  r=$(echo "$o" | awk '$1 == "reply" { printf "%%s%%.3f", s, $3 / 1000; s = "," }')
  if [ -n "$r" ]; then echo "R $1 ok $r -"; return; fi
  case "$o" in
    *refused*) echo "R $1 fail - refused (port unreachable)" ;;
    *timeout*) echo "R $1 fail - timeout" ;;
    *error*) e=$(echo "$o" | sed -n 's/^error [-0-9]* //p' | head -n1 | cut -c1-60)
             echo "R $1 fail - ${e:-error}" ;;
    "") echo "R $1 fail - timeout" ;;
    *) echo "R $1 fail - $(fail_reason "$o")" ;;
  esac
}
p_dns() {
  o=$(timeout "$W" nslookup "$3" "$2" 2>&1)
  if echo "$o" | sed -n '/^Name:/,$p' | grep -qw "$4"; then echo "R $1 ok - $4";
  elif echo "$o" | grep -qi "NXDOMAIN\|can't find"; then echo "R $1 fail - NXDOMAIN";
  elif echo "$o" | grep -qi "timed out\|no servers"; then echo "R $1 fail - timeout";
  else echo "R $1 fail - no_matching_A_record"; fi
}
"""

_LINE = re.compile(r"^R (\d+) (ok|fail|skip) (\S+) (.*)$")


@dataclass(frozen=True)
class ScriptProbe:
    """One pair as the script sees it."""

    index: int
    protocol: str
    address: str
    port: int | None = None
    name: str = ""          # HTTP Host / DNS query name
    expected: str = ""      # DNS: the expected address


def build_script(probes: Sequence[ScriptProbe], *, timeout: float, count: int,
                 udp_helper: str = UDP_HELPER) -> str:
    t = max(1, math.ceil(timeout))
    w = t + math.ceil(0.2 * count) + 1
    q = shlex.quote
    lines = [_PRELUDE % {"t": t, "tm": max(1, round(timeout * 1000)), "c": count, "w": w,
                         "u": q(udp_helper),
                         "nou": q(NO_UDP_HELPER.format(udp_helper))}]
    for p in probes:
        if p.protocol == "icmp":
            lines.append(f"p_icmp {p.index} {q(p.address)} &")
        elif p.protocol == "tcp":
            lines.append(f"p_tcp {p.index} {q(p.address)} {p.port} &")
        elif p.protocol == "udp":
            lines.append(f"p_udp {p.index} {q(p.address)} {p.port} &")
        elif p.protocol == "http":
            lines.append(f"p_http {p.index} {q(p.address)} {p.port} {q(p.name)} &")
        elif p.protocol == "dns":
            lines.append(f"p_dns {p.index} {q(p.address)} {q(p.name)} {q(p.expected)} &")
    lines.append("wait")
    return "\n".join(lines) + "\n"


class ScriptLine(NamedTuple):
    """One ``R`` line of the script's output."""

    ok: bool | None                 # None: the guest could not attempt it
    rtts: tuple[float, ...]         # seconds
    note: str                       # detail when ok, reason when not


def parse_output(text: str) -> dict[int, ScriptLine]:
    """``{index: ScriptLine(ok, rtts in seconds, detail-or-reason)}`` from the script's
    output."""
    out: dict[int, ScriptLine] = {}
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        rtts: tuple[float, ...] = ()
        if m.group(3) != "-":
            try:
                rtts = tuple(float(x) / 1000.0 for x in m.group(3).split(",") if x)
            except ValueError:
                rtts = ()
        note = m.group(4).strip()
        verdict = m.group(2)
        out[int(m.group(1))] = ScriptLine(None if verdict == "skip" else verdict == "ok", rtts,
                                          "" if note == "-" else note.replace("_", " "))
    return out


def _result(pair: PairSpec, got: ScriptLine | None, count: int, tail: str) -> ProbeResult:
    sent = count if pair.protocol in ("icmp", "udp") else 1
    name, src, dst = pair.check.name, pair.src.name, pair.dst.name
    if got is None:
        return ProbeResult(name, src, dst, False, f"no result from the probe script ({tail})",
                           sent=sent, port=pair.port, address=pair.address)
    if got.ok is None:
        return ProbeResult(name, src, dst, None, got.note or "skipped", port=pair.port,
                           address=pair.address)
    received = len(got.rtts) if pair.protocol in ("icmp", "udp") else int(got.ok)
    return ProbeResult(name, src, dst, got.ok, "" if got.ok else (got.note or "failed"),
                       rtts=got.rtts, sent=sent, received=received, port=pair.port,
                       address=pair.address, detail=got.note if got.ok else "")


def run_script(src: ProbeEndpoint, pairs: Sequence[PairSpec], *, timeout: float, count: int,
               domain: str) -> dict[int, ProbeResult]:
    """Probe ``pairs`` (all from the executor source ``src``) with one script run inside it;
    returns each pair's result by its plan index."""
    if not pairs:
        return {}
    assert src.executor is not None
    domain = domain.strip(".")
    probes = [ScriptProbe(i, p.protocol, p.address, p.port,
                          name=f"{p.dst.name}.{domain}" if p.dst.kind != "gateway" else p.address,
                          expected=p.dst.address if p.protocol == "dns" else "")
              for i, p in enumerate(pairs)]
    script = build_script(probes, timeout=timeout, count=count, udp_helper=UDP_HELPER)
    limit = timeout + 0.2 * count + 10.0
    try:
        rc, stdout, stderr = src.executor(["/bin/sh", "-c", script], limit)
    except Exception as exc:   # the executor's own errors become a reason on every pair
        why = f"cannot run probes in {src.name}: {exc}".splitlines()[0]
        return {p.index: ProbeResult(p.check.name, src.name, p.dst.name, False, why,
                                     port=p.port, address=p.address) for p in pairs}
    parsed = parse_output(stdout)
    tail = ((stderr or stdout).strip().splitlines()[-1:] or [f"exit {rc}"])[0][:80]
    return {p.index: _result(p, parsed.get(i), count, tail) for i, p in enumerate(pairs)}
