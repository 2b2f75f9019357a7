"""Kill the process with SIGKILL at every step of every multi-step
operation, then let cleanup finish the job: nothing leaks, nothing still
referenced is removed."""

import datetime
import subprocess
import sys
import time
import uuid

import pytest
import rbd

from glance_rbd_tracked import chains
from glance_rbd_tracked import cleanup as cleanup_mod
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import schema
from tests.functional import crash_worker
from tests.functional.conftest import upload

NOW = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
    hours=1)


def cleanup(store):
    items = cleanup_mod.plan(store.ceph, store.settings.policy, NOW,
                        datetime.timedelta(0))
    assert cleanup_mod.execute(store.ceph, items,
                          store.settings.policy) == []


def entries_for(store, *names):
    intents, links = schema.load_journal(store.ceph.journal.entries("images"))
    return [e for e in intents + links
            if any(n in e.target or n in e.source for n in names)]


def booted_disk(store, nova):
    base = str(uuid.uuid4())
    upload(store, base, b"base image " * 100)
    disk = f"{uuid.uuid4()}_disk"
    nova.clone("images", base, "snap", "vms", disk)
    with nova.ioctx("vms") as ioctx, rbd.Image(ioctx, disk) as image:
        image.write(b"precious instance data", 0)
    return base, disk


def disk_data(nova, pool, disk):
    with nova.ioctx(pool) as ioctx, \
            rbd.Image(ioctx, disk, read_only=True) as image:
        return image.read(0, 22)


@pytest.mark.parametrize("step", chains.STEPS)
def test_kill_during_chain_snapshot(store, nova, ceph_conf, step):
    base, disk = booted_disk(store, nova)
    image_id = str(uuid.uuid4())
    run = crash_worker.run(ceph_conf, step, "snapshot", f"vms/{disk}", image_id)
    if (step, nova.clone_format) == ("hop", 1):
        # a format-1 chain's source snapshot stays where it is: no hop
        assert run.returncode == 0, run.stdout + run.stderr
        assert "hop" not in run.stdout.rpartition("steps: ")[2]
        assert nova.snapshots("vms", disk) == [
            (f"rbd_tracked-{image_id}", True)]
        from tests.functional.conftest import location_of
        store.delete(location_of(
            store, f"rbd://{store.ceph.fsid()}/images/{image_id}/snap"))
    else:
        assert run.returncode == -9, run.stdout + run.stderr
        assert f"killed at {step}" in run.stdout

    cleanup(store)

    assert not nova.exists("images", image_id)
    state = store.ceph.images.state("vms", disk)
    assert state.snaps == () and state.records.snaps == ()
    assert entries_for(store, image_id, disk) == []
    assert disk_data(nova, "vms", disk) == b"precious instance data"
    assert nova.exists("images", base)


DELETE_STEPS = ("delete-intent", "delete-apply", "release vms/*",
                "release images/*", "delete-done")


@pytest.mark.parametrize("step", DELETE_STEPS)
def test_kill_during_cascading_delete(store, nova, ceph_conf, step):
    base, disk = booted_disk(store, nova)
    fsid = store.ceph.fsid()
    (made,) = chains.snapshot(store.ceph,
                              [chains.Request(f"vms/{disk}",
                                              str(uuid.uuid4()))],
                              store.settings.policy)
    # the base image is deleted from Glance and the instance destroyed:
    # both are retired, kept alive by the snapshot image alone
    from tests.functional.conftest import location_of
    store.delete(location_of(store, f"rbd://{fsid}/images/{base}/snap"))
    from glance_rbd_tracked import lifecycle
    lifecycle.retire(store.ceph, "vms", disk, store.settings.policy)

    run = crash_worker.run(ceph_conf, step, "delete", made.glance_id)
    assert run.returncode == -9, run.stdout + run.stderr

    cleanup(store)
    if nova.exists("images", made.glance_id):
        # killed before anything was removed: Glance retries the delete
        assert step in ("delete-intent", "delete-apply")
        assert disk_data(nova, "images", made.glance_id) == \
            b"precious instance data"
        assert nova.exists("vms", disk + schema.RETIRED_SUFFIX)
        store.delete(location_of(store, made.location))
    assert not nova.exists("vms", disk + schema.RETIRED_SUFFIX)
    assert not nova.exists("images", base + schema.RETIRED_SUFFIX)
    assert entries_for(store, made.glance_id, disk, base) == []


@pytest.mark.parametrize("step", ("retire-intent", "retire-apply",
                                  "retire-done"))
def test_kill_during_retirement(store, nova, ceph_conf, step):
    base, disk = booted_disk(store, nova)
    (made,) = chains.snapshot(store.ceph,
                              [chains.Request(f"vms/{disk}",
                                              str(uuid.uuid4()))],
                              store.settings.policy)
    run = crash_worker.run(ceph_conf, step, "retire", "vms", disk)
    assert run.returncode == -9, run.stdout + run.stderr

    cleanup(store)
    if nova.exists("vms", disk):
        # killed before anything changed: Nova retries the destroy
        assert step in ("retire-intent", "retire-apply")
        lifecycle.retire(store.ceph, "vms", disk, store.settings.policy)
    retired = disk + schema.RETIRED_SUFFIX
    assert nova.exists("vms", retired)
    assert store.ceph.images.state("vms", retired).records.retired is not None
    assert disk_data(nova, "vms", retired) == b"precious instance data"
    assert entries_for(store, made.glance_id, disk) != []  # the chain link
    assert [e.target for e in entries_for(store, disk)
            if hasattr(e, "op")] == []  # no intent left
    from tests.functional.conftest import location_of
    store.delete(location_of(store, made.location))
    assert not nova.exists("vms", retired)
    assert nova.exists("images", base)


