"""What every endpoint kind is made of: declared fields, a spec class, a compile step.

A kind module (``container.py``, ``vm.py``, ``host.py``) declares its spec class as a frozen
dataclass whose attributes are *fields*::

    @dataclass(frozen=True)
    class ContainerSpec(EndpointSpec):
        kind: str = "container"
        image: str = spec_field(Text(what="an image name", hint="e.g. nginx:alpine"),
                                default="busybox", help="Docker image", to=("create", "image"))

One such line is everything a field needs: its YAML key and Python attribute (the name), its
type (:class:`FieldType`: how the YAML value is read and checked, written back, offered as a
command-line/magic option and as a form widget), its default, its help text, and where it goes
in the compiled resource (``to``: a path into the resource spec the kind's driver receives).
:class:`Kind` reads the fields back from the dataclass (:meth:`Kind.fields`) and does the
generic work with them: parse and validate an endpoint mapping, write it back, compile it, say
which field a changed resource path belongs to.  The fronts (magics, CLI reference, forms)
build their options from the same fields, so adding a field is one line in one kind module.

Rules that keep a new field harmless: a field left unset (``None`` or empty) compiles to
nothing — adding a field never changes the fingerprint of the resources of existing labs —
and a field whose value equals its default is left out when the lab is written back.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping, Sequence

from hybridnb.core.problems import Collector, did_you_mean
from hybridnb.core.resource import Resource

if TYPE_CHECKING:  # pragma: no cover
    from hybridnb.core.spec import NetworkSpec

METADATA = "hybridnb"
#: What a field type's ``parse`` returns for a bad value (the problem is already reported).
INVALID: Any = type("Invalid", (), {"__repr__": lambda self: "INVALID"})()

Path = tuple[str, ...]


# ------------------------------------------------------------------------------ field types

class FieldType:
    """How values of one type are read from YAML, written back, typed on a command line and
    entered in a form.  Subclasses are small frozen dataclasses configured per field."""

    #: The YAML shape, for the reference (``hybridnb kinds``).
    yaml: ClassVar[str] = "string"
    #: The form widget: ``text``, ``int``, ``choice``, ``lines`` (K=V per line) or ``list``
    #: (comma separated).
    form: ClassVar[str] = "text"
    #: The command-line option may be repeated (``--env A=1 --env B=2``).
    repeat: ClassVar[bool] = False
    #: the option's metavar (default: the field name in capitals)
    metavar: ClassVar[str | None] = None

    def parse(self, c: Collector, raw: Any, path: str, field: Field) -> Any:
        raise NotImplementedError

    def dump(self, value: Any) -> Any:
        """The YAML (and JSON) form of a parsed value."""
        return value

    def option_type(self) -> Callable[[str], Any] | None:
        """argparse ``type=`` for one occurrence of the option."""
        return None

    def option_choices(self) -> tuple[str, ...] | None:
        """The values it takes, when they are a fixed list."""
        return None

    def describe(self) -> str:
        """The type as the reference shows it."""
        choices = self.option_choices()
        return "|".join(choices) if choices else self.yaml

    def from_option(self, value: Any) -> Any:
        """The YAML value for what argparse collected (``None``: not given)."""
        if value is None or value == []:
            return None
        return value

    def to_form(self, value: Any) -> Any:
        """The widget value showing ``value`` (the default, when a form opens)."""
        return "" if value is None else str(value)

    def from_form(self, value: Any, field: Field) -> Any:
        """The YAML value for what the widget holds (``None``: left empty).  Raises
        ``ValueError`` with a message for input that is not even well formed."""
        text = str(value).strip()
        if not text and field.default is None:
            return None
        return text


@dataclass(frozen=True)
class Text(FieldType):
    """A string; ``empty_hint`` set: an empty one is refused with that hint."""

    what: str = "a string"
    hint: str | None = None
    empty_hint: str | None = None

    def parse(self, c: Collector, raw: Any, path: str, field: Field) -> Any:
        if c.typed(raw, str, path, self.what, self.hint) is None:
            return INVALID
        if self.empty_hint is not None and not raw.strip():
            c.add(path, f"{field.name} is empty", self.empty_hint)
            return INVALID
        return raw


@dataclass(frozen=True)
class AbsolutePath(FieldType):
    """An absolute path (inside a container or guest, or on the machine)."""

    what: str = "an absolute path"
    example: str = "/srv"
    yaml: ClassVar[str] = "path"

    def parse(self, c: Collector, raw: Any, path: str, field: Field) -> Any:
        if c.typed(raw, str, path, self.what, f"e.g. {self.example}") is None:
            return INVALID
        if not raw.startswith("/") or "\0" in raw:
            c.add(path, f"{raw!r} is not {self.what}", f"start it with '/', e.g. {self.example}")
            return INVALID
        return raw


@dataclass(frozen=True)
class Integer(FieldType):
    what: str = "a number"
    hint: str | None = None
    minimum: int | None = None
    maximum: int | None = None
    #: (message, hint) for a value outside minimum..maximum
    out_of_range: Callable[[int], tuple[str, str]] | None = None
    yaml: ClassVar[str] = "integer"
    form: ClassVar[str] = "int"
    metavar: ClassVar[str | None] = "N"

    def parse(self, c: Collector, raw: Any, path: str, field: Field) -> Any:
        if c.typed(raw, int, path, self.what, self.hint) is None:
            return INVALID
        low = self.minimum is not None and raw < self.minimum
        high = self.maximum is not None and raw > self.maximum
        if low or high:
            message, hint = self.out_of_range(raw) if self.out_of_range else (
                f"{raw} is out of range", f"use {self.minimum} to {self.maximum}")
            c.add(path, message, hint)
            return INVALID
        return raw

    def option_type(self) -> Callable[[str], Any]:
        return int

    def to_form(self, value: Any) -> Any:
        return int(value or 0)

    def from_form(self, value: Any, field: Field) -> Any:
        return int(value)


@dataclass(frozen=True)
class Choice(FieldType):
    options: tuple[str, ...] = ()
    form: ClassVar[str] = "choice"

    def parse(self, c: Collector, raw: Any, path: str, field: Field) -> Any:
        if raw not in self.options:
            c.add(path, f"unknown {field.name} {raw!r}", did_you_mean(str(raw), self.options)
                  or f"use one of: {', '.join(self.options)}")
            return INVALID
        return raw

    def option_choices(self) -> tuple[str, ...]:
        return self.options


@dataclass(frozen=True)
class Argv(FieldType):
    """A command line: one string (split on blanks) or a list of words."""

    hint: str = "e.g. [httpd, -f, -p, '80']"
    yaml: ClassVar[str] = "string or list"
    metavar: ClassVar[str | None] = "COMMAND"

    def parse(self, c: Collector, raw: Any, path: str, field: Field) -> Any:
        if isinstance(raw, str):
            return tuple(raw.split())
        if isinstance(raw, list) and all(isinstance(x, (str, int)) for x in raw):
            return tuple(str(x) for x in raw)
        c.add(path, "expected a string or a list of strings", self.hint)
        return INVALID

    def dump(self, value: Any) -> Any:
        return list(value)

    def to_form(self, value: Any) -> Any:
        return " ".join(value) if value else ""


def key_value(text: str) -> tuple[str, str]:
    """argparse type of ``K=V`` options."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        import argparse

        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


