"""Image recipes: what goes into a Debian rootfs that runs as a container or as a VM (pure).

A recipe is a small mapping — what a lab file's ``images:`` section holds::

    images:
      pg:  {packages: [postgresql, postgresql-client], services: [postgresql]}
      web: {packages: [nginx-light], services: [nginx],
            files: {/var/www/html/index.html: "hello from {{name}}"}}

Keys (all optional): ``suite`` (Debian release, default ``bookworm``), ``packages``,
``files`` (absolute path → text, or ``{content, mode, template}``), ``run`` (shell commands
run at build time in the rootfs, after packages and files), ``services`` (names from
:data:`hybridnb.core.catalogue.CATALOGUE`, ``name/port`` to change the readiness port, or
``{name, command, port, user, srv}`` for a service of its own), ``env``, ``command`` (what a
container runs after the services are up), ``boot`` (shell run at every start once the
services are ready), ``disk`` (VM disk size: ``2G``, ``512M`` or MiB; default: what the
rootfs needs plus room), ``memory`` (the least RAM a VM of this image needs, MiB),
``modules`` (kernel modules a VM loads), ``exclude`` (dpkg path-exclude patterns),
``slim`` (drop man pages, docs and locales; default true), ``cloud_init`` (the VM is
configured by cloud-init from a NoCloud seed instead of the kernel command line) and
``description``.

Files are *templated* when their text holds ``{{ var }}``: they are rendered at every start
with the endpoint's ``name``, ``address``, ``domain``, ``fqdn`` and ``gateway`` (one image
serves every endpoint made from it), by the image's init with the same rule as
:func:`render_template`.  ``template: false`` copies a file verbatim.

:func:`parse_recipe` validates one recipe and reports every problem at once (with its path,
``images.pg.services[1]``, and a hint); :func:`parse_recipes` a whole ``images:`` section on
top of the built-in recipes (:data:`BUILTIN`: the seed's VM templates ``base``, ``docker``
and ``observer``).  :meth:`Recipe.digest` hashes the canonical recipe — half of an image's
cache key, the resolved package versions being the other half (:mod:`hybridnb.images`).
:func:`services_script` writes the shell the image's init sources to start the services.

In a lab (:mod:`hybridnb.core.sections.images`), :class:`LabImages` holds the section with the
built-in recipes under it, and :func:`endpoint_recipe` says which recipe an endpoint runs: a
container's ``image:`` that names a recipe, a VM's ``image:`` that is no file path, or a VM
``template:`` that is a built-in recipe (``base``, ``docker``, ``observer``).  Problems are
reported to the lab's :class:`~hybridnb.core.problems.Collector`, so a lab file's recipe
mistakes are listed with every other problem of the file.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import re
import shlex
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from hybridnb.core.catalogue import CATALOGUE, CustomService, ServiceDef
from hybridnb.core.problems import Collector, did_you_mean, typename
from hybridnb.errors import ValidationError

DEFAULT_SUITE = "bookworm"
#: What a templated file may use; the image's init substitutes the same names.
TEMPLATE_VARS = ("name", "address", "domain", "fqdn", "gateway")
#: Bumped when the canonical form changes meaning (every image is rebuilt).
FORMAT = 1
MIN_DISK_MIB = 64
MIN_MEMORY_MIB = 96
#: The longest SRV service name (RFC 6335), so the longest name a default service may have.
MAX_SRV_NAME = 15

#: dpkg path-excludes of a slim image (what Debian's own slim images drop) and the
#: exceptions kept.
SLIM_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*",
                 "/usr/share/locale/*", "/usr/share/lintian/*", "/usr/share/linda/*",
                 "/usr/share/groff/*")
SLIM_INCLUDES = ("/usr/share/doc/*/copyright", "/usr/share/locale/locale.alias")
#: What cloud-init needs to configure a VM without systemd: ifupdown renders its network
#: config, iproute2 renames the NIC, net-tools' route adds the default route (cloud-init's
#: ENI output), resolvconf applies the DNS servers.
CLOUD_INIT_PACKAGES = ("cloud-init", "ifupdown", "iproute2", "net-tools", "resolvconf")

KEYS = ("suite", "packages", "files", "run", "services", "env", "command", "boot", "disk",
        "memory", "modules", "exclude", "slim", "cloud_init", "description")
FILE_KEYS = ("content", "mode", "template")
SERVICE_KEYS = ("name", "command", "port", "ports", "socket", "check", "user", "prepare",
                "modules", "srv")

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
_SUITE = re.compile(r"^[a-z][a-z0-9-]{1,30}$")
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_MODULE = re.compile(r"^[A-Za-z0-9_-]{1,60}$")
_ENVKEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_SIZE = re.compile(r"^(?P<n>\d+)\s*(?P<unit>[MG]i?B?)?$", re.IGNORECASE)
_SERVICE_STR = re.compile(r"^(?P<name>[a-z][a-z0-9-]{0,30})(?:/(?P<port>\d{1,5}))?$")
_SRV = re.compile(r"^[a-z][a-z0-9-]{0,14}$")
_TEMPLATE_VAR = re.compile(r"\{\{ *([A-Za-z_][A-Za-z0-9_]*) *\}\}")
_FORBIDDEN_PREFIXES = ("/proc", "/sys", "/dev", "/run", "/tmp")


@dataclass(frozen=True)
class FileSpec:
    """A file put into the image: rendered at every start when ``template``, else as is."""

    path: str
    content: str
    mode: int = 0o644
    template: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "content": self.content, "mode": f"{self.mode:04o}",
                "template": self.template}


@dataclass(frozen=True)
class Recipe:
    """A validated image recipe (see the module docstring for the keys)."""

    name: str
    suite: str = DEFAULT_SUITE
    packages: tuple[str, ...] = ()
    files: tuple[FileSpec, ...] = ()
    run: tuple[str, ...] = ()
    services: tuple[ServiceDef, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] | None = None
    boot: tuple[str, ...] = ()
    disk: int | None = None                    # MiB
    memory: int | None = None                  # MiB
    modules: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    slim: bool = True
    cloud_init: bool = False
    description: str = ""

    # -------------------------------------------------------------- what the build needs

    def all_packages(self) -> tuple[str, ...]:
        """Every package to install: the recipe's, each service's unless the recipe names a
        package providing it, ``kmod`` when a VM loads modules, cloud-init's helpers."""
        want = list(self.packages)
        for svc in self.services:
            if svc.provided_by and any(fnmatch.fnmatchcase(p, pat) for p in self.packages
                                       for pat in svc.provided_by):
                want.extend(p for p in svc.packages if p not in svc.provided_by
                            and not any(fnmatch.fnmatchcase(p, pat) for pat in svc.provided_by))
            else:
                want.extend(svc.packages)
        if self.kernel_modules():
            want.append("kmod")
        if self.cloud_init:
            want.extend(CLOUD_INIT_PACKAGES)
        return tuple(sorted(set(want)))

    def path_excludes(self) -> tuple[str, ...]:
        out = list(SLIM_EXCLUDES if self.slim else ())
        for svc in self.services:
            out.extend(svc.exclude)
        out.extend(self.exclude)
        return tuple(dict.fromkeys(out))

    def path_includes(self) -> tuple[str, ...]:
        return SLIM_INCLUDES if self.slim else ()

    def kernel_modules(self) -> tuple[str, ...]:
        out = list(self.modules)
        for svc in self.services:
            out.extend(svc.modules)
        return tuple(dict.fromkeys(out))

    def setup_steps(self) -> tuple[tuple[str, str], ...]:
        """Build-time shell steps in order, as ``(what, script)``: each service's setup,
        then the recipe's ``run`` commands (files are written between the two)."""
        return tuple((f"setup of service {s.name}", s.setup) for s in self.services if s.setup)

    def service_ports(self) -> tuple[tuple[str, int], ...]:
        """``(service, port)`` for every TCP port a service of this image listens on."""
        return tuple((s.name, p) for s in self.services for p in s.ports)

    def endpoint_services(self) -> tuple[str, ...]:
        """What an endpoint of this image offers, as ``NAME/PORT`` (its ``services:`` when it
        declares none: SRV records, probed for real): each service's ports under its SRV
        name (``nginx`` → ``http/80``, ``postgresql/5432``); names longer than an SRV
        service name may be (15) are left out."""
        out = []
        for svc in self.services:
            name = svc.srv or svc.name
            if len(name) <= MAX_SRV_NAME:
                out.extend(f"{name}/{port}" for port in svc.ports)
        return tuple(dict.fromkeys(out))

    # -------------------------------------------------------------- identity

    def to_dict(self) -> dict[str, Any]:
        """The canonical form: everything that changes what is built or how it starts."""
        return {
            "format": FORMAT, "name": self.name, "suite": self.suite,
            "packages": list(self.all_packages()),
            "files": [f.to_dict() for f in sorted(self.files, key=lambda f: f.path)],
            "run": list(self.run), "services": [s.to_dict() for s in self.services],
            "env": dict(self.env), "command": list(self.command) if self.command else None,
            "boot": list(self.boot), "disk": self.disk, "memory": self.memory,
            "modules": list(self.kernel_modules()), "excludes": list(self.path_excludes()),
            "includes": list(self.path_includes()), "cloud_init": self.cloud_init,
        }

    def rootfs_dict(self) -> dict[str, Any]:
        """What the root filesystem depends on — not how it starts or its VM disk size, so
        changing a service's port, the command or ``disk:`` reuses the rootfs."""
        full = self.to_dict()
        return {"format": FORMAT, "suite": self.suite, "packages": full["packages"],
                "files": full["files"], "run": full["run"],
                "setup": [script for _, script in self.setup_steps()],
                "excludes": full["excludes"], "includes": full["includes"]}

    def digest(self) -> str:
        """SHA-256 of the canonical form (hex)."""
        return _sha(self.to_dict())

    def rootfs_digest(self) -> str:
        """SHA-256 of :meth:`rootfs_dict` (hex)."""
        return _sha(self.rootfs_dict())

    def summary(self) -> str:
        svc = ", ".join(f"{s.name}" + (f"/{','.join(map(str, s.ports))}" if s.ports else "")
                        for s in self.services)
        return (f"{self.name}: {self.suite}, {len(self.all_packages())} packages"
                + (f", services {svc}" if svc else "") + (", cloud-init" if self.cloud_init
                                                          else ""))


