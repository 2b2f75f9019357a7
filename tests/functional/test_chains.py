"""Instance snapshots as clone chains, on the real cluster."""

import datetime
import uuid

from glance_store import exceptions
import pytest
import rbd

from glance_rbd_tracked import chains
from glance_rbd_tracked import cleanup
from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import schema
from tests.functional.conftest import location_of
from tests.functional.conftest import read_all
from tests.functional.conftest import upload

MiB = 1 << 20
POLICY = core.Policy(pool="images")
NOW = datetime.datetime.now(datetime.UTC)


def boot(store, nova, data=b"base" * 1024):
    """Upload a Glance image and boot an instance from it as Nova does."""
    image_id = str(uuid.uuid4())
    upload(store, image_id, data)
    disk = f"{uuid.uuid4()}_disk"
    nova.clone("images", image_id, "snap", "vms", disk)
    return image_id, disk


def write(nova, pool, name, data, offset=0):
    with nova.ioctx(pool) as ioctx, rbd.Image(ioctx, name) as image:
        image.write(data, offset)


def snap_of(store, source, **kwargs):
    image_id = str(uuid.uuid4())
    (result,) = chains.snapshot(store.ceph,
                                [chains.Request(source, image_id)],
                                store.settings.policy, **kwargs)
    return result


def journal(store):
    return schema.load_journal(store.ceph.journal.entries("images"))


def test_chain_snapshot_clones_without_copying(store, nova):
    _, disk = boot(store, nova)
    write(nova, "vms", disk, b"instance data")
    result = snap_of(store, f"vms/{disk}")

    assert result.path == "chain" and result.fallbacks == ()
    assert result.location == (f"rbd://{store.ceph.fsid()}/images/"
                               f"{result.glance_id}/snap")
    assert result.depth == 2  # clone of a disk that is a clone of the image
    clone = store.ceph.images.state("images", result.glance_id)
    (snap1,) = store.ceph.images.state("vms", disk).snaps
    assert snap1.names == {f"rbd_tracked-{result.glance_id}"} | {snap1.name}
    assert clone.parent == f"vms/{disk}@{snap1.name}"
    if nova.clone_format == 2:
        # moved to the trash namespace: no user snapshot left on the disk
        assert (snap1.namespace, snap1.protected) == ("trash", False)
        assert snap1.children == (f"images/{result.glance_id}",)
    else:
        assert (snap1.namespace, snap1.protected) == ("user", True)
        assert snap1.name == f"rbd_tracked-{result.glance_id}"
    assert clone.records.owner.kind == schema.Kind.CHAIN
    assert [s.name for s in clone.snaps] == ["snap"]
    source = store.ceph.images.state("vms", disk)
    assert source.records.snap(f"rbd_tracked-{result.glance_id}").clone == \
        f"images/{result.glance_id}"
    with nova.ioctx("images") as ioctx, \
            rbd.Image(ioctx, result.glance_id, read_only=True) as image:
        assert image.features() & rbd.RBD_FEATURE_DEEP_FLATTEN
    # later writes to the disk do not change the snapshot image
    write(nova, "vms", disk, b"changed later")
    data = read_all(store, result.location)
    assert data.startswith(b"instance data")
    intents, links = journal(store)
    assert [link.target for link in links
            if link.target.endswith(result.glance_id)]
    assert not [i for i in intents if i.target.endswith(result.glance_id)]


def test_deleting_the_snapshot_image_removes_3_2_1(store, nova):
    _, disk = boot(store, nova)
    result = snap_of(store, f"vms/{disk}")
    store.delete(location_of(store, result.location))
    assert not nova.exists("images", result.glance_id)
    source = store.ceph.images.state("vms", disk)
    assert source.snaps == () and source.records.snaps == ()
    intents, links = journal(store)
    assert not [x for x in intents + links
                if x.target.endswith(result.glance_id)]


def test_retired_disk_is_reclaimed_with_its_last_snapshot_image(store, nova):
    base_id, disk = boot(store, nova)
    first = snap_of(store, f"vms/{disk}")
    second = snap_of(store, f"vms/{disk}")
    decision = lifecycle.retire(store.ceph, "vms", disk,
                                store.settings.policy)
    assert isinstance(decision, core.Retire)
    retired = disk + schema.RETIRED_SUFFIX
    assert nova.exists("vms", retired) and not nova.exists("vms", disk)
    state = store.ceph.images.state("vms", retired)
    assert state.records.retired.original_name == disk

    store.delete(location_of(store, first.location))
    assert nova.exists("vms", retired)  # the second image still needs it
    assert read_all(store, second.location)
    store.delete(location_of(store, second.location))
    assert not nova.exists("vms", retired)
    # the base image was not retired: it stays
    assert nova.exists("images", base_id)


