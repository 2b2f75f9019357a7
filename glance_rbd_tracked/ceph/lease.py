"""The store's lease on an image: an advisory lock on its header object.

Rules this module owns:

* A worker holds the lease (``cls_lock`` ``rbd_tracked`` on
  ``rbd_header.<id>``, invisible to ``rbd lock ls``) while it changes the
  image, so that two workers never have one image open for writing at once:
  librbd 16.2 can abort a process whose open image is changed or removed by
  another client in the middle of its own change.
* The lock is a lease of ``seconds``, renewed every third of it while held:
  a worker that dies frees the image within ``seconds``.
* A waiter gives up after ``wait`` seconds with Busy (a Conflict) that
  says why.
* A lease taken on the header of an image removed meanwhile leaves no
  object behind.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
import contextlib
import dataclasses
import logging
import os
import threading
import time
from typing import Any
import uuid

from glance_rbd_tracked import errors
from glance_rbd_tracked.ceph import omap
from glance_rbd_tracked.ceph.connection import Connection

LOG = logging.getLogger(__name__)

NAME = "rbd_tracked"
_MUST_RENEW = 2  # LIBRADOS_LOCK_FLAG_MUST_RENEW: never re-creates the object


@dataclasses.dataclass(frozen=True)
class Terms:
    """How long a lease lasts and how long a worker waits for one."""

    seconds: int = 15
    wait: float = 30.0
    clock: Callable[[], float] = time.monotonic
    pause: Callable[[float], None] = time.sleep


class Leases:
    """Takes the store's lease on images of one connection."""

    def __init__(self, connection: Connection, terms: Terms = Terms()) -> None:
        self.connection = connection
        self.terms = terms

    @contextlib.contextmanager
    def held(self, ioctx: Any, spec: str, image_id: str) -> Iterator[None]:
        """Hold the lease on image ``image_id`` (named ``spec``)."""
        rados, terms = self.connection.rados, self.terms
        header = f"rbd_header.{image_id}"
        cookie = uuid.uuid4().hex

        def lock(flags: int = 0) -> None:
            ioctx.lock_exclusive(header, NAME, cookie,
                                 desc=f"pid {os.getpid()}",
                                 duration=terms.seconds, flags=flags)

        deadline = terms.clock() + terms.wait
        delay = 0.01
        while True:
            with self.connection.translated(f"locking {spec}"):
                try:
                    lock()
                    break
                except rados.ObjectBusy:
                    pass  # another worker holds it
            if terms.clock() >= deadline:
                raise errors.Busy(f"{spec} is being changed by another "
                                      f"worker for over {terms.wait:.0f} s")
            terms.pause(delay)
            delay = min(delay * 2, 0.2)
        released = threading.Event()

        def renew() -> None:  # long removals outlive one lease
            while not released.wait(terms.seconds / 3):
                try:
                    lock(_MUST_RENEW)
                except rados.Error:
                    return  # removed with the image
        keeper = threading.Thread(target=renew, daemon=True,
                                  name=f"lease {spec}")
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
                ioctx.unlock(header, NAME, cookie)
            except rados.ObjectNotFound:
                pass  # removed with the image
            except rados.Error as exc:
                LOG.warning("could not unlock %s (the lease expires in "
                            "%d s): %s", spec, terms.seconds, exc)

    def _drop_stray_header(self, ioctx: Any, header: str) -> None:
        """Remove ``header`` if it is only what a lock left: a real header
        always has omap keys (size, features, ...)."""
        rados = self.connection.rados
        with contextlib.suppress(rados.Error):
            if not omap.has_omap(rados, ioctx, header):
                ioctx.remove_object(header)
                LOG.info("removed %s, left by a lock on a removed image",
                         header)
