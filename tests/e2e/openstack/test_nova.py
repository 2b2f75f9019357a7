"""Nova 34's own code with the integration (glance_rbd_tracked.integrations
.nova), on the cluster, with glance-api: instance snapshots are chains,
Nova's fallbacks still work, destroyed disks are retired and reclaimed."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from glance_rbd_tracked.integrations.nova import DECLINED
from tests.e2e.openstack.conftest import MiB
from tests.e2e.openstack.conftest import delete
from tests.e2e.openstack.conftest import downloaded_sha512
from tests.e2e.openstack.conftest import leftovers
from tests.e2e.openstack.conftest import new_id
from tests.e2e.openstack.conftest import own_bytes
from tests.e2e.openstack.conftest import parent
from tests.e2e.openstack.conftest import payload
from tests.e2e.openstack.conftest import queued
from tests.e2e.openstack.conftest import rbd_sha512
from tests.e2e.openstack.conftest import upload
from tests.e2e.openstack.conftest import wait_active
from tests.e2e.openstack.worker import ROOT

GUEST = b"written by the guest before the snapshot"


@pytest.fixture(scope="module", params=[1, 2], ids=["clone-v1", "clone-v2"])
def nova(request, start):
    """nova-compute's RBD code with the integration installed, cloning in
    clone format 1 or 2."""
    return start("nova_side", "integration", clone_format=request.param)


def boot(glance, nova, data):
    """A base image in Glance, an instance booted from it by Nova (its
    root disk a clone), and the guest's first write."""
    base = upload(glance, data)
    instance = new_id()
    disk = nova.call("boot", instance=instance, image_id=base["id"])
    return base["id"], instance, disk


def guest_writes(side, disk):
    """The guest's write to its disk; the disk's pool, name and content."""
    pool, name = disk.split("/")
    side.write(pool, name, GUEST)
    return pool, name, rbd_sha512(side, pool, name)


def test_installed_on_nova_34(nova):
    assert nova.hello["nova"].startswith("34.")
    assert nova.hello["installed"], nova.hello
    assert nova.hello["changed"] == ["cleanup_direct_snapshot",
                                     "cleanup_volumes", "direct_snapshot"]
    assert len(nova.hello["lines"]) == 1, nova.hello["lines"]
    assert nova.hello["lines"][0].startswith("INFO glance_rbd_tracked: "
                                             "Nova 34.")


def test_snapshot_is_a_registered_chain_that_boots_and_cascades(
        nova, glance, side, store):
    data = payload(4 * MiB, "nova-snapshot")
    base, instance, disk = boot(glance, nova, data)
    pool, name, at_snapshot = guest_writes(side, disk)

    image_id = queued(glance)
    made = nova.call("snapshot", instance=instance, image_id=image_id,
                     base_image_id=base)
    assert made["direct"], made
    side.write(pool, name, b"written after the snapshot")

    # a chain: the image is a clone of the disk's snapshot, nothing copied
    assert made["location"].endswith(f"/images/{image_id}/snap")
    assert parent(side, "images", image_id).startswith(f"{disk}@")
    assert own_bytes(side, "images", image_id) == 0
    # registered through Nova's image API, the disk as it was
    image = wait_active(glance, image_id)
    assert image["direct_url"] == made["location"]
    assert image["size"] == 4 * MiB
    assert downloaded_sha512(glance, image_id) == at_snapshot
    assert image["os_hash_value"] == at_snapshot
    # bootable: Nova finds the location through Glance and clones it
    assert nova.call("is_cloneable", url=made["location"])
    second = new_id()
    second_disk = nova.call("boot", instance=second, image_id=image_id)
    assert rbd_sha512(side, *second_disk.split("/")) == at_snapshot

    nova.call("destroy", instance=second)
    assert delete(glance, image_id) == 204
    # the cascade: the chain and the disk's snapshot are gone
    assert image_id not in side.names("images")
    assert side.snapshots(pool, name) == []
    nova.call("destroy", instance=instance)
    assert delete(glance, base) == 204
    assert leftovers(side, store, base, image_id, instance, second) == []


