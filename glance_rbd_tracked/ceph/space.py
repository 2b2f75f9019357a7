"""How much more a pool may take: its quota, what it stores and what the
cluster can still write into it (``MAX AVAIL``), as ``ceph df detail``
shows them: one monitor command, bounded by the connection's timeout."""

from __future__ import annotations

import json

from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked.ceph.connection import Connection
from glance_rbd_tracked.ceph.connection import io_error


class Space:
    """Implements :class:`glance_rbd_tracked.ports.PoolSpace`."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def of(self, pool: str) -> core.PoolSpace | None:
        """The pool's quota, stored bytes and ``MAX AVAIL``, as the
        monitors last heard them from the mgr; None for a pool it has not
        reported yet (created seconds ago, or not there at all)."""
        c = self.connection
        what = f"reading the space of pool {pool}"
        with c.translated(what):
            # (bounded by rados_mon_op_timeout: it answers -ETIMEDOUT)
            ret, out, err = c.client().mon_command(json.dumps(
                {"prefix": "df", "detail": "detail", "format": "json"}), b"")
        if ret < 0:
            raise io_error(ret, f"{what} ({err})" if err else what, c.timeout)
        try:
            stats = next((p["stats"] for p in json.loads(out)["pools"]
                          if p["name"] == pool), None)
            if stats is None:
                return None
            return core.PoolSpace(pool, quota=int(stats["quota_bytes"]),
                                  used=int(stats["stored"]),
                                  available=int(stats["max_avail"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.ClusterError(f"{what}: the monitors' answer does "
                                      f"not say ({exc!r})") from None
