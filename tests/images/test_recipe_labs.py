"""Recipe images running for real: containers and VMs of the same recipes on one bridge.

In the session's sandbox (no route out), built from Debian packages on the machine:

* ``apps``: PostgreSQL in a VM (``db``) used from a container of the same recipe (``api``)
  by name through the lab's DNS — and back, the VM querying the container's server; the
  ``web`` recipe as a container and as a VM, each serving a page templated with its own
  name, fetched by name from the other;
* ``tpl``: the seed's templates ``base``, ``observer`` and ``docker`` booted; inside the docker
  VM a container publishes a port a lab container reaches;
* ``cloud``: a VM configured by cloud-init from the NoCloud seed;
* a service that dies, or never listens, fails the VM (or container) with its name.
"""

from __future__ import annotations

import time

import pytest

from hybridnb.drivers import nsutil
from hybridnb.errors import BootError
from tests.images.reallab import Endpoint, RecipeLab

pytestmark = [pytest.mark.real, pytest.mark.vm]


def tcp_open(netns: str, address: str, port: int, timeout: float = 3.0) -> bool:
    sock = nsutil.socket_in_netns(netns)
    sock.settimeout(timeout)
    try:
        sock.connect((address, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


@pytest.fixture(scope="module")
def apps(sandbox, built, tmp_path_factory):
    lab = RecipeLab("imgapps", "10.71.0.0/24", sandbox.target(),
                    tmp_path_factory.mktemp("imgapps"), {
                        "db": Endpoint("vm", "pg", memory=192),
                        "api": Endpoint("container", "pg"),
                        "w1": Endpoint("container", "web"),
                        "w2": Endpoint("vm", "web", memory=160)})
    t0 = time.monotonic()
    lab.up()
    print(f"\napps lab up in {time.monotonic() - t0:.1f} s (images "
          f"{ {k: round(v, 1) for k, v in lab.image_seconds.items()} }, VM boots "
          f"{ {k: round(v, 1) for k, v in lab.boot_seconds.items()} })")
    yield lab
    lab.down()


def test_psql_from_a_container_to_postgresql_in_a_vm(apps) -> None:
    assert "services=postgresql/5432" in apps.vms.console(apps.name, "db")
    assert "HYBRIDNB-READY name=api" in apps.wait_container_ready("api")
    sql = ("create table notes (id serial primary key, body text); "
           "insert into notes (body) values ('from api'), ('second'); "
           "select body from notes order by id;")
    code, out = apps.cexec("api", ["psql", "-h", "db.hybrid.local", "-U", "postgres", "-At",
                                   "-P", "pager=off", "-c", sql])
    assert code == 0, out
    assert out.split() == ["CREATE", "TABLE", "INSERT", "0", "2", "from", "api", "second"]
    # the data lives in the VM: a second client session reads it back
    code, out = apps.cexec("api", ["psql", "-h", "db", "-U", "postgres", "-At", "-c",
                                   "select count(*) from notes"])
    assert (code, out.strip()) == (0, "2")


def test_the_vm_queries_a_container_service(apps) -> None:
    code, out = apps.gexec("db", "psql -h api.hybrid.local -U postgres -At -c "
                                 "'select 6 * 7'")
    assert (code, out.strip()) == (0, "42")


def test_real_listeners_are_what_probes_see(apps) -> None:
    netns = apps.target.netns
    db = apps.addresses["db"]
    assert tcp_open(netns, db, 5432)
    assert not tcp_open(netns, db, 5433, timeout=1.0)       # nothing listens there
    assert tcp_open(netns, apps.addresses["w2"], 80)


def test_one_web_recipe_as_container_and_vm(apps) -> None:
    w1, w2 = apps.addresses["w1"], apps.addresses["w2"]
    assert "HYBRIDNB-READY name=w1" in apps.wait_container_ready("w1")
    code, page = apps.cexec("w1", ["curl", "-sS", "-m", "5", "http://w2.hybrid.local/"])
    assert code == 0, page
    assert page == f"hello from w2 at {w2} (w2.hybrid.local, gateway {apps.gateway})\n"
    code, page = apps.gexec("w2", "curl -sS -m 5 http://w1/")
    assert code == 0, page
    assert page == f"hello from w1 at {w1} (w1.hybrid.local, gateway {apps.gateway})\n"
    code, env = apps.cexec("w1", ["sh", "-c", "echo $GREETING"])
    assert env.strip() == "hi there"


@pytest.fixture(scope="module")
def tpl(sandbox, built, tmp_path_factory):
    lab = RecipeLab("imgtpl", "10.72.0.0/24", sandbox.target(),
                    tmp_path_factory.mktemp("imgtpl"), {
                        "basevm": Endpoint("vm", "base", memory=128,
                                           extra={"rootmode": "tmpfs"}),
                        "obs": Endpoint("vm", "observer", memory=192),
                        "dock": Endpoint("vm", "docker", memory=512),
                        "client": Endpoint("container", "base")})
    t0 = time.monotonic()
    lab.up()
    print(f"\ntemplates lab up in {time.monotonic() - t0:.1f} s (VM boots "
          f"{ {k: round(v, 1) for k, v in lab.boot_seconds.items()} })")
    yield lab
    lab.down()


def test_base_template(tpl) -> None:
    code, out = tpl.gexec("basevm", "ping -c1 -W2 obs.hybrid.local && dig +short "
                                    "dock.hybrid.local && ip -4 -o addr show eth0")
    assert code == 0, out
    assert tpl.addresses["dock"] in out and f"{tpl.addresses['basevm']}/24" in out
    for tool in ("tcpdump", "iperf3", "nc", "curl", "traceroute"):
        assert tpl.gexec("basevm", f"command -v {tool}")[0] == 0, tool
    # booted with hybrid.rootmode=tmpfs: the disk read-only under an overlay in guest RAM
    code, out = tpl.gexec("basevm", "grep ' / ' /proc/mounts; echo x > /root/written && "
                                    "cat /root/written")
    assert code == 0 and out.splitlines()[0].startswith("overlay / overlay") \
        and out.splitlines()[-1] == "x", out


def test_observer_template(tpl) -> None:
    code, metrics = tpl.cexec("client", ["curl", "-sS", "-m", "5",
                                         "http://obs.hybrid.local:9100/metrics"])
    assert code == 0 and "node_network_receive_bytes_total" in metrics
    code, out = tpl.gexec("obs", "tshark -v | head -1 && tcpdump --version 2>&1 | head -1")
    assert code == 0 and "TShark" in out and "tcpdump" in out
    code, out = tpl.gexec("obs", "timeout 5 tcpdump -c 1 -ni eth0 icmp >/dev/null 2>&1 & "
                                 "sleep 1; ping -c 2 -W1 " + tpl.gateway + " >/dev/null; wait $!")
    assert code == 0, out


def test_docker_template_runs_containers_inside_the_vm(tpl) -> None:
    code, out = tpl.gexec("dock", "docker run -d --name inner -p 8080:80 busybox sh -c "
                                  "'mkdir -p /w && echo hello from inside dock > "
                                  "/w/index.html && exec httpd -f -p 80 -h /w'", timeout=60)
    assert code == 0, out
    deadline = time.monotonic() + 30
    page = ""
    while time.monotonic() < deadline:
        code, page = tpl.cexec("client", ["curl", "-sS", "-m", "3",
                                          "http://dock.hybrid.local:8080/"])
        if code == 0:
            break
        time.sleep(0.5)
    assert page == "hello from inside dock\n", page


@pytest.fixture(scope="module")
def cloud(sandbox, built, tmp_path_factory):
    lab = RecipeLab("imgcloud", "10.73.0.0/24", sandbox.target(),
                    tmp_path_factory.mktemp("imgcloud"),
                    {"ci": Endpoint("vm", "cloud", memory=256, extra={"boot_timeout": 240})})
    t0 = time.monotonic()
    lab.up()
    print(f"\ncloud-init VM up in {time.monotonic() - t0:.1f} s")
    yield lab
    lab.down()


def test_cloud_init_configures_nic_dns_and_hostname(cloud) -> None:
    addr = cloud.addresses["ci"]
    code, out = cloud.gexec("ci", "hostname; hostname -f; ip -4 -o addr; ip route; "
                                  "cat /etc/resolv.conf")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "ci" and lines[1] == "ci.hybrid.local"
    assert f"inet {addr}/24" in out and f"default via {cloud.gateway}" in out
    assert f"nameserver {cloud.gateway}" in out and "search hybrid.local" in out
    code, out = cloud.gexec("ci", "cat /var/log/hybridnb/cloud-init.log")
    assert "running 'modules:final'" in out and "Traceback" not in out, out
    assert f"HYBRIDNB-READY name=ci ip={addr}" in cloud.vms.console(cloud.name, "ci")
    # the lab's DNS answers through the resolv.conf cloud-init made (no hosts entry for it)
    code, out = cloud.gexec("ci", "python3 -c \"import socket; "
                                  "print(socket.gethostbyname('gateway.hybrid.local'))\"")
    assert (code, out.strip()) == (0, cloud.gateway)


def test_a_service_that_dies_fails_the_vm_by_name(sandbox, built, tmp_path) -> None:
    lab = RecipeLab("imgbad", "10.74.0.0/24", sandbox.target(), tmp_path,
                    {"bad": Endpoint("vm", "broken", memory=160)})
    t0 = time.monotonic()
    with pytest.raises(BootError) as err:
        lab.up()
    assert "service broken did not come up: exited with code 3" in str(err.value)
    assert "oops" in err.value.console                        # the service's own output
    assert time.monotonic() - t0 < 60
    assert lab.vms.state(lab.name, "bad") is None             # nothing left behind


def test_a_container_whose_service_never_listens(sandbox, built, tmp_path) -> None:
    lab = RecipeLab("imgbadc", "10.75.0.0/24", sandbox.target(), tmp_path,
                    {"c": Endpoint("container", "sleepy")}).up()
    try:
        text = lab.wait_container_ready("c", timeout=30)
        assert "HYBRIDNB-FAILED name=c service=sleepy reason=not ready after 2 s " \
               "(waiting for tcp:9999)" in text
        deadline = time.monotonic() + 10
        while lab.backend.drivers["container"].state(lab.name)["c"]["state"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        lab.down()
