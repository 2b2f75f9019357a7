"""The data path: streamed reads and uploads of whole images.

Reads keep ``depth`` chunks in flight; uploads keep ``depth`` writes in
flight while the caller hashes the next chunk.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
import contextlib
import dataclasses
import errno
import functools
import logging
import threading
import time
from typing import Any

from glance_rbd_tracked import errors
from glance_rbd_tracked import schema
from glance_rbd_tracked import specs
from glance_rbd_tracked.ceph.connection import Connection
from glance_rbd_tracked.ceph.connection import io_error

LOG = logging.getLogger(__name__)


class Data:
    """Implements :class:`glance_rbd_tracked.ports.DataPath`."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def size(self, pool: str, name: str, snapshot: str | None) -> int:
        def read() -> int:
            c = self.connection
            with c.ioctx(pool) as ioctx, \
                    c.image(ioctx, name, snapshot=snapshot,
                            read_only=True) as image, \
                    c.translated(f"reading the size of {pool}/{name}"):
                return image.size()
        return self.connection.reading(read)

    def read(self, pool: str, name: str, snapshot: str | None, *,
             offset: int = 0, length: int | None = None,
             chunk_size: int = 8 << 20, depth: int = 2) -> Iterator[bytes]:
        """Yield the bytes of ``[offset, offset+length)``, ``depth`` reads ahead."""
        chunks = self._chunks(pool, name, snapshot, offset, length,
                              chunk_size, depth)
        next(chunks)  # the size
        yield from chunks

    def read_sized(self, pool: str, name: str, snapshot: str | None, *,
                   offset: int = 0, length: int | None = None,
                   chunk_size: int = 8 << 20, depth: int = 2
                   ) -> tuple[int, Iterator[bytes]]:
        """The image's size, and :meth:`read`'s chunks, from one borrow of
        the image (one check of a shared handle, not one for the size and
        one for the data).  The image stays borrowed until the chunks are
        read or dropped."""
        chunks = self._chunks(pool, name, snapshot, offset, length,
                              chunk_size, depth)
        size = next(chunks)
        return size, chunks

    def _chunks(self, pool: str, name: str, snapshot: str | None,
                offset: int, length: int | None, chunk_size: int,
                depth: int) -> Iterator[Any]:
        """The image's size, then its bytes."""
        c = self.connection
        with c.ioctx(pool) as ioctx, \
                c.image(ioctx, name, snapshot=snapshot,
                        read_only=True) as image:
            with c.translated(f"reading {pool}/{name}"):
                end = image.size()
            yield end
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
                    result = completion.get_return_value()
                    if result < 0 or not box:
                        raise io_error(min(result, -errno.EIO),
                                       f"reading {pool}/{name}", c.timeout)
                    if not pending and position >= end:
                        # librbd reads a removed image as zeros: the last
                        # chunk goes out only if it was not removed
                        c.handles.check(ioctx, image)
                    yield box[0]
            finally:
                for completion, _ in pending:
                    completion.wait_for_complete_and_cb()

    def _aio_read(self, image: Any, offset: int, count: int) -> tuple[Any, list]:
        box: list[bytes] = []

        def done(_completion: Any, data: bytes | None) -> None:
            if data is not None:
                box.append(data)

        with self.connection.translated("reading"):
            return image.aio_read(offset, count, done), box

    def write_new(self, pool: str, name: str, chunks: Iterable[bytes], *,
                  size: int, order: int, record: schema.OwnerRecord,
                  thin: bool = False, depth: int = 4,
                  on_chunk: Callable[[bytes], None] = lambda chunk: None
                  ) -> int:
        """Create ``pool/name`` from ``chunks``, mark it with ``record``
        (which gets the new image's id) and snapshot it as
        ``record.snapshot``.

        ``size`` 0 means unknown: the image grows geometrically and is trimmed
        at the end.  ``on_chunk`` runs for every chunk while earlier writes
        are still in flight (that is where the caller hashes).  Returns the
        number of bytes written.

        On an error the new image is removed again, unless the cluster did
        not answer in time: then trying to remove it would wait as long
        again, so it stays (without its snapshot, findable by its record)
        for cleanup, and the image is closed in the background.
        """
        def create(ioctx: Any) -> None:
            self.connection.rbd.RBD().create(
                ioctx, name, size or (1 << order), order=order,
                old_format=False)

        return self._make(pool, name, record, create, lambda image, spec:
                          self._fill(image, spec, chunks, size=size,
                                     order=order, record=record, thin=thin,
                                     depth=depth, on_chunk=on_chunk))

    def write_clone(self, pool: str, name: str, parent: str,
                    pieces: Iterable[tuple[int, bytes]], *, size: int,
                    order: int, record: schema.OwnerRecord,
                    depth: int = 4) -> int:
        """Clone ``parent`` (``pool/image@snap`` of this cluster) as
        ``pool/name`` with objects of ``1 << order`` bytes and ``size``
        bytes, write ``pieces`` (``(offset, data)``, whole objects, so that
        librbd does not read the parent's first), then mark and snapshot
        it as :meth:`write_new` does, and with the same clean-up on an
        error.  Returns the number of bytes written."""
        ppool, pname, psnap = specs.SnapSpec.parse(parent).parts

        def create(ioctx: Any) -> None:
            c = self.connection
            with c.ioctx(ppool) as pioctx:
                c.rbd.RBD().clone(pioctx, pname, psnap, ioctx, name,
                                  order=order, stripe_unit=1 << order,
                                  stripe_count=1)

        def fill(image: Any, spec: str) -> int:
            c = self.connection
            with c.translated(f"writing {spec}"):
                image.metadata_set(*schema.dump(
                    dataclasses.replace(record, image_id=image.id())))
                if image.size() != size:
                    image.resize(size)
                written = 0
                pending: collections.deque = collections.deque()
                try:
                    for offset, data in pieces:
                        while len(pending) >= max(depth, 1):
                            _finish(pending.popleft(), spec, c.timeout)
                        pending.append(_write(image, data, offset,
                                              c.timeout))
                        written += len(data)
                    while pending:
                        _finish(pending.popleft(), spec, c.timeout)
                except BaseException as exc:
                    if errors.timed_out(exc):
                        pending.clear()  # see _fill
                    raise
                finally:
                    for write in pending:
                        write.completion.wait_for_complete_and_cb()
            self._snapshot(image, spec, record.snapshot)
            return written

        return self._make(pool, name, record, create, fill)

    def _make(self, pool: str, name: str, record: schema.OwnerRecord,
              create: Callable[[Any], None],
              fill: Callable[[Any, str], int]) -> int:
        """Create an image, fill it; on an error remove it again (see
        :meth:`write_new`)."""
        c = self.connection
        with contextlib.ExitStack() as stack:
            ioctx = stack.enter_context(c.ioctx(pool))
            with c.translated(f"creating {pool}/{name}"):
                create(ioctx)
            image_id = None
            try:
                image = stack.enter_context(c.image(ioctx, name))
                image_id = image.id()
                return fill(image, f"{pool}/{name}")
            except BaseException as exc:
                if errors.timed_out(exc):
                    LOG.warning("the cluster did not answer; leaving the "
                                "partial image %s/%s for cleanup", pool, name)
                    _close_later(stack.pop_all(), f"{pool}/{name}",
                                 then=None if image_id is None else
                                 functools.partial(self._release_own_lock,
                                                   pool, image_id))
                    raise
                stack.close()  # the image, before removing it
                with c.ioctx(pool) as again:
                    LOG.warning("removing the partial image %s/%s", pool,
                                name)
                    self._purge_new(again, name, record.snapshot)
                raise

    def _fill(self, image: Any, spec: str, chunks: Iterable[bytes], *,
              size: int, order: int, record: schema.OwnerRecord, thin: bool,
              depth: int, on_chunk: Callable[[bytes], None]) -> int:
        c = self.connection
        with c.translated(f"writing {spec}"):
            image.metadata_set(*schema.dump(
                dataclasses.replace(record, image_id=image.id())))
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
                            _finish(pending.popleft(), spec, c.timeout)
                        pending.append(_write(image, chunk, written,
                                              c.timeout))
                    on_chunk(chunk)
                    written += count
                while pending:
                    _finish(pending.popleft(), spec, c.timeout)
            except BaseException as exc:
                if errors.timed_out(exc):
                    # librbd may take a second timeout on the same write
                    # (the object map's update, then its invalidation):
                    # the image's close, in the background, waits for them
                    pending.clear()
                raise
            finally:
                for write in pending:
                    write.completion.wait_for_complete_and_cb()
            if size and written != size:
                raise errors.SizeMismatch(
                    f"the upload ended after {written} of the announced "
                    f"{size} bytes")
            if not size:
                image.resize(written)
        self._snapshot(image, spec, record.snapshot)
        return written

    def _snapshot(self, image: Any, spec: str, snapshot: str) -> None:
        # the data is all written; a snapshot needs the monitors too
        with self.connection.translated(f"snapshotting {spec}"):
            image.create_snap(snapshot)
            image.protect_snap(snapshot)

    def _release_own_lock(self, pool: str, image_id: str) -> None:
        """After a close that could not reach the cluster: librbd could not
        release the image's exclusive lock, and this live client still owns
        it.  Release it as soon as the cluster answers (for up to 20
        timeouts), so that nobody has to break it, which blocklists the
        owner: this client, with the other work of its process."""
        c = self.connection
        header = f"rbd_header.{image_id}"
        deadline = time.monotonic() + 20 * c.timeout
        while True:
            try:
                me = f"client.{c.client().get_instance_id()}"
                with c.ioctx(pool) as ioctx, \
                        c.image(ioctx, "", image_id=image_id,
                                read_only=True) as image, \
                        c.translated(f"releasing the lock on image "
                                     f"{image_id} of {pool}"):
                    # ([] when nobody holds a lock, a dict when one does)
                    lockers = image.list_lockers() or {}
                    for owner, cookie, _ in lockers.get("lockers", []):
                        if owner == me:
                            ioctx.unlock(header, "rbd_lock", cookie)
                            LOG.info("released the lock %s left on %s/%s",
                                     cookie, pool, image_id)
                return
            except errors.NotFound:
                return  # removed meanwhile
            except errors.TrackedError as exc:
                if time.monotonic() >= deadline:
                    LOG.warning("the lock on %s/%s stays (%s); cleanup breaks "
                                "it", pool, image_id, exc)
                    return
                c.pause(min(c.timeout, 5))

    def _purge_new(self, ioctx: Any, name: str, snapshot: str) -> None:
        """Remove an image this process has just created; never raises."""
        c = self.connection
        try:
            with c.image(ioctx, name) as image:
                if snapshot in {s["name"] for s in image.list_snaps()}:
                    if image.is_protected_snap(snapshot):
                        image.unprotect_snap(snapshot)
                    image.remove_snap(snapshot)
            c.rbd.RBD().remove(ioctx, name)
        except Exception:
            LOG.exception("could not remove the partial image %s", name)