def _sha(data: Mapping[str, Any]) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------------------ templates

def template_vars(text: str) -> list[str]:
    """The ``{{ var }}`` names a text uses, in order of first use."""
    return list(dict.fromkeys(m.group(1) for m in _TEMPLATE_VAR.finditer(text)))


def render_template(text: str, values: Mapping[str, str]) -> str:
    """``{{ name }}`` → ``values['name']``; names without a value stay as they are (the
    image's init does the same with sed)."""
    return _TEMPLATE_VAR.sub(lambda m: str(values.get(m.group(1), m.group(0))), text)


def endpoint_values(name: str, address: str, domain: str, gateway: str) -> dict[str, str]:
    """The template values of one endpoint."""
    fqdn = f"{name}.{domain}" if domain else name
    return {"name": name, "address": address, "domain": domain, "fqdn": fqdn,
            "gateway": gateway}


# ------------------------------------------------------------------------------ parsing

@dataclass
class _Parser:
    """Reports the problems of one recipe to the lab's :class:`Collector`, under ``path``."""

    c: Collector
    path: str
    count: int = 0

    def add(self, where: str, message: str, hint: str | None = None) -> None:
        self.c.add(f"{self.path}.{where}" if where else self.path, message, hint)
        self.count += 1

    def strings(self, raw: Any, where: str, what: str, pattern: re.Pattern[str] | None = None,
                hint: str | None = None) -> tuple[str, ...]:
        """A list of strings (a lone string counts as a list of one)."""
        if raw is None:
            return ()
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list):
            self.add(where, f"expected a list ({what} each), got {typename(raw)}", hint)
            return ()
        out = []
        for i, item in enumerate(raw):
            if not isinstance(item, (str, int, float)) or isinstance(item, bool):
                self.add(f"{where}[{i}]", f"expected {what}, got {typename(item)}", hint)
            elif pattern is not None and not pattern.match(str(item)):
                self.add(f"{where}[{i}]", f"{item!r} is not {what}", hint)
            else:
                out.append(str(item))
        return tuple(out)

    def size(self, raw: Any, where: str, minimum: int) -> int | None:
        """MiB from ``2G``, ``512M``, ``512MiB`` or a plain number of MiB."""
        if raw is None:
            return None
        m = _SIZE.match(str(raw).strip()) if not isinstance(raw, bool) else None
        if not m:
            self.add(where, f"{raw!r} is not a size", "write it like 2G, 512M or 512 (MiB)")
            return None
        mib = int(m.group("n")) * (1024 if (m.group("unit") or "M")[0].upper() == "G" else 1)
        if mib < minimum:
            self.add(where, f"{mib} MiB is too small", f"give at least {minimum} MiB")
            return None
        return mib

    def flag(self, raw: Any, where: str, default: bool) -> bool:
        if raw is None:
            return default
        if not isinstance(raw, bool):
            self.add(where, f"expected true or false, got {typename(raw)}")
            return default
        return raw


