"""Reading images: their snapshots, clones, parent and our records.

An image that is not in the pool's directory may be in its RBD trash: put
there by its owner, parked by librbd until its last clone goes, or half
removed (see :mod:`.trash`).  Reads look there too, and say so in the
state.  Reads change nothing and are retried once on a fresh connection
when the cluster dropped the current one.
"""

from __future__ import annotations

import logging
from typing import Any

from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import schema
from glance_rbd_tracked.ceph import omap
from glance_rbd_tracked.ceph import trash
from glance_rbd_tracked.ceph.connection import Connection

LOG = logging.getLogger(__name__)
_SNAP_NAMESPACES = {0: "user", 1: "group", 2: "trash", 3: "mirror"}


class Images:
    """Implements :class:`glance_rbd_tracked.ports.ImageReads`."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def state(self, pool: str, name: str) -> core.ImageState:
        """Snapshots, their clones and our records of one image."""
        return self.connection.reading(lambda: self._state(pool, name))

    def _state(self, pool: str, name: str) -> core.ImageState:
        with self.connection.ioctx(pool) as ioctx:
            try:
                return self._read_state(ioctx, pool, name)
            except errors.NotFound:
                entry = self._in_trash(ioctx, name)
                if entry is None:
                    raise
            return self._read_state(ioctx, pool, name, entry)

    def _read_state(self, ioctx: Any, pool: str, name: str,
                    entry: trash.Entry | None = None) -> core.ImageState:
        """Read the image by name, or by id if it is in the trash."""
        c = self.connection
        with c.image(ioctx, name, read_only=True,
                     image_id=entry.image_id if entry else None) as image, \
                c.translated(f"reading {pool}/{name}"):
            snaps = tuple(self._snap(image, s) for s in image.list_snaps())
            metadata = dict(image.metadata_list())
            parent = self._parent(image)
            image_id = image.id()
        removing = entry is not None and entry.trash.source == \
            core.TRASH_REMOVING
        try:
            records = schema.records_of(image_id, metadata)
        except errors.CorruptMetadata as exc:
            raise errors.CorruptMetadata(f"{pool}/{name}: {exc}") from None
        return core.ImageState(
            pool=pool, name=name, image_id=image_id, snaps=snaps,
            records=records, parent=parent, removing=removing,
            trash=entry.trash if entry and not removing else None)

    def _in_trash(self, ioctx: Any, name: str) -> trash.Entry | None:
        """The newest entry of the pool's RBD trash named ``name``."""
        named = [e for e in self._trash(ioctx) if e.name == name]
        if len(named) > 1:
            LOG.warning("%d images named %s are in the RBD trash of %s; "
                        "looking at the newest", len(named), name,
                        ioctx.get_pool_name())
        return max(named, key=lambda e: e.trash.deleted, default=None)

    def _trash(self, ioctx: Any) -> list[trash.Entry]:
        c = self.connection
        with c.translated(f"reading the RBD trash of "
                          f"{ioctx.get_pool_name()}"):
            if not omap.has_omap(c.rados, ioctx, trash.OBJECT):
                return []  # the usual case, in one read: an empty trash
            return trash.entries(c.rados, ioctx)

    def by_id(self, pool: str, image_id: str) -> core.ImageState:
        """The image of that id, in the pool's directory or its trash."""
        def read() -> core.ImageState:
            c = self.connection
            with c.ioctx(pool) as ioctx:
                with c.translated(f"reading the RBD trash of {pool}"):
                    entry = trash.entry(c.rados, ioctx, image_id)
                if entry is not None:
                    return self._read_state(ioctx, pool, entry.name, entry)
                with c.image(ioctx, "", image_id=image_id,
                             read_only=True) as image, \
                        c.translated(f"reading image {image_id} of {pool}"):
                    name = image.get_name()
                return self._read_state(ioctx, pool, name)
        return self.connection.reading(read)

    def trash(self, pool: str) -> list[tuple[str, str]]:
        """``(name, image id)`` of every image in the pool's RBD trash."""
        def read() -> list[tuple[str, str]]:
            with self.connection.ioctx(pool) as ioctx:
                return [(e.name, e.image_id) for e in self._trash(ioctx)]
        return self.connection.reading(read)

    def writers(self, pool: str, image_id: str) -> tuple[str, ...]:
        """The clients that have the image open (they watch its header);
        a read-only open adds no watch, so this one is not among them."""
        def read() -> tuple[str, ...]:
            c = self.connection
            with c.ioctx(pool) as ioctx, \
                    c.image(ioctx, "", image_id=image_id,
                            read_only=True) as image, \
                    c.translated(f"listing the clients of image {image_id}"):
                return tuple(sorted(w["addr"]
                                    for w in image.watchers_list()))
        return self.connection.reading(read)

    def parent(self, pool: str, name: str) -> str | None:
        """The image's parent as ``pool/image@snap``, None if it is flat."""
        def read() -> str | None:
            c = self.connection
            with c.ioctx(pool) as ioctx, \
                    c.image(ioctx, name, read_only=True) as image, \
                    c.translated(f"reading the parent of {pool}/{name}"):
                return self._parent(image)
        return self.connection.reading(read)

    def _parent(self, image: Any) -> str | None:
        try:
            spec = image.get_parent_image_spec()
        except self.connection.rbd.ImageNotFound:
            return None
        pool = spec["pool_name"]
        if spec.get("pool_namespace"):
            pool = f"{pool}/{spec['pool_namespace']}"
        return f"{pool}/{spec['image_name']}@{spec['snap_name']}"

    def _snap(self, image: Any, info: dict) -> core.Snap:
        namespace = _SNAP_NAMESPACES.get(info.get("namespace", 0), "other")
        image.set_snap_by_id(info["id"])
        try:
            children = tuple(sorted(_child_spec(c)
                                    for c in image.list_children2()))
        finally:
            image.set_snap(None)
        protected = (namespace == "user"
                     and image.is_protected_snap(info["name"]))
        original = ""
        if namespace == "trash":
            original = image.snap_get_trash_namespace(
                info["id"])["original_name"]
        return core.Snap(name=info["name"], children=children,
                         protected=protected, namespace=namespace,
                         original=original, id=int(info["id"]))

    def list_images(self, pool: str) -> list[str]:
        """Image names in ``pool``: one read of the pool's directory."""
        c = self.connection
        with c.ioctx(pool) as ioctx, c.translated(f"listing {pool}"):
            return list(c.rbd.RBD().list(ioctx))


def _child_spec(child: dict) -> str:
    namespace = child.get("pool_namespace")
    pool = f"{child['pool']}/{namespace}" if namespace else child["pool"]
    return f"{pool}/{child['image']}"
