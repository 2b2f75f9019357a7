"""Reading the omap of a RADOS object: the store's journal and librbd's
trash directory are both kept there.  A missing object reads as empty."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

_BATCH = 1000


def has_omap(rados: Any, ioctx: Any, obj: str) -> bool:
    """Whether ``obj`` exists and has at least one omap key."""
    with rados.ReadOpCtx() as op:
        keys, _ = ioctx.get_omap_keys(op, "", 1)
        try:
            ioctx.operate_read_op(op, obj)
        except rados.ObjectNotFound:
            return False
        return bool(list(keys))


def values(rados: Any, ioctx: Any, obj: str) -> Iterator[tuple[str, bytes]]:
    """Every ``(key, value)`` of ``obj``, in key order, 1000 per read."""
    after = ""
    while True:
        with rados.ReadOpCtx() as op:
            found, _ = ioctx.get_omap_vals(op, after, "", _BATCH)
            try:
                ioctx.operate_read_op(op, obj)
            except rados.ObjectNotFound:
                return
            batch = list(found)
        if not batch:
            return
        yield from batch
        after = batch[-1][0]


def value(rados: Any, ioctx: Any, obj: str, key: str) -> bytes | None:
    """The value of one key of ``obj``; None if it (or ``obj``) is not
    there."""
    with rados.ReadOpCtx() as op:
        found, _ = ioctx.get_omap_vals_by_keys(op, (key,))
        try:
            ioctx.operate_read_op(op, obj)
        except rados.ObjectNotFound:
            return None
        return dict(found).get(key)
