"""The adapter: the only package that talks to librados and librbd.

One module per concern, each implementing a Protocol of
:mod:`glance_rbd_tracked.ports`:

* :mod:`.connection`: the process's librados client, error translation,
  the one image open;
* :mod:`.handles`: read-only images, closed late, shared at snapshots;
* :mod:`.lease`: the store's lease on an image while it changes it;
* :mod:`.images`: reading images (snapshots, clones, parent, records);
* :mod:`.changes`: carrying out decisions and the steps of a chain;
* :mod:`.data`: streamed reads and uploads;
* :mod:`.deltas`: what a copy to another cluster reads (lineage, changes);
* :mod:`.journal`: the journal of operations in flight;
* :mod:`.setup`: the cluster's and pools' configuration the store needs;
* :mod:`.space`: how much more a pool may take.

:func:`connect` puts them together as a :class:`Ceph`; :func:`shared` keeps
one per process and setting.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from glance_rbd_tracked.ceph.changes import Changes
from glance_rbd_tracked.ceph.connection import Connection
from glance_rbd_tracked.ceph.data import Data
from glance_rbd_tracked.ceph.deltas import Deltas
from glance_rbd_tracked.ceph.images import Images
from glance_rbd_tracked.ceph.journal import Journal
from glance_rbd_tracked.ceph.lease import Leases
from glance_rbd_tracked.ceph.lease import Terms
from glance_rbd_tracked.ceph.setup import Setup
from glance_rbd_tracked.ceph.space import Space

__all__ = ["Ceph", "Terms", "connect", "shared"]

DEFAULT_TERMS = Terms()


@dataclasses.dataclass(frozen=True)
class Ceph:
    """One cluster as the orchestration sees it
    (:class:`glance_rbd_tracked.ports.Backend`)."""

    connection: Connection
    images: Images
    changes: Changes
    data: Data
    deltas: Deltas
    journal: Journal
    setup: Setup
    space: Space

    def fsid(self) -> str:
        return self.connection.fsid()

    def close(self) -> None:
        self.connection.close()


def connect(conffile: str | None = None, user: str | None = None, *,
            timeout: int = 30, connect_timeout: int | None = None,
            conf: dict[str, str] | None = None,
            lease: Terms = DEFAULT_TERMS,
            rados_rbd: tuple[Any, Any] | None = None) -> Ceph:
    """A :class:`Ceph` for one cluster; it connects on first use.  Every
    call into Ceph gives up after ``timeout`` seconds (connecting after
    ``connect_timeout``, by default the same)."""
    connection = Connection(conffile, user, timeout=timeout,
                            connect_timeout=connect_timeout, conf=conf,
                            rados_rbd=rados_rbd)
    return Ceph(connection=connection, images=Images(connection),
                changes=Changes(connection, Leases(connection, lease)),
                data=Data(connection), deltas=Deltas(connection),
                journal=Journal(connection),
                setup=Setup(connection), space=Space(connection))


_SHARED: dict[tuple, Ceph] = {}
_SHARED_LOCK = threading.Lock()


def shared(conffile: str | None, user: str | None, *, timeout: int = 30,
           connect_timeout: int | None = None,
           conf: dict[str, str] | None = None) -> Ceph:
    """The process-wide :class:`Ceph` for these settings."""
    key = (conffile or None, user or None, timeout, connect_timeout,
           tuple(sorted((conf or {}).items())))
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = connect(conffile, user, timeout=timeout,
                                   connect_timeout=connect_timeout, conf=conf)
        return _SHARED[key]
