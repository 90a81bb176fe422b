"""Labs of image recipes, for real: the example lab files applied through ``Lab`` and the CLI.

In the session's sandbox (no route out); ``apply`` builds what the lab's recipes need first
(from the image cache when ``make images`` prebuilt it), then makes the endpoints:

* ``examples/recipes.yaml``: PostgreSQL in a VM (``db``) used from a container of the same
  recipe (``api``) by name through the lab's DNS — and back, the VM querying the container's
  server; the ``web`` recipe as a container and as a VM, each serving a page templated with
  its own name, fetched by name from the other; ``validate`` passes with the file's
  ``expect:`` lines and fails for a port nothing listens on; the SRV records and the probes
  (from the VMs too) name what really listens; re-applying does nothing;
* ``examples/templates.yaml``: the seed's templates ``base``, ``observer`` and ``docker``
  (built-in recipes) booted; inside the docker VM a container publishes a port a lab
  container reaches;
* ``examples/cloud-init.yaml``: a VM configured by cloud-init from the NoCloud seed;
* a service that dies fails its VM, one that never listens its container, by name — and
  nothing of them is left.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from hybridnb.cli import main
from hybridnb.errors import BootError
from hybridnb.lab import Lab
from tests.images.recipes import BROKEN, EXAMPLES, SLEEPY, example

pytestmark = [pytest.mark.real, pytest.mark.vm]


def load(sandbox: Any, source: Path | dict[str, Any], state_dir: Path) -> Lab:
    if isinstance(source, dict):
        return Lab.from_dict(source, backend="sandbox", sandbox=sandbox.name,
                             state_dir=state_dir)
    return Lab.load(source, backend="sandbox", sandbox=sandbox.name, state_dir=state_dir)


def up(lab: Lab) -> Lab:
    """Apply, printing what the images step and the boots took."""
    events: list[tuple[float, Any]] = []
    t0 = time.monotonic()
    try:
        result = lab.apply(progress=lambda e: events.append((time.monotonic() - t0, e)))
    except BaseException:
        lab.destroy()
        raise
    images = [at for at, e in events if getattr(e, "phase", "") == "image"]
    first = next((at for at, e in events if getattr(e, "phase", "") != "image"), 0.0)
    boots = {o.action.name: round(o.seconds, 1) for o in result.outcomes
             if o.action.kind in ("vm", "container")}
    print(f"\n{lab.name} up in {time.monotonic() - t0:.1f} s (images step until "
          f"{first:.1f} s, {len(images)} image events; endpoints {boots})")
    return lab


def cexec(lab: Lab, endpoint: str, argv: list[str]) -> tuple[int, str]:
    driver = lab.backend.drivers["container"]
    api = driver.api
    ex = api.exec_create(driver.state(lab.name)[endpoint]["id"], argv)
    out = api.exec_start(ex["Id"]).decode(errors="replace")
    return api.exec_inspect(ex["Id"])["ExitCode"], out


def gexec(lab: Lab, endpoint: str, command: str, timeout: float = 30) -> tuple[int, str]:
    code, out, err = lab.backend.drivers["vm"].guest_exec(lab.name, endpoint,
                                                           ["/bin/sh", "-c", command],
                                                           timeout=timeout)
    return code, out + err


def console(lab: Lab, endpoint: str) -> str:
    return lab.backend.drivers["vm"].console(lab.name, endpoint, lines=200)


def addr(lab: Lab, endpoint: str) -> str:
    return str(lab.addresses()[endpoint])


# ------------------------------------------------------------------------------ apps

@pytest.fixture(scope="module")
def apps(sandbox, tmp_path_factory):
    lab = up(load(sandbox, EXAMPLES / "recipes.yaml", tmp_path_factory.mktemp("apps")))
    yield lab
    lab.destroy()


def test_psql_from_a_container_to_postgresql_in_a_vm(apps) -> None:
    assert "services=postgresql/5432" in console(apps, "db")
    sql = ("create table notes (id serial primary key, body text); "
           "insert into notes (body) values ('from api'), ('second'); "
           "select body from notes order by id;")
    code, out = cexec(apps, "api", ["psql", "-h", "db.hybrid.local", "-U", "postgres", "-At",
                                    "-P", "pager=off", "-c", sql])
    assert code == 0, out
    assert out.split() == ["CREATE", "TABLE", "INSERT", "0", "2", "from", "api", "second"]
    # the data lives in the VM: a second client session reads it back
    code, out = cexec(apps, "api", ["psql", "-h", "db", "-U", "postgres", "-At", "-c",
                                    "select count(*) from notes"])
    assert (code, out.strip()) == (0, "2")


def test_the_vm_queries_a_container_service(apps) -> None:
    code, out = gexec(apps, "db", "psql -h api.hybrid.local -U postgres -At -c 'select 6 * 7'")
    assert (code, out.strip()) == (0, "42")


def test_validate_passes_and_fails_where_nothing_listens(apps, sandbox) -> None:
    report = apps.validate()
    assert report.exit_code == 0, report.to_text()
    assert "api -> db tcp/5432 ok" in report.to_text()
    doc = {**example("recipes"), "expect": ["api -> db tcp/5433 ok", "api -> db tcp/5432 ok"]}
    same = load(sandbox, doc, apps.store.dir)
    report = same.validate()
    assert report.exit_code == 1, report.to_text()
    lines = report.to_text().splitlines()
    assert any("FAIL" in line and "tcp/5433" in line for line in lines), lines
    assert any("PASS" in line and "tcp/5432" in line for line in lines), lines


def test_one_web_recipe_as_container_and_vm(apps) -> None:
    w1, w2, gw = addr(apps, "w1"), addr(apps, "w2"), str(apps.spec.network.gateway)
    code, page = cexec(apps, "w1", ["curl", "-sS", "-m", "5", "http://w2.hybrid.local/"])
    assert code == 0, page
    assert page == f"hello from w2 at {w2} (w2.hybrid.local, gateway {gw})\n"
    code, page = gexec(apps, "w2", "curl -sS -m 5 http://w1/")
    assert code == 0, page
    assert page == f"hello from w1 at {w1} (w1.hybrid.local, gateway {gw})\n"
    code, env = cexec(apps, "w1", ["sh", "-c", "echo $GREETING"])
    assert env.strip() == "hi there"


def test_srv_records_and_probes_name_what_listens(apps) -> None:
    srv = [r.data for r in apps.dns().records
           if r.rtype == "SRV" and r.name == "_postgresql._tcp.db.hybrid.local."]
    assert [d[2:] for d in srv] == [(5432, "db.hybrid.local.")], apps.dns().to_text()
    code, out = gexec(apps, "db", "/usr/lib/hybridnb/probe/nslookup -type=SRV "
                                  "_http._tcp.hybrid.local " + str(apps.spec.network.gateway))
    assert code == 0 and "w1.hybrid.local" in out and "w2.hybrid.local" in out, out
    matrix = apps.test(("icmp", "tcp", "dns"), timeout=2.0, count=1)
    assert matrix.ok, matrix.to_text(verbose=True)


def test_reapplying_does_nothing_and_builds_nothing(apps) -> None:
    plan = apps.plan()
    assert plan.empty and not plan.notes, plan.to_text()
    t0 = time.monotonic()
    result = apps.apply()
    assert result.plan.empty and time.monotonic() - t0 < 5


def test_second_build_through_the_cli_is_a_cache_hit(apps, capsys) -> None:
    lab = str(EXAMPLES / "recipes.yaml")
    assert main(["images", "build", lab, "-q"]) == 0
    t0 = time.monotonic()
    assert main(["images", "build", lab]) == 0
    seconds = time.monotonic() - t0
    out, err = capsys.readouterr()
    assert seconds < 1.0, (seconds, err)
    assert "image pg: VM disk" in out and "cached" in err, err
    print(f"\nsecond `hybridnb images build examples/recipes.yaml`: {seconds * 1000:.0f} ms")


# ------------------------------------------------------------------------------ templates

@pytest.fixture(scope="module")
def tpl(sandbox, tmp_path_factory):
    lab = up(load(sandbox, EXAMPLES / "templates.yaml", tmp_path_factory.mktemp("tpl")))
    yield lab
    lab.destroy()


def test_base_template(tpl) -> None:
    code, out = gexec(tpl, "basevm", "ping -c1 -W2 obs.hybrid.local && dig +short "
                                     "dock.hybrid.local && ip -4 -o addr show eth0")
    assert code == 0, out
    assert addr(tpl, "dock") in out and f"{addr(tpl, 'basevm')}/24" in out
    for tool in ("tcpdump", "iperf3", "nc", "curl", "traceroute"):
        assert gexec(tpl, "basevm", f"command -v {tool}")[0] == 0, tool
    assert tpl.spec.endpoint("dock").memory == 512           # the docker recipe's memory


def test_observer_template(tpl) -> None:
    code, metrics = cexec(tpl, "client", ["curl", "-sS", "-m", "5",
                                          "http://obs.hybrid.local:9100/metrics"])
    assert code == 0 and "node_network_receive_bytes_total" in metrics
    code, out = gexec(tpl, "obs", "tshark -v | head -1 && tcpdump --version 2>&1 | head -1")
    assert code == 0 and "TShark" in out and "tcpdump" in out
    code, out = gexec(tpl, "obs", "timeout 5 tcpdump -c 1 -ni eth0 icmp >/dev/null 2>&1 & "
                                  "sleep 1; ping -c 2 -W1 " + str(tpl.spec.network.gateway)
                                  + " >/dev/null; wait $!")
    assert code == 0, out
    assert tpl.validate().exit_code == 0                    # client -> obs tcp/9100 ok


def test_docker_template_runs_containers_inside_the_vm(tpl) -> None:
    code, out = gexec(tpl, "dock", "docker run -d --name inner -p 8080:80 busybox sh -c "
                                   "'mkdir -p /w && echo hello from inside dock > "
                                   "/w/index.html && exec httpd -f -p 80 -h /w'", timeout=60)
    assert code == 0, out
    deadline = time.monotonic() + 30
    page = ""
    while time.monotonic() < deadline:
        code, page = cexec(tpl, "client", ["curl", "-sS", "-m", "3",
                                           "http://dock.hybrid.local:8080/"])
        if code == 0:
            break
        time.sleep(0.5)
    assert page == "hello from inside dock\n", page


# ------------------------------------------------------------------------------ cloud-init

@pytest.fixture(scope="module")
def cloud(sandbox, tmp_path_factory):
    lab = up(load(sandbox, EXAMPLES / "cloud-init.yaml", tmp_path_factory.mktemp("cloud")))
    yield lab
    lab.destroy()


def test_cloud_init_configures_nic_dns_and_hostname(cloud) -> None:
    ip, gw = addr(cloud, "ci"), str(cloud.spec.network.gateway)
    code, out = gexec(cloud, "ci", "hostname; hostname -f; ip -4 -o addr; ip route; "
                                   "cat /etc/resolv.conf")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "ci" and lines[1] == "ci.hybrid.local"
    assert f"inet {ip}/24" in out and f"default via {gw}" in out
    assert f"nameserver {gw}" in out and "search hybrid.local" in out
    code, out = gexec(cloud, "ci", "cat /var/log/hybridnb/cloud-init.log")
    assert "running 'modules:final'" in out and "Traceback" not in out, out
    assert f"HYBRIDNB-READY name=ci ip={ip}" in console(cloud, "ci")
    # the lab's DNS answers through the resolv.conf cloud-init made (no hosts entry for it)
    code, out = gexec(cloud, "ci", "python3 -c \"import socket; "
                                   "print(socket.gethostbyname('gateway.hybrid.local'))\"")
    assert (code, out.strip()) == (0, gw)


# ------------------------------------------------------------------------------ failures

def test_a_service_that_dies_fails_the_vm_by_name(sandbox, tmp_path) -> None:
    lab = load(sandbox, {"name": "imgbad", "network": {"bridge": "himgbad0",
                                                       "subnet": "10.74.0.0/24"},
                         "images": {"broken": BROKEN},
                         "endpoints": {"bad": {"kind": "vm", "image": "broken"}}}, tmp_path)
    t0 = time.monotonic()
    try:
        with pytest.raises(BootError) as err:
            lab.apply()
        assert "service broken did not come up: exited with code 3" in str(err.value)
        assert "oops" in err.value.console                       # the service's own output
        assert time.monotonic() - t0 < 90
        assert lab.backend.drivers["vm"].state(lab.name, "bad") is None   # nothing left
    finally:
        lab.destroy()


def test_a_container_whose_service_never_listens(sandbox, tmp_path) -> None:
    lab = load(sandbox, {"name": "imgbadc", "network": {"bridge": "himgbadc0",
                                                        "subnet": "10.75.0.0/24"},
                         "images": {"sleepy": SLEEPY},
                         "endpoints": {"c": {"kind": "container", "image": "sleepy"}}},
               tmp_path)
    try:
        with pytest.raises(BootError) as err:
            lab.apply()
        assert "container c: service sleepy did not come up: not ready after 2 s " \
               "(waiting for tcp:9999)" in str(err.value), str(err.value)
        assert "c" not in lab.backend.drivers["container"].state(lab.name)   # removed
    finally:
        lab.destroy()
