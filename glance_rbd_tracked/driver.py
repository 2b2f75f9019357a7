"""The glance_store driver: a thin translator onto the core and the adapter.

glance-api loads it through the ``glance_store.drivers`` entry point
``rbd_tracked``.  Every error leaves through :func:`_glance_errors`, the one
place where the project's errors become glance_store exceptions (glance-api
turns InUseByStore into 409, NotFound into 404, StorageFull into 413).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
import concurrent.futures
import functools
import logging
import math
from typing import Any

from glance_store import capabilities
from glance_store import driver
from glance_store import exceptions

# glance_store late-imports "<Store.__module__>.StoreLocation".
from glance_store._drivers.rbd import StoreLocation
from glance_store.common import utils

from glance_rbd_tracked import ceph as ceph_mod
from glance_rbd_tracked import copies
from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import locations
from glance_rbd_tracked import opts
from glance_rbd_tracked import settings as settings_mod
from glance_rbd_tracked import uploads

LOG = logging.getLogger(__name__)
SNAPSHOT = core.STOCK_SNAPSHOT
SERVICE = "glance-api"  # as it records the chain policy it runs with

_TRANSLATION: list[tuple[type[Exception], Callable[[str], Exception]]] = [
    (errors.NotFound, lambda m: exceptions.NotFound(message=m)),
    (errors.AlreadyExists, lambda m: exceptions.Duplicate(message=m)),
    (errors.InUse, lambda m: exceptions.InUseByStore(message=m)),
    (errors.NotOwned, lambda m: exceptions.StoreDeleteNotSupported(message=m)),
    (errors.SizeMismatch, lambda m: exceptions.Invalid(message=m)),
    (errors.NoSpace, lambda m: exceptions.StorageFull(message=m)),
    (errors.TrackedError, lambda m: exceptions.BackendException(m)),
]


def _translate(exc: errors.TrackedError) -> Exception:
    for cls, make in _TRANSLATION:
        if isinstance(exc, cls):
            return make(str(exc))
    raise AssertionError("unreachable")  # pragma: no cover


def _glance_errors(method: Callable) -> Callable:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except errors.TrackedError as exc:
            LOG.debug("%s failed", method.__name__, exc_info=True)
            raise _translate(exc) from exc
    return wrapper


def _glance_errors_iter(chunks: Iterator[bytes]) -> Iterator[bytes]:
    try:
        yield from chunks
    except errors.TrackedError as exc:
        LOG.debug("reading failed", exc_info=True)
        raise _translate(exc) from exc


class Store(driver.Store):
    """RBD store that tracks clone dependencies instead of refusing deletes."""

    _CAPABILITIES = (capabilities.BitMasks.RW_ACCESS
                     | capabilities.BitMasks.READ_RANDOM
                     | capabilities.BitMasks.DRIVER_REUSABLE)
    OPTIONS = opts.store_opts()
    EXAMPLE_URL = "rbd://<FSID>/<POOL>/<IMAGE>/<SNAP>"

    def __init__(self, conf: Any, backend: str | None = None) -> None:
        super().__init__(conf, backend)
        if self.backend_group:
            self.store_conf = driver.BackendGroupConfiguration(
                self.OPTIONS, self.backend_group, conf=self.conf)
        else:
            self.store_conf = self.conf.glance_store
        self._settings: settings_mod.Settings | None = None
        self._ceph: ceph_mod.Ceph | None = None
        self._policies: settings_mod.Policies | None = None

    def get_schemes(self) -> tuple[str, ...]:
        # glance-api looks the driver name up as a scheme in multi-store mode.
        return ("rbd", "rbd_tracked")

    def configure_add(self) -> None:
        s = self._settings = settings_mod.from_group(self.store_conf)
        self.READ_CHUNKSIZE = self.WRITE_CHUNKSIZE = s.chunk_size
        # No connection here: glance-api may fork after configuring stores.
        self._ceph = ceph_mod.shared(s.ceph_conf, s.user, timeout=s.timeout,
                                     connect_timeout=s.connect_timeout)
        self._policies = settings_mod.Policies(s.local, service=SERVICE)

    @property
    def settings(self) -> settings_mod.Settings:
        if self._settings is None:
            raise exceptions.BadStoreConfiguration(
                store_name="rbd_tracked", reason="the store is not configured")
        return self._settings

    @property
    def ceph(self) -> ceph_mod.Ceph:
        if self._ceph is None:
            raise exceptions.BadStoreConfiguration(
                store_name="rbd_tracked", reason="the store is not configured")
        return self._ceph

    @property
    def policy(self) -> core.Policy:
        """The chain policy: the cluster's, unless the options override it."""
        if self._policies is None:
            raise exceptions.BadStoreConfiguration(
                store_name="rbd_tracked", reason="the store is not configured")
        return self._policies.get(self.ceph, self.settings.pool)

    @property
    def url_prefix(self) -> str | None:
        # Derived each time: the cluster's fsid is cached by the connection
        # and changes only if the store is pointed at another cluster.
        if self._settings is None:
            return None
        try:
            fsid = self.ceph.fsid()
        except errors.TrackedError:
            LOG.warning("cluster unreachable; no url prefix", exc_info=True)
            return None
        return locations.prefix(fsid, self.settings.pool)

    def _location(self, image: str | None) -> StoreLocation:
        return StoreLocation({"fsid": self.ceph.fsid(),
                              "pool": self.settings.pool,
                              "image": image or "-", "snapshot": SNAPSHOT},
                             self.conf, backend_group=self.backend_group)

    def _where(self, location: Any) -> tuple[str, str, str | None]:
        """Pool, image and snapshot to read; any pool of the store's own
        cluster may be read, another cluster's locations are not here."""
        loc = location.store_location
        refusal = core.check_cluster(loc.fsid, self.ceph.fsid())
        if refusal is not None:
            raise errors.NotFound(f"{loc.get_uri()}: {refusal.reason}")
        return loc.pool or self.settings.pool, loc.image, loc.snapshot

    @capabilities.check
    @_glance_errors
    def get(self, location: Any, offset: int = 0,
            chunk_size: int | None = None,
            context: Any = None) -> tuple[Iterator[bytes], int]:
        pool, image, snapshot = self._where(location)
        size, chunks = self.ceph.data.read_sized(
            pool, image, snapshot, offset=offset,
            chunk_size=chunk_size or self.READ_CHUNKSIZE,
            depth=self.settings.read_ahead)
        return _glance_errors_iter(chunks), size

    @_glance_errors
    def get_size(self, location: Any, context: Any = None) -> int:
        return self.ceph.data.size(*self._where(location))

    @driver.back_compat_add
    @capabilities.check
    @_glance_errors
    def add(self, image_id: str, image_file: Any, image_size: int,
            hashing_algo: str, context: Any = None,
            verifier: Any = None) -> tuple[str, int, str, str, dict]:
        s = self.settings
        name = str(image_id)
        checksum = utils.get_hasher("md5", False)
        multihash = utils.get_hasher(hashing_algo, False)
        location = self._location(name)
        with concurrent.futures.ThreadPoolExecutor(1) as helper:
            def on_chunk(chunk: bytes) -> None:
                # hashlib drops the GIL: md5 runs beside the multihash.
                side = helper.submit(checksum.update, chunk)
                multihash.update(chunk)
                if verifier:
                    verifier.update(chunk)
                side.result()

            chunks = utils.chunkreadable(image_file, s.chunk_size)
            copy = self._copy_from(name)
            if copy is not None:
                source, planned = copy
                written = copies.receive(
                    source, self.ceph, planned, s.pool, chunks,
                    size=image_size, on_chunk=on_chunk,
                    depth=s.write_depth).size
            else:
                written = uploads.upload(
                    self.ceph, self.policy, name, chunks,
                    size=image_size, order=int(math.log2(s.chunk_size)),
                    thin=s.thin, depth=s.write_depth, on_chunk=on_chunk)
        metadata = {"store": self.backend_group} if self.backend_group else {}
        return (location.get_uri(), written, checksum.hexdigest(),
                multihash.hexdigest(), metadata)

    def _copy_from(self, name: str
                   ) -> tuple[ceph_mod.Ceph, copies.Copy] | None:
        """The copy of Glance image ``name`` from another rbd_tracked
        backend of this glance-api that holds it (Glance's copy-image
        import): planned to send only what differs from an ancestor
        already here.  None when none holds it: a plain upload."""
        if not self.backend_group:
            return None
        backends = getattr(self.conf, "enabled_backends", None) or {}
        for other in settings_mod.other_backends(backends,
                                                 self.backend_group):
            s = settings_mod.from_group(driver.BackendGroupConfiguration(
                self.OPTIONS, other, conf=self.conf))
            source = ceph_mod.shared(s.ceph_conf, s.user, timeout=s.timeout,
                                     connect_timeout=s.connect_timeout)
            try:
                if source.fsid() == self.ceph.fsid():
                    continue  # the same cluster: nothing to gain
                planned = copies.plan(source, self.ceph, s.pool,
                                      self.settings.pool, name)
            except errors.NotFound:
                continue
            except errors.TrackedError as exc:
                LOG.warning("not copying %s from backend %s (%s): it is "
                            "uploaded whole", name, other, exc)
                continue
            LOG.info("copying %s from backend %s: %s", name, other,
                     planned.plan.start)
            return source, planned
        return None

    @capabilities.check
    @_glance_errors
    def delete(self, location: Any, context: Any = None) -> None:
        loc = location.store_location
        policy = self.policy
        refusal = core.check_location(loc.fsid, loc.pool, self.ceph.fsid(),
                                      policy)
        if refusal is not None:
            LOG.warning("not deleting %s: %s", loc.get_uri(), refusal.reason)
            raise errors.NotOwned(
                f"the store does not remove {loc.get_uri()}: {refusal.reason}")
        lifecycle.delete(self.ceph, loc.pool or self.settings.pool,
                         loc.image, policy,
                         snapshot=loc.snapshot or None)
