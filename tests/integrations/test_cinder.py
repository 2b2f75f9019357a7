"""The Cinder integration's seams with Cinder's own code (PyPI cinder 29,
in a worker process: cinder-volume's driver as its manager loads it) on the
test cluster, without glance-api (the flows through Glance are in
tests/e2e/openstack/test_cinder.py)."""

import pytest

from glance_rbd_tracked import chains
from glance_rbd_tracked import core
from glance_rbd_tracked import lifecycle
from tests.e2e.openstack.conftest import leftovers
from tests.e2e.openstack.worker import Failed
from tests.integrations.conftest import new_id

POLICY = core.Policy(pool="images")


def test_the_private_names_the_driver_keeps_are_still_in_cinder(start):
    """TrackedRBDDriver uses Cinder's public driver API save
    integrations.cinder.PRIVATE (no public API says them).  When a Cinder
    release drops or renames one, this fails, naming it."""
    cinder = start("cinder_side", "integration")
    assert cinder.hello["refusal"] is None, cinder.hello
    missing = [name for name, there in cinder.hello["private"].items()
               if not there]
    assert missing == [], (
        f"Cinder {cinder.hello['cinder']} no longer has {missing}: find "
        "the public way, or teach TrackedRBDDriver the new name")
    assert sorted(cinder.hello["private"]) == ["_active_backend_id",
                                               "_delete_backup_snaps"]


@pytest.mark.parametrize("mode, refusal, line", [
    ("unknown-version", None,
     "INFO glance_rbd_tracked: images of volumes are chains, deleted volumes "
     "with chains are retired (Cinder 30.0.0, tested on 29.x: it has every "
     "method the driver overrides or calls, with the parameters it needs)"),
    ("changed-signature",
     "cinder.volume.drivers.rbd:RBDDriver._delete_backup_snaps is (self, "
     "image): its parameter 2 is 'image', not 'rbd_image'",
     "WARNING glance_rbd_tracked: the driver is Cinder's stock RBDDriver: "
     "{refusal}"),
])
def test_cinder_is_served_by_its_parameters_not_its_release_number(
        start, mode, refusal, line):
    cinder = start("cinder_side", mode)
    assert cinder.hello["refusal"] == refusal
    assert cinder.hello["lines"] == [line.format(refusal=refusal)]


def volume_with_a_chain(cinder, store):
    volume = cinder.call("create_volume", size_gib=1)
    (made,) = chains.snapshot(
        store, [chains.Request(f"volumes/{volume['name']}", new_id())],
        POLICY)
    return volume, made.glance_id


def test_a_bug_in_the_store_fails_an_upload_instead_of_streaming(
        start, side, store):
    """Only the store's own errors send an upload to Cinder's stock code
    (tests/e2e/openstack/test_cinder.py shows those); a bug propagates."""
    cinder = start("cinder_side", "integration", bug={
        "target": "glance_rbd_tracked.chains:snapshot",
        "error": "RuntimeError"})
    volume = cinder.call("create_volume", size_gib=1)
    image_id = new_id()
    with pytest.raises(Failed) as failed:
        cinder.call("copy_volume_to_image", volume_id=volume["id"],
                    image_id=image_id)
    assert failed.value.kind == "RuntimeError"
    assert "stock upload" not in cinder.log()
    assert side.snapshots("volumes", volume["name"]) == []
    cinder.call("delete_volume", volume_id=volume["id"])
    assert leftovers(side, store, volume["name"], image_id) == []


@pytest.mark.parametrize("error", ["ClusterError", "RuntimeError"])
def test_only_the_stores_errors_send_a_delete_to_cinders_stock_code(
        start, side, store, error):
    """The store cannot retire a volume a chain needs: Cinder's stock
    delete (on this cluster, librbd keeps it in the trash until the chain
    goes).  A bug in the store: the delete fails, the volume is left as it
    was."""
    cinder = start("cinder_side", "integration", bug={
        "target": "glance_rbd_tracked.lifecycle:retire", "error": error})
    volume, image_id = volume_with_a_chain(cinder, store)
    name = volume["name"]
    if error == "RuntimeError":
        with pytest.raises(Failed) as failed:
            cinder.call("delete_volume", volume_id=volume["id"])
        assert failed.value.kind == "RuntimeError"
        assert [n for n in side.names("volumes") if n.startswith(name)] == [
            name]
    else:
        cinder.call("delete_volume", volume_id=volume["id"])
        assert [n for n in side.names("volumes") if n.startswith(name)] == []
        assert "not retired" in cinder.log()
    lifecycle.delete(store, "images", image_id, POLICY)
    if error == "RuntimeError":
        side.remove("volumes", name)  # nothing needs it now
    assert leftovers(side, store, name, image_id) == []
