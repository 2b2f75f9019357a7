"""The Glance, Nova and Cinder flows through a real glance-api."""

import hashlib
import io
import os
import uuid

from glanceclient import exc as glance_exc
import pytest

from glance_rbd_tracked import ceph as ceph_mod
from glance_rbd_tracked import chains
from glance_rbd_tracked import core
from glance_rbd_tracked import lifecycle
from tests.e2e.conftest import register_location
from tests.e2e.conftest import wait_active

MiB = 1 << 20
RETIRED = "_to_be_deleted"
POLICY = core.Policy(pool="images")


@pytest.fixture(scope="module")
def store_side():
    """The chain engine as Nova or Cinder would run it."""
    cluster = ceph_mod.connect(os.environ["CEPH_CONF"])
    yield cluster
    cluster.close()


def payload(size, seed):
    block = hashlib.sha512(str(seed).encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def upload(glance, data, name="e2e"):
    image = glance.images.create(name=name, disk_format="raw",
                                 container_format="bare")
    glance.images.upload(image["id"], io.BytesIO(data), image_size=len(data))
    return glance.images.get(image["id"])


def delete_status(glance, image_id):
    response, _ = glance.http_client.delete(f"/v2/images/{image_id}")
    return response.status_code


def register(glance, nova_glance, location, data):
    """Create an image and point it at a chain, as Nova does."""
    image = glance.images.create(name="snapshot", disk_format="raw",
                                 container_format="bare")
    method = register_location(glance, nova_glance, image["id"], location,
                               hashlib.sha512(data).hexdigest())
    assert method == "POST"  # glance 33 has the locations API
    return wait_active(glance, image["id"])


def snapshot(cluster, source, image_id):
    (made,) = chains.snapshot(cluster, [chains.Request(source, image_id)],
                              POLICY)
    assert made.path == "chain"
    return made


def test_upload_publishes_the_real_fsid(glance, ceph, store_side):
    data = payload(3 * MiB + 5, 1)
    image = upload(glance, data)
    fsid = store_side.fsid()
    assert fsid != ceph_mod.connection.ZERO_FSID
    assert image["direct_url"] == f"rbd://{fsid}/images/{image['id']}/snap"
    assert image["os_hash_value"] == hashlib.sha512(data).hexdigest()
    assert b"".join(glance.images.data(image["id"])) == data
    assert delete_status(glance, image["id"]) == 204
    assert image["id"] not in ceph.names("images")


def test_delete_while_an_instance_uses_it_is_204_not_409(glance, ceph,
                                                         store_side):
    image = upload(glance, payload(MiB, 2))
    disk = f"{uuid.uuid4()}_disk"
    ceph.clone("images", image["id"], "snap", "vms", disk)
    assert delete_status(glance, image["id"]) == 204
    with pytest.raises(glance_exc.HTTPNotFound):
        glance.images.get(image["id"])
    assert image["id"] + RETIRED in ceph.names("images")
    assert ceph.read("vms", disk, MiB) == payload(MiB, 2)
    # Nova destroys the instance: the storage goes with it
    lifecycle.retire(store_side, "vms", disk, POLICY)
    assert image["id"] + RETIRED not in ceph.names("images")


def test_instance_snapshot_as_a_chain(glance, nova_glance, ceph, store_side):
    base_data = payload(2 * MiB, 3)
    base = upload(glance, base_data)
    disk = f"{uuid.uuid4()}_disk"
    ceph.clone("images", base["id"], "snap", "vms", disk)
    ceph.write("vms", disk, b"instance wrote this")
    expected = b"instance wrote this" + base_data[19:]

    image_id = str(uuid.uuid4())
    made = snapshot(store_side, f"vms/{disk}", image_id)
    snap = register(glance, nova_glance, made.location, expected)
    assert snap["direct_url"] == made.location
    assert snap["size"] == len(expected)
    assert b"".join(glance.images.data(snap["id"])) == expected

    assert delete_status(glance, snap["id"]) == 204
    assert image_id not in ceph.names("images")
    lifecycle.retire(store_side, "vms", disk, POLICY)
    assert delete_status(glance, base["id"]) == 204
    assert base["id"] not in ceph.names("images")


def test_tempest_base_image_deleted_while_snapshot_and_server_remain(
        glance, nova_glance, ceph, store_side):
    """tempest test_images_dependency: delete the base image of a server
    that has a snapshot; the snapshot and the server live on."""
    base_data = payload(MiB, 4)
    base = upload(glance, base_data)
    disk = f"{uuid.uuid4()}_disk"
    ceph.clone("images", base["id"], "snap", "vms", disk)
    made = snapshot(store_side, f"vms/{disk}", str(uuid.uuid4()))
    snap = register(glance, nova_glance, made.location, base_data)

    assert delete_status(glance, base["id"]) == 204
    assert b"".join(glance.images.data(snap["id"])) == base_data
    # a new server boots from the snapshot
    second = f"{uuid.uuid4()}_disk"
    ceph.clone("images", made.glance_id, "snap", "vms", second)
    assert ceph.read("vms", second, MiB) == base_data

    lifecycle.retire(store_side, "vms", disk, POLICY)
    assert delete_status(glance, snap["id"]) == 204
    assert ceph.read("vms", second, MiB) == base_data  # still readable
    lifecycle.retire(store_side, "vms", second, POLICY)
    names = ceph.names("images") | ceph.names("vms")
    assert not [n for n in names
                if n.startswith((base["id"], made.glance_id, disk, second))]


def test_tempest_image_to_volume_to_server_snapshot(glance, nova_glance,
                                                    ceph, store_side):
    """tempest test_images_dependency: image -> volume -> server (boot from
    volume) -> snapshot; delete in any order, nothing is lost or leaked."""
    base_data = payload(MiB, 5)
    base = upload(glance, base_data)
    volume = f"volume-{uuid.uuid4()}"
    ceph.clone("images", base["id"], "snap", "volumes", volume)
    ceph.write("volumes", volume, b"server on a volume")
    expected = b"server on a volume" + base_data[18:]
    made = snapshot(store_side, f"volumes/{volume}", str(uuid.uuid4()))
    snap = register(glance, nova_glance, made.location, expected)

    assert delete_status(glance, base["id"]) == 204
    lifecycle.retire(store_side, "volumes", volume, POLICY)  # volume deleted
    assert volume + RETIRED in ceph.names("volumes")
    assert b"".join(glance.images.data(snap["id"])) == expected
    assert delete_status(glance, snap["id"]) == 204
    names = ceph.names("images") | ceph.names("volumes")
    assert not [n for n in names
                if n.startswith((base["id"], made.glance_id, volume))]


def test_image_from_volume_through_the_chain(glance, nova_glance, ceph,
                                             store_side):
    """Cinder's copy_volume_to_image without copying: a chain from the
    volume, registered through the locations API."""
    volume = f"volume-{uuid.uuid4()}"
    ceph.create("volumes", volume, 2 * MiB)
    data = payload(2 * MiB, 6)
    ceph.write("volumes", volume, data)
    made = snapshot(store_side, f"volumes/{volume}", str(uuid.uuid4()))
    image = register(glance, nova_glance, made.location, data)
    assert b"".join(glance.images.data(image["id"])) == data
    # the volume is deleted while the image lives
    lifecycle.retire(store_side, "volumes", volume, POLICY)
    assert b"".join(glance.images.data(image["id"])) == data
    assert delete_status(glance, image["id"]) == 204
    assert not [n for n in ceph.names("volumes") if n.startswith(volume)]


def test_wrong_validation_hash_leaves_nothing_behind(glance, nova_glance,
                                                     ceph, store_side):
    disk = f"{uuid.uuid4()}_disk"
    ceph.create("vms", disk, MiB)
    made = snapshot(store_side, f"vms/{disk}", str(uuid.uuid4()))
    image = glance.images.create(name="bad", disk_format="raw",
                                 container_format="bare")
    response, _ = nova_glance.http_client.post(
        f"/v2/images/{image['id']}/locations",
        data={"url": made.location, "validation_data": {
            "os_hash_algo": "sha512", "os_hash_value": "0" * 128}})
    assert response.status_code == 202
    import time
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        tasks = glance.images.get_associated_image_tasks(image["id"])["tasks"]
        if tasks and all(t["status"] in ("success", "failure") for t in tasks):
            break
        time.sleep(0.1)
    assert glance.images.get(image["id"])["status"] == "queued"
    # Glance deleted the location through the driver: the chain is gone
    # and the disk has no snapshot left
    assert made.glance_id not in ceph.names("images")
    assert store_side.images.state("vms", disk).snaps == ()
    glance.images.delete(image["id"])


def test_patch_add_location_fallback_on_an_old_style_glance(
        old_style_glance_api, ceph, store_side):
    """With show_multiple_locations (what older Glance needs), the chain is
    registered with PATCH add-location, validation data included."""
    from glanceclient import client as glance_client
    api = old_style_glance_api
    glance = glance_client.Client("2", api["OS_IMAGE_URL"],
                                  token=api["OS_AUTH_TOKEN"], timeout=120)
    disk = f"{uuid.uuid4()}_disk"
    ceph.create("vms", disk, MiB)
    data = payload(MiB, 8)
    ceph.write("vms", disk, data)
    made = snapshot(store_side, f"vms/{disk}", str(uuid.uuid4()))
    image = glance.images.create(name="patched", disk_format="raw",
                                 container_format="bare")

    class NoPost:  # what a Glance without POST .../locations answers
        class http_client:
            @staticmethod
            def post(url, **kwargs):
                return type("R", (), {"status_code": 404})(), None

    method = register_location(glance, NoPost, image["id"], made.location,
                               hashlib.sha512(data).hexdigest())
    assert method == "PATCH"
    image = wait_active(glance, image["id"])
    assert image["locations"][0]["url"] == made.location
    assert b"".join(glance.images.data(image["id"])) == data
    assert delete_status(glance, image["id"]) == 204
    assert made.glance_id not in ceph.names("images")
    lifecycle.retire(store_side, "vms", disk, POLICY)
