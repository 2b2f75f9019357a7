"""The journal: one RADOS object in the store's pool whose omap holds the
intents of operations in flight and the links of finished chains (see
:mod:`glance_rbd_tracked.schema`).  Writes are atomic: one write operation
sets and removes entries together."""

from __future__ import annotations

from collections.abc import Iterable

from glance_rbd_tracked import schema
from glance_rbd_tracked.ceph import omap
from glance_rbd_tracked.ceph.connection import Connection


class Journal:
    """Implements :class:`glance_rbd_tracked.ports.Journal`."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def entries(self, pool: str) -> dict[str, str]:
        """All entries of the store's journal object in ``pool``."""
        c = self.connection
        with c.ioctx(pool) as ioctx, c.translated("reading the journal"):
            return {key: value.decode() for key, value in omap.values(
                c.rados, ioctx, schema.JOURNAL_OBJECT)}

    def update(self, pool: str, put: dict[str, str] | None = None,
               remove: Iterable[str] = ()) -> None:
        """Set and remove journal entries in one atomic write."""
        put, remove = dict(put or {}), list(remove)
        c, rados = self.connection, self.connection.rados
        with c.ioctx(pool) as ioctx, \
                c.translated("writing the journal"), \
                rados.WriteOpCtx() as op:
            if put:
                ioctx.set_omap(op, tuple(put),
                               tuple(v.encode() for v in put.values()))
            if remove:
                ioctx.remove_omap_keys(op, tuple(remove))
            ioctx.operate_write_op(op, schema.JOURNAL_OBJECT)
