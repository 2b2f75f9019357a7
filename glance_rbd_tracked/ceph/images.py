"""Reading images: their snapshots, clones, parent and our records.

Reads change nothing and are retried once on a fresh connection when the
cluster dropped the current one.
"""

from __future__ import annotations

from typing import Any

from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import schema
from glance_rbd_tracked.ceph.connection import Connection
from glance_rbd_tracked.ceph.lease import has_omap

_SNAP_NAMESPACES = {0: "user", 1: "group", 2: "trash", 3: "mirror"}


class Images:
    """Implements :class:`glance_rbd_tracked.ports.ImageReads`."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def fsid(self) -> str:
        return self.connection.fsid()

    def state(self, pool: str, name: str) -> core.ImageState:
        """Snapshots, their clones and our records of one image."""
        return self.connection.reading(lambda: self._state(pool, name))

    def _state(self, pool: str, name: str) -> core.ImageState:
        with self.connection.ioctx(pool) as ioctx:
            try:
                return self._read_state(ioctx, pool, name)
            except errors.NotFound:
                image_id = self._half_removed(ioctx, name)
                if image_id is None:
                    raise
            return self._read_state(ioctx, pool, name, image_id)

    def _read_state(self, ioctx: Any, pool: str, name: str,
                    image_id: str | None = None) -> core.ImageState:
        """Read the image by name, or by id if it is half removed."""
        removing = image_id is not None
        c = self.connection
        with c.image(ioctx, name, image_id=image_id, read_only=True) as image, \
                c.translated(f"reading {pool}/{name}"):
            snaps = tuple(self._snap(image, s) for s in image.list_snaps())
            metadata = dict(image.metadata_list())
            parent = self._parent(image)
            image_id = image.id()
        return core.ImageState(pool=pool, name=name, image_id=image_id,
                               snaps=snaps,
                               records=schema.records_of(image_id, metadata),
                               parent=parent, removing=removing)

    def _half_removed(self, ioctx: Any, name: str) -> str | None:
        """The id of ``name`` if librbd left it half removed: out of the
        directory, in the trash (where trash_list() does not show it), and
        still in the pool's image list."""
        c = self.connection
        with c.translated(f"listing {ioctx.get_pool_name()}"):
            if not has_omap(c.rados, ioctx, "rbd_trash"):
                return None  # the usual case, in one read: an empty trash
            for entry in c.rbd.RBD().list2(ioctx):
                if entry["name"] == name:
                    return entry["id"]
        return None

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
        return core.Snap(name=info["name"], children=children,
                         protected=protected, namespace=namespace)

    def list_images(self, pool: str) -> list[str]:
        """Image names in ``pool``: one read of the pool's directory."""
        c = self.connection
        with c.ioctx(pool) as ioctx, c.translated(f"listing {pool}"):
            return list(c.rbd.RBD().list(ioctx))


def _child_spec(child: dict) -> str:
    namespace = child.get("pool_namespace")
    pool = f"{child['pool']}/{namespace}" if namespace else child["pool"]
    return f"{pool}/{child['image']}"
