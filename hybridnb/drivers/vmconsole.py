"""A VM's serial console read through libvirt (``virDomainOpenConsole``), copied to a file here.

For a libvirt on another host the console cannot be a file the driver reads: the domain's
serial port is a pty on that host and :class:`ConsoleMirror` reads it through a libvirt
stream, appending what arrives to a local file — the same file the driver's readiness wait,
``console()`` and ``console_path()`` read for a local VM.  The domain is started paused, the
console opened, then resumed, so nothing the guest prints is lost.  The copy runs in a daemon
thread until the console ends (the domain stopped, the connection closed) or :meth:`stop`;
output printed while no process of hybridnb holds the connection is not kept.

Each mirror reads over a libvirt connection of its own, never the driver's: a blocking
``virStreamRecv`` waiting on a console that prints nothing shared one connection with the
driver's own calls, and once two consoles waited so, a ``virDomainGetMetadata`` on that
connection never returned (seen once in a real test: every thread in libvirt, the test hung).
"""

from __future__ import annotations

import threading
from pathlib import Path

_CHUNK = 65536


class ConsoleMirror:
    """Copies the serial console of the domain ``uuid`` (of the libvirt at ``uri``, reached
    over a connection of the mirror's own) into ``path``."""

    def __init__(self, uri: str, uuid: str, path: Path) -> None:
        import libvirt

        self.path = Path(path)
        self._conn = libvirt.open(uri)
        try:
            dom = self._conn.lookupByUUIDString(uuid)
            self._stream = self._conn.newStream(0)
            # FORCE: a console left open by an earlier mirror of this domain is taken over
            dom.openConsole(None, self._stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        except libvirt.libvirtError:
            self._conn.close()
            raise
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"console {dom.name()}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with self.path.open("ab") as out:
                while not self._stopped.is_set():
                    try:
                        data = self._stream.recv(_CHUNK)
                    except Exception:  # noqa: BLE001  (stream broke: domain gone, closed)
                        break
                    if not isinstance(data, bytes) or not data:
                        break              # 0 bytes: end of the console; -2/-1: no more
                    out.write(data)
                    out.flush()
        finally:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001  (already closed)
                pass

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop copying (the file stays)."""
        self._stopped.set()
        try:
            self._stream.abort()
        except Exception:  # noqa: BLE001  (already ended)
            pass
