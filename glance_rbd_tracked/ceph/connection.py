"""One librados connection per process, and the one place where rados and
rbd errors become the project's errors.

Rules this module owns:

* A :class:`Connection` is opened lazily (a WSGI server may fork after the
  store is configured), shared by threads, opened anew in a forked child,
  and replaced once the cluster shut it down.  A timeout does not replace
  it: librados finds the monitors and OSDs again by itself, and a new
  client could not connect while a monitor is gone (a monitor outage
  would stop even the reads that need none).  A dropped client is
  shut down only when its last user lets go.
* Every call into Ceph is bounded: ``timeout`` seconds for OSD and monitor
  operations, ``connect_timeout`` for connecting (``timeout`` too when it
  is None, 0 or less).  A read that timed out is not tried again (that
  would wait as long once more); one that lost its connection is, once, on
  a new one.
* :meth:`Connection.translated` is the only translation of rados/rbd errors
  into :mod:`glance_rbd_tracked.errors`.
* No image is closed right after its open.  librbd 16.2 (Pacific, Debian
  12's) completes an open in ``ImageState::complete_action_unlock``: it
  wakes the caller, and only then locks the ImageState's mutex once more.
  A caller that closes the image at once can finish the close, which frees
  the ImageCtx and its ImageState, before that lock: the librbd thread
  locks freed memory (SIGSEGV, SIGABRT with ``std::system_error``, or a
  hang; ``doc/source/known-issues.rst``).  :meth:`Connection.image` is the
  only open, and enforces it.  A read-only open (every read the store
  makes, and a snapshot's data) is never closed by its user:
  :mod:`.handles` parks it and closes it only seconds later, and shares one
  open of a snapshot among all its readers.  A writable open registers a
  watch, and its close unregisters it and releases its lock before librbd
  frees anything: round trips to the OSD, not a few instructions.  It is
  closed at once (its watch would keep a removal from succeeding), and
  every writable open of the store writes.
"""

from __future__ import annotations

import atexit
from collections.abc import Callable
from collections.abc import Iterator
import contextlib
import errno
import logging
import os
import threading
import time
from typing import Any
import weakref

from glance_rbd_tracked import errors
from glance_rbd_tracked.ceph.handles import Handles

LOG = logging.getLogger(__name__)

ZERO_FSID = "00000000-0000-0000-0000-000000000000"


def modules() -> tuple[Any, Any]:
    """Debian's rados and rbd extension modules (imported on first use)."""
    import rados
    import rbd
    return rados, rbd


