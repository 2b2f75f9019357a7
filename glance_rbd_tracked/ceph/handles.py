"""Read-only image handles: opened in one place, closed late, shared at
snapshots.

Rules this module owns (the librbd bug behind them is in
:mod:`.connection` and ``doc/source/known-issues.rst``):

* A read-only handle is never closed by its user.  It is *parked*, and
  closed by this module's reaper once it has been open for ``settle``
  seconds at least (and, when shared, unused for ``idle`` seconds), or at
  exit once it is that old.
* A handle at a snapshot, opened by name, is shared: one open serves every
  read of that snapshot in this process, for as long as it is used.
  Snapshots do not change, but a handle outlives what it was opened on:
  librbd reads objects that were removed as zeros, and a read-only handle
  has no watch that would tell it.  So a shared handle is *checked* before
  each use and after the last byte of each read: the name must still
  point at the image id it was opened on (``rbd_id.<name>``), and that
  image must still have the snapshot under the same name
  (``get_snapshot_name`` of its id).  A handle that fails the check is
  parked, and the open is made anew (which says NotFound when it is gone).
* A read-only open registers no watch and takes no lock, so an open
  handle never keeps a removal from succeeding.
* Each handle counts as a user of the librados client it was opened on:
  a dropped client is shut down only after its last handle is closed.
  Handles inherited through fork() are forgotten, never closed (and never
  freed: the rbd module would close them).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
import contextlib
import dataclasses
import logging
import os
import struct
import threading
import time
from typing import TYPE_CHECKING
from typing import Any
import weakref

from glance_rbd_tracked import errors

if TYPE_CHECKING:
    from glance_rbd_tracked.ceph.connection import Connection

LOG = logging.getLogger(__name__)

SETTLE = 0.5
"""Seconds a read-only handle stays open at least after its open."""
IDLE = 60.0
"""Seconds a shared handle stays open after its last use."""
SHARED_MAX = 64
"""Shared handles kept at most; the least recently used beyond go first."""


@dataclasses.dataclass(eq=False)
class Handle:
    """One open read-only image and what it was opened on."""

    image: Any
    client: Any
    key: tuple
    name: str
    image_id: str
    snapshot: str | None
    snap_id: int | None
    opened: float
    used: float
    users: int = 0


class Handles:
    """The read-only handles of one :class:`~.connection.Connection`."""

    def __init__(self, connection: Connection, *, settle: float = SETTLE,
                 idle: float = IDLE, limit: int = SHARED_MAX,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.connection = connection
        self.settle = settle
        self.idle = idle
        self.limit = limit
        self.clock = clock
        self._lock = threading.Lock()
        self._shared: dict[tuple, Handle] = {}
        self._parked: list[Handle] = []
        self._open_now: dict[int, Handle] = {}
        self._pid = os.getpid()
        self._reaper: threading.Thread | None = None
        self._wake = threading.Event()
        _ALL.add(self)

    # -- borrowing ---------------------------------------------------------

    @contextlib.contextmanager
    def borrow(self, ioctx: Any, name: str, *, snapshot: str | None,
               image_id: str | None, what: str,
               snap_id: int | None = None) -> Iterator[Any]:
        """A read-only handle on ``name`` (or ``image_id``) in ``ioctx``,
        at ``snapshot`` or at the head; parked, never closed, afterwards.
        With ``snap_id``, the snapshot of that id, whatever its namespace
        (one in the trash namespace cannot be opened by name); it is
        checked by that id and the name ``snapshot``."""
        key = (ioctx.get_pool_name(), ioctx.get_namespace(), name, snapshot)
        if snapshot is None or image_id is not None or snap_id is not None:
            at = None if snap_id is not None else snapshot
            handle = self._open(ioctx, name, at, image_id, key, what)
            try:
                if snap_id is not None:
                    with self.connection.translated(what):
                        handle.image.set_snap_by_id(snap_id)
                    handle.snapshot, handle.snap_id = snapshot, snap_id
                yield handle.image
            finally:
                self._park(handle)
            return
        handle = self._take(ioctx, key, what)
        try:
            yield handle.image
        finally:
            with self._lock:
                handle.users -= 1
                handle.used = self.clock()

    def check(self, ioctx: Any, image: Any) -> None:
        """Raise NotFound unless ``image`` (borrowed from here, by name)
        still shows what it was opened on: after the last byte of a read,
        which would have read zeros from an image removed meanwhile."""
        with self._lock:
            handle = self._open_now.get(id(image))
        if handle is None or not handle.name:
            return
        if not self._current(ioctx, handle):
            self._retire(handle)
            at = f"@{handle.snapshot}" if handle.snapshot else ""
            raise errors.NotFound(
                f"{ioctx.get_pool_name()}/{handle.name}{at} was removed "
                "while it was read")

    def _take(self, ioctx: Any, key: tuple, what: str) -> Handle:
        with self._lock:
            handle = self._shared.get(key)
            if handle is not None:
                handle.users += 1
        if handle is not None:
            if self._current(ioctx, handle):
                return handle
            self._retire(handle)
            with self._lock:
                handle.users -= 1
        _, _, name, snapshot = key
        handle = self._open(ioctx, name, snapshot, None, key, what)
        handle.users = 1
        with self._lock:
            if key in self._shared:
                # another thread opened it meanwhile: this one is private
                handle.users = 0
                self._parked.append(handle)
                shared = self._shared[key]
                shared.users += 1
            else:
                self._shared[key] = handle
                shared = handle
            self._evict_over_limit()
        self._start_reaper()
        return shared

    def _open(self, ioctx: Any, name: str, snapshot: str | None,
              image_id: str | None, key: tuple, what: str) -> Handle:
        c = self.connection
        client = c.owner(ioctx)
        image = c.open_image(ioctx, name, snapshot=snapshot, read_only=True,
                             image_id=image_id, what=what)
        now = self.clock()
        handle = Handle(image=image, client=client, key=key, name=name,
                        image_id="", snapshot=snapshot, snap_id=None,
                        opened=now, used=now)
        c.hold(client)
        with self._lock:
            self._open_now[id(image)] = handle
        try:
            with c.translated(what):
                handle.image_id = image.id()
                if snapshot is not None:
                    handle.snap_id = image.snap_get_id(snapshot)
        except BaseException:
            self._park(handle)
            raise
        return handle

    def _current(self, ioctx: Any, handle: Handle) -> bool:
        """Whether the name still points at the handle's image, and that
        image still has the snapshot under its name: two reads, no open."""
        c = self.connection
        spec = f"{ioctx.get_pool_name()}/{handle.name}"
        with c.translated(f"checking {spec}@{handle.snapshot}"):
            try:
                raw = ioctx.read(f"rbd_id.{handle.name}", 4096)
                if _string(raw) != handle.image_id:
                    return False
                if handle.snap_id is None:
                    return True
                _, raw = ioctx.execute(
                    f"rbd_header.{handle.image_id}", "rbd",
                    "get_snapshot_name", struct.pack("<Q", handle.snap_id))
            except c.rados.ObjectNotFound:
                return False
        return _string(raw) == handle.snapshot

    # -- parking and closing ---------------------------------------------

    def _retire(self, handle: Handle) -> None:
        """Stop sharing ``handle``; it is closed once nobody uses it."""
        with self._lock:
            if self._shared.get(handle.key) is handle:
                del self._shared[handle.key]
                self._parked.append(handle)
        self._start_reaper()

    def _park(self, handle: Handle) -> None:
        with self._lock:
            self._parked.append(handle)
        self._start_reaper()

    def _evict_over_limit(self) -> None:
        idle = sorted((h for h in self._shared.values() if not h.users),
                      key=lambda h: h.used)
        for handle in idle[:max(0, len(self._shared) - self.limit)]:
            del self._shared[handle.key]
            self._parked.append(handle)

    def drop_client(self, client: Any) -> None:
        """Stop sharing the handles of a client the connection dropped."""
        with self._lock:
            for key, handle in list(self._shared.items()):
                if handle.client is client:
                    del self._shared[key]
                    self._parked.append(handle)
        self._start_reaper()

    def due(self, now: float) -> list[Handle]:
        """Take the handles that may be closed now out of this module."""
        with self._lock:
            for key, handle in list(self._shared.items()):
                if not handle.users and now - handle.used >= self.idle:
                    del self._shared[key]
                    self._parked.append(handle)
            ready = [h for h in self._parked
                     if not h.users and now - h.opened >= self.settle]
            self._parked = [h for h in self._parked if h not in ready]
        return ready

    def _close(self, handles: list[Handle]) -> None:
        for handle in handles:
            with self._lock:
                self._open_now.pop(id(handle.image), None)
            try:
                handle.image.close()
            except Exception:
                LOG.warning("closing %s failed", handle.name, exc_info=True)
            finally:
                self.connection.release(handle.client)

    def reap(self) -> None:
        """Close what is due now."""
        self._close(self.due(self.clock()))

    def _start_reaper(self) -> None:
        with self._lock:
            if self._reaper is not None and self._reaper.is_alive():
                return
            self._reaper = threading.Thread(target=self._reap_loop,
                                            name="rbd handle reaper",
                                            daemon=True)
            self._reaper.start()

    def _reap_loop(self) -> None:
        while True:
            self._wake.wait(max(0.05, self.settle / 2))
            self.reap()
            with self._lock:
                if not self._shared and not self._parked:
                    self._reaper = None
                    return

    def close_all(self) -> None:
        """Close every handle (at exit), each once it is ``settle`` old;
        one still in use is left to its user's process exit."""
        with self._lock:
            self._parked.extend(self._shared.values())
            self._shared = {}
            handles = [h for h in self._parked if not h.users]
            self._parked = [h for h in self._parked if h.users]
            youngest = max((h.opened for h in handles), default=None)
        if youngest is not None:
            wait = youngest + self.settle - self.clock()
            if wait > 0:
                time.sleep(wait)
        self._close(handles)

    def _forget_after_fork(self) -> None:
        """In a forked child (its only thread): the parent's handles have
        no librbd threads behind them, and a lock another thread of the
        parent held at the fork would never be released.  The handles are
        kept, never closed: the rbd module closes an Image it frees, and
        that waits for threads the child does not have."""
        self._lock = threading.Lock()
        self._wake = threading.Event()
        _INHERITED.extend(h.image for h in self._open_now.values())
        self._shared, self._parked, self._open_now = {}, [], {}
        self._reaper = None
        self._pid = os.getpid()

    def open_count(self) -> int:
        """Handles open now (shared and parked)."""
        with self._lock:
            return len(self._shared) + len(self._parked)


_ALL: weakref.WeakSet[Handles] = weakref.WeakSet()
_INHERITED: list[Any] = []


def _after_fork_in_child() -> None:
    for handles in list(_ALL):
        handles._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _string(raw: bytes) -> str:
    """A Ceph-encoded string: a little-endian u32 length, then the bytes."""
    if len(raw) < 4:
        return ""
    (length,) = struct.unpack_from("<I", raw)
    return raw[4:4 + length].decode("utf-8", "replace")
