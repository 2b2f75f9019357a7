"""Nova, Cinder and the operator, played from outside the store.

:class:`Side` does to the cluster what they do, in plain librados/librbd
calls (boot a disk as a clone, write to it, create a volume, remove an
image, look at parents and metadata). :func:`glance_client`,
:func:`register_location` and :func:`wait_active` do to glance-api what Nova
does when it snapshots an instance. The functional tests, the end-to-end
tests and ``tools/demo.py`` all use this one module; it needs a cluster and
the ``rados``/``rbd`` modules, not pytest (glanceclient only for
:func:`glance_client`).
"""

from __future__ import annotations

import time
from typing import Any

import rados
import rbd

MiB = 1 << 20


class Side:
    """One librados client of the cluster, outside the store.

    ``clone_format`` sets librbd's ``rbd_default_clone_format`` for the
    clones this client makes (1 or 2); ``None`` leaves librbd's default.
    """

    def __init__(self, conffile: str, clone_format: int | None = None, *,
                 timeout: int = 30) -> None:
        conf = ({} if clone_format is None
                else {"rbd_default_clone_format": str(clone_format)})
        self.client = rados.Rados(conffile=conffile, conf=conf)
        self.client.connect(timeout=timeout)
        self.clone_format = clone_format

    def ioctx(self, pool: str) -> rados.Ioctx:
        """An I/O context on ``pool``: use it in a ``with``, or close it."""
        return self.client.open_ioctx(pool)

    def fsid(self) -> str:
        """The cluster's fsid. librados 16.2 may report all zeros right
        after connect(), so wait (up to 10 s) for the real one."""
        deadline = time.monotonic() + 10
        while True:
            fsid = self.client.get_fsid()
            if fsid.strip("0-") or time.monotonic() > deadline:
                return fsid
            time.sleep(0.05)

    def names(self, pool: str) -> set[str]:
        with self.ioctx(pool) as ioctx:
            return set(rbd.RBD().list(ioctx))

    def exists(self, pool: str, name: str) -> bool:
        return name in self.names(pool)

    def create(self, pool: str, name: str, size: int = MiB,
               snaps: tuple[str, ...] | list[str] = ()) -> None:
        """A flat image (a fresh volume, a disk not booted from Glance) with
        4 KiB written, and protected snapshots ``snaps`` of it."""
        with self.ioctx(pool) as ioctx:
            rbd.RBD().create(ioctx, name, size, old_format=False)
            with rbd.Image(ioctx, name) as image:
                image.write(b"x" * 4096, 0)
                for snap in snaps:
                    image.create_snap(snap)
                    image.protect_snap(snap)

    def clone(self, pool: str, name: str, snap: str, child_pool: str,
              child: str) -> None:
        """Boot from ``pool/name@snap`` as Nova does: a clone."""
        with self.ioctx(pool) as src, self.ioctx(child_pool) as dst:
            rbd.RBD().clone(src, name, snap, dst, child)

    def write(self, pool: str, name: str, data: bytes, offset: int = 0) -> None:
        with self.ioctx(pool) as ioctx, rbd.Image(ioctx, name) as image:
            image.write(data, offset)

    def read(self, pool: str, name: str, length: int,
             snapshot: str | None = None) -> bytes:
        with self.ioctx(pool) as ioctx, rbd.Image(
                ioctx, name, snapshot=snapshot, read_only=True) as image:
            return image.read(0, length)

    def parent_of(self, pool: str, name: str) -> str:
        """``pool/image@snap`` of the image's parent."""
        with self.ioctx(pool) as ioctx, rbd.Image(ioctx, name,
                                                  read_only=True) as image:
            return "{}/{}@{}".format(*image.parent_info())

    def snapshots(self, pool: str, name: str) -> list[tuple[str, bool]]:
        """(name, protected) of each user snapshot of the image (what
        ``rbd snap ls`` shows; not those in the trash namespace)."""
        with self.ioctx(pool) as ioctx, rbd.Image(ioctx, name,
                                                  read_only=True) as image:
            return [(snap["name"], image.is_protected_snap(snap["name"]))
                    for snap in image.list_snaps()
                    if snap.get("namespace", rbd.RBD_SNAP_NAMESPACE_TYPE_USER)
                    == rbd.RBD_SNAP_NAMESPACE_TYPE_USER]

    def clone_format_of(self, pool: str, name: str) -> int:
        with self.ioctx(pool) as ioctx, rbd.Image(ioctx, name) as image:
            v2 = image.op_features() & rbd.RBD_OPERATION_FEATURE_CLONE_CHILD
            return 2 if v2 else 1

    def metadata(self, pool: str, name: str) -> dict[str, str]:
        with self.ioctx(pool) as ioctx, rbd.Image(ioctx, name) as image:
            return dict(image.metadata_list())

    def remove(self, pool: str, name: str) -> None:
        with self.ioctx(pool) as ioctx:
            rbd.RBD().remove(ioctx, name)

    def close(self) -> None:
        self.client.shutdown()


