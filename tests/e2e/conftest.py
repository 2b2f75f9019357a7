"""A real glance-api (tools/glance-api-dev) on the test cluster.

Started once per session on its own port and directory; it stores images
with the rbd_tracked driver in the cluster named by CEPH_CONF. Nova, Cinder
and the operator come from tests/sides.py.
"""

import os
import subprocess

import pytest

from tests.sides import Side
from tests.sides import glance_client
from tests.sides import register_location  # noqa: F401 (the tests import it from here)
from tests.sides import wait_active  # noqa: F401

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
    settings["GLANCE_DEV_DIR"] = env["GLANCE_DEV_DIR"]
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


@pytest.fixture(scope="session")
def glance(glance_api):
    return glance_client(glance_api["OS_IMAGE_URL"], glance_api["OS_AUTH_TOKEN"])


@pytest.fixture(scope="session")
def nova_glance(glance_api):
    """Glance as Nova calls it: the user's roles plus a service token."""
    return glance_client(glance_api["OS_IMAGE_URL"], glance_api["OS_AUTH_TOKEN"],
                         as_nova=True)


@pytest.fixture(scope="session")
def ceph():
    """Nova, Cinder or an operator with plain librbd (librbd's default
    clone format)."""
    side = Side(os.environ["CEPH_CONF"])
    yield side
    side.close()
