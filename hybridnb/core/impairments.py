"""Link impairments per endpoint: delay, jitter, loss, rate and MTU, parsed strictly.

A lab file's ``links:`` section degrades an endpoint's link to the lab bridge::

    links:
      db:  {delay: 20ms, jitter: 5ms, loss: 1%, rate: 100mbit}
      web: {mtu: 1400}

**Units** (no bare numbers: ``20`` could mean anything):

* ``delay``, ``jitter``: ``us``, ``ms`` or ``s`` (``20ms``, ``1.5ms``, ``250us``); jitter needs
  a delay;
* ``loss``: a percentage with at most two decimals (``1%``, ``0.25%``), up to ``100%``;
* ``rate``: ``bit``, ``kbit``, ``mbit``, ``gbit`` per second, decimal prefixes (``100mbit``);
  ``mbps`` is refused — tc reads it as *megabytes* per second, people mean megabits;
* ``mtu``: bytes, 576-65535, set on both ends of the endpoint's link.

**What a round trip sees** (the semantics every backend keeps): every flow to or from the
endpoint crosses its link twice, once each way.  ``rate`` caps *each* direction.  ``delay``,
``jitter`` and ``loss`` are applied *once* per round trip, on one direction of the link — like
``tc netem`` on one interface (containerlab's ``tools netem``): a ping to or from the endpoint
takes ``delay`` longer and is lost with probability ``loss``.  At the bridge port they act on
what the port sends to the endpoint; inside a VM guest on what the guest sends.

Where an impairment is applied depends on the kernel (:func:`placement`): the host-side bridge
port (veth or tap) takes ``rate`` (tbf, both directions through an IFB device for what the
endpoint sends) and ``loss`` (nftables ``numgen``) on every kernel with tbf, IFB and nftables;
``delay``/``jitter`` need ``sch_netem`` — on the port when the host kernel has it, else inside
a VM guest (its own kernel) when the guest has ``tc`` and netem.  A container or namespace
host shares the host kernel: without host netem its delay cannot be given, and
:func:`placement` says so before anything is made.

This module is pure: no host access.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from hybridnb.core.resource import Resource
from hybridnb.errors import Problem, ValidationError

KEYS = ("delay", "jitter", "loss", "rate", "mtu")
MIN_MTU, MAX_MTU = 576, 65535
MAX_DELAY_US = 60_000_000
MIN_RATE, MAX_RATE = 8_000, 32_000_000_000      # tbf keeps the rate in 32 bits of bytes/s
LOSS_SCALE = 10_000                      # loss is kept in 1/100 of a percent

_TIME = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>us|ms|s)$")
_TIME_UNITS = {"us": 1, "ms": 1_000, "s": 1_000_000}
_LOSS = re.compile(r"^(?P<n>\d+(?:\.\d{1,2})?)\s*%$")
_RATE = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[a-z]+)$")
_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12}
_BYTE_UNITS = ("bps", "kbps", "mbps", "gbps", "tbps")


@dataclass(frozen=True)
class Impairment:
    """One endpoint's link as configured (None: not impaired in that respect)."""

    endpoint: str
    delay_us: int | None = None
    jitter_us: int | None = None
    loss: int | None = None              # in 1/100 of a percent (LOSS_SCALE = 100 %)
    rate: int | None = None              # bit/s
    mtu: int | None = None

    @property
    def path(self) -> str:
        return f"links.{self.endpoint}"

    @property
    def loss_percent(self) -> float | None:
        return None if self.loss is None else self.loss / 100

    def to_spec(self) -> dict[str, Any]:
        """JSON-able fields (only those set) for a resource spec."""
        return {k: v for k, v in (("delay_us", self.delay_us), ("jitter_us", self.jitter_us),
                                  ("loss", self.loss), ("rate", self.rate), ("mtu", self.mtu))
                if v is not None}

    @staticmethod
    def from_spec(endpoint: str, spec: Mapping[str, Any]) -> "Impairment":
        return Impairment(endpoint, spec.get("delay_us"), spec.get("jitter_us"),
                          spec.get("loss"), spec.get("rate"), spec.get("mtu"))

    def to_yaml(self) -> dict[str, Any]:
        """The lab-file form (what :func:`parse_links` reads back to the same value)."""
        out: dict[str, Any] = {}
        if self.delay_us is not None:
            out["delay"] = format_time(self.delay_us)
        if self.jitter_us is not None:
            out["jitter"] = format_time(self.jitter_us)
        if self.loss is not None:
            out["loss"] = format_loss(self.loss)
        if self.rate is not None:
            out["rate"] = format_rate(self.rate)
        if self.mtu is not None:
            out["mtu"] = self.mtu
        return out

    def describe(self) -> str:
        parts = []
        if self.delay_us is not None:
            parts.append(f"delay {format_time(self.delay_us)}")
        if self.jitter_us is not None:
            parts.append(f"jitter {format_time(self.jitter_us)}")
        if self.loss is not None:
            parts.append(f"loss {format_loss(self.loss)}")
        if self.rate is not None:
            parts.append(f"rate {format_rate(self.rate)}")
        if self.mtu is not None:
            parts.append(f"mtu {self.mtu}")
        return " ".join(parts) or "none"

    def __str__(self) -> str:
        return f"{self.endpoint}: {self.describe()}"


