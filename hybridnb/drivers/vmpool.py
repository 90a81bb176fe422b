"""A VM's files on a libvirt of another host: a storage pool there, filled through libvirt.

When the VM driver's libvirt is on another machine (``qemu+ssh://…``, or any URI a backend
marks remote), nothing the domain XML names may be a path of *this* machine: hybridnb uses
libvirt's own remote protocol only — no ssh/scp of its own, no shared filesystem.

* **Pool.** A ``dir`` storage pool named :data:`POOL_NAME` (``hybridnb``) at
  :data:`POOL_PATH` on that host, defined, built and started when missing
  (:meth:`VolumePool.ensure`).  A pool of that name that is already there is used where it
  is (its own path).
* **Content-keyed volumes.** A boot file (the test VM's kernel and initramfs, a recipe's
  kernel bundle and read-only disk, a cloud image) becomes the volume
  ``<sha256 prefix>-<file name>`` (:func:`volume_name`), uploaded with
  ``virStorageVolUpload`` over a libvirt stream into ``<name>.part`` and then copied to its
  final name on that host (``virStorageVolCreateXMLFrom``), so a volume of the final name is
  always whole.  A volume that is there is not uploaded again (a second apply uploads
  nothing).
* **Per-VM volumes** ``<domain name>-disk.qcow2`` (a qcow2 overlay made *on that host* with
  the base volume as its backing store) and ``<domain name>-seed.iso`` (the NoCloud seed,
  built here, uploaded).
* **Release.** :meth:`VolumePool.release` after a domain is undefined: its per-VM volumes
  go, and every content-keyed volume it used that no remaining domain of that libvirt uses
  (directly or as an overlay's backing store); a pool left empty is removed (stopped,
  its directory deleted, undefined), so the host is left as found.

Volume paths are the host's (``vol.path()``); the domain XML points at them.
"""

from __future__ import annotations

import hashlib
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, Iterable
from xml.sax.saxutils import escape

from hybridnb.errors import EngineError, EngineUnavailable

