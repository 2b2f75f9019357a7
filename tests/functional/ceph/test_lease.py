"""The store's lease on an image, on the real cluster."""

import threading
import time
import uuid

import pytest
import rados
import rbd

from glance_rbd_tracked import ceph as ceph_mod
from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked.ceph import lease
from tests.functional.conftest import upload


def header_of(store, image_id):
    return f"rbd_header.{store.ceph.images.state('images', image_id).image_id}"


def test_a_change_waits_for_another_workers_lock_on_the_image(store, nova):
    image_id = str(uuid.uuid4())
    upload(store, image_id, b"l" * 4096)
    header = header_of(store, image_id)
    with nova.ioctx("images") as ioctx:
        ioctx.lock_exclusive(header, lease.NAME, "other worker",
                             duration=60)
        released = []

        def release_later():
            time.sleep(0.5)
            released.append(time.monotonic())
            ioctx.unlock(header, lease.NAME, "other worker")

        thread = threading.Thread(target=release_later)
        thread.start()
        try:
            lifecycle.delete(store.ceph, "images", image_id,
                             store.settings.policy)
            finished = time.monotonic()
        finally:
            thread.join()
    assert finished >= released[0]
    assert not nova.exists("images", image_id)


def test_a_lock_that_is_never_released_is_a_conflict_not_a_hang(
        store, nova, ceph_conf):
    image_id = str(uuid.uuid4())
    upload(store, image_id, b"k" * 4096)
    header = header_of(store, image_id)
    impatient = ceph_mod.connect(ceph_conf, lease=lease.Terms(wait=0.1))
    with nova.ioctx("images") as ioctx:
        ioctx.lock_exclusive(header, lease.NAME, "stuck worker",
                             duration=60)
        try:
            # one wait, the lease's own, not one per attempt of the delete
            with pytest.raises(errors.Busy,
                               match=r"^images/\S+ is being changed by "
                                     r"another worker"):
                lifecycle.delete(impatient, "images", image_id,
                                 store.settings.policy)
        finally:
            ioctx.unlock(header, lease.NAME, "stuck worker")
            impatient.close()
    assert nova.exists("images", image_id)
    lifecycle.delete(store.ceph, "images", image_id, store.settings.policy)


def test_locking_an_image_removed_meanwhile_leaves_no_object(store, nova):
    name = f"{uuid.uuid4()}_disk"
    nova.create("vms", name, snaps=("s",))
    state = store.ceph.images.state("vms", name)
    with nova.ioctx("vms") as ioctx, rbd.Image(ioctx, name) as image:
        image.unprotect_snap("s")
        image.remove_snap("s")
    nova.remove("vms", name)
    with pytest.raises(errors.NotFound):
        store.ceph.changes.apply(state, core.Trim(("s",)))
    # the lock was taken on the header of an image that no longer exists
    with nova.ioctx("vms") as ioctx, pytest.raises(rados.ObjectNotFound):
        ioctx.stat(f"rbd_header.{state.image_id}")


def test_the_lock_is_a_lease_renewed_while_held_and_freed_after(
        store, operator, ceph_conf):
    image_id = str(uuid.uuid4())
    upload(store, image_id, b"r" * 4096)
    state = store.ceph.images.state("images", image_id)
    header = f"rbd_header.{state.image_id}"
    brief = ceph_mod.connect(ceph_conf, lease=lease.Terms(seconds=3))
    leases = brief.changes.leases  # renewed every 1 s
    with operator.ioctx("images") as other, \
            brief.connection.ioctx("images") as ours:
        with leases.held(ours, state.spec, state.image_id):
            time.sleep(7)  # more than two leases
            with pytest.raises(rados.ObjectBusy):
                other.lock_exclusive(header, lease.NAME, "other",
                                     duration=1)
        other.lock_exclusive(header, lease.NAME, "other",
                             duration=1)  # released on the way out
        other.unlock(header, lease.NAME, "other")
    brief.close()
    lifecycle.delete(store.ceph, "images", image_id, store.settings.policy)