def test_destroy_retires_the_disk_until_its_snapshot_is_deleted(
        nova, glance, side, store):
    """Clone format 1 (and 2): Nova's stock destroy cannot remove a disk
    that carries a chain snapshot; with the integration it is retired and
    reclaimed when the image goes."""
    data = payload(2 * MiB, "nova-destroy")
    base, instance, disk = boot(glance, nova, data)
    pool, name, at_snapshot = guest_writes(side, disk)
    side.create(pool, f"{instance}_disk.local", MiB)  # nothing hangs off it
    image_id = queued(glance)
    assert nova.call("snapshot", instance=instance, image_id=image_id,
                     base_image_id=base)["direct"]
    assert delete(glance, base) == 204  # the base is retired: a disk uses it

    nova.call("destroy", instance=instance)
    assert sorted(n for n in side.names(pool) if n.startswith(instance)) == [
        f"{name}_to_be_deleted"]
    assert parent(side, "images", image_id).startswith(
        f"{pool}/{name}_to_be_deleted@")
    nova.call("destroy", instance=instance)  # a repeated delete: no change
    assert f"{name}_to_be_deleted" in side.names(pool)
    assert downloaded_sha512(glance, wait_active(glance, image_id)["id"]) \
        == at_snapshot

    assert delete(glance, image_id) == 204
    assert leftovers(side, store, base, image_id, instance) == []


def test_a_pool_the_store_may_not_touch_gets_novas_stock_snapshot(
        start, glance, side, store):
    """The disk's pool is not one of the chain pools: Nova's own clone and
    flatten, as if the integration were not there; nothing of the store's
    is left behind."""
    nova = start("nova_side", "integration", chain_pools=["volumes"])
    data = payload(2 * MiB, "nova-stock-pool")
    base, instance, disk = boot(glance, nova, data)
    pool, name, at_snapshot = guest_writes(side, disk)
    image_id = queued(glance)
    made = nova.call("snapshot", instance=instance, image_id=image_id,
                     base_image_id=base)
    assert made["direct"], made
    assert parent(side, "images", image_id) is None  # flattened by Nova
    assert own_bytes(side, "images", image_id) > 0
    assert side.snapshots(pool, name) == []
    assert "Nova's stock direct snapshot" in nova.log()
    assert downloaded_sha512(glance, wait_active(glance, image_id)["id"]) \
        == at_snapshot
    assert [k for k in store.journal.entries("images") if image_id in k] == []
    nova.call("destroy", instance=instance)
    assert delete(glance, image_id) == 204
    assert delete(glance, base) == 204
    assert leftovers(side, store, base, image_id, instance) == []


def test_no_chain_sends_nova_to_its_standard_snapshot(nova, glance, side,
                                                      store):
    """The chain cannot be made (its target name is taken): Nova gets
    ImageUnacceptable, its own fallback, and nothing is left behind."""
    data = payload(MiB, "nova-fallback")
    base, instance, disk = boot(glance, nova, data)
    pool, name = disk.split("/")
    image_id = queued(glance)
    side.create("images", image_id, MiB)  # somebody else's image
    made = nova.call("snapshot", instance=instance, image_id=image_id,
                     base_image_id=base)
    assert made["fallback"] == "ImageUnacceptable", made
    assert "could not make a chain" in made["reason"]
    assert side.snapshots(pool, name) == []
    assert side.snapshots("images", image_id) == []  # untouched
    assert parent(side, "images", image_id) is None
    assert glance.images.get(image_id)["status"] == "queued"
    side.remove("images", image_id)
    assert delete(glance, image_id) == 204
    nova.call("destroy", instance=instance)
    assert delete(glance, base) == 204
    assert leftovers(side, store, base, image_id, instance) == []


def test_a_location_glance_refuses_removes_the_chain(start, glance, side,
                                                     store):
    """Nova's credentials lack the service role: Glance refuses the
    location, Nova cleans up with cleanup_direct_snapshot, which removes
    the whole chain (stock Nova would leave the disk's snapshot)."""
    nova = start("nova_side", "integration", service_role=False)
    data = payload(MiB, "nova-refused")
    base, instance, disk = boot(glance, nova, data)
    pool, name = disk.split("/")
    image_id = queued(glance)
    made = nova.call("snapshot", instance=instance, image_id=image_id,
                     base_image_id=base)
    assert made["failed"] == "ImageNotAuthorized", made
    assert made["cleaned"].endswith(f"/images/{image_id}/snap")
    assert image_id not in side.names("images")
    assert side.snapshots(pool, name) == []
    assert glance.images.get(image_id)["status"] == "queued"
    assert delete(glance, image_id) == 204
    nova.call("destroy", instance=instance)
    assert delete(glance, base) == 204
    assert leftovers(side, store, base, image_id, instance) == []


