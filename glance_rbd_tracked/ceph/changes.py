"""Changing images: carrying out the core's decisions and the steps of a
chain.

Rules this module owns:

* Every change to an existing image holds the store's lease on it
  (:mod:`~glance_rbd_tracked.ceph.lease`).
* Right before a destructive step the image is re-read: it must still be the
  image the decision was made on (same id), and a snapshot about to go must
  still have no clone.  Otherwise :class:`~glance_rbd_tracked.errors.Conflict`
  tells the caller to decide again.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
import contextlib
import dataclasses
import errno
import logging
from typing import Any

from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import schema
from glance_rbd_tracked import specs
from glance_rbd_tracked.ceph import trash
from glance_rbd_tracked.ceph.connection import Connection
from glance_rbd_tracked.ceph.lease import Leases

LOG = logging.getLogger(__name__)


class Changes:
    """Implements :class:`glance_rbd_tracked.ports.ImageChanges`."""

    def __init__(self, connection: Connection, leases: Leases) -> None:
        self.connection = connection
        self.leases = leases
        self._trash_ready: set[str] = set()

    # -- decisions -------------------------------------------------------

    def apply(self, state: core.ImageState, decision: core.Decision) -> None:
        """Carry out a Remove, Trim or Retire decided on ``state``."""
        if isinstance(decision, core.Remove):
            self._remove(state, decision)
        elif isinstance(decision, core.Trim):
            self._trim(state, decision.snapshots)
        elif isinstance(decision, core.Retire):
            self._retire(state, decision)

    def _open(self, ioctx: Any, state: core.ImageState) -> Any:
        """The image the decision was made on: by name, or by id when it
        is in the trash."""
        by_id = state.image_id if state.trash is not None else None
        return self.connection.image(ioctx, state.name, image_id=by_id)

    def _trim(self, state: core.ImageState, snapshots: Iterable[str]) -> None:
        c = self.connection
        with c.ioctx(state.pool) as ioctx, \
                self.leases.held(ioctx, state.spec, state.image_id), \
                self._open(ioctx, state) as image, \
                c.translated(f"removing snapshots of {state.spec}"):
            _same_image(image, state.spec, state.image_id)
            self._remove_snaps(image, state, snapshots)

    def _remove_snaps(self, image: Any, state: core.ImageState,
                      snapshots: Iterable[str]) -> None:
        """Remove snapshots after re-checking that none has a clone, and the
        records of them.  Another process may have removed one already."""
        rbd = self.connection.rbd
        trashed = {s["name"]: s["id"] for s in image.list_snaps()
                   if s.get("namespace") == rbd.RBD_SNAP_NAMESPACE_TYPE_TRASH}
        for snap in snapshots:
            try:
                self._remove_snap(image, f"{state.spec}@{snap}", snap,
                                  trashed.get(snap))
            except rbd.ImageNotFound:
                LOG.debug("%s@%s is gone already", state.spec, snap)
            known = state.snap(snap)
            record = (known.original or snap) if known else snap
            if state.records.snap(record) is not None:
                with contextlib.suppress(KeyError, rbd.ImageNotFound):
                    image.metadata_remove(schema.SNAP_KEY_PREFIX + record)

    def _remove_snap(self, image: Any, spec: str, snap: str,
                     trash_id: int | None = None) -> None:
        """Remove one snapshot; one in the trash namespace (``trash_id``)
        can only be named by its id."""
        rbd = self.connection.rbd
        if trash_id is None:
            image.set_snap(snap)
        else:
            image.set_snap_by_id(trash_id)
        try:
            children = list(image.list_children2())
        finally:
            image.set_snap(None)
        if children:
            raise errors.Conflict(f"{spec} gained a clone; deciding again")
        if trash_id is not None:
            image.remove_snap_by_id(trash_id)
            LOG.info("removed snapshot %s (trash namespace)", spec)
            return
        try:
            if image.is_protected_snap(snap):
                # librbd waits for the monitors without a timeout here
                self.connection.check_monitors(f"unprotecting {spec}")
                image.unprotect_snap(snap)
            image.remove_snap(snap)
        except rbd.ImageBusy:
            # a clone appeared, or another worker works on the same image
            raise errors.Conflict(f"{spec} is in use; deciding again") from None
        except rbd.InvalidArgument:
            # librbd's answer to unprotecting a snapshot that is no longer
            # protected: another worker got there between our two calls
            raise errors.Conflict(
                f"{spec} was unprotected elsewhere; deciding again") from None
        LOG.info("removed snapshot %s", spec)

    def _remove(self, state: core.ImageState, decision: core.Remove) -> None:
        spec, c, rbd = state.spec, self.connection, self.connection.rbd
        with c.ioctx(state.pool) as ioctx, \
                self.leases.held(ioctx, spec, state.image_id):
            self._trash_directory(ioctx)
            if not state.removing:
                with self._open(ioctx, state) as image, \
                        c.translated(f"removing {spec}"):
                    _same_image(image, spec, state.image_id)
                    if decision.break_locks:
                        self._break_locks(image, spec)
                    self._remove_snaps(image, state, decision.snapshots)
            # (librbd finishes a half-removed image found in the trash by name)
            with c.translated(f"removing {spec}"):
                try:
                    if state.trash is not None:
                        # its owner's deferment is over (the core checked)
                        rbd.RBD().trash_remove(ioctx, state.image_id,
                                               force=True)
                    else:
                        rbd.RBD().remove(ioctx, state.name)
                except rbd.ImageHasSnapshots:
                    # A format-2 clone raced the removal of its parent snap:
                    # the snapshot went to the trash namespace, not away.
                    raise errors.Conflict(
                        f"{spec} still has snapshots; deciding again") from None
                except rbd.ImageBusy:
                    # Watched: another worker has it open this moment.
                    raise errors.Conflict(
                        f"{spec} is open elsewhere; deciding again") from None
                except rbd.OSError as exc:
                    if exc.errno != errno.ESTALE:
                        raise
                    # Another worker is removing it at the same time.
                    raise errors.Conflict(
                        f"{spec} is being removed elsewhere") from None
        LOG.info("removed image %s", spec)

    def _break_locks(self, image: Any, spec: str) -> None:
        """Break the exclusive lock a dead writer left (librbd blocklists
        it: rbd_blocklist_on_break_lock), instead of letting the removal
        wait for it to expire."""
        for owner in image.lock_get_owners():
            image.lock_break(owner["mode"], owner["owner"])
            LOG.warning("broke the lock %s held on %s", owner["owner"], spec)

    def _trash_directory(self, ioctx: Any) -> None:
        """Make sure the pool has its RBD trash object: librbd moves an
        image there to remove it, and on a pool over its quota it cannot
        create it (the removal then fails with a misleading ENOENT)."""
        pool = ioctx.get_pool_name()
        if pool in self._trash_ready:
            return
        rados = self.connection.rados
        with self.connection.translated(f"preparing the RBD trash of {pool}"), \
                rados.WriteOpCtx() as op:
            op.new(rados.LIBRADOS_CREATE_IDEMPOTENT)
            ioctx.operate_write_op(op, trash.OBJECT)
        self._trash_ready.add(pool)

    def _retire(self, state: core.ImageState, decision: core.Retire) -> None:
        spec, c = state.spec, self.connection
        with c.ioctx(state.pool) as ioctx, \
                self.leases.held(ioctx, spec, state.image_id):
            with c.image(ioctx, state.name) as image, \
                    c.translated(f"retiring {spec}"):
                _same_image(image, spec, state.image_id)
                for record in decision.records:
                    image.metadata_set(*schema.dump(record))
            if state.name != decision.new_name:
                with c.translated(f"renaming {spec}"):
                    c.rbd.RBD().rename(ioctx, state.name, decision.new_name)
        LOG.info("retired %s as %s: %s", spec, decision.new_name,
                 decision.reason)

    # -- the steps of a chain ----------------------------------------------

    @contextlib.contextmanager
    def _leased(self, pool: str, name: str, image_id: str,
                what: str) -> Iterator[Any]:
        """``pool/name``, open, under the store's lease, checked to still
        be image ``image_id``; errors while doing ``what`` translated."""
        spec, c = f"{pool}/{name}", self.connection
        with c.ioctx(pool) as ioctx, \
                self.leases.held(ioctx, spec, image_id), \
                c.image(ioctx, name) as image, \
                c.translated(f"{what} {spec}"):
            _same_image(image, spec, image_id)
            yield image

    def set_records(self, pool: str, name: str, image_id: str,
                    records: Iterable[schema.Record]) -> None:
        with self._leased(pool, name, image_id,
                          "writing metadata of") as image:
            for record in records:
                image.metadata_set(*schema.dump(record))

    def snapshot(self, pool: str, name: str, image_id: str,
                 snapshot: str) -> None:
        """Create and protect a snapshot (format-1 clones need protection,
        and protection keeps others from removing it under a clone)."""
        with self._leased(pool, name, image_id, "snapshotting") as image:
            image.create_snap(snapshot)
            if image.features() & self.connection.rbd.RBD_FEATURE_LAYERING:
                image.protect_snap(snapshot)

    def clone(self, parent: str, pool: str, name: str) -> int:
        """Clone ``pool/image@snap`` as ``pool/name`` with deep-flatten;
        returns the clone format librbd chose (1 or 2)."""
        ppool, pimage, psnap = specs.SnapSpec.parse(parent).parts
        c, rbd = self.connection, self.connection.rbd
        with c.ioctx(ppool) as pioctx, c.ioctx(pool) as ioctx, \
                c.translated(f"cloning {parent} as {pool}/{name}"):
            with c.image(pioctx, pimage, read_only=True) as image:
                features = image.features() | rbd.RBD_FEATURE_DEEP_FLATTEN
            features &= ~rbd.RBD_FEATURE_JOURNALING
            rbd.RBD().clone(pioctx, pimage, psnap, ioctx, name,
                            features=features)
            with c.image(ioctx, name, read_only=True) as clone:
                child = clone.op_features() & \
                    rbd.RBD_OPERATION_FEATURE_CLONE_CHILD
        return 2 if child else 1

    def trash_snapshot(self, pool: str, name: str, image_id: str,
                       snapshot: str) -> None:
        """Move a snapshot that format-2 clones use to the trash namespace:
        a header update, no monitor commit.  librbd removes it with its
        last clone."""
        spec = f"{pool}/{name}"
        with self._leased(pool, name, image_id,
                          f"moving @{snapshot} to the trash namespace of"
                          ) as image:
            image.set_snap(snapshot)
            try:
                if not list(image.list_children2()):
                    raise errors.Conflict(f"{spec}@{snapshot} has no clone "
                                          "to keep it")
            finally:
                image.set_snap(None)
            # as for unprotect_snap
            self.connection.check_monitors(f"moving {spec}@{snapshot} to "
                                           "the trash namespace")
            image.remove_snap2(snapshot,
                               self.connection.rbd.RBD_SNAP_REMOVE_UNPROTECT)
        LOG.info("moved %s@%s to the trash namespace", spec, snapshot)

    def seal(self, pool: str, name: str, record: schema.OwnerRecord) -> None:
        """Mark a new image as the store's (``record`` gets its id) and
        snapshot it."""
        c = self.connection
        with c.ioctx(pool) as ioctx, c.image(ioctx, name) as image, \
                c.translated(f"snapshotting {pool}/{name}"):
            record = dataclasses.replace(record, image_id=image.id())
            image.metadata_set(*schema.dump(record))
            image.create_snap(record.snapshot)
            image.protect_snap(record.snapshot)

    def copy(self, source: str, pool: str, name: str) -> None:
        """Copy ``pool/image@snap`` into a new image inside the cluster
        (librbd 16.2's Python binding reports no progress for copies)."""
        spool, simage, ssnap = specs.SnapSpec.parse(source).parts
        c, rbd = self.connection, self.connection.rbd
        with c.ioctx(spool) as sioctx, c.ioctx(pool) as ioctx, \
                c.image(sioctx, simage, snapshot=ssnap,
                        read_only=True) as image, \
                c.translated(f"copying {source} to {pool}/{name}"):
            # the copy must be cloneable even when its source is not
            image.copy(ioctx, name, features=(
                rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK
                | rbd.RBD_FEATURE_OBJECT_MAP | rbd.RBD_FEATURE_FAST_DIFF
                | rbd.RBD_FEATURE_DEEP_FLATTEN))

    def flatten(self, state: core.ImageState,
                on_progress: Callable[[int, int], None] | None = None) -> None:
        with self._leased(state.pool, state.name, state.image_id,
                          "flattening") as image:
            image.flatten(on_progress=_progress(on_progress))


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
