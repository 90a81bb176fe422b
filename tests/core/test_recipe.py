"""Image recipes (pure): parsing and validation, the catalogue, keys, templates, init script."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hybridnb.core import recipe as r
from hybridnb.core.catalogue import CATALOGUE
from hybridnb.errors import ValidationError
from tests.golden import check_golden

GOLDEN = Path(__file__).parent / "golden" / "recipe"


def problems(raw, name="x") -> list[str]:
    with pytest.raises(ValidationError) as err:
        r.parse_recipes({name: raw}, builtin=False)
    return [str(p) for p in err.value.problems]


def test_builtin_templates_are_recipes() -> None:
    rs = r.builtin_recipes()
    assert set(rs) == {"base", "docker", "observer"}
    for tool in ("iproute2", "tcpdump", "dnsutils", "curl", "iperf3", "netcat-openbsd"):
        assert tool in rs["base"].all_packages()
    assert {"docker.io", "kmod", "busybox-static"} <= set(rs["docker"].all_packages())
    assert [s.name for s in rs["docker"].services] == ["dockerd"]
    assert rs["docker"].services[0].ready == "cmd:docker version >/dev/null 2>&1"
    assert {"tshark", "prometheus-node-exporter"} <= set(rs["observer"].all_packages())
    assert rs["observer"].service_ports() == (("node-exporter", 9100),)
    assert "overlay" in rs["docker"].kernel_modules()


def test_issue_example_parses() -> None:
    rs = r.parse_recipes({
        "pg": {"packages": ["postgresql", "postgresql-client"], "services": ["postgresql"]},
        "web": {"packages": ["nginx-light"], "services": ["nginx"],
                "files": {"/var/www/html/index.html": "hello from {{name}}"}},
        "tools": {"packages": ["iproute2", "dnsutils", "curl", "tcpdump", "iperf3"]},
    })
    assert set(rs) == {"base", "docker", "observer", "pg", "web", "tools"}
    pg, web = rs["pg"], rs["web"]
    assert pg.suite == "bookworm" and pg.service_ports() == (("postgresql", 5432),)
    assert "/usr/lib/x86_64-linux-gnu/libLLVM*" in pg.path_excludes()    # slimmed JIT
    assert "/usr/share/man/*" in pg.path_excludes()
    assert web.all_packages() == ("nginx-light",)        # the recipe's nginx provides it
    f = web.files[0]
    assert f.template and f.mode == 0o644 and f.path == "/var/www/html/index.html"


def test_every_problem_with_path_and_hint() -> None:
    found = problems({
        "pakages": [], "packages": ["PostgreSQL", "ok-pkg"],
        "services": ["postgres", "nginx/99999", {"name": "app"}, 7],
        "files": {"rel/path": "x", "/etc/a": "hi {{nmae}}", "/proc/x": "y",
                  "/etc/b": {"content": "z", "mode": "9"}},
        "disk": "10M", "env": {"1BAD": "x"}, "slim": "yes", "suite": "Bookworm!"})
    text = "\n".join(found)
    for needle in ("x.pakages: unknown key 'pakages' (hint: did you mean 'packages'?)",
                   "x.packages[0]: 'PostgreSQL' is not a Debian package name",
                   "x.services[0]: unknown service 'postgres' (hint: did you mean 'postgresql'?",
                   "x.services[1]: port 99999 is out of range",
                   "x.services[2]: service 'app' is not in the catalogue and has no command",
                   "x.services[3]: 7 is not a service",
                   "x.files.rel/path: 'rel/path' is not an absolute file path",
                   "x.files./etc/a: unknown template variable 'nmae' (hint: did you mean "
                   "'name'?",
                   "x.files./proc/x: /proc/x is on a filesystem made at start",
                   "x.files./etc/b.mode: '9' is not a file mode",
                   "x.disk: 10 MiB is too small", "x.env.1BAD:", "x.slim: expected true or false",
                   "x.suite: 'Bookworm!' is not a Debian suite"):
        assert needle in text, needle
    assert len(found) == 14


def test_bad_names_and_shapes() -> None:
    assert problems({}, name="Bad_Name") == [
        "images.Bad_Name: 'Bad_Name' is not a valid image name (hint: lowercase letters, "
        "digits and '-', at most 32, e.g. pg or web-app)"]
    assert "expected a mapping" in problems([1, 2])[0]
    with pytest.raises(ValidationError):
        r.parse_recipes(["pg"])


def test_services_forms() -> None:
    rec = r.parse_recipe("s", {"services": [
        "nginx/8080", {"name": "redis", "port": 6380},
        {"name": "app", "command": "cd /srv && python3 -m http.server 8000", "port": 8000,
         "user": "www-data"},
        {"name": "sock", "command": "my-daemon", "socket": "/run/my.sock"},
        {"name": "dockerd", "socket": "/run/d.sock"},
        {"name": "chk", "command": "my-daemon", "check": "test -e /run/ok"}]})
    nginx, redis, app, sock, dockerd, chk = rec.services
    assert dockerd.ready == "unix:/run/d.sock" and chk.ready == "cmd:test -e /run/ok"
    assert nginx.ports == (8080,) and nginx.run == CATALOGUE["nginx"].run
    assert redis.ports == (6380,) and redis.packages == ("redis-server",)
    assert app.ready == "tcp:8000"
    assert app.run == ("exec setpriv --reuid=www-data --regid=www-data --init-groups -- "
                       "sh -c 'cd /srv && python3 -m http.server 8000'")
    assert sock.ready == "unix:/run/my.sock" and sock.run == "exec sh -c my-daemon"
    assert CATALOGUE["haproxy"].ready == "up"
    assert "twice" in problems({"services": ["nginx", "nginx/81"]})[0]


def test_provided_by_and_implied_packages() -> None:
    full = r.parse_recipe("a", {"packages": ["nginx-full"], "services": ["nginx"]})
    assert full.all_packages() == ("nginx-full",)
    ce = r.parse_recipe("b", {"packages": ["docker-ce"], "services": ["dockerd"]})
    assert ce.all_packages() == ("docker-ce", "kmod")
    client = r.parse_recipe("c", {"packages": ["postgresql-client"], "services": ["postgresql"]})
    assert client.all_packages() == ("postgresql", "postgresql-client")
    pg15 = r.parse_recipe("d", {"packages": ["postgresql-15"], "services": ["postgresql"]})
    assert pg15.all_packages() == ("postgresql-15",)
    mods = r.parse_recipe("e", {"modules": ["sch_netem"]})
    assert mods.all_packages() == ("kmod",) and mods.kernel_modules() == ("sch_netem",)
    cloud = r.parse_recipe("f", {"cloud_init": True})
    assert set(r.CLOUD_INIT_PACKAGES) <= set(cloud.all_packages())


def test_sizes_env_command() -> None:
    assert r.parse_recipe("a", {"disk": "2G", "memory": "256M"}).disk == 2048
    assert r.parse_recipe("a", {"disk": 700}).disk == 700
    assert r.parse_recipe("a", {"disk": "1GiB"}).disk == 1024
    assert r.parse_recipe("a", {"memory": 256}).memory == 256
    assert "not a size" in problems({"disk": "lots"})[0]
    rec = r.parse_recipe("a", {"env": {"B": 2, "A": True}, "command": "echo hi"})
    assert rec.env == (("A", "true"), ("B", "2"))
    assert rec.command == ("sh", "-c", "echo hi")
    assert r.parse_recipe("a", {"command": ["python3", "-V"]}).command == ("python3", "-V")
    assert "empty" in problems({"command": []})[0]


def test_templates() -> None:
    text = "{{name}} {{ address }} {{  fqdn  }} {{gateway}} {{ other }} {{domain}}"
    assert r.template_vars(text) == ["name", "address", "fqdn", "gateway", "other", "domain"]
    values = r.endpoint_values("db", "10.0.1.200", "hybrid.local", "10.0.1.1")
    assert r.render_template(text, values) == \
        "db 10.0.1.200 db.hybrid.local 10.0.1.1 {{ other }} hybrid.local"
    verbatim = r.parse_recipe("a", {"files": {"/etc/t.j2": {"content": "{{ x }}",
                                                            "template": False}}})
    assert not verbatim.files[0].template
    plain = r.parse_recipe("a", {"files": {"/etc/p": {"content": "x", "mode": "0755"}}})
    assert not plain.files[0].template and plain.files[0].mode == 0o755


def test_digest_is_canonical() -> None:
    a = r.parse_recipe("a", {"packages": ["curl", "tcpdump"], "env": {"X": "1", "Y": "2"}})
    b = r.parse_recipe("a", {"env": {"Y": "2", "X": "1"}, "packages": ["tcpdump", "curl"]})
    assert a.digest() == b.digest() and len(a.digest()) == 64
    c = r.parse_recipe("a", {"packages": ["curl", "tcpdump"], "env": {"X": "1", "Y": "3"}})
    assert c.digest() != a.digest()
    d = r.parse_recipe("b", {"packages": ["curl", "tcpdump"], "env": {"X": "1", "Y": "2"}})
    assert d.digest() != a.digest()


def test_lab_images_shapes() -> None:
    lab = {"images": {"pg": {"packages": ["postgresql"]}, "spare": {}},
           "endpoints": {"db": {"kind": "vm", "image": "pg"},
                         "api": {"kind": "container", "image": "pg"},
                         "watch": {"kind": "vm", "template": "observer"},
                         "bb": {"kind": "container", "image": "busybox"},
                         "t": {"kind": "vm", "template": "test"}}}
    from hybridnb.core.sections.images import used_images
    from hybridnb.core.spec import parse_lab

    got = {n: shapes for n, (_, shapes) in used_images(parse_lab(lab)).items()}
    assert got == {"observer": ("vm",), "pg": ("container", "vm"), "spare": ("rootfs",)}


def _bash_arrays(script: str) -> dict[str, str]:
    code = script + ("\nfor v in HNB_SERVICES HNB_READY HNB_MODULES HNB_TEMPLATES "
                     "HNB_TEMPLATE_MODES; do eval \"echo $v=\\${$v[*]}\"; done\n"
                     "declare -F | wc -l\n")
    out = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    out = subprocess.run(["bash", "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    return dict(line.split("=", 1) for line in lines[:-1]) | {"functions": lines[-1]}


def test_services_script_is_valid_bash() -> None:
    rec = r.parse_recipe("pg", {
        "services": ["postgresql", "node-exporter",
                     {"name": "app", "command": "echo 'it''s' \"$HOME\"", "port": 8000}],
        "files": {"/srv/index.html": "{{name}}", "/srv/x": {"content": "{{name}}",
                                                           "mode": "0600"}},
        "env": {"MSG": "a b 'c'"}, "boot": ["echo one", "echo two"], "modules": ["sch_netem"]})
    script = r.services_script(rec)
    got = _bash_arrays(script)
    assert got["HNB_SERVICES"] == "postgresql node-exporter app"
    assert got["HNB_READY"] == "tcp:5432 tcp:9100 tcp:8000"
    assert got["HNB_MODULES"] == "sch_netem"
    assert got["HNB_TEMPLATES"] == "/srv/index.html /srv/x"
    assert got["HNB_TEMPLATE_MODES"] == "0644 0600"
    assert got["functions"] == "7"                       # prepare+run per service, boot
    out = subprocess.run(["bash", "-c", script + "\necho \"$MSG\"; hnb_boot"],
                         capture_output=True, text=True, check=True)
    assert out.stdout == "a b 'c'\none\ntwo\n"
    failing = r.services_script(r.parse_recipe("b", {"boot": ["false", "echo never"]}))
    out = subprocess.run(["bash", "-c", failing + "\nhnb_boot; echo rc=$?"], capture_output=True,
                         text=True)
    assert out.stdout == "rc=1\n"
    for rec in r.builtin_recipes().values():
        _bash_arrays(r.services_script(rec))
    check_golden(GOLDEN / "services-pg.sh", script)