def test_cascade_walks_up_to_a_retired_base_image(store, nova):
    base_id, disk = boot(store, nova)
    result = snap_of(store, f"vms/{disk}")
    fsid = store.ceph.fsid()
    base = location_of(store, f"rbd://{fsid}/images/{base_id}/snap")
    store.delete(base)  # the disk depends on it: retired, 204 for Glance
    lifecycle.retire(store.ceph, "vms", disk, store.settings.policy)
    assert nova.exists("images", base_id + schema.RETIRED_SUFFIX)
    store.delete(location_of(store, result.location))
    assert not nova.exists("vms", disk + schema.RETIRED_SUFFIX)
    assert not nova.exists("images", base_id + schema.RETIRED_SUFFIX)


def test_retire_without_snapshots_removes_at_once(store, nova):
    _, disk = boot(store, nova)
    assert isinstance(lifecycle.retire(store.ceph, "vms", disk,
                                       store.settings.policy), core.Remove)
    assert not nova.exists("vms", disk)


def test_instance_booted_from_snapshot_keeps_the_chain(store, nova):
    _, disk = boot(store, nova)
    result = snap_of(store, f"vms/{disk}")
    second_disk = f"{uuid.uuid4()}_disk"
    nova.clone("images", result.glance_id, "snap", "vms", second_disk)
    store.delete(location_of(store, result.location))
    retired = result.glance_id + schema.RETIRED_SUFFIX
    assert nova.exists("images", retired)  # (2) kept for the new instance
    lifecycle.retire(store.ceph, "vms", second_disk, store.settings.policy)
    assert not nova.exists("images", retired)
    assert store.ceph.images.state("vms", disk).snaps == ()
    # the retired chain image's link went with it: cleanup has nothing to do
    intents, links = journal(store)
    assert not [e for e in intents + links if result.glance_id in e.target]


def test_several_disks_at_once(store, nova):
    disks = [boot(store, nova)[1] for _ in range(3)]
    requests = [chains.Request(f"vms/{d}", str(uuid.uuid4())) for d in disks]
    results = chains.snapshot(store.ceph, requests, store.settings.policy)
    assert [r.path for r in results] == ["chain"] * 3
    for r in results:
        store.delete(location_of(store, r.location))


def test_source_that_cannot_be_cloned_falls_back_to_copy(store, nova):
    disk = f"{uuid.uuid4()}_disk"
    with nova.ioctx("vms") as ioctx:
        rbd.RBD().create(ioctx, disk, 4 * MiB, old_format=False, features=0)
    write(nova, "vms", disk, b"flat disk without layering")
    result = snap_of(store, f"vms/{disk}")
    assert result.path == "copy"
    assert result.fallbacks and result.fallbacks[0].startswith("chain:")
    assert read_all(store, result.location).startswith(b"flat disk")
    state = store.ceph.images.state("images", result.glance_id)
    assert state.parent is None and state.records.owner.kind == "copy"
    assert store.ceph.images.state("vms", disk).snaps == ()  # (1) not needed
    store.delete(location_of(store, result.location))
    assert not nova.exists("images", result.glance_id)


def test_stream_path(store, nova):
    _, disk = boot(store, nova, data=b"s" * (3 * MiB))
    result = snap_of(store, f"vms/{disk}", paths=("stream",))
    assert result.path == "stream"
    assert read_all(store, result.location) == b"s" * (3 * MiB) + bytes(0)
    store.delete(location_of(store, result.location))


@pytest.mark.parametrize("source, message", [
    ("vms/no-such-disk", "no such image"),
    ("images/whatever", "not one the store makes chains from"),
    ("nopool", "pool/image"),
])
def test_bad_sources_are_refused(store, source, message):
    with pytest.raises(errors.TrackedError, match=message):
        snap_of(store, source)


def test_cleanup_finds_orphans_and_retired_parents(store, nova, operator):
    _, disk = boot(store, nova)
    orphaned = snap_of(store, f"vms/{disk}")
    kept = snap_of(store, f"vms/{disk}")
    # something other than the store removes the first chain's clone
    with operator.ioctx("images") as ioctx:
        with rbd.Image(ioctx, orphaned.glance_id) as image:
            image.unprotect_snap("snap")
            image.remove_snap("snap")
        rbd.RBD().remove(ioctx, orphaned.glance_id)
    lifecycle.retire(store.ceph, "vms", disk, store.settings.policy)
    retired = disk + schema.RETIRED_SUFFIX
    before = store.ceph.images.state("vms", retired)
    assert len(before.records.snaps) == 2

    items = cleanup.plan(store.ceph, store.settings.policy, NOW,
                        datetime.timedelta(0))
    mine = [i for i in items if disk in i.target]
    # the retired disk is released along with its orphaned snapshot
    assert {(i.kind, i.action) for i in mine} == {("orphan-snapshot", "trim")}
    # a plan changes nothing
    assert store.ceph.images.state("vms", retired) == before
    assert cleanup.execute(store.ceph, mine, store.settings.policy) == []
    after = store.ceph.images.state("vms", retired)
    assert [s.original or s.name for s in after.snaps] == [
        f"rbd_tracked-{kept.glance_id}"]
    assert [r.snapshot for r in after.records.snaps] == [
        f"rbd_tracked-{kept.glance_id}"]
    again = cleanup.plan(store.ceph, store.settings.policy, NOW,
                        datetime.timedelta(0))
    assert {(i.kind, i.action) for i in again if disk in i.target} == {
        ("retired", "keep")}

    store.delete(location_of(store, kept.location))
    assert not nova.exists("vms", retired)