@pytest.mark.parametrize("step", ("delete-intent", "delete-apply",
                                  "delete-done"))
def test_kill_during_removal_of_a_destroyed_disk(store, nova, ceph_conf,
                                                 step):
    """Nova destroys a disk no chain hangs off: retire removes it,
    journalled as a removal.  Cleanup finishes it as retire decided it (a
    Glance delete would refuse the disk: it has no record of the store);
    the base image Glance still has stays as it is."""
    base, disk = booted_disk(store, nova)
    run = crash_worker.run(ceph_conf, step, "retire", "vms", disk)
    assert run.returncode == -9, run.stdout + run.stderr

    cleanup(store)
    if step == "delete-intent":
        # killed before anything was journalled: Nova retries the destroy
        assert nova.exists("vms", disk)
        lifecycle.retire(store.ceph, "vms", disk, store.settings.policy)
    assert not nova.exists("vms", disk)
    assert entries_for(store, disk) == []
    kept = store.ceph.images.state("images", base)
    assert kept.records.retired is None and kept.snap("snap") is not None
    lifecycle.delete(store.ceph, "images", base, store.settings.policy)
    assert not nova.exists("images", base)


def test_cleanup_finishes_a_retirement_marked_but_not_renamed(store, nova):
    """The kill between writing the retired record and the rename."""
    _, disk = booted_disk(store, nova)
    (made,) = chains.snapshot(store.ceph,
                              [chains.Request(f"vms/{disk}",
                                              str(uuid.uuid4()))],
                              store.settings.policy)
    state = store.ceph.images.state("vms", disk)
    from glance_rbd_tracked import core
    decision = core.decide_retire(state, store.settings.policy, NOW)
    store.ceph.changes.set_records("vms", disk, state.image_id, decision.records)
    intent = schema.Intent(op="retire", target=f"vms/{disk}", source="",
                           snapshot="", started="2026-01-01T00:00:00Z")
    store.ceph.journal.update("images",
                                 put={intent.key: schema.to_json(intent)})

    cleanup(store)
    assert not nova.exists("vms", disk)
    assert nova.exists("vms", disk + schema.RETIRED_SUFFIX)
    assert not [e for e in entries_for(store, disk) if hasattr(e, "op")]
    from tests.functional.conftest import location_of
    store.delete(location_of(store, made.location))
    assert not nova.exists("vms", disk + schema.RETIRED_SUFFIX)


def test_kill_inside_librbd_removal_is_finished_by_cleanup(
        store, nova, ceph_conf):
    """librbd removes an image by moving it to the trash, deleting its
    objects, then its header; killed in between, the image is half removed:
    it cannot be opened by name, `rbd ls` still lists it, and its parent
    still counts it as a clone."""
    base = str(uuid.uuid4())
    upload(store, base, b"base image " * 100)
    disk = f"{uuid.uuid4()}_disk"
    with nova.ioctx("images") as src, nova.ioctx("vms") as dst:
        # without an object map librbd deletes every object the size
        # allows: 8192 of them, about a second's work
        rbd.RBD().clone(src, base, "snap", dst, disk,
                        features=rbd.RBD_FEATURE_LAYERING)
        with rbd.Image(dst, disk) as image:
            image.resize(64 << 30)
            image.write(b"precious instance data", 0)
    fsid = store.ceph.fsid()
    from tests.functional.conftest import location_of
    store.delete(location_of(store, f"rbd://{fsid}/images/{base}/snap"))
    assert nova.exists("images", base + schema.RETIRED_SUFFIX)

    image_id = store.ceph.images.state("vms", disk).image_id
    proc = subprocess.Popen([sys.executable, "-m",
                             "tests.functional.crash_worker", ceph_conf, "-",
                             "retire-slowly", "vms", disk],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not half_removed(nova, disk):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.kill()
    proc.communicate()
    assert half_removed(nova, disk)

    # The dead worker's watch on the image keeps librbd from removing it
    # until the OSD drops it (osd_client_watch_timeout, 30 s); cleanup says
    # so and leaves it for its next run.  Here the dead client is fenced.
    items = cleanup_mod.plan(store.ceph, store.settings.policy, NOW,
                        datetime.timedelta(0))
    failures = cleanup_mod.execute(store.ceph, items, store.settings.policy)
    assert [e for _, e in failures if "open elsewhere" not in e] == []
    fence_watchers(ceph_conf, "vms", image_id)
    cleanup(store)
    assert not nova.exists("vms", disk) and not half_removed(nova, disk)
    assert not nova.exists("images", base + schema.RETIRED_SUFFIX)
    assert entries_for(store, disk, base) == []


def half_removed(nova, name):
    """Listed, yet not there to open by name."""
    if not nova.exists("vms", name):
        return False
    with nova.ioctx("vms") as ioctx:
        try:
            rbd.Image(ioctx, name, read_only=True).close()
        except rbd.ImageNotFound:
            return True
    return False


def fence_watchers(ceph_conf, pool, image_id):
    """Blocklist the clients watching an image: the OSD drops their watches
    at once instead of after osd_client_watch_timeout."""
    out = subprocess.run(["rados", "-c", ceph_conf, "-p", pool,
                          "listwatchers", f"rbd_header.{image_id}"],
                         capture_output=True, text=True, timeout=30).stdout
    for line in out.splitlines():
        if line.startswith("watcher="):
            address = line.split()[0].partition("=")[2]
            subprocess.run(["ceph", "-c", ceph_conf, "osd", "blocklist",
                            "add", address], check=True, capture_output=True,
                           timeout=30)