def _file(p: _Parser, path: Any, raw: Any) -> FileSpec | None:
    where = f"files.{path}"
    ok = True
    if not isinstance(path, str) or not path.startswith("/") or path.endswith("/") \
            or "/../" in path + "/" or "//" in path:
        p.add(where, f"{path!r} is not an absolute file path", "write it like /etc/app.conf")
        ok = False
    elif any(path == d or path.startswith(d + "/") for d in _FORBIDDEN_PREFIXES):
        p.add(where, f"{path} is on a filesystem made at start",
              "put files elsewhere (e.g. /etc, /srv, /var/www); make runtime files in boot:")
        ok = False
    mode, template = 0o644, None
    if isinstance(raw, Mapping):
        for key in raw:
            if key not in FILE_KEYS:
                p.add(f"{where}.{key}", f"unknown key {key!r}",
                      did_you_mean(str(key), FILE_KEYS) or f"allowed: {', '.join(FILE_KEYS)}")
                ok = False
        content = raw.get("content", "")
        if "mode" in raw:
            try:
                mode = int(str(raw["mode"]), 8)
                if not 0 <= mode <= 0o7777:
                    raise ValueError
            except ValueError:
                p.add(f"{where}.mode", f"{raw['mode']!r} is not a file mode",
                      "write it in octal, e.g. \"0755\"")
                ok = False
        if "template" in raw:
            template = p.flag(raw["template"], f"{where}.template", True)
    else:
        content = raw
    if not isinstance(content, str):
        p.add(where, f"expected the file's text, got {typename(content)}",
              "use a string (a YAML block with | keeps newlines)")
        return None
    used = template_vars(content)
    if template is None:
        template = bool(used)
    if template:
        unknown = [v for v in used if v not in TEMPLATE_VARS]
        for v in unknown:
            p.add(where, f"unknown template variable {v!r}",
                  (did_you_mean(v, TEMPLATE_VARS) or f"known: {', '.join(TEMPLATE_VARS)}")
                  + "; or set template: false to copy the file as is")
        ok = ok and not unknown
    return FileSpec(path, content, mode, bool(template)) if ok else None