def test_corrupt_metadata_stops_the_store(store, nova, operator):
    _, disk = boot(store, nova)
    with operator.ioctx("vms") as ioctx, rbd.Image(ioctx, disk) as image:
        image.metadata_set(schema.RETIRED_KEY, "{not json")
    with pytest.raises(errors.CorruptMetadata):
        lifecycle.retire(store.ceph, "vms", disk, store.settings.policy)
    assert nova.exists("vms", disk)
    with pytest.raises(errors.CorruptMetadata):
        snap_of(store, f"vms/{disk}")


def test_snapshot_into_a_taken_name_touches_nothing(store, nova):
    _, disk = boot(store, nova)
    first = snap_of(store, f"vms/{disk}")
    # the same pair again: refused, the first chain intact
    with pytest.raises(errors.AlreadyExists):
        chains.snapshot(store.ceph,
                        [chains.Request(f"vms/{disk}", first.glance_id)],
                        store.settings.policy)
    assert read_all(store, first.location)
    # an existing Glance image's id with another disk: refused, untouched
    other_id, _other_disk = boot(store, nova, data=b"other" * 1000)
    with pytest.raises(errors.AlreadyExists):
        chains.snapshot(store.ceph,
                        [chains.Request(f"vms/{disk}", other_id)],
                        store.settings.policy)
    fsid = store.ceph.fsid()
    assert read_all(store, f"rbd://{fsid}/images/{other_id}/snap") == \
        b"other" * 1000
    assert {s.original or s.name
            for s in store.ceph.images.state("vms", disk).snaps} == {
        f"rbd_tracked-{first.glance_id}"}
    store.delete(location_of(store, first.location))


def test_reads_of_another_clusters_location_are_not_found(store):
    image_id = str(uuid.uuid4())
    uri, *_ = upload(store, image_id, b"here" * 100)
    elsewhere = uri.replace(store.ceph.fsid(), str(uuid.uuid4()))
    with pytest.raises(exceptions.NotFound, match="not in this store"):
        store.get(location_of(store, elsewhere))
    with pytest.raises(exceptions.NotFound):
        store.get_size(location_of(store, elsewhere))
    store.delete(location_of(store, uri))


def test_several_disks_are_all_or_nothing(store, nova):
    _, good = boot(store, nova)
    good_id = str(uuid.uuid4())
    with pytest.raises(errors.NotFound):
        chains.snapshot(store.ceph,
                        [chains.Request(f"vms/{good}", good_id),
                         chains.Request("vms/no-such-disk", str(uuid.uuid4()))],
                        store.settings.policy)
    assert not nova.exists("images", good_id)
    assert store.ceph.images.state("vms", good).snaps == ()


def test_source_in_another_cluster_streams_through_the_host(
        store, second_cluster):
    import os

    from glance_rbd_tracked import ceph as ceph_mod
    from tests.functional.conftest import Side
    conf = os.path.join(second_cluster["CEPH_DEV_DIR"], "ceph.conf")
    other = ceph_mod.connect(conf)
    side = Side(conf, 2)
    try:
        disk = f"{uuid.uuid4()}_disk"
        side.create("vms", disk, size=2 * MiB)
        write(side, "vms", disk, b"in the other cluster")
        image_id = str(uuid.uuid4())
        (made,) = chains.snapshot(store.ceph,
                                  [chains.Request(f"vms/{disk}", image_id)],
                                  store.settings.policy, source=other)
        assert made.path == "stream"
        assert [f.split(":")[0] for f in made.fallbacks] == ["chain", "copy"]
        assert other.fsid() in made.fallbacks[0]
        assert made.location.startswith(f"rbd://{store.ceph.fsid()}/")
        data = read_all(store, made.location)
        assert data.startswith(b"in the other cluster")
        assert len(data) == 2 * MiB
        # the temporary source snapshot is gone, the source untouched
        source = other.images.state("vms", disk)
        assert source.snaps == () and source.records.snaps == ()
        assert not store.ceph.images.list_images("vms").count(disk)
        store.delete(location_of(store, made.location))
    finally:
        other.close()
        side.close()