def format_time(us: int) -> str:
    if us % 1_000_000 == 0:
        return f"{us // 1_000_000}s"
    if us % 1000 == 0:
        return f"{us // 1000}ms"
    return f"{us}us"


def format_loss(loss: int) -> str:
    whole, frac = divmod(loss, 100)
    return f"{whole}%" if not frac else f"{whole}.{frac:02d}".rstrip("0") + "%"


def format_rate(bps: int) -> str:
    for unit, scale in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bps >= scale and bps % scale == 0:
            return f"{bps // scale}{unit}"
    return f"{bps}bit"


# ------------------------------------------------------------------------------ parsing

def parse_time(value: Any) -> tuple[int | None, str | None]:
    """``20ms`` → (20000, None) microseconds; (None, why) when it is not a duration."""
    if isinstance(value, bool) or not isinstance(value, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return None, f"{value!r} has no unit (write e.g. {value}ms)"
        return None, f"expected a duration like 20ms, got {value!r}"
    m = _TIME.match(value.strip().lower())
    if m is None:
        return None, f"{value!r} is not a duration (write e.g. 20ms, 1.5ms, 250us or 1s)"
    us = float(m.group("n")) * _TIME_UNITS[m.group("unit")]
    if us != int(us):
        return None, f"{value!r} is finer than a microsecond"
    if us > MAX_DELAY_US:
        return None, f"{value!r} is longer than {MAX_DELAY_US // 1_000_000}s"
    return int(us), None


def parse_loss(value: Any) -> tuple[int | None, str | None]:
    """``1.5%`` → (150, None) in 1/100 of a percent."""
    if not isinstance(value, str):
        return None, (f"{value!r} has no unit (write {value}%)"
                      if isinstance(value, (int, float)) and not isinstance(value, bool)
                      else f"expected a percentage like 1%, got {value!r}")
    m = _LOSS.match(value.strip())
    if m is None:
        return None, f"{value!r} is not a percentage (write e.g. 1%, 0.25% — two decimals at most)"
    whole, _, frac = m.group("n").partition(".")
    loss = int(whole) * 100 + int((frac + "00")[:2])
    if loss > LOSS_SCALE:
        return None, f"{value!r} is more than 100%"
    return loss, None


def parse_rate(value: Any) -> tuple[int | None, str | None]:
    """``100mbit`` → (100000000, None) bit/s."""
    if not isinstance(value, str):
        return None, (f"{value!r} has no unit (write e.g. {value}mbit)"
                      if isinstance(value, (int, float)) and not isinstance(value, bool)
                      else f"expected a rate like 100mbit, got {value!r}")
    m = _RATE.match(value.strip().lower())
    if m is None:
        return None, f"{value!r} is not a rate (write e.g. 10mbit, 512kbit, 1gbit)"
    unit = m.group("unit")
    if unit in _BYTE_UNITS:
        return None, (f"{value!r} is ambiguous: tc reads {unit} as bytes per second "
                      f"(write {m.group('n')}{unit[:-3]}bit for bits per second)")
    if unit not in _RATE_UNITS:
        return None, f"unknown rate unit {unit!r} (use bit, kbit, mbit or gbit)"
    bps = float(m.group("n")) * _RATE_UNITS[unit]
    if not MIN_RATE <= bps <= MAX_RATE:
        return None, f"{value!r} is outside 8kbit-32gbit"
    return int(bps), None


def parse_mtu(value: Any) -> tuple[int | None, str | None]:
    if isinstance(value, bool) or not isinstance(value, int):
        return None, f"expected a number of bytes like 1400, got {value!r}"
    if not MIN_MTU <= value <= MAX_MTU:
        return None, f"{value} is outside {MIN_MTU}-{MAX_MTU}"
    return value, None


_PARSERS = {"delay": parse_time, "jitter": parse_time, "loss": parse_loss,
            "rate": parse_rate, "mtu": parse_mtu}
_HINTS = {"delay": "write e.g. 20ms", "jitter": "write e.g. 5ms", "loss": "write e.g. 1%",
          "rate": "write e.g. 100mbit", "mtu": "write e.g. 1400"}


def _guess(word: Any, choices: Iterable[str], otherwise: str) -> str:
    import difflib

    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f"did you mean {close[0]!r}?" if close else otherwise


def _parse_one(name: str, raw: Any, problems: list[Problem]) -> Impairment | None:
    path = f"links.{name}"
    if not isinstance(raw, Mapping):
        problems.append(Problem(path, "expected a mapping of impairments",
                                "write e.g. {delay: 20ms, loss: 1%, rate: 100mbit}"))
        return None
    values: dict[str, int] = {}
    for key, value in raw.items():
        if key not in _PARSERS:
            problems.append(Problem(f"{path}.{key}", f"unknown key {key!r}",
                                    _guess(key, KEYS, f"links take {', '.join(KEYS)}")))
            continue
        parsed, why = _PARSERS[key](value)
        if why is not None:
            problems.append(Problem(f"{path}.{key}", why, _HINTS[key]))
        elif parsed is not None:
            values[key] = parsed
    if "jitter" in values and "delay" not in values:
        problems.append(Problem(f"{path}.jitter", "jitter needs a delay",
                                "add delay: (jitter varies the delay around it)"))
    if not raw:
        problems.append(Problem(path, "no impairment given",
                                f"give one of {', '.join(KEYS)}, or remove the entry"))
    return Impairment(name, values.get("delay"), values.get("jitter"), values.get("loss"),
                      values.get("rate"), values.get("mtu"))


def parse_links(raw: Any, endpoints: Iterable[str], *, source: str | None = None
                ) -> dict[str, Impairment]:
    """Validate a lab's ``links:`` section against its endpoint names; every problem at once."""
    if raw is None:
        return {}
    names = sorted(endpoints)
    problems: list[Problem] = []
    if not isinstance(raw, Mapping):
        raise ValidationError([Problem("links", "expected a mapping of endpoint names",
                                       "write links: {db: {delay: 20ms}}")], source=source)
    out: dict[str, Impairment] = {}
    for name, value in raw.items():
        if name not in names:
            problems.append(Problem(f"links.{name}", f"unknown endpoint {name!r}",
                                    _guess(name, names, "links are keyed by endpoint name")))
            continue
        imp = _parse_one(str(name), value, problems)
        if imp is not None:
            out[str(name)] = imp
    if problems:
        raise ValidationError(problems, source=source)
    return dict(sorted(out.items()))


# ------------------------------------------------------------------------------ placement

@dataclass(frozen=True)
class Capabilities:
    """What the host kernel (and, for VMs, the guest) can do for impairments."""

    netem: bool = False                  # sch_netem on the host
    tbf: bool = True
    ifb: bool = True                     # IFB devices + ingress qdisc + u32 + mirred
    nft_numgen: bool = True              # nftables bridge family with numgen
    guest_netem: bool = False            # the VM guest has tc and sch_netem

    def __str__(self) -> str:
        return ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in self.__dict__.items())