def _close_later(closing: contextlib.ExitStack, spec: str,
                 then: Callable[[], None] | None = None) -> None:
    """Close an image (and its I/O context) in the background: librbd
    waits for the cluster there, a few timeouts long; then, in a thread of
    its own, ``then``."""
    def close() -> None:
        try:
            closing.close()
        except Exception:
            LOG.warning("closing %s failed", spec, exc_info=True)
        LOG.info("closed %s", spec)
        if then is not None:
            threading.Thread(target=then, name=f"releasing {spec}",
                             daemon=True).start()
    threading.Thread(target=close, name=f"closing {spec}",
                     daemon=True).start()


def _grown(capacity: int, needed: int) -> int:
    """Double the capacity (at most 8 GiB at a time) until ``needed`` fits."""
    while capacity < needed:
        capacity += min(capacity, 8 << 30)
    return capacity


@dataclasses.dataclass(frozen=True)
class _Write:
    """A write in flight, answered or not by its deadline."""

    completion: Any
    answered: threading.Event
    deadline: float


def _write(image: Any, chunk: bytes, offset: int, timeout: int) -> _Write:
    answered = threading.Event()
    completion = image.aio_write(chunk, offset, lambda _: answered.set())
    return _Write(completion, answered, time.monotonic() + timeout)


def _finish(write: _Write, spec: str, timeout: int) -> None:
    """Wait for a write until its deadline: librbd bounds each OSD
    operation, and one write may be two of them in a row."""
    left = max(0.0, write.deadline - time.monotonic())
    if not write.answered.wait(left):
        raise errors.ClusterError(f"writing {spec}: the cluster did not "
                                  f"answer within {timeout} s",
                                  timed_out=True)
    write.completion.wait_for_complete_and_cb()
    result = write.completion.get_return_value()
    if result < 0:
        raise io_error(result, f"writing {spec}", timeout)
