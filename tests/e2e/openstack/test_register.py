"""``glance-rbd-tracked snapshot --register``, run as an operator runs it:
the console script, openstacksdk configured by clouds.yaml, the real
glance-api and cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.e2e.openstack.conftest import MiB
from tests.e2e.openstack.conftest import delete
from tests.e2e.openstack.conftest import downloaded_sha512
from tests.e2e.openstack.conftest import leftovers
from tests.e2e.openstack.conftest import new_id
from tests.e2e.openstack.conftest import own_bytes
from tests.e2e.openstack.conftest import parent
from tests.e2e.openstack.conftest import payload
from tests.e2e.openstack.conftest import rbd_sha512
from tests.e2e.openstack.conftest import wait_active
from tests.e2e.openstack.worker import IDENTITY
from tests.e2e.openstack.worker import ROOT

CLI = os.path.join(os.path.dirname(sys.executable), "glance-rbd-tracked")


@pytest.fixture(scope="module")
def clouds_yaml(glance_api, tmp_path_factory):
    """Two clouds: an operator with the service role, and one without."""
    path = tmp_path_factory.mktemp("clouds") / "clouds.yaml"
    url = glance_api["OS_IMAGE_URL"]
    path.write_text(f"""clouds:
  operator:
    auth_type: grt-loopback
    auth:
      endpoint: {url}
      roles: member,reader
      service_roles: service
  member:
    auth_type: grt-loopback
    auth:
      endpoint: {url}
      roles: member,reader
""")
    return str(path)


def register(clouds_yaml, *args, cloud="operator"):
    env = dict(os.environ, OS_CLIENT_CONFIG_FILE=clouds_yaml,
               PYTHONPATH=IDENTITY)
    result = subprocess.run(
        [CLI, "--ceph-conf", os.environ["CEPH_CONF"], "snapshot",
         "--register", "--os-cloud", cloud, "--format", "json", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    rows = json.loads(result.stdout) if result.stdout.strip() else []
    return result.returncode, rows, result.stderr


def disk_with_data(side, seed):
    disk = f"{new_id()}_disk"
    side.create("vms", disk, 4 * MiB)
    side.write("vms", disk, payload(4 * MiB, seed))
    return disk


@pytest.mark.parametrize("with_id", [False, True], ids=["new-id", "given-id"])
def test_a_disk_becomes_a_registered_image_in_one_command(
        clouds_yaml, glance, side, store, with_id):
    disk = disk_with_data(side, f"register-{with_id}")
    expected = rbd_sha512(side, "vms", disk)
    wanted = new_id() if with_id else None
    target = f"vms/{disk}={wanted}" if wanted else f"vms/{disk}"
    rc, rows, stderr = register(clouds_yaml, "--execute", "--name",
                                "operator's image", target)
    assert rc == 0, stderr
    (row,) = rows
    image_id = row["image_id"]
    if wanted:
        assert image_id == wanted
    assert row["result"].startswith("registered ("), row
    assert row["method"] == "POST"
    assert row["path"] == "chain"
    assert row["location"].endswith(f"/images/{image_id}/snap")

    assert parent(side, "images", image_id).startswith(f"vms/{disk}@")
    assert own_bytes(side, "images", image_id) == 0
    image = wait_active(glance, image_id)
    assert image["name"] == "operator's image"
    assert image["direct_url"] == row["location"]
    assert downloaded_sha512(glance, image_id) == expected

    assert delete(glance, image_id) == 204
    assert image_id not in side.names("images")
    assert side.snapshots("vms", disk) == []
    side.remove("vms", disk)
    assert leftovers(side, store, disk, image_id) == []


def test_a_location_glance_refuses_leaves_nothing(clouds_yaml, glance, side,
                                                  store):
    """Without the service role Glance refuses an rbd:// location: the
    chain and the queued image go again, and the exit code is 1."""
    disk = disk_with_data(side, "register-refused")
    rc, rows, stderr = register(clouds_yaml, "--execute", f"vms/{disk}",
                                cloud="member")
    assert rc == 1, stderr
    (row,) = rows
    assert row["result"].startswith("failed: "), row
    assert "403" in row["result"] and "'service' role" in row["result"]
    image_id = row["image_id"]
    assert image_id not in {i["id"] for i in glance.images.list()}
    assert image_id not in side.names("images")
    assert side.snapshots("vms", disk) == []
    side.remove("vms", disk)
    assert leftovers(side, store, disk, image_id) == []


def test_without_execute_it_only_plans(clouds_yaml, glance, side, store):
    disk = disk_with_data(side, "register-plan")
    rc, rows, stderr = register(clouds_yaml, f"vms/{disk}", "vms/no-such")
    assert rc == 1, stderr  # one of the two is refused
    assert [r["result"].split(":")[0] for r in rows] == ["planned",
                                                         "refused"]
    assert rows[0]["image_id"] == "(new)"
    assert "plan only" in stderr
    assert side.snapshots("vms", disk) == []
    side.remove("vms", disk)
    assert leftovers(side, store, disk) == []
