"""The pure multi-host core: ``hosts:``, ``host:`` on endpoints, ``network.vxlan``, the MTU
VXLAN leaves, engine URL forms (parsing only), placement and VNI clashes."""

from __future__ import annotations

from typing import Any

import pytest

from hybridnb.core import naming
from hybridnb.core.multihost import (
    VXLAN_OVERHEAD,
    BadURL,
    Hosts,
    default_vni,
    mtu_note,
    parse_docker_url,
    parse_libvirt_uri,
    placement,
    vxlan_clash,
    vxlan_resource,
)
from hybridnb.core.spec import lab_to_dict, parse_lab
from hybridnb.errors import ValidationError

TWO = {"a": {"sandbox": "mha", "underlay": "192.168.250.1"},
       "b": {"sandbox": "mhb", "underlay": "192.168.250.2"}}


def problems(doc: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    with pytest.raises(ValidationError) as info:
        parse_lab(doc)
    return {p.path: (p.message, p.hint) for p in info.value.problems}


# ------------------------------------------------------------------------------ engine URLs

@pytest.mark.parametrize("url, transport, user, host, port, path", [
    ("unix:///var/run/docker.sock", "unix", None, None, None, "/var/run/docker.sock"),
    ("tcp://b.lab.example:2376", "tls", None, "b.lab.example", 2376, ""),
    ("tcp://10.0.0.2:2375", "tcp", None, "10.0.0.2", 2375, ""),
    ("https://b:2376", "tls", None, "b", 2376, ""),
    ("https://b", "tls", None, "b", 2376, ""),
    ("ssh://lab@b", "ssh", "lab", "b", 22, ""),
    ("ssh://lab@b:2222", "ssh", "lab", "b", 2222, ""),
    ("tcp://[fd00::2]:2376", "tls", None, "fd00::2", 2376, ""),
])
def test_docker_url_forms(url, transport, user, host, port, path):
    u = parse_docker_url(url)
    assert (u.engine, u.transport, u.user, u.host, u.port, u.path) == \
        ("docker", transport, user, host, port, path)
    assert u.url == str(u) == url                       # the SDK receives it unchanged
    assert u.remote == (transport != "unix")


@pytest.mark.parametrize("url, message, hint", [
    ("tcp://b", "names no port", "2376 with TLS"),
    ("unix://docker.sock", "does not name a socket path", "three slashes"),
    ("ftp://b:21", "unknown Docker URL scheme 'ftp'", "did you mean 'tcp'?"),
    ("tcp://b:70000", "invalid port", "1-65535"),
    ("ssh://lab@b/var/run/docker.sock", "has no path", "ssh://USER@HOST"),
    ("b:2376", "is not a URL", "tcp://HOST:2376"),
    ("tcp://:2376", "names no host", "ssh://USER@HOST"),
])
def test_bad_docker_urls_say_why(url, message, hint):
    with pytest.raises(BadURL) as info:
        parse_docker_url(url)
    assert message in info.value.message and hint in info.value.hint


@pytest.mark.parametrize("uri, transport, user, host, port, path", [
    ("qemu:///system", "unix", None, None, None, "/system"),
    ("qemu:///system?socket=/run/hybridnb/sandbox/a/libvirt-sock", "unix", None, None, None,
     "/system"),
    ("qemu+ssh://lab@b/system", "ssh", "lab", "b", None, "/system"),
    ("qemu+tls://b:16514/system", "tls", None, "b", 16514, "/system"),
    ("qemu://b/system", "tls", None, "b", None, "/system"),        # libvirt's own default
    ("qemu+libssh2://lab@b/session", "libssh2", "lab", "b", None, "/session"),
    ("test:///default", "unix", None, None, None, "/default"),
])
def test_libvirt_uri_forms(uri, transport, user, host, port, path):
    u = parse_libvirt_uri(uri)
    assert (u.engine, u.transport, u.user, u.host, u.port, u.path) == \
        ("libvirt", transport, user, host, port, path)
    assert u.url == uri


@pytest.mark.parametrize("uri, message", [
    ("xen://b/", "unknown libvirt driver 'xen'"),
    ("qemu+ftp://b/system", "unknown libvirt transport 'ftp'"),
    ("qemu+ssh:///system", "needs a host"),
    ("qemu+ssh://b/", "neither /system nor /session"),
    ("qemu+unix://b/system", "names no host"),
])
def test_bad_libvirt_uris_say_why(uri, message):
    with pytest.raises(BadURL) as info:
        parse_libvirt_uri(uri)
    assert message in info.value.message


# ------------------------------------------------------------------------------------ hosts

def test_a_two_host_lab_parses_places_and_round_trips():
    spec = parse_lab({"name": "mhx", "hosts": {
        "a": {"engine": "local", "underlay": "192.168.250.1"},
        "b": {"docker": "ssh://lab@b", "libvirt": "qemu+ssh://lab@b/system",
              "underlay": "B.Lab.Example."}},
        "network": {"vxlan": {"vni": 4242}},
        "endpoints": {"h1": {"kind": "host"}, "db": {"kind": "container", "host": "b"}}})
    hosts = spec.sections["hosts"]
    assert isinstance(hosts, Hosts) and hosts.names == ("a", "b") and hosts.primary.name == "a"
    assert hosts.get("b").underlay == "b.lab.example"
    assert hosts.get("b").docker.transport == "ssh" and \
        hosts.get("b").where == "docker ssh://lab@b, libvirt qemu+ssh://lab@b/system"
    assert placement(spec) == {"h1": "a", "db": "b"}
    vx = spec.network.vxlan
    assert (vx.vni, vx.port, vx.underlay_mtu) == (4242, 4789, 1500)
    assert spec.network.mtu == 1500 - VXLAN_OVERHEAD == 1450
    doc = lab_to_dict(spec)
    assert list(doc["hosts"]) == ["a", "b"]                   # the order names the primary
    assert doc["network"]["vxlan"] == {"vni": 4242, "port": 4789}
    assert doc["endpoints"]["db"]["host"] == "b" and "host" not in doc["endpoints"]["h1"]
    assert parse_lab(doc) == spec


def test_one_host_needs_no_underlay_and_no_vxlan():
    spec = parse_lab({"hosts": {"a": {"engine": "local"}}, "endpoints": {"h": {"kind": "host"}}})
    assert spec.network.vxlan is None and spec.network.mtu == 1500
    assert placement(spec) == {"h": "a"}
    assert placement(parse_lab({"endpoints": {"h": {"kind": "host"}}})) == {}


def test_two_hosts_get_a_vni_from_the_lab_name_and_mtu_1450():
    spec = parse_lab({"name": "mhy", "hosts": TWO})
    assert spec.network.vxlan.vni == default_vni("mhy") != default_vni("mhz")
    assert 1 <= default_vni("mhy") <= 16_777_215
    assert spec.network.mtu == 1450
    assert "VXLAN adds 50 bytes" in mtu_note(spec.network.vxlan, spec.network.mtu)
    assert "1550 or more on every host" in mtu_note(spec.network.vxlan, spec.network.mtu)


def test_jumbo_underlays_keep_1500_and_more():
    jumbo = {k: dict(v, mtu=9000) for k, v in TWO.items()}
    spec = parse_lab({"hosts": jumbo})
    assert spec.network.mtu == 8950
    assert "jumbo frames" in mtu_note(spec.network.vxlan, spec.network.mtu)
    spec = parse_lab({"hosts": jumbo, "network": {"mtu": 1500}})
    assert spec.network.mtu == 1500
    assert mtu_note(spec.network.vxlan, 1500).startswith("lab MTU 1500, as written")
    mixed = dict(TWO, b=dict(TWO["b"], mtu=1550))
    spec = parse_lab({"hosts": {"a": dict(TWO["a"], mtu=9000), "b": mixed["b"]}})
    assert spec.network.mtu == 1500 and spec.network.vxlan.narrowest == "b"


def test_a_lab_mtu_without_room_for_vxlan_is_refused_with_the_numbers():
    (message, hint), = problems({"hosts": TWO, "network": {"mtu": 1500}}).values()
    assert "MTU 1500 does not fit VXLAN over an underlay of 1500" in message
    assert "network.mtu: 1450" in hint and "1550 on every host" in hint


def test_vni_and_port_ranges():
    got = problems({"hosts": TWO, "network": {"vxlan": {"vni": 0, "port": 65536}}})
    assert set(got) == {"network.vxlan.vni", "network.vxlan.port"}
    assert "1 to 16777215" in got["network.vxlan.vni"][1]
    got = problems({"hosts": TWO, "network": {"vxlan": {"vni": "4242", "port": True}}})
    assert got["network.vxlan.vni"][0] == "expected a number, got a string"
    assert got["network.vxlan.port"][0] == "expected a number, got a boolean"
    assert parse_lab({"hosts": TWO, "network": {"vxlan": {"vni": 16_777_215, "port": 8472}}}
                     ).network.vxlan.to_dict() == {"vni": 16_777_215, "port": 8472}


def test_host_problems_are_all_reported_with_paths():
    got = problems({"hosts": {
        "a": {"engine": "local"},
        "B_": {"engine": "local"},
        "c": {"docker": "tcp://c", "underlay": "224.0.0.1", "colour": "red"},
        "d": {"underlay": "192.168.250.2"},
        "e": None},
        "endpoints": {"v": {"kind": "vm", "host": "x"}}})
    assert got["hosts.a"][0] == "it has no underlay address"
    assert got["hosts.B_"][0] == "'B_' is not a valid host name"
    assert got["hosts.c.docker"][0] == "'tcp://c' names no port"
    assert got["hosts.c.underlay"][0] == "224.0.0.1 cannot be an underlay address"
    assert got["hosts.c.colour"] == ("unknown key 'colour'", "allowed keys: engine, sandbox, "
                                     "docker, libvirt, underlay, mtu")
    assert got["hosts.d"][0] == "it says nowhere where its engines are"
    assert got["hosts.e"][0] == "it says nowhere where its engines are"
    assert got["endpoints.v.host"] == ("unknown host 'x'", "hosts: a, c, d, e")


def test_a_kind_on_a_host_without_its_engine():
    hosts = {"a": {"engine": "local", "underlay": "10.9.0.1"},
             "b": {"docker": "ssh://lab@b", "underlay": "10.9.0.2"},
             "c": {"libvirt": "qemu+ssh://lab@c/system", "underlay": "10.9.0.3"}}
    got = problems({"hosts": hosts, "endpoints": {
        "v": {"kind": "vm", "host": "b"}, "h": {"kind": "host", "host": "b"},
        "c": {"kind": "container", "host": "b"}, "h2": {"kind": "host", "host": "c"}}})
    # a namespace host on a remote host is made by its agent container: it needs docker:
    assert set(got) == {"endpoints.v.host", "endpoints.h2.host"}
    assert got["endpoints.v.host"][0] == "host 'b' names no libvirt engine for a vm"
    assert got["endpoints.h2.host"][0] == ("host 'c' names no docker engine for a host "
                                           "(hybridnb's agent container there makes it)")


def test_host_without_hosts_section():
    got = problems({"endpoints": {"h": {"kind": "host", "host": "a"}}})
    assert got == {"endpoints.h.host": ("host 'a' but the lab has no hosts: section",
                                        "list the machines under hosts:, or leave host: out")}


def test_vxlan_clash_between_two_labs_on_one_underlay():
    one = parse_lab({"name": "mh1", "hosts": TWO, "network": {"vxlan": {"vni": 7}}})
    two = parse_lab({"name": "mh2", "hosts": TWO, "network": {"vxlan": {"vni": 7}}})
    other = parse_lab({"name": "mh3", "hosts": TWO, "network": {"vxlan": {"vni": 8}}})
    elsewhere = parse_lab({"name": "mh4", "network": {"vxlan": {"vni": 7}}, "hosts": {
        "x": {"engine": "local", "underlay": "10.1.0.1"},
        "y": {"sandbox": "y", "underlay": "10.1.0.2"}}})
    assert vxlan_clash(one, two) == ("labs 'mh1' and 'mh2' both use VNI 7 on UDP port 4789 "
                                     "over 192.168.250.1, 192.168.250.2: their segments would "
                                     "merge")
    assert vxlan_clash(one, other) is None and vxlan_clash(one, elsewhere) is None
    assert vxlan_clash(one, parse_lab({"name": "mh5"})) is None


def test_each_host_gets_a_vxlan_device_towards_every_other_host():
    three = dict(TWO, c={"engine": "local", "underlay": "192.168.250.9", "mtu": 9000})
    spec = parse_lab({"name": "mhv", "hosts": three, "network": {"vxlan": {"vni": 4242}}})
    devices = {h: vxlan_resource(spec, h) for h in ("a", "b", "c")}
    assert {r.name for r in devices.values()} == {naming.vxlan_device("mhv")}
    assert len(naming.vxlan_device("mhv")) <= 15
    a = devices["a"]
    assert (a.kind, a.spec["vni"], a.spec["port"], a.spec["local"], a.spec["mtu"]) == \
        ("vxlan", 4242, 4789, "192.168.250.1", 1450)
    assert a.spec["remotes"] == ["192.168.250.2", "192.168.250.9"]
    assert devices["c"].spec["remotes"] == ["192.168.250.1", "192.168.250.2"]
    assert a.summary == "vni 4242 udp/4789 192.168.250.1 -> 192.168.250.2, 192.168.250.9 mtu 1450"
    assert vxlan_resource(parse_lab({"hosts": {"a": {"engine": "local"}}}), "a") is None

