"""``rbd://`` locations, read as glance_store reads them.

The store publishes ``rbd://<fsid>/<pool>/<image>/<snapshot>`` with every
part percent-encoded (glance_store's ``StoreLocation``); glance-api, Nova
and Cinder decode it so.  :func:`parse` is the project's one reader of such
a location, and it is glance_store's own parser; :func:`format` is its one
writer, encoding as glance_store's ``StoreLocation.get_uri`` does (without
importing glance_store: Nova's and Cinder's hosts call it too).
"""

from __future__ import annotations

import dataclasses
import urllib.parse

from glance_rbd_tracked import errors


@dataclasses.dataclass(frozen=True)
class Location:
    """A parsed location; ``rbd://<image>`` has neither fsid, pool nor
    snapshot."""

    fsid: str | None
    pool: str | None
    image: str
    snapshot: str | None


def _quoted(part: str) -> str:
    # glance_store: "ensure nothing contains / or any other url-unsafe
    # character"
    return urllib.parse.quote(part, "")


def prefix(fsid: str, pool: str) -> str:
    """``rbd://<fsid>/<pool>/``: what every location of the store's images
    in ``pool`` begins with (glance_store's ``url_prefix``)."""
    return f"rbd://{_quoted(fsid)}/{_quoted(pool)}/"


def format(fsid: str, pool: str, image: str, snapshot: str) -> str:
    """The location of ``pool/image@snapshot`` in cluster ``fsid``, every
    part percent-encoded; :func:`parse` reads it back."""
    if not (fsid and pool and image and snapshot):
        raise errors.Invalid(f"a location needs an fsid, a pool, an image "
                             f"and a snapshot, not {fsid!r}, {pool!r}, "
                             f"{image!r}, {snapshot!r}")
    return prefix(fsid, pool) + f"{_quoted(image)}/{_quoted(snapshot)}"


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