def test_with_glances_pool_read_only_nova_falls_back(start, users, glance,
                                                     side, store):
    """cephx: the chain needs write access to Glance's pool (its clone, its
    journal); with Ceph's usual read-only caps there, Nova falls back
    (its own direct snapshot would be refused too) and nothing is left."""
    if users is None:
        pytest.fail("needs a cephx cluster (tools/run-tests sets "
                    "CEPH_DEV_AUTH=cephx)")
    nova = start("nova_side", "integration", rbd_user="grt-nova-ro-images")
    base, instance, disk = boot(glance, nova, payload(MiB, "nova-ro"))
    pool, name = disk.split("/")
    image_id = queued(glance)
    made = nova.call("snapshot", instance=instance, image_id=image_id,
                     base_image_id=base)
    assert made["fallback"] == "ImageUnacceptable", made
    assert "permission" in made["reason"].lower(), made
    assert side.snapshots(pool, name) == []
    assert image_id not in side.names("images")
    assert delete(glance, image_id) == 204
    nova.call("destroy", instance=instance)
    assert delete(glance, base) == 204
    assert leftovers(side, store, base, image_id, instance) == []


def test_an_unknown_nova_is_left_untouched(start, glance, side, store):
    """A Nova whose direct_snapshot lacks a parameter the store needs (by
    name and kind; the release number is not asked, see
    tests/integrations/test_nova.py): Nova as it is, and the one line says
    what that means for chains."""
    mode = "renamed-parameter"
    nova = start("nova_side", mode)
    assert not nova.hello["installed"]
    assert nova.hello["changed"] == []
    assert nova.hello["lines"] == [
        "WARNING glance_rbd_tracked: "
        + DECLINED.format(why=nova.hello["reason"])]
    assert "Rbd.direct_snapshot is (self, context, snapshot_name, " \
        "image_format, image_uuid, base_image_id): its parameter 5 is " \
        "'image_uuid', not 'image_id'" in nova.hello["reason"]
    # and Nova is Nova: its own clone and flatten
    base, instance, _disk = boot(glance, nova, payload(MiB, mode))
    image_id = queued(glance)
    assert nova.call("snapshot", instance=instance, image_id=image_id,
                     base_image_id=base)["direct"]
    assert parent(side, "images", image_id) is None
    wait_active(glance, image_id)  # glance's hashing task ended
    nova.call("destroy", instance=instance)
    assert delete(glance, image_id) == 204
    assert delete(glance, base) == 204
    assert leftovers(side, store, base, image_id, instance) == []


@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
def test_the_launcher_runs_nova_compute(ceph_conf, tmp_path, enabled):
    """glance-rbd-tracked-nova-compute: Nova's own main(); the integration
    is installed once nova-compute has read its configuration, and says so
    in nova-compute's log.  (It then waits for nova-conductor, which this
    test does not run.)"""
    log = tmp_path / "nova-compute.log"
    conf = tmp_path / "nova.conf"
    conf.write_text(f"""[DEFAULT]
compute_driver = libvirt.LibvirtDriver
transport_url = fake:/
state_path = {tmp_path}
instances_path = {tmp_path}/instances
host = launcher-test
log_file = {log}
[oslo_concurrency]
lock_path = {tmp_path}
[libvirt]
images_type = rbd
images_rbd_pool = vms
images_rbd_ceph_conf = {ceph_conf}
[rbd_tracked]
enabled = {enabled}
""")
    launcher = os.path.join(os.path.dirname(sys.executable),
                            "glance-rbd-tracked-nova-compute")
    proc = subprocess.Popen([launcher, "--config-file", str(conf)],
                            cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        lines: list[str] = []
        while time.monotonic() < deadline and proc.poll() is None:
            text = log.read_text() if log.exists() else ""
            lines = [ln for ln in text.splitlines()
                     if "glance_rbd_tracked" in ln]
            if lines and "Loaded VIF plugins" in text:
                break  # and nova-compute went on
            time.sleep(0.5)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read() if proc.stderr else ""
    assert len(lines) == 1, (lines, stderr[-3000:])
    assert "Loaded VIF plugins" in log.read_text()
    if enabled:
        assert "INFO glance_rbd_tracked.integrations.nova" in lines[0]
        assert "Nova 34." in lines[0]
    else:
        assert "WARNING glance_rbd_tracked.integrations.nova" in lines[0]
        assert "[rbd_tracked] enabled = false" in lines[0]
