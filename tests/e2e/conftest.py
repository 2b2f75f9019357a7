"""A real glance-api (tools/glance-api-dev) on the test cluster.

Started once per session on its own port and directory; it stores images
with the rbd_tracked driver in the cluster named by CEPH_CONF.
"""

import os
import subprocess
import time

import pytest
import rados
import rbd
from glanceclient import client as glance_client

HERE = os.path.dirname(__file__)
TOOLS = os.path.join(HERE, "..", "..", "tools")


def _glance_api(suffix: str, port: int, **extra: str):
    if not os.environ.get("CEPH_CONF"):
        pytest.fail("no cluster: tools/run-tests starts one")
    env = dict(os.environ,
               GLANCE_DEV_DIR=os.environ.get(
                   "GLANCE_E2E_DIR", "/tmp/glance-rbd-tracked-e2e-glance")
               + suffix,
               GLANCE_DEV_PORT=str(int(os.environ.get("GLANCE_E2E_PORT",
                                                      "9393")) + port),
               **extra)
    up = subprocess.run([os.path.join(TOOLS, "glance-api-dev"), "up"],
                        env=env, capture_output=True, text=True, timeout=900)
    assert up.returncode == 0, up.stderr[-4000:]
    settings = dict(line.split("=", 1) for line in
                    up.stdout.replace("export ", "").split() if "=" in line)
    yield settings
    subprocess.run([os.path.join(TOOLS, "glance-api-dev"), "down"], env=env,
                   capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def glance_api():
    yield from _glance_api("", 0)


@pytest.fixture(scope="session")
def old_style_glance_api():
    """A glance-api with show_multiple_locations: the PATCH add-location
    path older Glance releases offer instead of POST .../locations."""
    yield from _glance_api("-multi", 1, GLANCE_DEV_MULTIPLE_LOCATIONS="1")


def register_location(glance, service_glance, image_id, url, os_hash_value):
    """Point an image at a location as Nova does: POST .../locations with
    validation data, or PATCH add-location where that API is missing
    (Glance before 2024.2, with show_multiple_locations).  Returns the
    method that worked."""
    validation = {"os_hash_algo": "sha512", "os_hash_value": os_hash_value}
    response, _ = service_glance.http_client.post(
        f"/v2/images/{image_id}/locations",
        data={"url": url, "validation_data": validation})
    if response.status_code not in (404, 405):
        assert response.status_code == 202, response.status_code
        return "POST"
    # glanceclient's add_location is a JSON-patch "add /locations/-"
    glance.images.add_location(image_id, url, {}, validation_data=validation)
    return "PATCH"


@pytest.fixture(scope="session")
def glance(glance_api):
    return glance_client.Client("2", glance_api["OS_IMAGE_URL"],
                                token=glance_api["OS_AUTH_TOKEN"], timeout=120)


@pytest.fixture(scope="session")
def nova_glance(glance_api):
    """Glance as Nova calls it: the user's roles plus a service token."""
    return glance_client.Client(
        "2", glance_api["OS_IMAGE_URL"], token=glance_api["OS_AUTH_TOKEN"],
        timeout=120,
        identity_headers={"X-Roles": "member", "X-Service-Roles": "service"})


class Rbd:
    """Plain librbd, as Nova, Cinder or an operator use it."""

    def __init__(self, conf):
        self.client = rados.Rados(conffile=conf)
        self.client.connect()

    def ioctx(self, pool):
        return self.client.open_ioctx(pool)

    def names(self, pool):
        ioctx = self.ioctx(pool)
        try:
            return set(rbd.RBD().list(ioctx))
        finally:
            ioctx.close()

    def clone(self, pool, name, snap, child_pool, child):
        src, dst = self.ioctx(pool), self.ioctx(child_pool)
        try:
            rbd.RBD().clone(src, name, snap, dst, child)
        finally:
            src.close()
            dst.close()

    def create(self, pool, name, size):
        """A flat image, as a fresh volume or a disk not booted from Glance."""
        ioctx = self.ioctx(pool)
        try:
            rbd.RBD().create(ioctx, name, size, old_format=False,
                             features=rbd.RBD_FEATURE_LAYERING)
        finally:
            ioctx.close()

    def write(self, pool, name, data, offset=0):
        ioctx = self.ioctx(pool)
        try:
            with rbd.Image(ioctx, name) as image:
                image.write(data, offset)
        finally:
            ioctx.close()

    def read(self, pool, name, length, snapshot=None):
        ioctx = self.ioctx(pool)
        try:
            with rbd.Image(ioctx, name, snapshot=snapshot,
                           read_only=True) as image:
                return image.read(0, length)
        finally:
            ioctx.close()


@pytest.fixture(scope="session")
def ceph():
    side = Rbd(os.environ["CEPH_CONF"])
    yield side
    side.client.shutdown()


def wait_active(glance, image_id, timeout=60):
    """Wait until the image is active and its tasks have ended."""
    deadline = time.monotonic() + timeout
    while True:
        image = glance.images.get(image_id)
        tasks = glance.images.get_associated_image_tasks(image_id)["tasks"]
        if image["status"] == "active" and all(
                t["status"] in ("success", "failure") for t in tasks):
            return image
        if image["status"] in ("killed", "deleted") or \
                time.monotonic() > deadline:
            raise AssertionError(f"image {image_id} is {image['status']}, "
                                 f"tasks {tasks}")
        time.sleep(0.1)