@dataclass(frozen=True)
class Placement:
    """Where each impairment of one endpoint goes.

    ``port_netem``: delay/jitter (µs) as netem on the bridge port's egress (to the endpoint);
    ``guest_netem``: the same inside a VM guest on its eth0 (what it sends); ``rate``: tbf on
    the port's egress and on the IFB device its ingress is redirected to; ``loss``: nftables
    numgen drop of what the port sends to the endpoint; ``mtu``: both ends of the link."""

    endpoint: str
    port_netem: tuple[int, int] | None = None
    guest_netem: tuple[int, int] | None = None
    rate: int | None = None
    loss: int | None = None
    mtu: int | None = None


def placement(imp: Impairment, kind: str, caps: Capabilities) -> tuple[Placement, list[Problem]]:
    """Decide where ``imp`` goes for an endpoint of ``kind``; problems say what this host
    cannot give and why (the driver's check raises them before anything is made)."""
    problems: list[Problem] = []
    port_netem = guest_netem = None
    if imp.delay_us is not None:
        delay = (imp.delay_us, imp.jitter_us or 0)
        if caps.netem:
            port_netem = delay
        elif kind == "vm" and caps.guest_netem:
            guest_netem = delay
        else:
            problems.append(Problem(f"{imp.path}.delay", _no_delay(kind, caps),
                                    _no_delay_hint(kind)))
    if imp.rate is not None and not (caps.tbf and caps.ifb):
        missing = [n for n, ok in (("sch_tbf", caps.tbf), ("IFB devices with ingress "
                                   "redirection (ifb, sch_ingress, cls_u32, act_mirred)",
                                   caps.ifb)) if not ok]
        problems.append(Problem(f"{imp.path}.rate",
                                f"this host's kernel has no {' and no '.join(missing)}",
                                "rate needs them to shape both directions of the link"))
    if imp.loss is not None and not caps.nft_numgen:
        problems.append(Problem(f"{imp.path}.loss", "this host's kernel has no nftables "
                                "bridge family with numgen (nf_tables_bridge, nft_numgen)",
                                "loss is dropped by an nftables rule on the bridge port"))
    return Placement(imp.endpoint, port_netem, guest_netem, imp.rate, imp.loss, imp.mtu), problems


