"""The lab name server's contract (hybridnb.daemons.dns.control), with a real server process on
loopback (no root, no namespace): launch and readiness, reload without a restart, the flush
handshake (a query answered is a query in the log), stop by pid; and the driver keeps to it."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys

import pytest

from hybridnb.core.dnszone import Zone
from hybridnb.daemons.dns import control


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ask(port: int, name: str, qtype: int = 1, qid: int = 7) -> bytes:
    qn = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qn + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(5)
        c.sendto(q, ("127.0.0.1", port))
        return c.recv(4096)


@pytest.fixture
def server(tmp_path):
    layout = control.Layout(tmp_path / "dns")
    layout.directory.mkdir()
    zone = Zone("hybrid.local", {"web": "10.0.1.5"}, "10.0.1.1", subnet="10.0.1.0/24")
    control.write_zone(layout, zone, "fp-1")
    spec = control.LaunchSpec("lab", "127.0.0.1", free_port(), "10.0.1.0/24")
    proc = control.launch(layout, spec)
    try:
        assert control.wait_loaded(layout, "fp-1", proc), control.server_error(layout)
        yield layout, spec, proc
    finally:
        control.stop(layout, proc)


def test_launch_reload_flush_stop(server):
    layout, spec, proc = server
    st = control.status(layout)
    assert st is not None and st.pid == proc.pid == control.running_pid(layout)
    assert st.fingerprint == "fp-1" and st.names >= 2                # web, gateway, PTRs
    assert control.read_launch(layout) == spec
    daemon = control.daemon(layout)
    assert daemon is not None and daemon.pid == proc.pid
    assert daemon.endpoint == f"udp://127.0.0.1:{spec.port}"

    answer = ask(spec.port, "web.hybrid.local")
    assert answer[:2] == b"\x00\x07" and answer[-4:] == bytes([10, 0, 1, 5])
    records = control.read_log(layout, 10)          # flushed first: the query is there
    assert [(r.name, r.type, r.rcode, r.client) for r in records] == \
        [("web.hybrid.local.", "A", "NOERROR", "127.0.0.1")]

    bigger = Zone("hybrid.local", {"web": "10.0.1.5", "db": "10.0.1.6"}, "10.0.1.1",
                  subnet="10.0.1.0/24")
    control.reload(layout, bigger, "fp-2")
    assert control.wait_loaded(layout, "fp-2")
    assert ask(spec.port, "db.hybrid.local")[-4:] == bytes([10, 0, 1, 6])
    assert control.status(layout).pid == proc.pid                    # no restart

    control.stop(layout, proc)
    assert proc.returncode is not None and control.running_pid(layout) is None
    assert control.status(layout) is None and not control.flush(layout)
    with pytest.raises(ProcessLookupError):
        control.reload(layout, bigger, "fp-3")
    assert [r.name for r in control.read_log(layout, 10)][-1] == "db.hybrid.local."


def test_command_line_and_environment(tmp_path):
    """The server runs as an installed module: no PYTHONPATH is made up for it."""
    layout = control.Layout(tmp_path)
    spec = control.LaunchSpec("lab", "10.0.1.1", 53, "10.0.1.0/24", netns="hnb-x")
    cmd = control.command(layout, spec, "/usr/bin/python3")
    assert cmd[:5] == ["nsenter", "--net=/run/netns/hnb-x", "/usr/bin/python3", "-m",
                       "hybridnb.daemons.dns.server"]
    assert str(layout.pidfile) in cmd and "--log" in cmd
    assert "--log" not in control.command(layout, spec, log=False)
    assert control.LaunchSpec.from_dict(dict(spec.to_dict(), other=1)) == spec
    assert layout.flushed == control.flushed_mark(layout.log) == tmp_path / "query.log.flushed"


def test_the_driver_imports_nothing_from_services():
    code = ("import sys, hybridnb.drivers.dns; "
            "print(sorted(m for m in sys.modules if m.startswith('hybridnb.services')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
