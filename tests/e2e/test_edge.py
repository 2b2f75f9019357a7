"""Glance's copy-image import to an edge site (tools/glance-api-dev with
GLANCE_DEV_EDGE_CONF: backends fast and edge1, both rbd_tracked, edge1 in
the cluster behind the shaped link of tools/edge-rig): the real glance-api
streams the image from its staging area into our add(), which sends only
what differs from an ancestor already at the edge; Glance's own size and
hash checks pass, and real Nova code clones the edge copy."""

import hashlib
import io
import os
import subprocess
import time
import uuid

import pytest
import rbd

from glance_rbd_tracked import ceph as ceph_mod
from glance_rbd_tracked import chains
from glance_rbd_tracked import core
from tests.e2e.conftest import _glance_api
from tests.sides import glance_client
from tests.sides import register_location
from tests.sides import wait_active

MiB = 1 << 20
SIZE = 32 * MiB


@pytest.fixture(scope="module")
def edge_glance(edge):
    yield from _glance_api("-edge", 2, GLANCE_DEV_EDGE_CONF=edge.conf)


@pytest.fixture(scope="module")
def glance(edge_glance):
    return glance_client(edge_glance["OS_IMAGE_URL"],
                         edge_glance["OS_AUTH_TOKEN"])


def copy_image(glance, image_id, timeout=300):
    glance.images.image_import(image_id, method="copy-image",
                               stores=["edge1"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        image = glance.images.get(image_id)
        if "edge1" in (image.get("stores") or "").split(","):
            return image
        assert not image.get("os_glance_failed_import"), image
        time.sleep(0.5)
    raise AssertionError(f"{image_id} not copied within {timeout} s")


def test_copy_image_sends_the_difference_and_nova_clones_it(
        glance, edge_glance, edge, ceph_conf, tmp_path):
    data = os.urandom(SIZE)
    base = glance.images.create(name="base", disk_format="raw",
                                container_format="bare")["id"]
    glance.images.upload(base, io.BytesIO(data), image_size=SIZE)
    before = edge.counters()
    copy_image(glance, base)
    whole = edge.counters()["to_edge"] - before["to_edge"]
    assert whole >= SIZE

    # an instance of the base changes 1 %, and is snapshotted as a chain
    central = ceph_mod.connect(ceph_conf)
    far = ceph_mod.connect(edge.conf)
    try:
        disk = f"disk-{uuid.uuid4().hex[:8]}"
        central.changes.clone(f"images/{base}@snap", "vms", disk)
        client = central.connection.client()
        with client.open_ioctx("vms") as ioctx, \
                rbd.Image(ioctx, disk) as image:
            image.write(os.urandom(SIZE // 100), SIZE // 2 + 4321)
        snap = glance.images.create(name="snap", disk_format="raw",
                                    container_format="bare")["id"]
        made = chains.snapshot(central, [chains.Request(f"vms/{disk}",
                                                        snap)],
                               core.Policy(pool="images"))[0]
        h = hashlib.sha512()
        for chunk in central.data.read("images", snap, "snap"):
            h.update(chunk)
        register_location(glance, glance_client(
            edge_glance["OS_IMAGE_URL"], edge_glance["OS_AUTH_TOKEN"],
            as_nova=True), snap, made.location, h.hexdigest())
        wait_active(glance, snap, 300)

        before = edge.counters()
        image = copy_image(glance, snap)
        sent = edge.counters()["to_edge"] - before["to_edge"]
        assert sent <= 1.1 * (SIZE // 100) + MiB, sent
        # Glance checked size and hash of what our add() returned
        assert image["os_hash_value"] == h.hexdigest()
        state = far.images.state("images", snap)
        assert state.parent == f"images/{base}@snap"
        assert state.records.origin is not None

        # Nova at the edge: is_cloneable on the edge fsid, then clone
        location = f"rbd://{far.fsid()}/images/{snap}/snap"
        nova = subprocess.run(
            [os.path.join(os.path.dirname(__file__), "..", "..", ".venv",
                          "bin", "python"), "-c", NOVA, edge.conf, location],
            capture_output=True, text=True, timeout=300,
            cwd=os.path.join(os.path.dirname(__file__), "..", ".."))
        assert nova.returncode == 0, nova.stderr[-3000:]
        assert nova.stdout.split()[-1] == "cloned"
        assert far.images.state("vms", "edge-instance_disk").parent == \
            f"images/{snap}@snap"
    finally:
        central.close()
        far.close()


#: Nova 34's RBDDriver against the edge cluster, in its own process
NOVA = """
import sys
from nova import monkey_patch
monkey_patch.patch(backend="threading")
import nova.conf
from nova.storage import rbd_utils
CONF = nova.conf.CONF
CONF([], project="nova", default_config_files=[], default_config_dirs=[])
CONF.set_override("images_rbd_pool", "vms", "libvirt")
CONF.set_override("images_rbd_ceph_conf", sys.argv[1], "libvirt")
CONF.set_override("rbd_user", "admin", "libvirt")
driver = rbd_utils.RBDDriver()
location = {"url": sys.argv[2]}
assert driver.is_cloneable(location, {"disk_format": "raw"})
driver.clone(location, "edge-instance_disk")
print("cloned")
"""
