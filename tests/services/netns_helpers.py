"""Test helpers: a private network namespace and sockets created inside it.

``LabNetns`` makes ``hnb-<tag>-<pid>`` with loopback up and no default route, plus a port-less
bridge carrying the addresses a test asks for; ``socket_in`` creates a socket inside the
namespace from a short-lived thread that ``setns``-es itself (a socket keeps the namespace it
was created in), so tests can talk to servers in the namespace with plain sockets and
dnspython.  ``client`` adds a second namespace on a veth port of that bridge (a machine that
is not the lab host), whose default route points into the first.  Nothing here can send a
packet outside these namespaces.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import threading

from tests.gating import require_real

CLONE_NEWNET = 0x40000000


def require_root(*tools: str) -> None:
    """Skip locally / fail under CI=true unless root and ``tools`` are present."""
    require_real(tools=tools)


def run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


class LabNetns:
    def __init__(self, tag: str, addresses: list[str]) -> None:
        self.name = f"hnb-{tag}-{os.getpid()}"
        self._clients: list[LabNetns] = []
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        run("ip", "netns", "add", self.name)
        try:
            run("ip", "-n", self.name, "link", "set", "lo", "up")
            # a bridge with no ports stands in for the lab bridge (no dummy module here)
            run("ip", "-n", self.name, "link", "add", "lab0", "type", "bridge")
            for addr in addresses:
                run("ip", "-n", self.name, "addr", "add", addr, "dev", "lab0")
            run("ip", "-n", self.name, "link", "set", "lab0", "up")
        except BaseException:
            self.close()
            raise

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    def exec(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", f"--net={self.path}", *cmd], check=check,
                              capture_output=True, text=True, timeout=60)

    def socket_in(self, kind: int = socket.SOCK_DGRAM, bind: tuple[str, int] | None = None,
                  connect: tuple[str, int] | None = None) -> socket.socket:
        out: dict[str, object] = {}

        def work() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(self.path, os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns failed")
                finally:
                    os.close(fd)
                s = socket.socket(socket.AF_INET, kind)
                if bind:
                    s.bind(bind)
                if connect:
                    s.settimeout(5)
                    s.connect(connect)
                out["sock"] = s
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                out["error"] = exc

        t = threading.Thread(target=work)
        t.start()
        t.join()
        if "error" in out:
            raise out["error"]  # type: ignore[misc]
        return out["sock"]  # type: ignore[return-value]

    def client(self, tag: str, address: str, via: str) -> "LabNetns":
        """Another namespace plugged into ``lab0`` by a veth, holding ``address`` (CIDR) and
        routing everything else via ``via`` (an address of this namespace): a client that is
        *not* the lab host.  Closed together with this namespace."""
        other = LabNetns.__new__(LabNetns)
        other.name = f"hnb-{tag}-{os.getpid()}"
        other._clients = []
        subprocess.run(["ip", "netns", "del", other.name], capture_output=True)
        run("ip", "netns", "add", other.name)
        self._clients.append(other)
        veth = f"v{tag}{os.getpid() % 100000}"[:15]
        run("ip", "-n", self.name, "link", "add", veth, "type", "veth", "peer", "name", "eth0",
            "netns", other.name)
        run("ip", "-n", self.name, "link", "set", veth, "master", "lab0", "up")
        run("ip", "-n", other.name, "link", "set", "lo", "up")
        run("ip", "-n", other.name, "addr", "add", address, "dev", "eth0")
        run("ip", "-n", other.name, "link", "set", "eth0", "up")
        run("ip", "-n", other.name, "route", "add", "default", "via", via)
        return other

    def close(self) -> None:
        for other in self._clients:
            other.close()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