@dataclass(frozen=True)
class KeyValues(FieldType):
    """A mapping of strings; ``check(key, value)`` returns ``(message, hint)`` for a bad item."""

    check: Callable[[Any, Any], tuple[str, str] | None] | None = None
    yaml: ClassVar[str] = "mapping"
    form: ClassVar[str] = "lines"
    repeat: ClassVar[bool] = True
    metavar: ClassVar[str | None] = "K=V"

    def parse(self, c: Collector, raw: Any, path: str, field: Field) -> Any:
        data = c.mapping(raw, path)
        if data is None:
            return INVALID
        ok = True
        for key, value in data.items():
            bad = self.check(key, value) if self.check is not None else None
            if bad is not None:
                c.add(f"{path}.{key}", *bad)
                ok = False
        if not ok:
            return INVALID
        return {str(k): str(v) for k, v in sorted(data.items(), key=lambda kv: str(kv[0]))}

    def dump(self, value: Any) -> Any:
        return dict(value)

    def option_type(self) -> Callable[[str], Any]:
        return key_value

    def from_option(self, value: Any) -> Any:
        return dict(value) if value else None

    def to_form(self, value: Any) -> Any:
        return "".join(f"{k}={v}\n" for k, v in (value or {}).items())

    def from_form(self, value: Any, field: Field) -> Any:
        out = {}
        for line in str(value).splitlines():
            if not line.strip():
                continue
            key, sep, val = line.strip().partition("=")
            if not sep:
                raise ValueError(f"{line.strip()!r} is not KEY=VALUE")
            out[key.strip()] = val.strip()
        return out or None


