"""Reading the RBD trash directly from its directory object.

librbd keeps one omap entry per trashed image in the object ``rbd_trash``
of the pool: key ``id_<image id>``, value an encoded
``cls::rbd::TrashImageSpec`` (source, name, deletion time, end of the
deferment, state).  The Python binding of librbd 16.2 cannot list a trash
that holds an image librbd parked there itself (source ``USER_PARENT``:
``trash_list`` raises IndexError for the whole pool), so the store decodes
the entries itself.  An entry it cannot decode is logged and skipped, never
guessed at.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import struct
from typing import Any

from glance_rbd_tracked import core
from glance_rbd_tracked.ceph import omap

LOG = logging.getLogger(__name__)

OBJECT = "rbd_trash"
_KEY_PREFIX = "id_"
_SOURCES = {0: core.TRASH_USER, 1: "mirroring", 2: "migration",
            3: core.TRASH_REMOVING, 4: core.TRASH_USER_PARENT}


@dataclasses.dataclass(frozen=True)
class Entry:
    image_id: str
    name: str
    trash: core.Trash


def decode(key: str, value: bytes) -> Entry:
    """One ``rbd_trash`` omap entry; ValueError if it is not one."""
    if not key.startswith(_KEY_PREFIX):
        raise ValueError(f"unexpected key {key!r}")
    try:
        _version, compat, length = struct.unpack_from("<BBI", value, 0)
        if compat > 2:  # an encoding this decoder cannot read
            raise ValueError(f"{key}: encoding compat {compat} is newer "
                             "than version 2")
        body = value[6:6 + length]
        if len(body) != length:
            raise ValueError("truncated")
        source, name_length = struct.unpack_from("<BI", body, 0)
        name = body[5:5 + name_length].decode()
        deleted, _, until, _ = struct.unpack_from("<IIII", body,
                                                  5 + name_length)
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"{key}: {exc}") from None
    utc = datetime.UTC
    return Entry(image_id=key[len(_KEY_PREFIX):], name=name,
                 trash=core.Trash(
                     source=_SOURCES.get(source, f"source {source}"),
                     deleted=datetime.datetime.fromtimestamp(deleted, utc),
                     deferred_until=datetime.datetime.fromtimestamp(until,
                                                                    utc)))


def entries(rados: Any, ioctx: Any) -> list[Entry]:
    """Every image in the pool's RBD trash (one read per 1000 entries)."""
    found = (_decoded(key, value)
             for key, value in omap.values(rados, ioctx, OBJECT))
    return [entry for entry in found if entry is not None]


def entry(rados: Any, ioctx: Any, image_id: str) -> Entry | None:
    """The trash entry of image ``image_id`` (one read); None if it is not
    in the trash."""
    key = _KEY_PREFIX + image_id
    value = omap.value(rados, ioctx, OBJECT, key)
    return None if value is None else _decoded(key, value)


def _decoded(key: str, value: bytes) -> Entry | None:
    try:
        return decode(key, value)
    except ValueError as exc:
        LOG.warning("skipping an RBD trash entry that does not decode: %s",
                    exc)
        return None
