"""The one module that talks to librados and librbd.

A :class:`Cluster` holds one librados connection per process, opened lazily
(after a WSGI server forks its workers), shared by threads, re-opened after a
fork and after the cluster drops it.  Every rados/rbd error leaves this module
as a :mod:`glance_rbd_tracked.errors` exception, translated here and nowhere
else.  Destructive steps re-read the cluster right before they act and raise
:class:`~glance_rbd_tracked.errors.Conflict` when it changed, so the caller can
decide again.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import errno
import logging
import os
import threading
import time
import uuid
import weakref
from typing import Any, Callable, Iterable, Iterator

from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import schema

LOG = logging.getLogger(__name__)

ZERO_FSID = "00000000-0000-0000-0000-000000000000"
_SNAP_NAMESPACES = {0: "user", 1: "group", 2: "trash", 3: "mirror"}

# The store's advisory lock on an image's header object (cls_lock, invisible
# to `rbd lock ls`).  Held while one of its workers changes the image, so that
# two of them never have one image open for writing at once: librbd 16.2 can
# abort a process whose open image is changed or removed by another client
# in the middle of its own change.
LOCK_NAME = "rbd_tracked"
LOCK_SECONDS = 15  # a lease: renewed while held, expires if its holder dies
LOCK_WAIT = 30.0   # how long a worker waits for another one
_LOCK_MUST_RENEW = 2  # LIBRADOS_LOCK_FLAG_MUST_RENEW: never re-creates the object


def _modules() -> tuple[Any, Any]:
    import rados
    import rbd
    return rados, rbd


class Cluster:
    """A lazily opened, thread-safe, fork-aware connection to one cluster."""

    def __init__(self, conffile: str | None = None, user: str | None = None,
                 *, timeout: int = -1, conf: dict[str, str] | None = None,
                 modules: tuple[Any, Any] | None = None,
                 fsid_wait: float = 10.0) -> None:
        self.conffile = conffile or None
        self.user = user or None
        self.timeout = timeout
        self.conf = dict(conf or {})
        self.rados, self.rbd = modules or _modules()
        self.fsid_wait = fsid_wait
        self._lock = threading.Lock()
        self._client: Any = None
        self._dropped: list[Any] = []
        self._users: dict[int, int] = {}
        self._pid: int | None = None
        self._fsid: str | None = None
        _ALIVE.add(self)

    # -- connection -------------------------------------------------------

    def _open(self) -> Any:
        conf = dict(self.conf)
        if self.timeout >= 0:
            for key in ("rados_osd_op_timeout", "rados_mon_op_timeout",
                        "client_mount_timeout"):
                conf.setdefault(key, str(self.timeout))
        client = self.rados.Rados(conffile=self.conffile or "",
                                  rados_id=self.user, conf=conf)
        try:
            with self._translated("connecting to the cluster"):
                client.connect()
            self._fsid = self._wait_for_fsid(client)
        except BaseException:
            client.shutdown()
            raise
        LOG.info("connected to ceph cluster %s", self._fsid)
        return client

    def _wait_for_fsid(self, client: Any) -> str:
        # librados 16.2 sometimes reports a zero fsid right after connect();
        # a location with a zero fsid would be published for ever.
        deadline = time.monotonic() + self.fsid_wait
        delay = 0.005
        while True:
            with self._translated("reading the cluster fsid"):
                fsid = client.get_fsid()
            if fsid and fsid != ZERO_FSID:
                return fsid
            if time.monotonic() >= deadline:
                raise errors.ClusterError(
                    "the cluster reported a zero fsid for "
                    f"{self.fsid_wait:.0f} s; refusing to publish locations")
            LOG.debug("zero fsid right after connect; waiting %.3f s", delay)
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def client(self) -> Any:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                if self._pid != os.getpid():
                    # Clients inherited through fork() have no threads
                    # behind them: forget them, never shut them down.
                    self._dropped = []
                self._client = self._open()
                self._pid = os.getpid()
            return self._client

    def fsid(self) -> str:
        self.client()
        assert self._fsid is not None
        return self._fsid

    def reset(self, client: Any) -> None:
        """Stop handing out ``client``; the next caller opens a new one.

        Other threads may still have I/O contexts, open images or reads in
        flight on it (librbd would touch freed memory if it went now), so
        it is shut down when its last user lets go.
        """
        with self._lock:
            if self._client is not client:
                return
            self._client = None
            self._dropped.append(client)
            idle = not self._users.get(id(client))
        LOG.warning("dropping the cluster connection; reconnecting on next use")
        if idle:
            self._shutdown_dropped(client)

    def _shutdown_dropped(self, client: Any) -> None:
        with self._lock:
            if client not in self._dropped or self._users.get(id(client)):
                return
            self._dropped.remove(client)
        with contextlib.suppress(Exception):
            client.shutdown()

    @contextlib.contextmanager
    def _using(self, client: Any) -> Iterator[None]:
        with self._lock:
            self._users[id(client)] = self._users.get(id(client), 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._users[id(client)] -= 1
                if not self._users[id(client)]:
                    del self._users[id(client)]
            self._shutdown_dropped(client)

    def close(self) -> None:
        """Shut every connection of this process down (at exit)."""
        with self._lock:
            clients = [c for c in (self._client, *self._dropped) if c]
            self._client, self._dropped = None, []
        if self._pid == os.getpid():
            for client in clients:
                with contextlib.suppress(Exception):
                    client.shutdown()

    @contextlib.contextmanager
    def ioctx(self, pool: str) -> Iterator[Any]:
        """An I/O context on ``pool``; a dead connection is re-opened once."""
        for attempt in (1, 2):
            client = self.client()
            try:
                ioctx = client.open_ioctx(pool)
                # On a full pool or cluster librados would block writes
                # until space appears; full-try makes the OSD answer
                # ENOSPC/EDQUOT at once (and lets removals through).
                ioctx.set_osdmap_full_try()
                break
            except self.rados.ObjectNotFound:
                raise errors.ClusterError(
                    f"pool {pool!r} does not exist") from None
            except (self.rados.ConnectionShutdown, self.rados.TimedOut):
                self.reset(client)
                if attempt == 2:
                    raise errors.ClusterError(
                        "the cluster connection is down") from None
            except self.rados.Error as exc:
                raise errors.ClusterError(
                    f"opening pool {pool!r}: {exc}") from exc
        try:
            with self._using(client):
                try:
                    yield ioctx
                finally:
                    ioctx.close()
        except errors.ClusterError as exc:
            if self._connection_lost(exc):
                self.reset(client)
            raise

    def _connection_lost(self, exc: errors.ClusterError) -> bool:
        return isinstance(exc.__cause__, (
            self.rados.ConnectionShutdown, self.rbd.ConnectionShutdown,
            self.rados.TimedOut, self.rbd.Timeout))

    def _reading(self, read: Callable[[], Any]) -> Any:
        """Run an idempotent read; once more on a fresh connection if the
        cluster dropped or timed out the current one."""
        try:
            return read()
        except errors.ClusterError as exc:
            if not self._connection_lost(exc):
                raise
            LOG.warning("retrying on a new connection: %s", exc)
            return read()

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """Turn rados/rbd errors raised while doing ``what`` into ours."""
        rados, rbd = self.rados, self.rbd
        try:
            yield
        except errors.TrackedError:
            raise
        except rbd.ImageNotFound:
            raise errors.NotFound(f"{what}: no such image or snapshot") from None
        except rbd.ImageExists:
            raise errors.AlreadyExists(f"{what}: the image exists") from None
        except (rbd.ImageBusy, rbd.ImageHasSnapshots) as exc:
            raise errors.InUse(f"{what}: {exc}") from None
        except (rbd.NoSpace, rbd.DiskQuotaExceeded, rados.NoSpace) as exc:
            raise errors.NoSpace(f"{what}: the cluster is full ({exc})") from None
        except (rbd.Error, rados.Error) as exc:
            raise errors.ClusterError(f"{what}: {exc}") from exc

    @contextlib.contextmanager
    def _image(self, ioctx: Any, name: str, *, snapshot: str | None = None,
               read_only: bool = False, what: str = "",
               image_id: str | None = None) -> Iterator[Any]:
        what = what or f"opening {ioctx.get_pool_name()}/{name}"
        with self._translated(what):
            if image_id is None:
                image = self.rbd.Image(ioctx, name, snapshot=snapshot,
                                       read_only=read_only)
            else:
                image = self.rbd.Image(ioctx, image_id=image_id,
                                       snapshot=snapshot, read_only=read_only)
        try:
            yield image
        finally:
            image.close()

    @contextlib.contextmanager
    def _changing(self, ioctx: Any, spec: str, image_id: str) -> Iterator[None]:
        """Hold the store's lock on image ``image_id`` (named ``spec``)."""
        header = f"rbd_header.{image_id}"
        cookie = uuid.uuid4().hex

        def lock(flags: int = 0) -> None:
            ioctx.lock_exclusive(header, LOCK_NAME, cookie,
                                 desc=f"pid {os.getpid()}",
                                 duration=LOCK_SECONDS, flags=flags)

        deadline = time.monotonic() + LOCK_WAIT
        delay = 0.01
        while True:
            with self._translated(f"locking {spec}"):
                try:
                    lock()
                    break
                except self.rados.ObjectBusy:
                    pass  # another worker holds it
            if time.monotonic() >= deadline:
                raise errors.Conflict(f"{spec} is being changed by another "
                                      f"worker for over {LOCK_WAIT:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        released = threading.Event()

        def renew() -> None:  # long removals outlive one lease
            while not released.wait(LOCK_SECONDS / 3):
                try:
                    lock(_LOCK_MUST_RENEW)
                except self.rados.Error:
                    return  # removed with the image
        keeper = threading.Thread(target=renew, daemon=True,
                                  name=f"lock {spec}")
        keeper.start()
        try:
            yield
        except errors.NotFound:
            # Gone meanwhile: the lock may have re-created its header.
            self._drop_stray_header(ioctx, header)
            raise
        finally:
            released.set()
            keeper.join()
            try:
                ioctx.unlock(header, LOCK_NAME, cookie)
            except self.rados.ObjectNotFound:
                pass  # removed with the image
            except self.rados.Error as exc:
                LOG.warning("could not unlock %s (the lease expires in "
                            "%d s): %s", spec, LOCK_SECONDS, exc)

    def _drop_stray_header(self, ioctx: Any, header: str) -> None:
        """Remove ``header`` if it is only what a lock left: a real header
        always has omap keys (size, features, ...)."""
        with contextlib.suppress(self.rados.Error):
            if not self._has_omap(ioctx, header):
                ioctx.remove_object(header)
                LOG.info("removed %s, left by a lock on a removed image",
                         header)

    def _has_omap(self, ioctx: Any, obj: str) -> bool:
        """Whether ``obj`` exists and has at least one omap key."""
        with self.rados.ReadOpCtx() as op:
            keys, _ = ioctx.get_omap_keys(op, "", 1)
            try:
                ioctx.operate_read_op(op, obj)
            except self.rados.ObjectNotFound:
                return False
            return bool(list(keys))

    # -- reading ----------------------------------------------------------

    def state(self, pool: str, name: str) -> core.ImageState:
        """Snapshots, their clones and our records of one image."""
        return self._reading(lambda: self._state(pool, name))

    def _state(self, pool: str, name: str) -> core.ImageState:
        with self.ioctx(pool) as ioctx:
            try:
                return self._read_state(ioctx, pool, name)
            except errors.NotFound:
                image_id = self._half_removed(ioctx, name)
                if image_id is None:
                    raise
            return self._read_state(ioctx, pool, name, image_id)

    def _read_state(self, ioctx: Any, pool: str, name: str,
                    image_id: str | None = None) -> core.ImageState:
        """Read the image by name, or by id if it is half removed."""
        removing = image_id is not None
        with self._image(ioctx, name, image_id=image_id,
                         read_only=True) as image, \
                self._translated(f"reading {pool}/{name}"):
            snaps = tuple(self._snap(image, s) for s in image.list_snaps())
            metadata = dict(image.metadata_list())
            parent = self._parent(image)
            image_id = image.id()
        return core.ImageState(pool=pool, name=name, image_id=image_id,
                               snaps=snaps,
                               records=schema.records_of(image_id, metadata),
                               parent=parent, removing=removing)

    def _half_removed(self, ioctx: Any, name: str) -> str | None:
        """The id of ``name`` if librbd left it half removed: out of the
        directory, in the trash (where trash_list() does not show it), and
        still in the pool's image list."""
        with self._translated(f"listing {ioctx.get_pool_name()}"):
            if not self._has_omap(ioctx, "rbd_trash"):
                return None  # the usual case, in one read: an empty trash
            for entry in self.rbd.RBD().list2(ioctx):
                if entry["name"] == name:
                    return entry["id"]
        return None

    def _parent(self, image: Any) -> str | None:
        try:
            spec = image.get_parent_image_spec()
        except self.rbd.ImageNotFound:
            return None
        pool = spec["pool_name"]
        if spec.get("pool_namespace"):
            pool = f"{pool}/{spec['pool_namespace']}"
        return f"{pool}/{spec['image_name']}@{spec['snap_name']}"

    def _snap(self, image: Any, info: dict) -> core.Snap:
        namespace = _SNAP_NAMESPACES.get(info.get("namespace", 0), "other")
        image.set_snap_by_id(info["id"])
        try:
            children = tuple(sorted(_child_spec(c)
                                    for c in image.list_children2()))
        finally:
            image.set_snap(None)
        protected = (namespace == "user"
                     and image.is_protected_snap(info["name"]))
        return core.Snap(name=info["name"], children=children,
                         protected=protected, namespace=namespace)

    def size(self, pool: str, name: str, snapshot: str | None) -> int:
        return self._reading(lambda: self._size(pool, name, snapshot))

    def _size(self, pool: str, name: str, snapshot: str | None) -> int:
        with self.ioctx(pool) as ioctx, \
                self._image(ioctx, name, snapshot=snapshot,
                            read_only=True) as image, \
                self._translated(f"reading the size of {pool}/{name}"):
            return image.size()

    def read(self, pool: str, name: str, snapshot: str | None, *,
             offset: int = 0, length: int | None = None,
             chunk_size: int = 8 << 20, depth: int = 2) -> Iterator[bytes]:
        """Yield the bytes of ``[offset, offset+length)``, ``depth`` reads ahead."""
        with self.ioctx(pool) as ioctx, \
                self._image(ioctx, name, snapshot=snapshot,
                            read_only=True) as image:
            with self._translated(f"reading {pool}/{name}"):
                end = image.size()
            if length is not None:
                end = min(end, offset + length)
            pending: collections.deque = collections.deque()
            position = offset
            try:
                while pending or position < end:
                    while len(pending) < max(depth, 1) and position < end:
                        count = min(chunk_size, end - position)
                        pending.append(self._aio_read(image, position, count))
                        position += count
                    completion, box = pending.popleft()
                    completion.wait_for_complete_and_cb()
                    if completion.get_return_value() < 0 or not box:
                        raise errors.ClusterError(
                            f"reading {pool}/{name} failed: error "
                            f"{completion.get_return_value()}")
                    yield box[0]
            finally:
                for completion, _ in pending:
                    completion.wait_for_complete_and_cb()

    def _aio_read(self, image: Any, offset: int, count: int) -> tuple[Any, list]:
        box: list[bytes] = []

        def done(_completion: Any, data: bytes | None) -> None:
            if data is not None:
                box.append(data)

        with self._translated("reading"):
            return image.aio_read(offset, count, done), box

    # -- writing ----------------------------------------------------------

    def write_new(self, pool: str, name: str, chunks: Iterable[bytes], *,
                  size: int, order: int, snapshot: str, owner_kind: str,
                  now: Callable[[], Any], thin: bool = False, depth: int = 4,
                  on_chunk: Callable[[bytes], None] = lambda chunk: None
                  ) -> int:
        """Create ``pool/name`` from ``chunks`` and snapshot it.

        ``size`` 0 means unknown: the image grows geometrically and is trimmed
        at the end.  ``on_chunk`` runs for every chunk while earlier writes
        are still in flight (that is where the caller hashes).  On any error
        the new image is removed again.  Returns the number of bytes written.
        """
        with self.ioctx(pool) as ioctx:
            with self._translated(f"creating {pool}/{name}"):
                self.rbd.RBD().create(ioctx, name, size or (1 << order),
                                      order=order, old_format=False)
            try:
                return self._fill(ioctx, name, chunks, size=size,
                                  order=order, snapshot=snapshot,
                                  owner_kind=owner_kind, now=now, thin=thin,
                                  depth=depth, on_chunk=on_chunk)
            except BaseException:
                LOG.warning("removing the partial image %s/%s", pool, name)
                self._purge_new(ioctx, name, snapshot)
                raise

    def _fill(self, ioctx: Any, name: str, chunks: Iterable[bytes], *,
              size: int, order: int, snapshot: str, owner_kind: str,
              now: Callable[[], Any], thin: bool, depth: int,
              on_chunk: Callable[[bytes], None]) -> int:
        spec = f"{ioctx.get_pool_name()}/{name}"
        with self._image(ioctx, name) as image, self._translated(
                f"writing {spec}"):
            key, value = schema.dump(schema.OwnerRecord(
                image_id=image.id(), kind=owner_kind, snapshot=snapshot,
                created=schema.timestamp(now())))
            image.metadata_set(key, value)
            capacity = size or (1 << order)
            zeros = b""
            written = 0
            pending: collections.deque = collections.deque()
            try:
                for chunk in chunks:
                    count = len(chunk)
                    if size and written + count > size:
                        raise errors.SizeMismatch(
                            f"the upload has more than the announced "
                            f"{size} bytes")
                    if not size and written + count > capacity:
                        capacity = _grown(capacity, written + count)
                        image.resize(capacity)
                    if len(zeros) < count:
                        zeros = bytes(count)
                    if not (thin and chunk == zeros[:count]):
                        while len(pending) >= max(depth, 1):
                            _finish(pending.popleft(), spec)
                        pending.append(image.aio_write(chunk, written,
                                                       lambda c: None))
                    on_chunk(chunk)
                    written += count
                while pending:
                    _finish(pending.popleft(), spec)
            finally:
                for completion in pending:
                    completion.wait_for_complete_and_cb()
            if size and written != size:
                raise errors.SizeMismatch(
                    f"the upload ended after {written} of the announced "
                    f"{size} bytes")
            if not size:
                image.resize(written)
            image.create_snap(snapshot)
            image.protect_snap(snapshot)
        return written

    def _purge_new(self, ioctx: Any, name: str, snapshot: str) -> None:
        """Remove an image this process has just created; never raises."""
        try:
            with self._image(ioctx, name) as image:
                if snapshot in {s["name"] for s in image.list_snaps()}:
                    if image.is_protected_snap(snapshot):
                        image.unprotect_snap(snapshot)
                    image.remove_snap(snapshot)
            self.rbd.RBD().remove(ioctx, name)
        except Exception:
            LOG.exception("could not remove the partial image %s", name)

    # -- executing decisions ---------------------------------------------

    def apply(self, state: core.ImageState, decision: core.Decision) -> None:
        """Carry out a Remove or Retire decided on ``state``."""
        if isinstance(decision, core.Remove):
            self._remove(state, decision.snapshots)
        elif isinstance(decision, core.Trim):
            self._trim(state, decision.snapshots)
        elif isinstance(decision, core.Retire):
            self._retire(state, decision)

    def _trim(self, state: core.ImageState, snapshots: Iterable[str]) -> None:
        with self.ioctx(state.pool) as ioctx, \
                self._changing(ioctx, state.spec, state.image_id), \
                self._image(ioctx, state.name) as image, \
                self._translated(f"removing snapshots of {state.spec}"):
            _same_image(image, state.spec, state.image_id)
            self._remove_snaps(image, state, snapshots)

    def _remove_snaps(self, image: Any, state: core.ImageState,
                      snapshots: Iterable[str]) -> None:
        """Remove snapshots after re-checking that none has a clone, and the
        records of them.  Another process may have removed one already."""
        for snap in snapshots:
            try:
                self._remove_snap(image, f"{state.spec}@{snap}", snap)
            except self.rbd.ImageNotFound:
                LOG.debug("%s@%s is gone already", state.spec, snap)
            if state.records.snap(snap) is not None:
                with contextlib.suppress(KeyError, self.rbd.ImageNotFound):
                    image.metadata_remove(schema.SNAP_KEY_PREFIX + snap)

    def _remove_snap(self, image: Any, spec: str, snap: str) -> None:
        image.set_snap(snap)
        try:
            children = list(image.list_children2())
        finally:
            image.set_snap(None)
        if children:
            raise errors.Conflict(f"{spec} gained a clone; deciding again")
        try:
            if image.is_protected_snap(snap):
                image.unprotect_snap(snap)
            image.remove_snap(snap)
        except self.rbd.ImageBusy:
            # a clone appeared, or another worker works on the same image
            raise errors.Conflict(f"{spec} is in use; deciding again") from None
        except self.rbd.InvalidArgument:
            # librbd's answer to unprotecting a snapshot that is no longer
            # protected: another worker got there between our two calls
            raise errors.Conflict(
                f"{spec} was unprotected elsewhere; deciding again") from None
        LOG.info("removed snapshot %s", spec)

    def _remove(self, state: core.ImageState, snapshots: Iterable[str]) -> None:
        spec = state.spec
        with self.ioctx(state.pool) as ioctx, \
                self._changing(ioctx, spec, state.image_id):
            if not state.removing:
                with self._image(ioctx, state.name) as image, \
                        self._translated(f"removing {spec}"):
                    _same_image(image, spec, state.image_id)
                    self._remove_snaps(image, state, snapshots)
            # (librbd finishes a half-removed image found in the trash by name)
            with self._translated(f"removing {spec}"):
                try:
                    self.rbd.RBD().remove(ioctx, state.name)
                except self.rbd.ImageHasSnapshots:
                    # A format-2 clone raced the removal of its parent snap:
                    # the snapshot went to the trash namespace, not away.
                    raise errors.Conflict(
                        f"{spec} still has snapshots; deciding again") from None
                except self.rbd.ImageBusy:
                    # Watched: another worker has it open this moment.
                    raise errors.Conflict(
                        f"{spec} is open elsewhere; deciding again") from None
                except self.rbd.OSError as exc:
                    if exc.errno != errno.ESTALE:
                        raise
                    # Another worker is removing it at the same time.
                    raise errors.Conflict(
                        f"{spec} is being removed elsewhere") from None
        LOG.info("removed image %s", spec)

    def _retire(self, state: core.ImageState, decision: core.Retire) -> None:
        spec = state.spec
        with self.ioctx(state.pool) as ioctx, \
                self._changing(ioctx, spec, state.image_id):
            with self._image(ioctx, state.name) as image, self._translated(
                    f"retiring {spec}"):
                _same_image(image, spec, state.image_id)
                for record in decision.records:
                    image.metadata_set(*schema.dump(record))
            if state.name != decision.new_name:
                with self._translated(f"renaming {spec}"):
                    self.rbd.RBD().rename(ioctx, state.name, decision.new_name)
        LOG.info("retired %s as %s: %s", spec, decision.new_name,
                 decision.reason)


    # -- the journal: intents of operations in flight -------------------

    def journal(self, pool: str) -> dict[str, str]:
        """All entries of the store's journal object in ``pool``."""
        entries: dict[str, str] = {}
        with self.ioctx(pool) as ioctx, self._translated("reading the journal"):
            after = ""
            while True:
                with self.rados.ReadOpCtx() as op:
                    values, _ = ioctx.get_omap_vals(op, after, "", 1000)
                    try:
                        ioctx.operate_read_op(op, schema.JOURNAL_OBJECT)
                    except self.rados.ObjectNotFound:
                        return entries
                    batch = {k: v.decode() for k, v in values}
                if not batch:
                    return entries
                entries.update(batch)
                after = max(batch)

    def journal_update(self, pool: str, put: dict[str, str] | None = None,
                       remove: Iterable[str] = ()) -> None:
        """Set and remove journal entries in one atomic write."""
        put, remove = dict(put or {}), list(remove)
        with self.ioctx(pool) as ioctx, \
                self._translated("writing the journal"), \
                self.rados.WriteOpCtx() as op:
            if put:
                ioctx.set_omap(op, tuple(put),
                               tuple(v.encode() for v in put.values()))
            if remove:
                ioctx.remove_omap_keys(op, tuple(remove))
            ioctx.operate_write_op(op, schema.JOURNAL_OBJECT)

    # -- chains -----------------------------------------------------------

    def list_images(self, pool: str) -> list[str]:
        """Image names in ``pool``: one read of the pool's directory."""
        with self.ioctx(pool) as ioctx, self._translated(f"listing {pool}"):
            return list(self.rbd.RBD().list(ioctx))

    def set_records(self, pool: str, name: str, image_id: str,
                    records: Iterable[schema.Record]) -> None:
        with self.ioctx(pool) as ioctx, \
                self._changing(ioctx, f"{pool}/{name}", image_id), \
                self._image(ioctx, name) as image, \
                self._translated(f"writing metadata of {pool}/{name}"):
            _same_image(image, f"{pool}/{name}", image_id)
            for record in records:
                image.metadata_set(*schema.dump(record))

    def snapshot(self, pool: str, name: str, image_id: str,
                 snapshot: str) -> None:
        """Create and protect a snapshot (format-1 clones need protection,
        and protection keeps others from removing it under a clone)."""
        with self.ioctx(pool) as ioctx, \
                self._changing(ioctx, f"{pool}/{name}", image_id), \
                self._image(ioctx, name) as image, \
                self._translated(f"snapshotting {pool}/{name}"):
            _same_image(image, f"{pool}/{name}", image_id)
            image.create_snap(snapshot)
            if image.features() & self.rbd.RBD_FEATURE_LAYERING:
                image.protect_snap(snapshot)

    def clone(self, parent: str, pool: str, name: str) -> None:
        """Clone ``pool/image@snap`` as ``pool/name`` with deep-flatten."""
        ppool, pimage, psnap = core.parent_of(parent)
        rbd = self.rbd
        with self.ioctx(ppool) as pioctx, self.ioctx(pool) as ioctx, \
                self._translated(f"cloning {parent} as {pool}/{name}"):
            with self._image(pioctx, pimage, read_only=True) as image:
                features = image.features() | rbd.RBD_FEATURE_DEEP_FLATTEN
            features &= ~rbd.RBD_FEATURE_JOURNALING
            rbd.RBD().clone(pioctx, pimage, psnap, ioctx, name,
                            features=features)

    def seal(self, pool: str, name: str, record: schema.OwnerRecord) -> None:
        """Mark a new chain clone as the store's and snapshot it."""
        with self.ioctx(pool) as ioctx, self._image(ioctx, name) as image, \
                self._translated(f"snapshotting {pool}/{name}"):
            record = dataclasses.replace(record, image_id=image.id())
            image.metadata_set(*schema.dump(record))
            image.create_snap(record.snapshot)
            image.protect_snap(record.snapshot)

    def copy(self, source: str, pool: str, name: str) -> None:
        """Copy ``pool/image@snap`` into a new image inside the cluster
        (librbd 16.2's Python binding reports no progress for copies)."""
        spool, simage, ssnap = core.parent_of(source)
        with self.ioctx(spool) as sioctx, self.ioctx(pool) as ioctx, \
                self._image(sioctx, simage, snapshot=ssnap,
                            read_only=True) as image, \
                self._translated(f"copying {source} to {pool}/{name}"):
            # the copy must be cloneable even when its source is not
            rbd = self.rbd
            image.copy(ioctx, name, features=(
                rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK
                | rbd.RBD_FEATURE_OBJECT_MAP | rbd.RBD_FEATURE_FAST_DIFF
                | rbd.RBD_FEATURE_DEEP_FLATTEN))

    def flatten(self, pool: str, name: str,
                on_progress: Callable[[int, int], None] | None = None) -> None:
        with self.ioctx(pool) as ioctx, self._image(ioctx, name) as image, \
                self._translated(f"flattening {pool}/{name}"):
            image.flatten(on_progress=_progress(on_progress))

    def depth(self, pool: str, name: str) -> int:
        """How many ancestors the image has (0 for a flat image)."""
        depth = 0
        while True:
            with self.ioctx(pool) as ioctx, \
                    self._image(ioctx, name, read_only=True) as image, \
                    self._translated(f"reading the parent of {pool}/{name}"):
                parent = self._parent(image)
            if parent is None:
                return depth
            depth += 1
            pool, name, _ = core.parent_of(parent)


def _progress(callback: Callable[[int, int], None] | None) -> Any:
    if callback is None:
        return None

    def report(done: int, total: int) -> int:
        callback(done, total)
        return 0
    return report


def _same_image(image: Any, spec: str, image_id: str) -> None:
    if image.id() != image_id:
        raise errors.Conflict(f"{spec} was replaced; deciding again")


def _child_spec(child: dict) -> str:
    namespace = child.get("pool_namespace")
    pool = f"{child['pool']}/{namespace}" if namespace else child["pool"]
    return f"{pool}/{child['image']}"


def _grown(capacity: int, needed: int) -> int:
    """Double the capacity (at most 8 GiB at a time) until ``needed`` fits."""
    while capacity < needed:
        capacity += min(capacity, 8 << 30)
    return capacity


def _finish(completion: Any, spec: str) -> None:
    completion.wait_for_complete_and_cb()
    result = completion.get_return_value()
    if result in (-errno.ENOSPC, -errno.EDQUOT):
        raise errors.NoSpace(f"writing {spec}: the cluster is full")
    if result < 0:
        raise errors.ClusterError(
            f"writing {spec} failed: {os.strerror(-result)}")


_SHARED: dict[tuple, Cluster] = {}
_SHARED_LOCK = threading.Lock()
_ALIVE: "weakref.WeakSet[Cluster]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # A librados client still open while the interpreter finalizes can
    # crash it (its threads outlive the objects they call into).
    for cluster in list(_ALIVE):
        with contextlib.suppress(Exception):
            cluster.close()


def shared(conffile: str | None, user: str | None, *, timeout: int = -1,
           conf: dict[str, str] | None = None) -> Cluster:
    """The process-wide :class:`Cluster` for these settings."""
    key = (conffile or None, user or None, timeout,
           tuple(sorted((conf or {}).items())))
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = Cluster(conffile, user, timeout=timeout, conf=conf)
        return _SHARED[key]
