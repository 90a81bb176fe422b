"""The service catalogue: how to run well-known Debian services without systemd (pure data).

An image recipe (:mod:`hybridnb.core.recipe`) says ``services: [postgresql, nginx]``; this
module knows, for each name, what that means inside a rootfs built from Debian packages:

* ``packages``  — what to install when the recipe names none of ``provided_by`` itself
  (``nginx`` installs ``nginx-light`` unless the recipe lists ``nginx-full``);
* ``setup``     — shell run once at build time in the chroot (PostgreSQL: listen on every
  address, trust the lab's clients, JIT off, 32 MB shared buffers so it fits a 128 MiB VM);
* ``prepare``   — shell run at every start before the service (``/run`` is a fresh tmpfs);
* ``run``       — shell that ``exec``\\ s the service in the *foreground*, so the image's init
  (``hybridnb/images/guest/init.sh``) owns its pid, logs its output to
  ``/var/log/hybridnb/<name>.log`` and notices when it dies;
* readiness     — the TCP ``ports`` that must accept connections (``postgresql`` → 5432), a
  ``check`` command that must succeed (``dockerd``: ``docker version``; its socket exists
  seconds before the API answers) or a unix ``socket`` that must exist; a service with none
  is ready once it has stayed up for a moment (HAProxy: its ports are in its config);
* ``exclude``   — dpkg ``path-exclude`` patterns that slim the image (PostgreSQL's LLVM JIT is
  133 MB, Prometheus' bundled timezone data 221 MB and ``promtool`` 48 MB);
* ``modules``   — kernel modules a VM loads before the service starts (``dockerd``).

The QEMU guest agent is not a recipe service: every VM disk carries its own copy and the VM's
init starts it (see :mod:`hybridnb.images.vmdisk`).

Services run as the package's own user through ``setpriv`` (util-linux, in every Debian
rootfs; no PAM session as with ``su``/``runuser``).  Everything here is lab-grade on purpose:
PostgreSQL trusts every client, Redis has protected mode off — the lab is an isolated
namespace, not production.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class ServiceDef:
    """One service an image runs at start: how to set it up, start it and see it ready."""

    name: str
    run: str                                   # shell; ends by exec'ing the foreground process
    packages: tuple[str, ...] = ()
    provided_by: tuple[str, ...] = ()          # fnmatch patterns of packages that provide it
    ports: tuple[int, ...] = ()                # TCP ports that accept connections when ready
    socket: str | None = None                  # or: a unix socket that exists when ready
    check: str = ""                            # or: a command that succeeds when ready
    prepare: str = ""                          # shell run at start, before ``run``
    setup: str = ""                            # shell run at build time in the chroot
    exclude: tuple[str, ...] = ()              # dpkg path-exclude patterns
    modules: tuple[str, ...] = ()              # kernel modules (VMs) loaded before it starts
    description: str = ""
    #: the SRV service name an endpoint offers it under (default: the service's name)
    srv: str = ""

    @property
    def ready(self) -> str:
        """Readiness as the init reads it: ``tcp:5432,80``, ``cmd:<shell>``,
        ``unix:/run/x.sock`` or ``up``."""
        if self.ports:
            return "tcp:" + ",".join(str(p) for p in self.ports)
        if self.check:
            return f"cmd:{self.check}"
        if self.socket:
            return f"unix:{self.socket}"
        return "up"

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "run": self.run, "packages": list(self.packages),
                "provided_by": list(self.provided_by), "ports": list(self.ports),
                "socket": self.socket, "check": self.check, "prepare": self.prepare,
                "setup": self.setup,
                "exclude": list(self.exclude), "modules": list(self.modules)}


def as_user(user: str, command: str) -> str:
    """``exec`` ``command`` as ``user`` (and its groups) without PAM."""
    return f"exec setpriv --reuid={user} --regid={user} --init-groups -- {command}"


_PG_SETUP = r"""for d in /etc/postgresql/*/main; do
  mkdir -p "$d/conf.d"
  printf '%s\n' "listen_addresses = '*'" "jit = off" "shared_buffers = 32MB" \
    > "$d/conf.d/hybridnb.conf"
  printf '%s\n' "host all all 0.0.0.0/0 trust" "host all all ::/0 trust" >> "$d/pg_hba.conf"
done"""

_PG_RUN = r"""d=$(ls -d /etc/postgresql/*/main | sort -V | tail -n 1)
v=${d#/etc/postgresql/}; v=${v%/main}
""" + as_user("postgres", "/usr/lib/postgresql/$v/bin/postgres -D /var/lib/postgresql/$v/main "
                          "-c config_file=$d/postgresql.conf")

_PROMETHEUS_ARGS = ("--config.file=/etc/prometheus/prometheus.yml "
                    "--storage.tsdb.path=/var/lib/prometheus/metrics2/ "
                    "--web.console.libraries=/usr/share/prometheus/console_libraries "
                    "--web.console.templates=/etc/prometheus/consoles")

#: The services a recipe can name, by name.
CATALOGUE: Mapping[str, ServiceDef] = {s.name: s for s in (
    ServiceDef(
        "postgresql", _PG_RUN, packages=("postgresql",),
        provided_by=("postgresql", "postgresql-[0-9]*"), ports=(5432,),
        prepare="install -d -o postgres -g postgres -m 2775 /run/postgresql",
        setup=_PG_SETUP,
        exclude=("/usr/lib/postgresql/*/lib/bitcode/*", "/usr/lib/postgresql/*/lib/llvmjit*",
                 "/usr/lib/x86_64-linux-gnu/libLLVM*", "/usr/lib/x86_64-linux-gnu/libz3*"),
        description="PostgreSQL, every database reachable without a password (trust)"),
    ServiceDef(
        "nginx", "exec nginx -g 'daemon off;'", packages=("nginx-light",),
        provided_by=("nginx", "nginx-*"), ports=(80,), srv="http",
        prepare="mkdir -p /var/log/nginx /var/lib/nginx",
        description="nginx serving /var/www/html on port 80"),
    ServiceDef(
        "apache2", ". /etc/apache2/envvars\nexec apache2 -D FOREGROUND", packages=("apache2",),
        ports=(80,), srv="http", prepare="mkdir -p /run/apache2 /run/lock/apache2",
        description="Apache httpd serving /var/www/html on port 80"),
    ServiceDef(
        "haproxy", "exec haproxy -W -db -f /etc/haproxy/haproxy.cfg", packages=("haproxy",),
        prepare="mkdir -p /run/haproxy",
        description="HAProxy with /etc/haproxy/haproxy.cfg (give its port: haproxy/80)"),
    ServiceDef(
        "prometheus", as_user("prometheus", "/usr/bin/prometheus " + _PROMETHEUS_ARGS),
        packages=("prometheus",), ports=(9090,),
        exclude=("/usr/share/javascript/moment-timezone/data/*", "/usr/bin/promtool"),
        description="Prometheus with /etc/prometheus/prometheus.yml on port 9090"),
    ServiceDef(
        "node-exporter", as_user("prometheus", "/usr/bin/prometheus-node-exporter"),
        packages=("prometheus-node-exporter",), ports=(9100,),
        description="Prometheus node exporter on port 9100"),
    ServiceDef(
        "dockerd", "exec dockerd -H unix:///run/docker.sock", packages=("docker.io", "kmod"),
        provided_by=("docker.io", "docker-ce"), socket="/run/docker.sock",
        check="docker version >/dev/null 2>&1",
        prepare="mountpoint -q /sys/fs/cgroup || mount -t cgroup2 cgroup2 /sys/fs/cgroup",
        modules=("overlay", "br_netfilter", "veth", "bridge", "nf_tables", "nft_chain_nat",
                 "xt_MASQUERADE", "xt_addrtype", "xt_conntrack"),
        description="the Docker engine (containers inside the VM), socket /run/docker.sock"),
    ServiceDef(
        "redis", as_user("redis", "redis-server /etc/redis/redis.conf --daemonize no "
                                  "--supervised no --bind 0.0.0.0 --protected-mode no"),
        packages=("redis-server",), ports=(6379,),
        prepare="install -d -o redis -g redis /run/redis",
        description="Redis on port 6379, protected mode off"),
    ServiceDef(
        "sshd", "exec /usr/sbin/sshd -D -e", packages=("openssh-server",), ports=(22,),
        srv="ssh",
        prepare="mkdir -p /run/sshd && ssh-keygen -A",
        setup="rm -f /etc/ssh/ssh_host_*",
        description="OpenSSH server on port 22 (host keys made at first start)"),
    ServiceDef(
        "iperf3", "exec iperf3 -s", packages=("iperf3",), ports=(5201,),
        description="iperf3 server on port 5201"),
)}


@dataclass(frozen=True)
class CustomService:
    """What a recipe says about a service of its own (``{name, command, port, user}``)."""

    name: str
    command: str
    ports: tuple[int, ...] = ()
    socket: str | None = None
    user: str | None = None
    prepare: str = ""
    modules: tuple[str, ...] = field(default_factory=tuple)
    check: str = ""

    def definition(self) -> ServiceDef:
        shell = f"sh -c {shlex.quote(self.command)}"
        run = as_user(self.user, shell) if self.user else f"exec {shell}"
        return ServiceDef(self.name, run, ports=self.ports, socket=self.socket,
                          check=self.check, prepare=self.prepare, modules=self.modules,
                          description=f"{self.name}: {self.command}")
