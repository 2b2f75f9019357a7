"""``rbd://`` locations, read as glance_store reads them.

The store publishes ``rbd://<fsid>/<pool>/<image>/<snapshot>`` with every
part percent-encoded (glance_store's ``StoreLocation``); glance-api, Nova
and Cinder decode it so.  :func:`parse` is the project's one reader of such
a location, and it is glance_store's own parser.
"""

from __future__ import annotations

import dataclasses

from glance_rbd_tracked import errors


@dataclasses.dataclass(frozen=True)
class Location:
    """A parsed location; ``rbd://<image>`` has neither fsid, pool nor
    snapshot."""

    fsid: str | None
    pool: str | None
    image: str
    snapshot: str | None


def parse(url: str) -> Location:
    """The parts of ``url``, decoded; Invalid unless glance_store takes it."""
    # imported on first use: the Nova and Cinder integrations are imported
    # before Nova or Cinder, and glance_store's rbd module imports rados
    from glance_store import exceptions
    from glance_store._drivers.rbd import StoreLocation

    location = StoreLocation({}, None)
    try:
        location.parse_uri(url)
    except exceptions.BadStoreUri as exc:
        raise errors.Invalid(f"{url!r} is not an rbd:// location of the form "
                             f"rbd://fsid/pool/image/snapshot "
                             f"({exc.msg})") from None
    return Location(location.fsid, location.pool, location.image,
                    location.snapshot)