@dataclass(frozen=True)
class Items(FieldType):
    """A list of strings, each matching ``pattern`` (its ``ports`` groups within 1-65535),
    built into values by ``build``; every bad item is reported."""

    pattern: re.Pattern[str] = re.compile(".*")
    build: Callable[[re.Match[str]], Any] = str
    what: str = "an item"
    hint: str = ""
    ports: tuple[str, ...] = ()
    yaml: ClassVar[str] = "list"
    form: ClassVar[str] = "list"
    repeat: ClassVar[bool] = True

    def parse(self, c: Collector, raw: Any, path: str, field: Field) -> Any:
        if c.typed(raw, list, path, "a list", self.hint) is None:
            return INVALID
        out, ok = [], True
        for i, item in enumerate(raw):
            m = self.pattern.match(str(item))
            if not m or not all(1 <= int(m.group(g)) <= 65535 for g in self.ports if m.group(g)):
                c.add(f"{path}[{i}]", f"{item!r} is not {self.what}", self.hint)
                ok = False
                continue
            out.append(self.build(m))
        return tuple(out) if ok else INVALID

    def dump(self, value: Any) -> Any:
        return [str(v) for v in value]

    def to_form(self, value: Any) -> Any:
        return ", ".join(str(v) for v in value or ())

    def from_form(self, value: Any, field: Field) -> Any:
        items = [p.strip() for p in str(value).split(",") if p.strip()]
        return items or None


@dataclass(frozen=True)
class Address(FieldType):
    yaml: ClassVar[str] = "IPv4 address"
    metavar: ClassVar[str | None] = "ADDRESS"

    def parse(self, c: Collector, raw: Any, path: str, field: Field) -> Any:
        addr = c.address(raw, path)
        return INVALID if addr is None else addr

    def dump(self, value: Any) -> Any:
        return str(value)


# ---------------------------------------------------------------------------------- fields

#: ``to`` as a function: value → {resource spec path: engine value}
Compiler = Callable[[Any], Mapping[Path, Any]]


@dataclass(frozen=True)
class FieldInfo:
    """What :func:`spec_field` attaches to a dataclass attribute."""

    type: FieldType
    help: str
    to: Path | Compiler | None = None
    #: the paths a ``to`` function writes (so a plan can name the field when they change)
    paths: tuple[Path, ...] = ()
    #: command-line / magic option name without dashes (default: the field name)
    option: str | None = None
    #: the option's metavar (default: the type's, else the field name in capitals)
    metavar: str | None = None
    #: shown in the ipywidgets form
    form: bool = True
    #: what a value looks like (the form's placeholder)
    example: str = ""


def spec_field(type: FieldType, *, help: str, default: Any = None,
               to: Path | Compiler | None = None, paths: Sequence[Path] = (),
               option: str | None = None, metavar: str | None = None,
               form: bool = True, example: str = "") -> Any:
    """Declare a field of a kind's spec dataclass (see the module docstring)."""
    info = FieldInfo(type, help, to, tuple(paths), option, metavar, form, example)
    if isinstance(default, (dict, list)):
        frozen = dict(default) if isinstance(default, dict) else list(default)
        return dataclasses.field(default_factory=lambda: type_copy(frozen),
                                 metadata={METADATA: info})
    return dataclasses.field(default=default, metadata={METADATA: info})


def type_copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else list(value)


@dataclass(frozen=True)
class Field:
    """One field of a kind, as the generic code and the fronts see it."""

    name: str
    default: Any
    info: FieldInfo
    common: bool = False             # declared by EndpointSpec (every kind has it)

    @property
    def type(self) -> FieldType:
        return self.info.type

    @property
    def help(self) -> str:
        return self.info.help

    @property
    def option(self) -> str:
        """``--option`` name on the command line and in ``%hybrid KIND NAME --option``."""
        return "--" + (self.info.option or self.name).replace("_", "-")

    @property
    def dest(self) -> str:
        return self.name

    @property
    def metavar(self) -> str:
        choices = self.type.option_choices()
        if choices and not self.info.metavar:
            return "{" + ",".join(choices) + "}"
        return self.info.metavar or self.type.metavar or self.name.upper()

    def unset(self, value: Any) -> bool:
        return value is None or (isinstance(value, (tuple, list, dict, Mapping)) and not value)

    def parse(self, c: Collector, raw: Any, path: str) -> Any:
        return self.type.parse(c, raw, f"{path}.{self.name}", self)

    def dump(self, value: Any) -> Any:
        return self.type.dump(value)

    def compile(self, value: Any) -> Mapping[Path, Any]:
        """Where the value lands in the resource spec (nothing when unset)."""
        to = self.info.to
        if to is None or self.unset(value):
            return {}
        if callable(to):
            return to(value)
        return {to: self.dump(value)}

    @property
    def paths(self) -> tuple[Path, ...]:
        to = self.info.to
        return (to,) if isinstance(to, tuple) else self.info.paths

    def describe_default(self) -> str:
        if self.unset(self.default):
            return ""
        dumped = self.dump(self.default)
        return " ".join(dumped) if isinstance(dumped, list) else str(dumped)