def conf_value(ceph_conf: str, key: str) -> str | None:
    """A [global] setting of the cluster's ceph.conf."""
    section = ""
    with open(ceph_conf) as conf:
        for line in conf:
            line = line.strip()
            if line.startswith("["):
                section = line
            elif section == "[global]" and "=" in line and \
                    line.split("=")[0].strip() == key:
                return line.split("=", 1)[1].strip()
    return None


def glance_client(url: str, token: str, *, as_nova: bool = False) -> Any:
    """A glanceclient for glance-api. ``as_nova``: as Nova calls it, the
    user's role plus a service token (tools/glance-api-dev's loopback
    pipeline takes these headers at face value). One role per header:
    glanceclient percent-encodes header values, so "member,reader" would
    arrive as the single role "member%2Creader"."""
    from glanceclient import client

    identity = ({"identity_headers": {"X-Roles": "member",
                                      "X-Service-Roles": "service"}}
                if as_nova else {})
    # the API version in the URL: glanceclient deprecates its version argument
    return client.Client(endpoint=f"{url.rstrip('/')}/v2", token=token,
                         timeout=120, **identity)


def register_location(glance: Any, service_glance: Any, image_id: str,
                      url: str, os_hash_value: str) -> str:
    """Point an image at a location as Nova does: POST .../locations with
    validation data (as a service), or PATCH add-location where that API is
    missing (Glance before 2024.2, with show_multiple_locations). Returns
    the method that worked."""
    validation = {"os_hash_algo": "sha512", "os_hash_value": os_hash_value}
    response, _ = service_glance.http_client.post(
        f"/v2/images/{image_id}/locations",
        data={"url": url, "validation_data": validation})
    if response.status_code not in (404, 405):
        if response.status_code != 202:
            raise AssertionError(f"POST /v2/images/{image_id}/locations "
                                 f"answered {response.status_code}, not 202")
        return "POST"
    # glanceclient's add_location is a JSON-patch "add /locations/-"
    glance.images.add_location(image_id, url, {}, validation_data=validation)
    return "PATCH"


def wait_active(glance: Any, image_id: str, timeout: float = 60) -> Any:
    """Wait until the image is active and its tasks have ended (it turns
    active before its location_import task ends; deleting it in between
    races glance's task cancellation).  The tasks are read first: an image
    read before them may predate what their end wrote (the hash)."""
    deadline = time.monotonic() + timeout
    while True:
        tasks = glance.images.get_associated_image_tasks(image_id)["tasks"]
        image = glance.images.get(image_id)
        if image["status"] == "active" and all(
                t["status"] in ("success", "failure") for t in tasks):
            return image
        if image["status"] in ("killed", "deleted") or \
                time.monotonic() > deadline:
            raise AssertionError(f"image {image_id} is {image['status']}, "
                                 f"tasks {tasks}")
        time.sleep(0.1)


def wait_in_store(glance: Any, image_id: str, store: str,
                  timeout: float) -> Any:
    """Wait until Glance lists ``store`` among the image's stores (a
    copy-image import there is done); fail at once if it failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        image = glance.images.get(image_id)
        if store in (image.get("stores") or "").split(","):
            return image
        if store in (image.get("os_glance_failed_import") or "").split(","):
            raise AssertionError(f"copying {image_id} to {store} failed")
        time.sleep(0.2)
    raise AssertionError(f"{image_id} not in {store} within {timeout} s")