def _custom_service(p: _Parser, where: str, raw: Mapping[str, Any]) -> ServiceDef | None:
    ok = True
    for key in raw:
        if key not in SERVICE_KEYS:
            p.add(f"{where}.{key}", f"unknown key {key!r}",
                  did_you_mean(str(key), SERVICE_KEYS) or f"allowed: {', '.join(SERVICE_KEYS)}")
            ok = False
    name = raw.get("name")
    if not isinstance(name, str) or not _SERVICE_STR.match(name) or "/" in name:
        p.add(f"{where}.name", f"{name!r} is not a service name",
              "lowercase letters, digits and '-', e.g. app")
        return None
    base = CATALOGUE.get(name)
    command = raw.get("command")
    if command is not None and not isinstance(command, str):
        p.add(f"{where}.command", f"expected a shell command, got {typename(command)}")
        return None
    ports_raw = raw.get("ports", [raw["port"]] if "port" in raw else None)
    ports: tuple[int, ...] | None = None
    if ports_raw is not None:
        items = ports_raw if isinstance(ports_raw, list) else [ports_raw]
        good = [int(x) for x in items if isinstance(x, int) and not isinstance(x, bool)
                and 1 <= x <= 65535]
        if len(good) != len(items):
            p.add(f"{where}.port", f"{ports_raw!r} is not a TCP port", "a number 1-65535")
            ok = False
        ports = tuple(good)
    user = raw.get("user")
    if user is not None and (not isinstance(user, str) or not _USER.match(user)):
        p.add(f"{where}.user", f"{user!r} is not a user name")
        ok = False
    socket = raw.get("socket")
    if socket is not None and (not isinstance(socket, str) or not socket.startswith("/")):
        p.add(f"{where}.socket", f"{socket!r} is not an absolute path")
        ok = False
    modules = p.strings(raw.get("modules"), f"{where}.modules", "a kernel module name", _MODULE)
    prepare, check = raw.get("prepare", ""), raw.get("check", "")
    for key, value in (("prepare", prepare), ("check", check)):
        if not isinstance(value, str):
            p.add(f"{where}.{key}", f"expected a shell command, got {typename(value)}")
            ok = False
    srv = raw.get("srv", "")
    if not isinstance(srv, str) or (srv and not _SRV.match(srv)):
        p.add(f"{where}.srv", f"{srv!r} is not an SRV service name",
              f"lowercase letters, digits and '-', at most {MAX_SRV_NAME}, e.g. http")
        ok = False
    if command is None and base is None:
        p.add(where, f"service {name!r} is not in the catalogue and has no command",
              (did_you_mean(name, list(CATALOGUE)) or "") + " give command: to run your own"
              " (known: " + ", ".join(sorted(CATALOGUE)) + ")")
        return None
    if not ok:
        return None
    if command is None:                        # a catalogue service with changed readiness
        assert base is not None
        service = _override(base, ports, socket, check)
    else:
        service = CustomService(name, command, ports or (), socket, user, prepare or "",
                                modules, check or "").definition()
    return replace(service, srv=srv) if srv else service