class Connection:
    """A lazily opened, thread-safe, fork-aware librados client."""

    def __init__(self, conffile: str | None = None, user: str | None = None,
                 *, timeout: int = 30, connect_timeout: int | None = None,
                 conf: dict[str, str] | None = None,
                 rados_rbd: tuple[Any, Any] | None = None,
                 fsid_wait: float = 10.0,
                 pause: Callable[[float], None] = time.sleep) -> None:
        self.conffile = conffile or None
        self.user = user or None
        if timeout <= 0:
            raise ValueError("every call into Ceph needs a timeout")
        self.timeout = timeout
        # None, 0 or less (Cinder's rados_connect_timeout defaults to -1):
        # connecting is bounded by the operation timeout
        self.connect_timeout = (connect_timeout if connect_timeout
                                and connect_timeout > 0 else timeout)
        self.conf = dict(conf or {})
        self._modules = rados_rbd
        self.fsid_wait = fsid_wait
        self.pause = pause
        self._lock = threading.Lock()
        self._client: Any = None
        self._dropped: list[Any] = []
        self._users: dict[int, int] = {}
        self._pid: int | None = None
        self._fsid: str | None = None
        self._owners: dict[int, Any] = {}
        self.handles = Handles(self)
        _ALIVE.add(self)

    @property
    def rados(self) -> Any:
        """The rados module (imported on first use)."""
        if self._modules is None:
            self._modules = modules()
        return self._modules[0]

    @property
    def rbd(self) -> Any:
        if self._modules is None:
            self._modules = modules()
        return self._modules[1]

    # -- the client ---------------------------------------------------------

    def _open(self) -> Any:
        conf = dict(self.conf)
        for key in ("rados_osd_op_timeout", "rados_mon_op_timeout"):
            conf.setdefault(key, str(self.timeout))
        conf.setdefault("client_mount_timeout", str(self.connect_timeout))
        # A client asks for a newer OSD map only once an op has waited
        # objecter_timeout (10 s, looked at every objecter_tick_interval,
        # 5 s).  With a shorter timeout every op gives up first, and the
        # client never finds an OSD that restarted at a new address: ask
        # after a third of the timeout (Ceph's defaults from 30 s on).
        laggy = max(1, self.timeout // 3)
        conf.setdefault("objecter_timeout", str(min(laggy, 10)))
        conf.setdefault("objecter_tick_interval", str(min(laggy, 5)))
        client = self.rados.Rados(conffile=self.conffile or "",
                                  rados_id=self.user, conf=conf)
        try:
            with self.translated("connecting to the cluster"):
                client.connect(timeout=self.connect_timeout)
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
            with self.translated("reading the cluster fsid"):
                fsid = client.get_fsid()
            if fsid and fsid != ZERO_FSID:
                return fsid
            if time.monotonic() >= deadline:
                raise errors.ClusterError(
                    "the cluster reported a zero fsid for "
                    f"{self.fsid_wait:.0f} s; refusing to publish locations")
            LOG.debug("zero fsid right after connect; waiting %.3f s", delay)
            self.pause(delay)
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
        LOG.warning("dropping the cluster connection; reconnecting on next use")
        self.handles.drop_client(client)
        self._shutdown_dropped(client)

    def _shutdown_dropped(self, client: Any) -> None:
        with self._lock:
            if client not in self._dropped or self._users.get(id(client)):
                return
            self._dropped.remove(client)
        with contextlib.suppress(Exception):
            client.shutdown()

    def hold(self, client: Any) -> None:
        """Count a user of ``client`` (an I/O context, an open image)."""
        with self._lock:
            self._users[id(client)] = self._users.get(id(client), 0) + 1

    def release(self, client: Any) -> None:
        """One user fewer; a dropped client goes with its last user."""
        with self._lock:
            self._users[id(client)] -= 1
            if not self._users[id(client)]:
                del self._users[id(client)]
        self._shutdown_dropped(client)

    @contextlib.contextmanager
    def _using(self, client: Any) -> Iterator[None]:
        self.hold(client)
        try:
            yield
        finally:
            self.release(client)

    def owner(self, ioctx: Any) -> Any:
        """The client an I/O context of :meth:`ioctx` belongs to."""
        with self._lock:
            return self._owners[id(ioctx)]

    def close(self) -> None:
        """Shut every client of this process down (at exit), after the
        images open on them."""
        self.handles.close_all()
        with self._lock:
            clients = [c for c in (self._client, *self._dropped) if c]
            self._client, self._dropped = None, []
        if self._pid == os.getpid():
            for client in clients:
                with contextlib.suppress(Exception):
                    client.shutdown()

    # -- I/O contexts and images ------------------------------------------

    @contextlib.contextmanager
    def ioctx(self, pool: str) -> Iterator[Any]:
        """An I/O context on ``pool``; a shut-down connection is re-opened
        once."""
        for attempt in (1, 2):
            client = self.client()
            try:
                with self.translated(f"opening pool {pool!r}"):
                    try:
                        ioctx = client.open_ioctx(pool)
                    except self.rados.ObjectNotFound:
                        raise errors.NotFound(
                            f"pool {pool!r} does not exist") from None
                    # On a full pool or cluster librados would block writes
                    # until space appears; full-try makes the OSD answer
                    # ENOSPC/EDQUOT at once (and lets removals through).
                    ioctx.set_osdmap_full_try()
                break
            except errors.ClusterError as exc:
                if not self.shut(exc) or attempt == 2:
                    raise
                self.reset(client)
        try:
            with self._using(client):
                with self._lock:
                    self._owners[id(ioctx)] = client
                try:
                    yield ioctx
                finally:
                    with self._lock:
                        self._owners.pop(id(ioctx), None)
                    ioctx.close()
        except errors.ClusterError as exc:
            if self.shut(exc):
                self.reset(client)
            raise

    @contextlib.contextmanager
    def image(self, ioctx: Any, name: str, *, snapshot: str | None = None,
              read_only: bool = False, what: str = "",
              image_id: str | None = None,
              snap_id: int | None = None) -> Iterator[Any]:
        """Open ``name`` (or the image of id ``image_id``) in ``ioctx``,
        an I/O context of :meth:`ioctx`.  A read-only image is borrowed
        from :attr:`handles` (see the rule above), and must not be closed by
        its user; one at a snapshot is shared, and must not be moved
        (``set_snap``) either.  ``snap_id`` (read-only only): the snapshot
        ``snapshot`` by its id, in any snapshot namespace."""
        what = what or f"opening {ioctx.get_pool_name()}/{name}"
        if read_only:
            with self.handles.borrow(ioctx, name, snapshot=snapshot,
                                     image_id=image_id, what=what,
                                     snap_id=snap_id) as image:
                yield image
            return
        image = self.open_image(ioctx, name, snapshot=snapshot,
                                read_only=False, image_id=image_id,
                                what=what)
        try:
            yield image
        finally:
            image.close()

    def open_image(self, ioctx: Any, name: str, *, snapshot: str | None,
                   read_only: bool, image_id: str | None,
                   what: str) -> Any:
        """librbd's open, errors translated; for :meth:`image` and
        :mod:`.handles` alone, which close what it opens by the rule."""
        with self.translated(what):
            if image_id is None:
                return self.rbd.Image(ioctx, name, snapshot=snapshot,
                                      read_only=read_only)
            return self.rbd.Image(ioctx, image_id=image_id,
                                  snapshot=snapshot, read_only=read_only)

    def check_monitors(self, what: str) -> None:
        """Raise a timed-out ClusterError unless a monitor answers within
        the timeout: librbd waits for the monitors without any timeout in
        a few calls (unprotect_snap), so those are made only after this."""
        with self.translated(what):
            # (bounded by rados_mon_op_timeout: it answers -ETIMEDOUT)
            ret, _, err = self.client().mon_command(
                '{"prefix": "mon stat", "format": "json"}', b"")
        if ret < 0:
            raise errors.ClusterError(
                f"{what}: the monitors did not answer within {self.timeout} "
                f"s ({err or os.strerror(-ret)})", timed_out=True)

    def shut(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the cluster shut this client down."""
        return isinstance(exc.__cause__, (self.rados.ConnectionShutdown,
                                          self.rbd.ConnectionShutdown))


    def reading(self, read: Callable[[], Any]) -> Any:
        """Run an idempotent read; once more on a fresh connection if the
        cluster dropped the current one (not if it timed out)."""
        try:
            return read()
        except errors.ClusterError as exc:
            if not self.shut(exc):
                raise
            LOG.warning("retrying on a new connection: %s", exc)
            return read()

    @contextlib.contextmanager
    def translated(self, what: str) -> Iterator[None]:
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
        except rbd.DiskQuotaExceeded as exc:
            raise errors.NoSpace(f"{what}: the pool's quota is reached "
                                 f"({exc})") from None
        except (rbd.NoSpace, rados.NoSpace) as exc:
            raise errors.NoSpace(f"{what}: the cluster is full ({exc})") from None
        except (rados.PermissionError, rados.PermissionDeniedError,
                rbd.PermissionError) as exc:
            raise errors.ClusterError(
                f"{what}: client.{self.user or 'admin'} is not permitted to "
                f"(its cephx caps; see the cephx page of the docs): "
                f"{exc}") from exc
        except (rados.TimedOut, rbd.Timeout,
                # a write that could not take the image's lock in time
                rbd.ReadOnlyImage) as exc:
            raise errors.ClusterError(
                f"{what}: the cluster did not answer within "
                f"{self.timeout} s", timed_out=True) from exc
        except (rbd.Error, rados.Error) as exc:
            if getattr(exc, "errno", None) == errno.EDQUOT:
                raise errors.NoSpace(f"{what}: the pool's quota is "
                                     "reached") from None
            raise errors.ClusterError(f"{what}: {exc}") from exc


def io_error(result: int, what: str, timeout: int) -> errors.TrackedError:
    """The error for a failed asynchronous operation's return value."""
    if result == -errno.EDQUOT:
        return errors.NoSpace(f"{what}: the pool's quota is reached")
    if result == -errno.ENOSPC:
        return errors.NoSpace(f"{what}: the cluster is full")
    if result == -errno.ETIMEDOUT:
        return errors.ClusterError(f"{what}: the cluster did not answer "
                                   f"within {timeout} s", timed_out=True)
    return errors.ClusterError(f"{what} failed: {os.strerror(-result)}")


_ALIVE: weakref.WeakSet[Connection] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # A librados client still open while the interpreter finalizes can
    # crash it (its threads outlive the objects they call into).
    for connection in list(_ALIVE):
        with contextlib.suppress(Exception):
            connection.close()