def _no_delay(kind: str, caps: Capabilities) -> str:
    host = "this host's kernel has no netem qdisc (sch_netem)"
    if kind == "vm":
        return f"{host}, and the guest has no tc with netem to apply it inside"
    return (f"{host}, and a {kind} shares the host's kernel: delay and jitter cannot be "
            "given to it here")


def _no_delay_hint(kind: str) -> str:
    if kind == "vm":
        return ("use a guest image with iproute2 (tc) and sch_netem, or a host kernel "
                "with CONFIG_NET_SCH_NETEM")
    return ("use a host kernel with CONFIG_NET_SCH_NETEM (most distributions' kernels), "
            "or put the delay on a VM endpoint")


def check_placements(impairments: Mapping[str, Impairment], kinds: Mapping[str, str],
                     caps: Capabilities) -> dict[str, Placement]:
    """Placements for every impaired endpoint; one ValidationError with every impairment
    this host cannot give."""
    out: dict[str, Placement] = {}
    problems: list[Problem] = []
    for name, imp in sorted(impairments.items()):
        where, probs = placement(imp, kinds[name], caps)
        out[name] = where
        problems += probs
    if problems:
        raise ValidationError(problems)
    return out


def link_resource(lab: str, endpoint: Mapping[str, Any], imp: Impairment, *, bridge: str,
                  default_mtu: int, guest_netem: bool = False) -> Resource:
    """The ``link`` resource of an impaired endpoint on the lab bridge ``bridge``, from its
    endpoint resource spec (what the lab compiler will emit in phase 2)."""
    spec: dict[str, Any] = {"endpoint": imp.endpoint, "kind": endpoint["kind"],
                            "bridge": bridge, "default_mtu": default_mtu,
                            **imp.to_spec()}
    if endpoint["kind"] == "host":
        spec.update({"veth": endpoint["veth"], "netns": endpoint["netns"]})
    elif endpoint["kind"] == "vm":
        spec.update({"mac": endpoint["mac"], "guest_netem": guest_netem})
    return Resource("link", imp.endpoint, spec, imp.describe())
