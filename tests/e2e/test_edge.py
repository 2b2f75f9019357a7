"""Glance's copy-image import to an edge site (tools/glance-api-dev with
GLANCE_DEV_EDGE_CONF: backends fast and edge1, both rbd_tracked, edge1 in
the cluster behind the shaped link of tools/edge-rig): the real glance-api
streams the image from its staging area into our add(), which sends only
what differs from an ancestor already at the edge; Glance's own size and
hash checks pass, and real Nova code clones the edge copy."""

import hashlib
import io
import json
import os
import subprocess
import sys
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
from tests.sides import wait_in_store

MiB = 1 << 20
SIZE = 32 * MiB


@pytest.fixture(scope="module")
def edge_glance(edge):
    yield from _glance_api("-edge", 2, GLANCE_DEV_EDGE_CONF=edge.conf)


@pytest.fixture(scope="module")
def glance(edge_glance):
    return glance_client(edge_glance["OS_IMAGE_URL"],
                         edge_glance["OS_AUTH_TOKEN"])


@pytest.fixture(scope="module")
def multi_glance(edge):
    """The same with show_multiple_locations = True: the only setting
    with which Glance takes another location of an active image."""
    yield from _glance_api("-edge-multi", 3, GLANCE_DEV_EDGE_CONF=edge.conf,
                           GLANCE_DEV_MULTIPLE_LOCATIONS="1")


def glance_conf(settings):
    """The glance-api.conf a fixture's glance-api runs with."""
    return os.path.join(settings["GLANCE_DEV_DIR"], "glance-api.conf")


def copy_image(glance, image_id):
    glance.images.image_import(image_id, method="copy-image",
                               stores=["edge1"])
    return wait_in_store(glance, image_id, "edge1", 300)


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
    snap, digest = chain_image(glance, edge_glance, ceph_conf, base,
                               SIZE // 2 + 4321)
    far = ceph_mod.connect(edge.conf)
    try:
        before = edge.counters()
        image = copy_image(glance, snap)
        sent = edge.counters()["to_edge"] - before["to_edge"]
        assert sent <= 1.1 * (SIZE // 100) + MiB, sent
        # Glance checked size and hash of what our add() returned
        assert image["os_hash_value"] == digest
        state = far.images.state("images", snap)
        assert state.parent == f"images/{base}@snap"
        assert state.records.origin is not None

        # Nova at the edge: is_cloneable on the edge fsid, then clone
        location = f"rbd://{far.fsid()}/images/{snap}/snap"
        nova = subprocess.run(
            [sys.executable, "-c", NOVA, edge.conf, location],
            capture_output=True, text=True, timeout=300,
            cwd=os.path.join(os.path.dirname(__file__), "..", ".."))
        assert nova.returncode == 0, nova.stderr[-3000:]
        said, copy_order, disk_order = nova.stdout.split()[-3:]
        assert said == "cloned"
        assert far.images.state("vms", "edge-instance_disk").parent == \
            f"images/{snap}@snap"
        # Nova's clone keeps its parent's object size, the copy's (smaller
        # than RBD's default here): doc/source/edge.rst says what it means
        assert int(copy_order) < 22
        assert disk_order == copy_order
    finally:
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
name = location["url"].split("/")[-2]
with rbd_utils.RBDVolumeProxy(driver, name, pool="images",
                              read_only=True) as copy, \
        rbd_utils.RBDVolumeProxy(driver, "edge-instance_disk",
                                 read_only=True) as disk:
    print("cloned", copy.stat()["order"], disk.stat()["order"])
"""


def chain_image(glance, settings, ceph_conf, base, change_at):
    """A chain snapshot of a disk cloned from ``base``, changed by 1 %,
    registered in Glance as Nova does; returns its id and sha512."""
    central = ceph_mod.connect(ceph_conf)
    try:
        disk = f"disk-{uuid.uuid4().hex[:8]}"
        central.changes.clone(f"images/{base}@snap", "vms", disk)
        client = central.connection.client()
        with client.open_ioctx("vms") as ioctx, \
                rbd.Image(ioctx, disk) as image:
            image.write(os.urandom(SIZE // 100), change_at)
        snap = glance.images.create(name="snap", disk_format="raw",
                                    container_format="bare")["id"]
        made = chains.snapshot(central, [chains.Request(f"vms/{disk}",
                                                        snap)],
                               core.Policy(pool="images"))[0]
        h = hashlib.sha512()
        for chunk in central.data.read("images", snap, "snap"):
            h.update(chunk)
        register_location(glance, glance_client(
            settings["OS_IMAGE_URL"], settings["OS_AUTH_TOKEN"],
            as_nova=True), snap, made.location, h.hexdigest())
        wait_active(glance, snap, 300)
        return snap, h.hexdigest()
    finally:
        central.close()


def copy_command(settings, tmp_path, image_id, *args):
    """glance-rbd-tracked copy, on glance-api's own configuration, as the
    operator of the clouds.yaml it writes (the service role)."""
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(f"""clouds:
  operator:
    auth_type: grt-loopback
    auth:
      endpoint: {settings["OS_IMAGE_URL"]}
      roles: admin,member,reader
      service_roles: service
""")
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    env = dict(os.environ, OS_CLIENT_CONFIG_FILE=str(clouds),
               PYTHONPATH=os.path.join(root, "tests", "e2e", "openstack",
                                       "identity"))
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "glance-rbd-tracked"),
         "--config-file", glance_conf(settings), "--backend", "fast",
         "copy", image_id, "--to", "edge1", "--format", "json",
         "--os-cloud", "operator", *args],
        env=env, capture_output=True, text=True, timeout=300, cwd=root)
    return result.returncode, json.loads(result.stdout or "[]"), \
        result.stderr


@pytest.mark.parametrize("multiple", [False, True],
                         ids=["locations-hidden", "show-multiple-locations"])
def test_the_copy_command_registers_where_glance_allows_it(
        request, edge, ceph_conf, tmp_path, multiple):
    settings = request.getfixturevalue(
        "multi_glance" if multiple else "edge_glance")
    g = glance_client(settings["OS_IMAGE_URL"], settings["OS_AUTH_TOKEN"])
    base = g.images.create(name="base", disk_format="raw",
                           container_format="bare")["id"]
    g.images.upload(base, io.BytesIO(os.urandom(SIZE)), image_size=SIZE)
    copy_image(g, base)
    snap, _ = chain_image(g, settings, ceph_conf, base, SIZE // 5)
    before = edge.counters()
    rc, [row], stderr = copy_command(settings, tmp_path, snap, "--execute",
                                     "--register")
    assert row["start"] == f"{base}@snap"
    assert edge.counters()["to_edge"] - before["to_edge"] < SIZE // 10
    if multiple:
        assert (rc, row["result"]) == (0, "registered"), stderr
        image = g.images.get(snap)
        assert "edge1" in image["stores"].split(","), image
    else:
        assert rc == 1
        assert row["result"].startswith("failed: copied, not registered")
        assert "show_multiple_locations = True" in row["result"]
        assert "edge1" not in (g.images.get(snap).get("stores") or "")
