"""The RBD trash and the trash snapshot namespace, on the real cluster:
what stock Nova and Cinder do to a disk or volume a chain image depends on
(played with plain librbd here; their real code runs in tests/openstack),
and what the store and cleanup make of it."""

import datetime
import json
import subprocess
import uuid

import rbd

from glance_rbd_tracked import chains
from glance_rbd_tracked import cleanup
from glance_rbd_tracked import lineage
from glance_rbd_tracked import schema
from glance_rbd_tracked.ceph import trash
from tests.functional.conftest import location_of
from tests.functional.conftest import read_all
from tests.functional.conftest import upload

LATER = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)


def boot(store, nova, pool="vms"):
    base = str(uuid.uuid4())
    upload(store, base, b"base image " * 100)
    disk = f"{uuid.uuid4()}_disk" if pool == "vms" else f"volume-{uuid.uuid4()}"
    nova.clone("images", base, "snap", pool, disk)
    nova.write(pool, disk, b"precious data")
    return base, disk


def chain(store, source):
    (made,) = chains.snapshot(store.ceph, [chains.Request(
        source, str(uuid.uuid4()))], store.settings.policy)
    return made


def trash_listing(ceph_conf, pool):
    """What `rbd trash ls --all` shows: {id: (name, source)}."""
    out = subprocess.run(["rbd", "-c", ceph_conf, "trash", "ls", "--all",
                          "--long", "--format", "json", "-p", pool],
                         check=True,
                         capture_output=True, text=True, timeout=30).stdout
    return {e["id"]: (e["name"], e["source"]) for e in json.loads(out)}


def ours_in_trash(ceph_conf, pool, *names):
    return {i: e for i, e in trash_listing(ceph_conf, pool).items()
            if e[0] in names}


def pool_option(side, pool, key):
    """A pool-level librbd option, None when the pool does not set it."""
    with side.ioctx(pool) as ioctx:
        try:
            return rbd.RBD().pool_metadata_get(ioctx, "conf_" + key)
        except KeyError:
            return None


def cinder_delete(nova, pool, volume):
    """Cinder's RBD driver: remove, and when snapshots keep the volume,
    move it to the RBD trash and report success."""
    try:
        nova.remove(pool, volume)
        return "removed"
    except rbd.ImageHasSnapshots:
        with nova.ioctx(pool) as ioctx:
            rbd.RBD().trash_move(ioctx, volume, 0)
        return "trashed"


def clean(store):
    items = cleanup.plan(store.ceph, store.settings.policy, LATER,
                         datetime.timedelta(0))
    assert cleanup.execute(store.ceph, items, store.settings.policy) == []
    return items


def test_the_store_reads_the_trash_as_rbd_trash_ls_does(store, nova,
                                                        ceph_conf):
    _, disk = boot(store, nova)
    made = chain(store, f"vms/{disk}")
    _, volume = boot(store, nova)
    with nova.ioctx("vms") as ioctx:
        rbd.RBD().trash_move(ioctx, volume, 0)
    if nova.clone_format == 2:  # the disk goes to the trash by itself
        nova.remove("vms", disk)
    with nova.ioctx("vms") as ioctx:
        decoded = {e.image_id: (e.name, e.trash.source.upper())
                   for e in trash.entries(__import__("rados"), ioctx)}
    assert decoded == trash_listing(ceph_conf, "vms")
    with nova.ioctx("vms") as ioctx:  # one entry read by its key alone
        rados = __import__("rados")
        assert {i: (e.name, e.trash.source.upper()) for i in decoded
                if (e := trash.entry(rados, ioctx, i))} == decoded
        assert trash.entry(rados, ioctx, "0123456789ab") is None
    assert {name for name, _ in decoded.values()} >= (
        {volume, disk} if nova.clone_format == 2 else {volume})
    # what the store sees of them
    state = store.ceph.images.state("vms", volume)
    assert state.trash.source == "user" and state.records.snaps == ()
    store.delete(location_of(store, made.location))
    assert not nova.exists("vms", disk) or nova.clone_format == 1
    for name in (volume, disk):
        with nova.ioctx("vms") as ioctx:
            for entry in trash.entries(__import__("rados"), ioctx):
                if entry.name == name:
                    rbd.RBD().trash_remove(ioctx, entry.image_id, force=True)
    if nova.clone_format == 1:
        nova.remove("vms", disk)


