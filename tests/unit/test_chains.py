"""Chain snapshots, their fall-backs and roll-backs, on the in-memory
cluster (the same flows run against real Ceph in tests/functional)."""

import copy
import datetime

import pytest

from glance_rbd_tracked import chains
from glance_rbd_tracked import cleanup
from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import schema
from tests.fakes import FakeCeph
from tests.fakes import World

POLICY = core.Policy(pool="images")
BASE = "5c1f0b6e-3a52-4c41-9d1e-0b7f64c0a1d2"
SNAP_ID = "7e0a4a9c-2f61-4d8b-8a55-1c3e9f5b2d44"
LATER = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


@pytest.fixture(params=[1, 2], ids=["clone-v1", "clone-v2"])
def fake(request):
    fake = FakeCeph(World(clone_format=request.param))
    fake.world.upload(BASE, b"base image")
    fake.world.clone(f"images/{BASE}@snap", "vms", "disk")
    return fake


def snap(fake, source="vms/disk", image_id=SNAP_ID, **kwargs):
    (result,) = chains.snapshot(fake, [chains.Request(source, image_id)],
                                POLICY, **kwargs)
    return result


def links(fake):
    return schema.load_journal(fake.journal.entries("images"))[1]


def clean(fake):
    items = cleanup.plan(fake, POLICY, LATER, datetime.timedelta(0))
    assert cleanup.execute(fake, items, POLICY) == []


def test_a_chain_is_a_snapshot_a_clone_and_its_snapshot(fake):
    result = snap(fake)
    assert (result.path, result.fallbacks, result.depth) == ("chain", (), 2)
    assert result.location == f"rbd://{fake.fsid()}/images/{SNAP_ID}/snap"
    clone = fake.images.state("images", SNAP_ID)
    assert clone.records.owner.kind is schema.Kind.CHAIN
    assert [s.name for s in clone.snaps] == ["snap"]
    source = fake.images.state("vms", "disk")
    (snap1,) = source.snaps
    assert clone.parent == f"vms/disk@{snap1.name}"
    assert source.snap(f"rbd_tracked-{SNAP_ID}") == snap1
    assert source.records.snap(f"rbd_tracked-{SNAP_ID}").clone == \
        f"images/{SNAP_ID}"
    if fake.world.clone_format == 2:  # no user snapshot left on the disk
        assert (snap1.namespace, snap1.protected) == ("trash", False)
    else:
        assert (snap1.namespace, snap1.protected) == ("user", True)
    assert [link.target for link in links(fake)] == [f"images/{SNAP_ID}"]
    assert not schema.load_journal(fake.journal.entries("images"))[0]


@pytest.mark.parametrize("failing", [
    ("set_records",), ("snapshot",), ("clone", "copy", "write_new"),
    ("seal", "seal", "write"),
])
def test_a_failure_at_any_step_leaves_nothing(fake, failing):
    for method in failing:
        fake.world.fail(method, errors.ClusterError(f"{method} failed"))
    with pytest.raises(errors.ClusterError):
        snap(fake)
    assert not fake.world.exists("images", SNAP_ID)
    source = fake.images.state("vms", "disk")
    assert source.snaps == () and source.records.snaps == ()
    assert fake.journal.entries("images") == {}


@pytest.mark.parametrize("step", chains.STEPS)
def test_a_kill_at_any_step_is_rolled_back_by_cleanup(fake, step):
    """The cluster as a SIGKILL at ``step`` would leave it."""
    frozen = []

    def kill(name):
        if name == step:
            frozen.append(copy.deepcopy(fake.world))

    snap(fake, on_step=kill)
    if not frozen:  # a format-1 source snapshot stays where it is
        assert (step, fake.world.clone_format) == ("hop", 1)
        return
    killed = FakeCeph(frozen[0])
    clean(killed)
    assert not killed.world.exists("images", SNAP_ID)
    source = killed.images.state("vms", "disk")
    assert source.snaps == () and source.records.snaps == ()
    assert killed.journal.entries("images") == {}
    assert killed.world.exists("images", BASE)


