"""Nova and Cinder with their integrations and glance-api, on one chain
that runs through all three pools: an image of a volume, an instance booted
from it, a snapshot of the instance; everything deleted in an awkward
order; nothing left."""

from __future__ import annotations

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
from tests.e2e.openstack.conftest import wait_active


def test_a_chain_through_a_volume_an_image_and_an_instance(start, glance,
                                                           side, store):
    cinder = start("cinder_side", "integration")
    nova = start("nova_side", "integration")
    # Cinder: a volume becomes an image (volumes/V -> images/I1)
    volume = cinder.call("create_volume", size_gib=1)
    side.write("volumes", volume["name"], payload(2 * MiB, "together"))
    from_volume = queued(glance, "from a volume")
    cinder.call("copy_volume_to_image", volume_id=volume["id"],
                image_id=from_volume)
    wait_active(glance, from_volume)
    # Nova: an instance booted from it, snapshotted (-> vms/D -> images/I2)
    instance = new_id()
    disk = nova.call("boot", instance=instance, image_id=from_volume)
    pool, name = disk.split("/")
    side.write(pool, name, b"the instance wrote this")
    at_snapshot = rbd_sha512(side, pool, name)
    snapshot = queued(glance)
    made = nova.call("snapshot", instance=instance, image_id=snapshot,
                     base_image_id=from_volume)
    assert made["direct"], made
    assert parent(side, "images", snapshot).startswith(f"{disk}@")
    assert own_bytes(side, "images", snapshot) == 0
    assert downloaded_sha512(glance, wait_active(glance, snapshot)["id"]) \
        == at_snapshot

    # delete from the bottom up while everything above still needs it
    cinder.call("delete_volume", volume_id=volume["id"])
    assert delete(glance, from_volume) == 204
    nova.call("destroy", instance=instance)
    assert f"{volume['name']}_to_be_deleted" in side.names("volumes")
    assert f"{from_volume}_to_be_deleted" in side.names("images")
    assert f"{name}_to_be_deleted" in side.names(pool)
    assert downloaded_sha512(glance, snapshot) == at_snapshot

    # the last image goes: the whole chain goes with it
    assert delete(glance, snapshot) == 204
    assert leftovers(side, store, volume["name"], from_volume, instance,
                     snapshot) == []
