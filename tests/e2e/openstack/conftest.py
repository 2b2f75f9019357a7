"""Real Nova 34 and Cinder 29 (PyPI, installed by tools/run-tests) on the
test cluster, with the real glance-api of tests/e2e/conftest.py.

Each Nova or Cinder is its own process (:mod:`.worker`), started once per
module and setting; the tests drive it and check the cluster with plain
librbd (:class:`tests.sides.Side`) and glance-api with glanceclient.
"""

from __future__ import annotations

from collections.abc import Iterator
import hashlib
import io
import os
import subprocess
from typing import Any
import uuid

import pytest
import rbd

from glance_rbd_tracked import ceph as ceph_mod
from tests import sides
from tests.e2e.openstack.worker import Worker
from tests.sides import Side

MiB = 1 << 20


@pytest.fixture(scope="session")
def side(ceph_conf: str) -> Iterator[Side]:
    """The cluster as an operator sees it (plain librbd)."""
    s = Side(ceph_conf, 1)
    yield s
    s.close()


@pytest.fixture(scope="session")
def store(ceph_conf: str) -> Iterator[Any]:
    """The store's own view (its journal), read-only here."""
    backend = ceph_mod.connect(ceph_conf)
    yield backend
    backend.close()


#: cephx users with Ceph's usual read-only caps on Glance's pool (the
#: workers otherwise run as the dev cluster's client.nova and client.cinder,
#: with the caps of doc/source/cephx.rst)
READ_ONLY_IMAGES = {
    "grt-nova-ro-images": "profile rbd pool=vms, profile rbd pool=volumes, "
                          "profile rbd-read-only pool=images",
    "grt-cinder-ro-images": "profile rbd pool=volumes, profile rbd pool=vms, "
                            "profile rbd-read-only pool=images",
}