def test_a_target_cloned_before_the_roll_back_is_kept_as_a_chain(fake):
    frozen = []
    snap(fake, on_step=lambda name: name == "done" and frozen.append(
        copy.deepcopy(fake.world)))
    killed = FakeCeph(frozen[0])
    killed.world.clone(f"images/{SNAP_ID}@snap", "vms", "booted")
    clean(killed)
    assert killed.world.exists("images", SNAP_ID)
    assert [link.target for link in links(killed)] == [f"images/{SNAP_ID}"]


def test_a_target_cloned_during_the_roll_back_is_kept_as_a_chain(fake):
    """Cloned between the roll-back's read and its removal: the adapter's
    re-check stops the removal, the roll-back decides again and keeps the
    chain (its link recorded, its source not released)."""
    frozen = []
    snap(fake, on_step=lambda name: name == "done" and frozen.append(
        copy.deepcopy(fake.world)))
    killed = FakeCeph(frozen[0])
    killed.world.before("apply", lambda *args: killed.world.clone(
        f"images/{SNAP_ID}@snap", "vms", "booted"))
    (intent,) = schema.load_journal(killed.journal.entries("images"))[0]
    assert chains.rollback(killed, intent, POLICY) == "kept: already cloned"
    assert killed.world.exists("images", SNAP_ID)
    assert [link.target for link in links(killed)] == [f"images/{SNAP_ID}"]
    source = killed.images.state("vms", "disk")
    assert [r.snapshot for r in source.records.snaps] == [
        f"rbd_tracked-{SNAP_ID}"]


def test_a_target_somebody_else_made_is_left_alone(fake):
    intent = schema.Intent(op=schema.Op.CHAIN, target=f"images/{SNAP_ID}",
                           source="vms/disk",
                           snapshot=f"rbd_tracked-{SNAP_ID}",
                           started="2026-01-01T00:00:00Z")
    fake.journal.update("images", put={intent.key: schema.to_json(intent)})
    fake.world.upload(SNAP_ID, b"an upload of the same id")
    assert chains.rollback(fake, intent, POLICY) == "rolled back"
    assert fake.world.image("images", SNAP_ID).data == \
        bytearray(b"an upload of the same id")
    assert fake.journal.entries("images") == {}


def test_a_clone_that_fails_falls_back_to_a_copy(fake):
    fake.world.fail("clone", errors.ClusterError("no layering"))
    result = snap(fake)
    assert result.path == "copy"
    assert result.fallbacks == ("chain: no layering",)
    copied = fake.images.state("images", SNAP_ID)
    assert copied.parent is None and copied.records.owner.kind == "copy"
    assert fake.images.state("vms", "disk").snaps == ()  # (1) released
    assert links(fake) == []


def test_stream_copies_through_the_host(fake):
    result = snap(fake, paths=("stream",))
    assert result.path == "stream"
    assert bytes(fake.world.image("images", SNAP_ID).data) == b"base image"


def test_a_full_cluster_is_not_retried_by_another_path(fake):
    fake.world.fail("clone", errors.NoSpace("the cluster is full"))
    with pytest.raises(errors.NoSpace):
        snap(fake)
    assert [c for c, _ in fake.world.calls if c in ("copy", "write_new")] == []
    assert fake.images.state("vms", "disk").snaps == ()


def test_several_disks_are_all_or_nothing(fake):
    with pytest.raises(errors.NotFound):
        chains.snapshot(fake, [chains.Request("vms/disk", SNAP_ID),
                               chains.Request("vms/nodisk", "other")], POLICY)
    assert not fake.world.exists("images", SNAP_ID)
    assert fake.images.state("vms", "disk").snaps == ()