def fields_of(cls: type) -> tuple[Field, ...]:
    """The declared fields of a spec dataclass: the kind's own first, then the common ones."""
    own, common = [], []
    base_names = {f.name for f in dataclasses.fields(EndpointSpec)}
    for f in dataclasses.fields(cls):
        info = f.metadata.get(METADATA)
        if info is None:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        is_common = f.name in base_names
        (common if is_common else own).append(Field(f.name, default, info, is_common))
    return tuple(own + common)


# ------------------------------------------------------------------------- endpoint spec

# a service name is a DNS label of 1-15 characters (its SRV record _NAME._PROTO...): it neither
# starts nor ends with '-'
_SERVICE = re.compile(r"^(?P<name>[a-z](?:[a-z0-9-]{0,13}[a-z0-9])?)/(?P<port>\d{1,5})"
                      r"(?:/(?P<proto>tcp|udp))?$", re.ASCII)


@dataclass(frozen=True)
class ServiceSpec:
    """A service an endpoint offers (``http/80``, ``postgresql/5432``, ``dns/53/udp``): it
    becomes an SRV record ``_http._tcp.NAME.<domain>`` and a real port the probes test."""

    name: str
    port: int
    protocol: str = "tcp"

    def __str__(self) -> str:
        tail = f"/{self.protocol}" if self.protocol != "tcp" else ""
        return f"{self.name}/{self.port}{tail}"


@dataclass(frozen=True)
class EndpointSpec:
    """What every endpoint has: a name, its kind, an address, the services it offers and the
    host (machine) it runs on."""

    name: str
    kind: str = ""
    address: ipaddress.IPv4Address | None = spec_field(
        Address(), example="automatic",
        help="static address (default: the next free one of the kind's pool)")
    services: tuple[ServiceSpec, ...] = spec_field(
        Items(pattern=_SERVICE, ports=("port",), what="a service",
              hint="write NAME/PORT or NAME/PORT/udp, e.g. http/80 or dns/53/udp",
              build=lambda m: ServiceSpec(m.group("name"), int(m.group("port")),
                                          m.group("proto") or "tcp")),
        default=(), option="service", metavar="NAME/PORT[/udp]",
        example="e.g. http/80, dns/53/udp",
        help="services it offers (SRV records; probed for real), e.g. http/80")
    host: str | None = spec_field(
        Text(what="a host name", hint="one of the lab's hosts:, e.g. b"), form=False,
        example="e.g. b", help="the machine of `hosts:` it runs on (default: the first)")

    @property
    def path(self) -> str:
        return f"endpoints.{self.name}"


# --------------------------------------------------------------------------------- compile

@dataclass(frozen=True)
class CompileContext:
    """What compiling one endpoint may look at besides the endpoint itself."""

    lab: str
    network: NetworkSpec
    addresses: Mapping[str, ipaddress.IPv4Address]
    kinds: Mapping[str, str]                   # endpoint name -> kind
    #: values of the lab's registered sections (``LabSpec.sections``: e.g. its images)
    sections: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def address(self, name: str) -> str:
        return str(self.addresses[name])

    def common(self, ep: EndpointSpec) -> dict[str, Any]:
        """The network facts most endpoint resources carry."""
        net = self.network
        gw = str(net.gateway)
        return {"endpoint": ep.name, "hostname": ep.name, "address": self.address(ep.name),
                "prefix": net.subnet.prefixlen, "gateway": gw, "bridge": net.bridge,
                "mtu": net.mtu, "dns": [gw] if net.dns else [], "domain": net.domain}


def put(spec: dict[str, Any], path: Path, value: Any) -> None:
    """Set ``spec[path[0]][path[1]]... = value``, making the mappings on the way."""
    node = spec
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


# ------------------------------------------------------------------------------------ kinds