def _override(base: ServiceDef, ports: tuple[int, ...] | None, socket: str | None,
              check: str = "") -> ServiceDef:
    if ports is not None:
        return replace(base, ports=ports, socket=None, check="")
    if check:
        return replace(base, ports=(), check=check)
    if socket is not None:
        return replace(base, ports=(), socket=socket, check="")
    return base


def _services(p: _Parser, raw: Any) -> tuple[ServiceDef, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        p.add("services", f"expected a list, got {typename(raw)}",
              "e.g. [postgresql, nginx/8080, {name: app, command: ..., port: 8000}]")
        return ()
    out: list[ServiceDef] = []
    for i, item in enumerate(raw):
        where = f"services[{i}]"
        if isinstance(item, Mapping):
            svc = _custom_service(p, where, item)
        elif isinstance(item, str) and (m := _SERVICE_STR.match(item)):
            base = CATALOGUE.get(m.group("name"))
            if base is None:
                p.add(where, f"unknown service {m.group('name')!r}",
                      (did_you_mean(m.group("name"), list(CATALOGUE)) or
                       "known: " + ", ".join(sorted(CATALOGUE)))
                      + "; or write {name: ..., command: ..., port: ...}")
                continue
            port = int(m.group("port")) if m.group("port") else None
            if port is not None and not 1 <= port <= 65535:
                p.add(where, f"port {port} is out of range", "a number 1-65535")
                continue
            svc = _override(base, (port,) if port else None, None)
        else:
            p.add(where, f"{item!r} is not a service",
                  "a catalogue name (postgresql), name/port (nginx/8080) or a mapping")
            continue
        if svc is not None:
            if any(s.name == svc.name for s in out):
                p.add(where, f"service {svc.name!r} is listed twice")
            else:
                out.append(svc)
    return tuple(out)


def _files(p: _Parser, raw: Any) -> tuple[FileSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        p.add("files", f"expected a mapping of path to text, got {typename(raw)}",
              "e.g. {/var/www/html/index.html: \"hello from {{name}}\"}")
        return ()
    out = [_file(p, path, content) for path, content in raw.items()]
    return tuple(sorted((f for f in out if f is not None), key=lambda f: f.path))


def _env(p: _Parser, raw: Any) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        p.add("env", f"expected a mapping, got {typename(raw)}", "e.g. {PGUSER: postgres}")
        return ()
    out = []
    for key, value in raw.items():
        if not isinstance(key, str) or not _ENVKEY.match(key):
            p.add(f"env.{key}", f"{key!r} is not an environment variable name",
                  "letters, digits and '_', not starting with a digit")
        elif isinstance(value, (Mapping, list)) or value is None:
            p.add(f"env.{key}", f"expected a scalar value, got {typename(value)}")
        else:
            out.append((key, str(value).lower() if isinstance(value, bool) else str(value)))
    return tuple(sorted(out))


def _command(p: _Parser, raw: Any) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return ("sh", "-c", raw)
    items = p.strings(raw, "command", "a command-line word")
    if not items:
        p.add("command", "the command is empty", "leave command out to keep the services up")
        return None
    return items


def parse_recipe(name: str, raw: Any, *, path: str | None = None) -> Recipe:
    """Validate one recipe; ValidationError listing every problem (paths under ``path``,
    default ``images.<name>``)."""
    c = Collector()
    p = _Parser(c, path or f"images.{name}")
    recipe = _parse(p, name, raw)
    if c.problems or recipe is None:
        raise ValidationError(c.problems)
    return recipe


def _parse(p: _Parser, name: Any, raw: Any) -> Recipe | None:
    if not isinstance(name, str) or not _NAME.match(name):
        p.add("", f"{name!r} is not a valid image name",
              "lowercase letters, digits and '-', at most 32, e.g. pg or web-app")
        name = "invalid"
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        p.add("", f"expected a mapping, got {typename(raw)}",
              "e.g. {packages: [postgresql], services: [postgresql]}")
        return None
    for key in raw:
        if key not in KEYS:
            p.add(str(key), f"unknown key {key!r}",
                  did_you_mean(str(key), KEYS) or f"allowed keys: {', '.join(KEYS)}")
    suite = raw.get("suite", DEFAULT_SUITE)
    if not isinstance(suite, str) or not _SUITE.match(suite):
        p.add("suite", f"{suite!r} is not a Debian suite", "e.g. bookworm or trixie")
        suite = DEFAULT_SUITE
    description = raw.get("description", "")
    if not isinstance(description, str):
        p.add("description", f"expected a string, got {typename(description)}")
        description = ""
    memory = p.size(raw.get("memory"), "memory", MIN_MEMORY_MIB)
    return Recipe(
        name=name, suite=suite,
        packages=tuple(dict.fromkeys(p.strings(
            raw.get("packages"), "packages", "a Debian package name", _PACKAGE,
            "package names as apt knows them, without versions, e.g. postgresql-client"))),
        files=_files(p, raw.get("files")),
        run=p.strings(raw.get("run"), "run", "a shell command"),
        services=_services(p, raw.get("services")),
        env=_env(p, raw.get("env")),
        command=_command(p, raw.get("command")),
        boot=p.strings(raw.get("boot"), "boot", "a shell command"),
        disk=p.size(raw.get("disk"), "disk", MIN_DISK_MIB),
        memory=memory,
        modules=p.strings(raw.get("modules"), "modules", "a kernel module name", _MODULE),
        exclude=p.strings(raw.get("exclude"), "exclude", "an absolute path pattern",
                          re.compile(r"^/\S+$"), "e.g. /usr/share/javascript/*"),
        slim=p.flag(raw.get("slim"), "slim", True),
        cloud_init=p.flag(raw.get("cloud_init"), "cloud_init", False),
        description=description,
    )


def collect_recipes(c: Collector, raw: Any, path: str = "images") -> dict[str, Recipe]:
    """The recipes of an ``images:`` section (``{name: Recipe}``, sorted), every problem of
    every recipe reported to ``c``; a recipe with a problem is left out."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        c.add(path, f"expected a mapping of image names to recipes, got {typename(raw)}",
              "e.g. images: {pg: {packages: [postgresql]}}")
        return {}
    out: dict[str, Recipe] = {}
    for name, body in raw.items():
        p = _Parser(c, f"{path}.{name}")
        recipe = _parse(p, name, body)
        if recipe is not None and not p.count:
            out[str(name)] = recipe
    return dict(sorted(out.items()))


def parse_recipes(raw: Any, *, path: str = "images",
                  builtin: bool = True) -> dict[str, Recipe]:
    """An ``images:`` section → ``{name: Recipe}``, on top of :data:`BUILTIN` (a recipe of
    the same name replaces the built-in one).  Every problem of every recipe at once."""
    c = Collector()
    own = collect_recipes(c, raw, path)
    if c.problems:
        raise ValidationError(c.problems)
    return dict(sorted({**(builtin_recipes() if builtin else {}), **own}.items()))


# ------------------------------------------------------------------------------ built-ins

#: The network tools of the seed's ``base`` VM (its Vagrantfile provisioned the same).
BASE_TOOLS = ("iproute2", "iputils-ping", "dnsutils", "curl", "tcpdump", "iperf3",
              "netcat-openbsd", "traceroute", "procps")

#: The docker template's offline ``busybox`` image: a rootfs tar made at build time from
#: busybox-static, imported into the VM's dockerd at start (if it is not there yet).
_BUSYBOX_TAR = "/usr/share/hybridnb/busybox-image.tar"
_DOCKER_BUSYBOX_BUILD = (
    "d=$(mktemp -d); mkdir -p \"$d/bin\" \"$d/etc\" \"$d/tmp\" /usr/share/hybridnb\n"
    "cp /bin/busybox \"$d/bin/\"\n"
    "for a in $(/bin/busybox --list); do [ \"$a\" = busybox ] || ln -s busybox \"$d/bin/$a\"; "
    "done\n"
    "echo 'root:x:0:0:root:/root:/bin/sh' > \"$d/etc/passwd\"\n"
    f"tar -C \"$d\" -cf {_BUSYBOX_TAR} .; rm -rf \"$d\"")
_DOCKER_BUSYBOX_BOOT = ("docker image inspect busybox:latest >/dev/null 2>&1 || docker import "
                        f"-c 'CMD [\"sh\"]' {_BUSYBOX_TAR} busybox:latest >/dev/null")

#: The seed's VM templates as recipes (a lab's ``images:`` may redefine them).
BUILTIN: Mapping[str, Mapping[str, Any]] = {
    "base": {"packages": list(BASE_TOOLS),
             "description": "Debian with the network tools: ip, ping, dig, curl, tcpdump, "
                            "iperf3, nc, traceroute"},
    "docker": {"packages": list(BASE_TOOLS) + ["busybox-static"],
               "services": ["dockerd"], "run": [_DOCKER_BUSYBOX_BUILD],
               "boot": [_DOCKER_BUSYBOX_BOOT], "memory": 512,
               "description": "Debian with docker.io running inside (containers in a VM); "
                              "busybox:latest is imported at start, so `docker run busybox` "
                              "works offline"},
    "observer": {"packages": list(BASE_TOOLS) + ["tshark"], "services": ["node-exporter"],
                 "description": "Debian with tcpdump, tshark and prometheus-node-exporter, "
                                "the VM a team parks on the bridge to watch it"},
}


@functools.lru_cache(maxsize=1)
def _builtin() -> tuple[tuple[str, Recipe], ...]:
    return tuple((name, parse_recipe(name, body)) for name, body in sorted(BUILTIN.items()))


def builtin_recipes() -> dict[str, Recipe]:
    """The built-in recipes (the seed's VM templates), by name."""
    return dict(_builtin())


# ------------------------------------------------------------------------------ in a lab

#: VM templates that are built-in recipes (``test`` is the busybox test VM, no recipe).
RECIPE_TEMPLATES = tuple(sorted(BUILTIN))


@dataclass(frozen=True)
class LabImages:
    """A lab's ``images:`` section: its own recipes on top of the built-in ones."""

    own: Mapping[str, Recipe] = field(default_factory=dict)
    #: the section as written (what the lab file gets back)
    raw: Mapping[str, Any] = field(default_factory=dict)

    def recipes(self) -> dict[str, Recipe]:
        """Every recipe the lab's endpoints may name: built-in ones, then its own."""
        return {**builtin_recipes(), **self.own}

    def get(self, name: str | None) -> Recipe | None:
        if not name:
            return None
        return self.own.get(name) or builtin_recipes().get(name)


def is_image_path(image: str) -> bool:
    """A VM ``image:`` that is a file (a cloud image): anything a recipe cannot be named."""
    return not _NAME.match(image)


def endpoint_recipe_name(kind: str, image: str | None, template: str | None) -> str | None:
    """The recipe an endpoint asks for, by name (whether or not it exists): a container's
    ``image:`` (any name; :class:`LabImages` says whether it is a recipe), a VM's ``image:``
    unless it is a file, else a VM template that is a built-in recipe."""
    if kind == "container":
        return image or None
    if kind != "vm":
        return None
    if image:
        return None if is_image_path(image) else image
    return template if template in RECIPE_TEMPLATES else None


def endpoint_recipe(kind: str, image: str | None, template: str | None,
                    images: LabImages | None) -> Recipe | None:
    """The recipe an endpoint runs (``None``: a Docker image, a cloud image or the test VM)."""
    name = endpoint_recipe_name(kind, image, template)
    return (images or LabImages()).get(name)


def recipe_image(recipe: Recipe) -> str:
    """The Docker repository a recipe's container images are imported as (the tag names the
    build: ``hybridnb/pg:<recipe key>-<versions key>-<layer key>``)."""
    return f"hybridnb/{recipe.name}"


def recipe_identity(recipe: Recipe) -> dict[str, Any]:
    """What an endpoint's resource spec carries of its recipe (a changed recipe changes the
    resource's fingerprint, so the endpoint is replaced)."""
    out: dict[str, Any] = {"name": recipe.name, "digest": recipe.digest()[:16]}
    ports = sorted({port for _, port in recipe.service_ports()})
    if ports:
        out["ports"] = ports                   # what listens without being declared
    return out


# ------------------------------------------------------------------------------ init script

def _array(name: str, items: list[str] | tuple[str, ...]) -> str:
    return f"{name}=(" + " ".join(shlex.quote(i) for i in items) + ")"


def _function(name: str, body: str) -> str:
    return f"{name}() {{\n{body.strip() or ':'}\n}}"


def services_script(recipe: Recipe) -> str:
    """The bash the image's init sources: services in order with readiness and start
    functions, kernel modules, environment, templated files and boot commands."""
    lines = [f"# generated by hybridnb for image recipe {recipe.name!r}; sourced by "
             "/usr/lib/hybridnb/init", f"HNB_RECIPE={shlex.quote(recipe.name)}",
             _array("HNB_SERVICES", [s.name for s in recipe.services]),
             _array("HNB_READY", [s.ready for s in recipe.services]),
             _array("HNB_MODULES", recipe.kernel_modules()),
             _array("HNB_TEMPLATES", [f.path for f in recipe.files if f.template]),
             _array("HNB_TEMPLATE_MODES", [f"{f.mode:04o}" for f in recipe.files
                                           if f.template])]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in recipe.env]
    for i, svc in enumerate(recipe.services):
        lines.append(_function(f"hnb_prepare_{i}", svc.prepare))
        lines.append(_function(f"hnb_run_{i}", svc.run))
    lines.append(_function("hnb_boot", "\n".join(
        f"( set -e\n{cmd.strip()}\n) || return $?" for cmd in recipe.boot)))
    return "\n".join(lines) + "\n"