@pytest.mark.parametrize("request_, why", [
    (chains.Request("images/" + BASE, SNAP_ID), "not one the store makes"),
    (chains.Request("vms/nodisk", SNAP_ID), "no such image"),
    (chains.Request("vms/disk", BASE), "exists already"),
])
def test_refusals_are_known_before_acting(fake, request_, why):
    assert why in chains.refusal(fake, request_, POLICY)
    with pytest.raises(errors.TrackedError, match=why):
        chains.snapshot(fake, [request_], POLICY)
    assert fake.images.state("vms", "disk").snaps == ()


def test_deleting_the_image_removes_3_2_1_and_reclaims_a_retired_disk(fake):
    result = snap(fake)
    assert isinstance(lifecycle.retire(fake, "vms", "disk", POLICY),
                      core.Retire)
    lifecycle.delete(fake, "images", result.glance_id, POLICY)
    assert not fake.world.exists("images", SNAP_ID)
    assert not fake.world.exists("vms", "disk_to_be_deleted")
    assert fake.world.exists("images", BASE)
    assert fake.journal.entries("images") == {}


def test_a_trashed_source_snapshot_librbd_left_behind_is_released():
    """librbd removes a trash-namespace snapshot with its last clone, but
    not when the remover may not write the parent's pool: the store then
    removes it by id when it releases the source."""
    fake = FakeCeph(World(clone_format=2))
    fake.world.upload(BASE)
    fake.world.clone(f"images/{BASE}@snap", "vms", "disk")
    made = snap(fake)
    fake.world.parent_writes_fail.add("vms")
    lifecycle.delete(fake, "images", made.glance_id, POLICY)
    source = fake.images.state("vms", "disk")
    assert source.snaps == () and source.records.snaps == ()
    assert fake.journal.entries("images") == {}


def test_deleting_a_chain_image_something_flattened_releases_its_source(fake):
    """Cinder's stock delete flattens a chain image made of a volume;
    deleting the image later still releases the source snapshot, its record
    and the chain's link."""
    made = snap(fake)
    fake.changes.flatten(fake.images.state("images", made.glance_id))
    assert fake.images.state("images", made.glance_id).parent is None
    lifecycle.delete(fake, "images", made.glance_id, POLICY)
    source = fake.images.state("vms", "disk")
    assert source.snaps == () and source.records.snaps == ()
    assert fake.journal.entries("images") == {}


def test_flatten_forgets_the_link_only_once_the_source_is_released(fake):
    made = snap(fake)
    deep = core.Policy(pool="images", max_clone_depth=0)
    (item,) = cleanup.plan_flatten(fake, deep)
    fake.world.fail("apply", errors.ClusterError("no answer"))  # the release
    with pytest.raises(errors.ClusterError):
        cleanup.flatten(fake, item, deep)
    assert fake.images.state("images", made.glance_id).parent is None
    assert [link.target for link in links(fake)] == [item.target]
    cleanup.flatten(fake, item, deep)  # again: only the release is left
    assert [c for c, _ in fake.world.calls if c == "flatten"] == ["flatten"]
    source = fake.images.state("vms", "disk")
    assert source.snaps == () and source.records.snaps == ()
    assert links(fake) == []


def test_a_cluster_that_does_not_answer_is_not_waited_for_again(fake):
    """The clone timed out: no other path is tried and nothing is rolled
    back now (each step would wait the timeout out again); the error is
    the clone's, and cleanup rolls the chain back later."""
    fake.world.fail("clone", errors.ClusterError(
        "cloning: the cluster did not answer within 3 s", timed_out=True))
    with pytest.raises(errors.ClusterError, match=r"^cloning: the cluster"):
        snap(fake)
    assert [c for c, _ in fake.world.calls
            if c in ("copy", "write_new", "apply")] == []
    (intent,) = schema.load_journal(fake.journal.entries("images"))[0]
    assert intent.op == "chain"
    clean(fake)
    assert fake.images.state("vms", "disk").snaps == ()
    assert fake.journal.entries("images") == {}