def test_format_2_stock_destroy_leaves_the_disk_to_librbd(store, nova,
                                                         ceph_conf):
    """Clone format 2 with the pool option: stock Nova removes the disk of
    an instance a snapshot was made of; the chain image keeps working;
    deleting it through Glance leaves nothing, in the pools or trashes."""
    if nova.clone_format == 1:
        # on format 1 the disk keeps a protected user snapshot: stock
        # Nova's remove fails, as the next test shows for Cinder
        _, disk = boot(store, nova)
        made = chain(store, f"vms/{disk}")
        try:
            nova.remove("vms", disk)
            raise AssertionError("a disk with a snapshot was removed")
        except rbd.ImageHasSnapshots:
            pass
        store.delete(location_of(store, made.location))
        nova.remove("vms", disk)  # Nova's next try, or an operator
        return
    base, disk = boot(store, nova)
    made = chain(store, f"vms/{disk}")
    assert nova.snapshots("vms", disk) == []  # no user snapshot left
    nova.remove("vms", disk)  # stock Nova: succeeds
    assert not nova.exists("vms", disk)
    assert [s for _, s in ours_in_trash(ceph_conf, "vms", disk).values()] \
        == ["USER_PARENT"]
    assert read_all(store, made.location).startswith(b"precious data")
    tree = lineage.to_text(lineage.walk(store.ceph.images, "images",
                                        made.glance_id,
                                        store.settings.policy))
    assert f"vms/{disk} (chain source) [in the RBD trash (user_parent)" \
        in tree
    store.delete(location_of(store, made.location))
    assert ours_in_trash(ceph_conf, "vms", disk) == {}
    assert not nova.exists("images", made.glance_id)
    assert nova.exists("images", base)
    assert not [i for i in clean(store) if disk in i.target
                or made.glance_id in i.target]


def test_a_volume_cinder_trashed_is_finished_with_its_chain(store, nova,
                                                           ceph_conf):
    """Cinder moves a volume whose snapshot a chain uses to the RBD trash
    (format 1; format 2 without the pool option).  The store finishes it
    when the chain image is deleted: its snapshot, then the volume."""
    _, volume = boot(store, nova, "volumes")
    made = chain(store, f"volumes/{volume}")
    with nova.ioctx("volumes") as ioctx:
        rbd.RBD().trash_move(ioctx, volume, 0)  # whatever remove would do
    state = store.ceph.images.state("volumes", volume)
    assert state.trash.source == "user"
    plan = [i for i in cleanup.plan(store.ceph, store.settings.policy,
                                    LATER, datetime.timedelta(0))
            if volume in i.target]
    assert [(i.kind, i.action) for i in plan] == [("trashed", "keep")]
    assert "clone" in plan[0].reason
    store.delete(location_of(store, made.location))
    assert ours_in_trash(ceph_conf, "volumes", volume) == {}
    assert not nova.exists("volumes", volume)


def test_cleanup_finishes_a_trashed_volume_whose_chain_went_elsewhere(
        store, nova, operator, ceph_conf):
    """The chain image was removed behind the store's back after Cinder
    trashed the volume: the orphan's snapshot is on a volume in the trash.
    One cleanup finishes both, and says done only then."""
    _, volume = boot(store, nova, "volumes")
    made = chain(store, f"volumes/{volume}")
    assert cinder_delete(nova, "volumes", volume) == (
        "removed" if nova.clone_format == 2 else "trashed")
    with operator.ioctx("images") as ioctx:
        with rbd.Image(ioctx, made.glance_id) as image:
            image.unprotect_snap("snap")
            image.remove_snap("snap")
        rbd.RBD().remove(ioctx, made.glance_id)
    items = clean(store)
    mine = [(i.kind, i.action) for i in items if volume in i.target]
    assert ("orphan-snapshot", "trim") in mine
    assert ours_in_trash(ceph_conf, "volumes", volume) == {}
    intents, links = schema.load_journal(store.ceph.journal.entries("images"))
    assert not [e for e in intents + links if volume in e.source]
    assert not [i for i in clean(store) if volume in i.target]