@pytest.fixture(scope="session")
def users(ceph_conf: str, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[dict[str, str] | None]:
    """On a cephx cluster (tools/run-tests: CEPH_DEV_AUTH=cephx): the
    keyring with the cluster's users and the read-only ones; None without
    cephx (every client is then the cluster's only one)."""
    if sides.conf_value(ceph_conf, "auth client required") != "cephx":
        yield None
        return
    # one file: librados reads only the first keyring of a list it finds
    keyring = str(tmp_path_factory.mktemp("cephx") / "keyring")
    with open(keyring, "w") as out:
        with open(str(sides.conf_value(ceph_conf, "keyring"))) as cluster:
            out.write(cluster.read() + "\n")
        for user, osd in READ_ONLY_IMAGES.items():
            out.write(subprocess.run(
                ["ceph", "-c", ceph_conf, "auth", "get-or-create",
                 f"client.{user}", "mon", "profile rbd", "osd", osd],
                check=True, capture_output=True, text=True,
                timeout=60).stdout)
    yield {"keyring": keyring}
    for user in READ_ONLY_IMAGES:
        subprocess.run(["ceph", "-c", ceph_conf, "auth", "del",
                        f"client.{user}"], capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def start(ceph_conf: str, glance_api: dict[str, str], users: Any,
          tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Any]:
    """``start(module, mode, **config)``: a Nova or Cinder worker, stopped
    at the end of the test module.  On a cephx cluster it runs as
    ``client.nova`` or ``client.cinder`` (``rbd_user`` picks another)."""
    workers: list[Worker] = []

    def start_worker(module: str, mode: str, **config: Any) -> Worker:
        state = tmp_path_factory.mktemp(f"{module.rsplit('_', 1)[0]}-{mode}")
        if users is not None:
            config.setdefault("rbd_user", "nova" if module == "nova_side"
                              else "cinder")
            config.setdefault("keyring", users["keyring"])
        worker = Worker(f"tests.e2e.openstack.{module}",
                        {"ceph_conf": ceph_conf, "mode": mode,
                         "glance_url": glance_api["OS_IMAGE_URL"],
                         "state_dir": str(state), **config},
                        str(state / "worker.log"))
        workers.append(worker)
        return worker

    yield start_worker
    for worker in workers:
        worker.close()


def payload(size: int, seed: object) -> bytes:
    block = hashlib.sha512(str(seed).encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def upload(glance: Any, data: bytes, name: str = "base") -> dict[str, Any]:
    """A Glance image, uploaded through glance-api into the store."""
    image = glance.images.create(name=name, disk_format="raw",
                                 container_format="bare")
    glance.images.upload(image["id"], io.BytesIO(data), image_size=len(data))
    return glance.images.get(image["id"])


def queued(glance: Any, name: str = "snapshot") -> str:
    """The image Nova's or Cinder's API creates before the upload."""
    return glance.images.create(name=name, disk_format="raw",
                                container_format="bare")["id"]


def delete(glance: Any, image_id: str) -> int:
    response, _ = glance.http_client.delete(f"/v2/images/{image_id}")
    return response.status_code


def wait_active(glance: Any, image_id: str, timeout: float = 300) -> Any:
    """:func:`tests.sides.wait_active`, with more time (glance's
    location_import task hashes the whole image through the store), and
    hashed; glance-api's log when it fails."""
    try:
        image = sides.wait_active(glance, image_id, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{glance_log()}") from None
    # the task has ended: a hash missing now never comes
    if not image["os_hash_value"]:
        tasks = glance.images.get_associated_image_tasks(image_id)["tasks"]
        raise AssertionError(
            f"image {image_id} is {image['status']} without a hash; tasks: "
            f"{[(t['type'], t['status'], t.get('message')) for t in tasks]}"
            f"\n{glance_log(200)}")
    return image


def glance_log(lines: int = 60) -> str:
    """The end of glance-api's log (tests/e2e/conftest.py's directory)."""
    path = os.path.join(os.environ.get(
        "GLANCE_E2E_DIR", "/tmp/glance-rbd-tracked-e2e-glance"),
        "glance-api.log")
    try:
        with open(path, errors="replace") as log:
            return "".join(log.readlines()[-lines:])
    except OSError as exc:
        return f"(no glance-api log: {exc})"


def downloaded_sha512(glance: Any, image_id: str) -> str:
    digest = hashlib.sha512()
    for chunk in glance.images.data(image_id):
        digest.update(chunk)
    return digest.hexdigest()


def rbd_sha512(side: Side, pool: str, name: str,
               snapshot: str | None = None) -> str:
    """What a reader of the RBD image gets, hashed 8 MiB at a time."""
    digest = hashlib.sha512()
    with side.ioctx(pool) as ioctx, rbd.Image(
            ioctx, name, snapshot=snapshot, read_only=True) as image:
        size = image.size()
        for offset in range(0, size, 8 * MiB):
            digest.update(image.read(offset, min(8 * MiB, size - offset)))
    return digest.hexdigest()


def own_bytes(side: Side, pool: str, name: str) -> int:
    """Bytes the image holds itself, its parent's not counted: what a
    chain copied (nothing) or a flatten copied (everything written)."""
    total = 0

    def count(offset: int, length: int, exists: bool) -> None:
        nonlocal total
        total += length if exists else 0

    with side.ioctx(pool) as ioctx, rbd.Image(ioctx, name,
                                              read_only=True) as image:
        image.diff_iterate(0, image.size(), None, count,
                           include_parent=False)
    return total


def parent(side: Side, pool: str, name: str) -> str | None:
    try:
        return side.parent_of(pool, name)
    except rbd.ImageNotFound:
        return None


def leftovers(side: Side, store: Any, *prefixes: str) -> list[str]:
    """Images (in every pool and every RBD trash) and journal entries that
    name any of ``prefixes``: what a scenario left behind."""
    found = []
    for pool in ("images", "vms", "volumes"):
        found += [f"{pool}/{n}" for n in side.names(pool)
                  if n.startswith(prefixes)]
        with side.ioctx(pool) as ioctx:
            found += [f"{pool} trash/{e['name']}"
                      for e in rbd.RBD().trash_list(ioctx)
                      if e["name"].startswith(prefixes)]
    found += [f"journal {key}" for key in store.journal.entries("images")
              if any(p in key for p in prefixes)]
    return found


def new_id() -> str:
    return str(uuid.uuid4())
