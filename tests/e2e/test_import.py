"""Interoperable image import with conversion, end to end.

A qcow2 staged and imported through glance-api (glance-direct: PUT
/v2/images/{id}/stage, POST /v2/images/{id}/import) runs glance's
image_conversion plugin (tools/glance-api-dev enables it, output_format raw)
and lands in the rbd_tracked store as raw: a protected snapshot that an RBD
clone reads back as exactly the bytes of the original disk.
"""

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import time

import pytest
import rbd

from tests.e2e.conftest import wait_active

MiB = 1 << 20
POOL = "images"
CLONE_POOL = "vms"
SNAP = "snap"


def raw_disk(size=8 * MiB):
    """A raw disk with data qemu-img must keep and zeros it may drop: random
    bytes, a zero region, a recognizable pattern, another zero region, and a
    non-zero last sector (so the end of the disk is checked too)."""
    rnd = random.Random(20240611)
    data = (rnd.randbytes(2 * MiB)
            + bytes(2 * MiB)
            + (b"glance_rbd_tracked import " * (2 * MiB // 26 + 1))[:2 * MiB]
            + bytes(MiB + MiB // 2)
            + rnd.randbytes(MiB // 2 - 512)
            + b"end of disk\n".ljust(512, b"."))
    assert len(data) == size
    return data


def qemu_img(*args):
    if shutil.which("qemu-img") is None:
        pytest.fail("no qemu-img (tools/glance-api-dev up installs qemu-utils)")
    return subprocess.run(["qemu-img", *args], check=True, capture_output=True,
                          text=True, timeout=60).stdout


@pytest.fixture(scope="module")
def disks(glance, tmp_path_factory):
    """(raw bytes, qcow2 bytes of the same disk); after `glance` so that
    glance-api-dev has installed qemu-img."""
    tmp = tmp_path_factory.mktemp("disks")
    raw = raw_disk()
    (tmp / "disk.raw").write_bytes(raw)
    qemu_img("convert", "-f", "raw", "-O", "qcow2", str(tmp / "disk.raw"),
             str(tmp / "disk.qcow2"))
    info = json.loads(qemu_img("info", "--output=json", str(tmp / "disk.qcow2")))
    assert info["format"] == "qcow2" and info["virtual-size"] == len(raw)
    qcow2 = (tmp / "disk.qcow2").read_bytes()
    assert qcow2[:4] == b"QFI\xfb" and len(qcow2) < len(raw)
    return raw, qcow2


def cluster_fsid(ceph):
    """librados may report an all-zero fsid right after connect()."""
    deadline = time.monotonic() + 10
    while True:
        fsid = ceph.client.get_fsid()
        if fsid.strip("0-") or time.monotonic() > deadline:
            return fsid
        time.sleep(0.05)


def remove_rbd(ceph, pool, name):
    ioctx = ceph.ioctx(pool)
    try:
        rbd.RBD().remove(ioctx, name)
    except rbd.ImageNotFound:
        pass
    finally:
        ioctx.close()


def parent_of(ceph, pool, name):
    ioctx = ceph.ioctx(pool)
    try:
        with rbd.Image(ioctx, name, read_only=True) as image:
            return "{}/{}@{}".format(*image.parent_info())
    finally:
        ioctx.close()


def snapshots(ceph, pool, name):
    ioctx = ceph.ioctx(pool)
    try:
        with rbd.Image(ioctx, name, read_only=True) as image:
            return image.size(), [(s["name"], image.is_protected_snap(s["name"]))
                                  for s in image.list_snaps()]
    finally:
        ioctx.close()


def staging_dir():
    return os.path.join(os.environ.get("GLANCE_E2E_DIR",
                                       "/tmp/glance-rbd-tracked-e2e-glance"),
                        "staging")


def log_errors(lines=40):
    """The last ERROR lines of glance-api.log (the fixture's `down` removes
    it, so a failure message quotes it)."""
    log = os.path.join(os.path.dirname(staging_dir()), "glance-api.log")
    try:
        with open(log, errors="replace") as f:
            errors = [line for line in f if " ERROR " in line]
    except OSError as exc:
        return str(exc)
    return "".join(errors[-lines:])


def wait_imported(glance, image_id, timeout=180):
    """wait_active, but a failed import fails at once: glance puts the image
    back to `queued` and fails the task (wait_active would time out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = glance.images.get_associated_image_tasks(image_id)["tasks"]
        failed = [t for t in tasks if t["status"] == "failure"]
        assert not failed, (f"import task failed: {failed[0]['message']};"
                            f" glance-api.log:\n{log_errors()}")
        if tasks and all(t["status"] == "success" for t in tasks):
            break
        time.sleep(0.1)
    return wait_active(glance, image_id, timeout=max(
        deadline - time.monotonic(), 1))


def delete_image(glance, ceph, image_id):
    """DELETE through the API (204) and, with no clone left, nothing of the
    image is left in the pool."""
    resp, _ = glance.http_client.delete(f"/v2/images/{image_id}")
    assert resp.status_code == 204
    left = [n for n in ceph.names(POOL) if n.startswith(image_id)]
    assert left == [], left


def test_glance_direct_import_converts_qcow2_to_cloneable_raw(
        glance, ceph, disks, capsys):
    raw, qcow2 = disks
    fsid = cluster_fsid(ceph)
    image = glance.images.create(name="grt-e2e-import-qcow2",
                                 disk_format="qcow2", container_format="bare")
    image_id = image["id"]
    clone = f"{image_id}_import_disk"
    deleted = False
    try:
        # stage: the qcow2 bytes go to os_glance_staging_store, not to Ceph
        start = time.monotonic()
        glance.images.stage(image_id, io.BytesIO(qcow2), image_size=len(qcow2))
        staged_s = time.monotonic() - start
        image = glance.images.get(image_id)
        assert image["status"] == "uploading"
        assert image_id not in ceph.names(POOL)

        start = time.monotonic()
        glance.images.image_import(image_id, method="glance-direct")
        image = wait_imported(glance, image_id)
        import_s = time.monotonic() - start
        with capsys.disabled():
            print(f"\n[import] {len(qcow2)} B qcow2 of a {len(raw)} B disk:"
                  f" stage {staged_s:.2f} s, import until active and task"
                  f" done {import_s:.2f} s")

        tasks = glance.images.get_associated_image_tasks(image_id)["tasks"]
        assert [(t["type"], t["status"]) for t in tasks] == [
            ("api_image_import", "success")], tasks

        # glance's view: converted to raw, the raw disk's size and hashes
        assert image["disk_format"] == "raw"
        assert image["container_format"] == "bare"
        assert image["size"] == len(raw)
        assert image["virtual_size"] == len(raw)
        assert image["checksum"] == hashlib.md5(raw).hexdigest()
        assert image["os_hash_algo"] == "sha512"
        assert image["os_hash_value"] == hashlib.sha512(raw).hexdigest()
        assert image["stores"] == "fast"
        assert image["direct_url"] == f"rbd://{fsid}/{POOL}/{image_id}/{SNAP}"
        # the staged qcow2 and the converted file are gone from staging
        assert [n for n in os.listdir(staging_dir())
                if n.startswith(image_id)] == []

        # Ceph's view: a raw RBD image with its protected snapshot
        size, snaps = snapshots(ceph, POOL, image_id)
        assert size == len(raw)
        assert snaps == [(SNAP, True)]
        assert ceph.read(POOL, image_id, len(raw), snapshot=SNAP) == raw

        # cloneable as Nova does it, and the clone reads the original disk
        ceph.clone(POOL, image_id, SNAP, CLONE_POOL, clone)
        assert parent_of(ceph, CLONE_POOL, clone) == \
            f"{POOL}/{image_id}@{SNAP}"
        assert ceph.read(CLONE_POOL, clone, len(raw)) == raw

        # and glance serves the raw bytes
        assert b"".join(glance.images.data(image_id)) == raw

        remove_rbd(ceph, CLONE_POOL, clone)
        delete_image(glance, ceph, image_id)
        deleted = True
    finally:
        remove_rbd(ceph, CLONE_POOL, clone)
        if not deleted:
            # best effort; the assertion that failed counts
            with contextlib.suppress(Exception):
                glance.images.delete(image_id)


def test_plain_upload_is_stored_as_sent(glance, ceph, disks):
    """The conversion plugin belongs to the import flow only: a qcow2 uploaded
    with PUT /v2/images/{id}/file stays qcow2, byte for byte."""
    _, qcow2 = disks
    image = glance.images.create(name="grt-e2e-upload-qcow2",
                                 disk_format="qcow2", container_format="bare")
    image_id = image["id"]
    deleted = False
    try:
        glance.images.upload(image_id, io.BytesIO(qcow2),
                             image_size=len(qcow2))
        image = wait_active(glance, image_id)
        assert image["disk_format"] == "qcow2"
        assert image["size"] == len(qcow2)
        assert image["os_hash_value"] == hashlib.sha512(qcow2).hexdigest()
        assert ceph.read(POOL, image_id, len(qcow2), snapshot=SNAP) == qcow2
        delete_image(glance, ceph, image_id)
        deleted = True
    finally:
        if not deleted:
            with contextlib.suppress(Exception):
                glance.images.delete(image_id)