def test_a_disk_with_a_snapshot_of_somebody_else_is_kept(store, nova,
                                                         ceph_conf):
    """retire never removes a snapshot the store did not make (Cinder's
    backup driver keeps one as the base of the next incremental backup)."""
    from glance_rbd_tracked import core
    from glance_rbd_tracked import lifecycle
    _, disk = boot(store, nova)
    backup = f"backup.{uuid.uuid4()}.snap.1700000000"
    with nova.ioctx("vms") as ioctx, rbd.Image(ioctx, disk) as image:
        image.create_snap(backup)
    decision = lifecycle.retire(store.ceph, "vms", disk,
                                store.settings.policy)
    assert isinstance(decision, core.Retire)
    assert f"snapshot {backup} was not made by this store" in decision.reason
    retired = disk + schema.RETIRED_SUFFIX
    assert nova.snapshots("vms", retired) == [(backup, False)]
    (item,) = [i for i in cleanup.plan(store.ceph, store.settings.policy,
                                       LATER, datetime.timedelta(0))
               if i.target == f"vms/{retired}"]
    assert (item.action, item.reason) == (
        "keep", f"snapshot {backup} was not made by this store")
    with nova.ioctx("vms") as ioctx, rbd.Image(ioctx, retired) as image:
        image.remove_snap(backup)  # its owner is done with it
    clean(store)
    assert not nova.exists("vms", retired)


def test_doctor_checks_and_sets_the_pool_option(store, nova, ceph_conf,
                                                no_chain_policy):
    from glance_rbd_tracked import cli

    def doctor(*args):
        return cli.main(["--ceph-conf", ceph_conf, "doctor", *args])

    key = "rbd_move_parent_to_trash_on_remove"
    subprocess.run(["rbd", "-c", ceph_conf, "config", "pool", "rm",
                    "volumes", key], check=True, timeout=30)
    try:
        assert doctor() == 1  # plan only: nothing set
        assert pool_option(nova, "volumes", key) is None
        assert doctor("--execute") == (1 if nova.clone_format == 1 else 0)
        assert pool_option(nova, "volumes", key) == "true"
    finally:
        subprocess.run(["rbd", "-c", ceph_conf, "config", "pool", "set",
                        "volumes", key, "true"], check=True, timeout=30)


class Recording:
    """The store's image reads, keeping every state read by id."""

    def __init__(self, images):
        self.images, self.by_ids = images, []

    def by_id(self, pool, image_id):
        state = self.images.by_id(pool, image_id)
        self.by_ids.append(state)
        return state

    def __getattr__(self, name):
        return getattr(self.images, name)


def test_cleanup_plans_while_another_worker_removes_images(store, operator):
    """``rbd rm`` (librbd 16.2) parks an image in the RBD trash as
    ``removing`` on its way out: a cleanup planning meanwhile lists it
    there, then reads it half removed, gone, or put back.  That used to
    fail the plan with a bare AssertionError (121 of 757 plans in 15 s);
    such an image is now absent from the plan."""
    import dataclasses
    import threading
    import time

    recording = Recording(store.ceph.images)
    ceph = dataclasses.replace(store.ceph, images=recording)
    stop, removed, planned = threading.Event(), [], []

    def another_worker():
        with operator.ioctx("vms") as ioctx:
            while not stop.is_set():
                name = f"going-{uuid.uuid4()}"
                rbd.RBD().create(ioctx, name, 64 << 20, old_format=False)
                with rbd.Image(ioctx, name) as image:
                    image.write(b"x" * 4096, 0)  # an object to remove
                    image.metadata_set(*schema.dump(schema.RetiredRecord(
                        image.id(), name, "2026-01-01T00:00:00Z", "test")))
                rbd.RBD().remove(ioctx, name)
                removed.append(name)

    worker = threading.Thread(target=another_worker, daemon=True)
    worker.start()
    plans = 0
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and len(
                [s for s in recording.by_ids if s.removing]) < 3:
            items = cleanup.plan(ceph, store.settings.policy, LATER,
                                 datetime.timedelta(0))
            plans += 1
            planned += [i for i in items if "going-" in i.target]
    finally:
        stop.set()
        worker.join(30)
    halfway = [s for s in recording.by_ids if s.removing]
    assert len(halfway) >= 3, f"no race in {plans} plans, {len(removed)} rm"
    assert planned == []
    assert not [n for n in operator.names("vms") if n.startswith("going-")]