class Kind:
    """One endpoint kind: subclasses set the class attributes and override the hooks."""

    name: ClassVar[str]
    spec: ClassVar[type[EndpointSpec]]
    title: ClassVar[str]                        # "container", "VM", "host"
    plural: ClassVar[str]
    description: ClassVar[str]
    #: listing order: help, hints, forms, drawings
    rank: ClassVar[int]
    #: creation order among all resource kinds (see :mod:`hybridnb.core.stages`)
    stage: ClassVar[int]
    #: first address of the kind's address pool in a /24 (scaled for other prefixes)
    pool_offset: ClassVar[int]
    colour: ClassVar[str] = "#888888"
    #: resource kinds this kind's resources hang on: replacing one replaces them
    needs: ClassVar[tuple[str, ...]] = ()
    #: resource kinds the kind makes once per lab (:meth:`compile_shared`), with their stage
    shared: ClassVar[Mapping[str, int]] = {}
    #: resource spec paths set by :meth:`base_spec` → the name a plan gives their change
    names: ClassVar[Mapping[Path, str]] = {}

    # -- fields ---------------------------------------------------------------------------

    def fields(self) -> tuple[Field, ...]:
        cached = self.__dict__.get("_fields")
        if cached is None:
            cached = fields_of(self.spec)
            self.__dict__["_fields"] = cached
        return cached

    def field(self, name: str) -> Field:
        for f in self.fields():
            if f.name == name:
                return f
        raise KeyError(name)

    def keys(self) -> tuple[str, ...]:
        """The YAML keys an endpoint of this kind may have."""
        return ("kind",) + tuple(f.name for f in self.fields())

    # -- YAML -----------------------------------------------------------------------------

    def parse(self, c: Collector, name: str, data: Mapping[str, Any],
              path: str) -> EndpointSpec | None:
        """Read and check every field; ``None`` when anything was wrong (all reported)."""
        c.unknown_keys(data, self.keys(), path)
        values: dict[str, Any] = {"name": name}
        ok = True
        for f in self.fields():
            raw = data.get(f.name)
            if raw is None and (f.name not in data or f.default is None):
                continue          # not given, or written empty where "nothing" is the default
            value = f.parse(c, raw, path)
            if value is INVALID:
                ok = False
            else:
                values[f.name] = value
        ok = self.check(c, path, values) and ok
        return self.spec(**values) if ok else None

    def check(self, c: Collector, path: str, values: Mapping[str, Any]) -> bool:
        """Rules between fields (e.g. kernel only with the test template); report and
        return False when broken."""
        return True

    def to_dict(self, ep: EndpointSpec) -> dict[str, Any]:
        """Mapping form of an endpoint, leaving out values equal to the defaults."""
        out: dict[str, Any] = {"kind": self.name}
        for f in self.fields():
            value = getattr(ep, f.name)
            if value is None or value == f.default:
                continue
            out[f.name] = f.dump(value)
        return out

    # -- compile --------------------------------------------------------------------------

    def base_spec(self, ep: EndpointSpec, ctx: CompileContext) -> dict[str, Any]:
        """The resource spec before the fields are added (what is not a field)."""
        return ctx.common(ep)

    def compile(self, ep: EndpointSpec, ctx: CompileContext) -> Resource:
        spec = self.base_spec(ep, ctx)
        for f in self.fields():
            for path, value in f.compile(getattr(ep, f.name)).items():
                put(spec, path, value)
        return Resource(self.name, ep.name, spec, self.summary(ep, spec))

    def compile_shared(self, endpoints: Sequence[EndpointSpec],
                       ctx: CompileContext) -> list[Resource]:
        """Resources made once for all endpoints of this kind (e.g. the Docker network)."""
        return []

    def explain(self, paths: Iterable[Path]) -> list[str]:
        """The field names behind changed resource spec paths (others: their last key, the
        engine's own word)."""
        owners: dict[Path, str] = dict(self.names)
        for f in self.fields():
            for p in f.paths:
                owners[p] = f.name
        out: list[str] = []
        for path in paths:
            name = next((owners[path[:n]] for n in range(len(path), 0, -1)
                         if path[:n] in owners), path[-1])
            if name not in out:
                out.append(name)
        return out

    # -- rendering and probing ------------------------------------------------------------

    def summary(self, ep: EndpointSpec, spec: Mapping[str, Any]) -> str:
        """One line in plans (``10.0.1.100 image busybox``), from the compiled ``spec``."""
        return str(spec["address"])

    def details(self, ep: EndpointSpec) -> str:
        """What the lab summary shows for the endpoint (before anything is applied)."""
        return ""

    def anchor(self, raw: Mapping[str, Any], base: str) -> Mapping[str, Any]:
        """The endpoint's raw lab-file fields with the paths in them that are relative made
        absolute against ``base`` (the lab file's directory); most kinds have none."""
        return raw

    def probe_services(self, resource: Resource) -> tuple[str, ...]:
        """Services the endpoint runs without declaring them (the test VM's httpd)."""
        return ()