POOL_NAME = "hybridnb"
POOL_PATH = "/var/lib/libvirt/hybridnb"
_CHUNK = 1 << 20
_hashes: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def content_key(path: Path) -> str:
    """The SHA-256 of a file (remembered per path, size and mtime for this process)."""
    st = path.stat()
    key = (str(path.absolute()), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        if key in _hashes:
            return _hashes[key]
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    with _hash_lock:
        _hashes[key] = digest.hexdigest()
    return _hashes[key]


def volume_name(path: Path, key: str | None = None) -> str:
    """``<first 16 hex digits of the content's SHA-256>-<file name>``: a file's volume."""
    return f"{(key or content_key(path))[:16]}-{path.name}"


def is_keyed(name: str) -> bool:
    """A content-keyed volume's name (not a per-VM or a partial one)."""
    head, sep, _ = name.partition("-")
    return bool(sep) and len(head) == 16 and all(c in "0123456789abcdef" for c in head) \
        and not name.endswith(".part")


def pool_xml(name: str = POOL_NAME, path: str = POOL_PATH) -> str:
    return (f"<pool type='dir'><name>{escape(name)}</name>"
            f"<target><path>{escape(path)}</path></target></pool>")


def volume_xml(name: str, capacity: int, fmt: str = "raw", *,
               backing: tuple[str, str] | None = None) -> str:
    """A volume of ``capacity`` bytes; ``backing`` = (path, format) for an overlay."""
    back = ""
    if backing is not None:
        back = (f"<backingStore><path>{escape(backing[0])}</path>"
                f"<format type='{escape(backing[1])}'/></backingStore>")
    return (f"<volume><name>{escape(name)}</name><capacity unit='bytes'>{int(capacity)}"
            f"</capacity><target><format type='{escape(fmt)}'/></target>{back}</volume>")


def domain_paths(xml: str) -> set[str]:
    """Every file a domain XML names: kernel, initrd, disk sources."""
    root = ET.fromstring(xml)
    out = {el.text.strip() for tag in ("kernel", "initrd") for el in root.iter(tag)
           if el.text and el.text.strip()}
    out |= {src.get("file", "") for disk in root.iter("disk")
            for src in disk.iter("source")} - {""}
    return out


def backing_path(xml: str) -> str | None:
    """The backing store path of a volume's XML (an overlay), or None."""
    el = ET.fromstring(xml).find("./backingStore/path")
    return el.text.strip() if el is not None and el.text else None


class VolumePool:
    """Hybridnb's pool on the libvirt of ``connection()`` (``where`` names it in errors)."""

    def __init__(self, connection: Callable[[], Any], where: str, *,
                 name: str = POOL_NAME, path: str = POOL_PATH) -> None:
        self._conn = connection
        self.where = where
        self.name = name
        self.path = path
        self.lock = threading.RLock()
        #: names of the volumes this object uploaded (for reports and tests)
        self.uploaded: list[str] = []

    # -------------------------------------------------------------- the pool

    def _libvirt(self) -> Any:
        from hybridnb.drivers.libvirt import _libvirt

        return _libvirt()

    def _fail(self, what: str, exc: Any) -> EngineError:
        return EngineError(f"{what} in storage pool {self.name} of {self.where}: "
                           f"{exc.get_error_message()}", engine="libvirt")

    def lookup(self) -> Any | None:
        """The pool, or None when that libvirt has none of that name."""
        libvirt = self._libvirt()
        try:
            return self._conn().storagePoolLookupByName(self.name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
                return None
            if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
                raise EngineUnavailable(
                    f"the libvirt of {self.where} has no storage driver: a VM there needs "
                    "its boot files uploaded into a storage pool", engine="libvirt",
                    hint="install libvirt's storage driver there "
                         "(libvirt-daemon-driver-storage)") from exc
            raise self._fail("looking up the pool", exc) from exc

    def ensure(self) -> Any:
        """The pool, running (defined, built and started first when missing)."""
        libvirt = self._libvirt()
        with self.lock:
            pool = self.lookup()
            try:
                if pool is None:
                    pool = self._conn().storagePoolDefineXML(pool_xml(self.name, self.path), 0)
                    pool.build(0)
                if not pool.isActive():
                    pool.create(0)
                pool.refresh(0)
            except libvirt.libvirtError as exc:
                raise self._fail("making the pool", exc) from exc
            self.path = ET.fromstring(pool.XMLDesc(0)).findtext("./target/path") or self.path
            return pool

    def volumes(self) -> dict[str, str]:
        """Volume name → path, of the pool (empty when there is no pool)."""
        libvirt = self._libvirt()
        pool = self.lookup()
        if pool is None:
            return {}
        try:
            if not pool.isActive():
                return {}
            pool.refresh(0)
            return {v.name(): v.path() for v in pool.listAllVolumes(0)}
        except libvirt.libvirtError as exc:
            raise self._fail("listing volumes", exc) from exc

    # -------------------------------------------------------------- volumes

    def _volume(self, pool: Any, name: str) -> Any | None:
        libvirt = self._libvirt()
        try:
            return pool.storageVolLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return None
            raise self._fail(f"looking up volume {name}", exc) from exc

    def _delete(self, pool: Any, name: str) -> None:
        libvirt = self._libvirt()
        vol = self._volume(pool, name)
        if vol is None:
            return
        try:
            vol.delete(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise self._fail(f"deleting volume {name}", exc) from exc

    def _send(self, vol: Any, local: Path, size: int) -> None:
        stream = self._conn().newStream(0)
        with local.open("rb") as f:
            vol.upload(stream, 0, size, 0)
            try:
                stream.sendAll(lambda _st, n, _f: _f.read(min(n, _CHUNK)), f)
                stream.finish()
            except BaseException:
                try:
                    stream.abort()
                except Exception:  # noqa: BLE001  (the stream already broke)
                    pass
                raise

    def upload(self, local: Path, name: str | None = None, fmt: str = "raw") -> str:
        """The host's path of ``local``'s volume: content-keyed (``name`` None: uploaded only
        when missing) or per-VM (``name`` given: replaced)."""
        libvirt = self._libvirt()
        keyed = name is None
        name = name or volume_name(local)
        size = local.stat().st_size
        with self.lock:
            pool = self.ensure()
            vol = self._volume(pool, name)
            if vol is not None and keyed:
                return vol.path()
            part = f"{name}.part"
            try:
                if vol is not None:
                    self._delete(pool, name)
                self._delete(pool, part)
                tmp = pool.createXML(volume_xml(part, size, fmt), 0)
                self._send(tmp, local, size)
                vol = pool.createXMLFrom(volume_xml(name, size, fmt), tmp, 0)
                self._delete(pool, part)
            except libvirt.libvirtError as exc:
                raise self._fail(f"uploading {local} as volume {name}", exc) from exc
            self.uploaded.append(name)
            return vol.path()

    def overlay(self, name: str, backing: str, fmt: str, capacity: int) -> str:
        """A fresh qcow2 overlay ``name`` on the volume at ``backing`` (made on that host);
        its path."""
        libvirt = self._libvirt()
        with self.lock:
            pool = self.ensure()
            try:
                self._delete(pool, name)
                vol = pool.createXML(volume_xml(name, capacity, "qcow2",
                                                backing=(backing, fmt)), 0)
            except libvirt.libvirtError as exc:
                raise self._fail(f"making the overlay {name}", exc) from exc
            return vol.path()

    # -------------------------------------------------------------- release

    def in_use(self, xmls: Iterable[str]) -> set[str]:
        """The paths the domains of ``xmls`` use, with their overlays' backing stores."""
        libvirt = self._libvirt()
        paths: set[str] = set()
        for xml in xmls:
            paths |= domain_paths(xml)
        conn = self._conn()
        for path in [p for p in paths if p.startswith(self.path.rstrip("/") + "/")]:
            try:
                back = backing_path(conn.storageVolLookupByPath(path).XMLDesc(0))
            except libvirt.libvirtError:
                continue
            if back:
                paths.add(back)
        return paths

    def release(self, prefix: str, used: set[str], others: Iterable[str]) -> list[str]:
        """After a domain whose volumes start ``prefix`` and which used ``used`` is gone:
        delete its per-VM volumes and the content-keyed ones among ``used`` that no domain
        of ``others`` (their XMLs) uses; remove the pool when it is left empty.  The
        names deleted."""
        libvirt = self._libvirt()
        with self.lock:
            pool = self.lookup()
            if pool is None:
                return []
            try:
                if not pool.isActive():
                    return []
                pool.refresh(0)
                vols = {v.name(): v.path() for v in pool.listAllVolumes(0)}
                keep = self.in_use(others)
                gone = [n for n, p in sorted(vols.items())
                        if n.startswith(f"{prefix}-")
                        or (is_keyed(n) and p in used and p not in keep)]
                for n in gone:
                    self._delete(pool, n)
                if set(vols) <= set(gone):
                    self._remove_pool(pool)
            except libvirt.libvirtError as exc:
                raise self._fail("releasing volumes", exc) from exc
            return gone

    def _remove_pool(self, pool: Any) -> None:
        pool.refresh(0)
        if pool.numOfVolumes():
            return
        pool.destroy()
        pool.delete(0)              # the (empty) directory
        pool.undefine()
