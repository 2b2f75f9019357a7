"""Cleanup on the in-memory cluster: what it finds, and that it settles."""

import contextlib
import datetime

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import pytest

from glance_rbd_tracked import chains
from glance_rbd_tracked import cleanup
from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import plans
from glance_rbd_tracked import schema
from glance_rbd_tracked.plans import Action
from tests.fakes import FakeCeph
from tests.fakes import World
from tests.unit.test_plans import surveys as plan_surveys

POLICY = core.Policy(pool="images")
LATER = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
GLANCE_IDS = [f"{n:08x}-0000-4000-8000-000000000000" for n in range(2)]


def run_cleanup(fake):
    items = cleanup.plan(fake, POLICY, LATER, datetime.timedelta(0))
    return items, cleanup.execute(fake, items, POLICY)


def picture(fake):
    """Everything cleanup could change, comparable."""
    return ({key: (image.name, sorted(s.name for s in image.snaps.values()),
                   sorted(image.metadata), image.parent, image.trash)
             for key, image in fake.world.all.items()},
            fake.journal.entries("images"))


def test_an_orphaned_chain_snapshot_is_released_with_its_retired_disk():
    fake = FakeCeph()
    fake.world.upload(GLANCE_IDS[0])
    fake.world.clone(f"images/{GLANCE_IDS[0]}@snap", "vms", "disk")
    (made,) = chains.snapshot(fake, [chains.Request("vms/disk",
                                                    GLANCE_IDS[1])], POLICY)
    lifecycle.retire(fake, "vms", "disk", POLICY)
    # somebody removes the chain image behind the store's back
    fake.world.drop(fake.world.image("images", made.glance_id))

    items, failures = run_cleanup(fake)
    assert [(i.kind, i.action) for i in items] == [("orphan-snapshot",
                                                     "trim")]
    assert failures == []
    assert not fake.world.exists("vms", "disk_to_be_deleted")
    assert fake.journal.entries("images") == {}
    assert run_cleanup(fake) == ([], [])


def test_a_failing_item_is_reported_and_the_others_are_done():
    fake = FakeCeph()
    for name in ("a_to_be_deleted", "b_to_be_deleted"):
        image = fake.world.create("vms", name)
        image.metadata.__setitem__(*schema.dump(schema.RetiredRecord(
            image.id, name[:1], "2026-01-01T00:00:00Z", "clones")))
    fake.world.fail("apply", errors.ClusterError("osd down"))
    items = cleanup.plan(fake, POLICY, LATER, datetime.timedelta(0))
    assert [i.action for i in items] == [Action.REMOVE, Action.REMOVE]
    failures = cleanup.execute(fake, items, POLICY, workers=1)
    assert [(item.target, error) for item, error in failures] == [
        ("vms/a_to_be_deleted", "osd down")]
    assert list(fake.world.names("vms")) == ["a_to_be_deleted"]


# -- a property: whatever Glance, Nova and operators did, one cleanup settles
#    it, a second changes nothing, and nothing that is cloned goes ----------

operations = st.lists(st.tuples(
    st.sampled_from(["boot", "snapshot", "delete-base", "delete-snapshot",
                     "retire", "remove-snapshot-image", "nova-destroy",
                     "cinder-delete", "backup-snapshot",
                     "boot-from-snapshot"]),
    st.integers(0, 2)), max_size=16)
#: clone format, and whether the disks' pool has
#: rbd_move_parent_to_trash_on_remove
clusters = st.sampled_from([(1, False), (2, False), (2, True)])


class Cloud:
    """Glance, Nova and an operator acting on the in-memory cluster.  Each
    action does what it needs first (a snapshot boots the instance if need
    be).  Names are never reused, as Glance image ids and Nova instances
    are not."""

    def __init__(self, clone_format=2, parent_to_trash=False):
        self.fake = FakeCeph(World(clone_format=clone_format))
        if parent_to_trash:
            self.fake.world.move_parent_to_trash.add("vms")
        self.serial = 0
        self.bases, self.disks, self.snaps = {}, {}, {}

    def fresh(self, prefix):
        self.serial += 1
        return f"{prefix}{self.serial:04x}-0000-4000-8000-000000000000"

    def act(self, op, n):
        world = self.fake.world
        try:
            if op in ("boot", "snapshot") and n not in self.disks:
                if n not in self.bases:
                    self.bases[n] = self.fresh("b")
                    world.upload(self.bases[n])
                self.disks[n] = self.fresh("disk-")
                world.clone(f"images/{self.bases[n]}@snap", "vms",
                            self.disks[n])
            if op == "snapshot":
                made = self.fresh("s")
                chains.snapshot(self.fake, [chains.Request(
                    f"vms/{self.disks[n]}", made)], POLICY)
                self.snaps.setdefault(n, []).append(made)
            elif op == "delete-base" and n in self.bases:
                lifecycle.delete(self.fake, "images", self.bases.pop(n),
                                 POLICY)
            elif op == "delete-snapshot" and self.snaps.get(n):
                lifecycle.delete(self.fake, "images", self.snaps[n].pop(0),
                                 POLICY)
            elif op == "retire" and n in self.disks:
                lifecycle.retire(self.fake, "vms", self.disks.pop(n), POLICY)
            elif op == "nova-destroy" and n in self.disks:
                # stock Nova: remove, give up quietly if that fails
                with contextlib.suppress(errors.InUse):
                    world.remove("vms", self.disks.pop(n))
            elif op == "cinder-delete" and n in self.disks:
                # stock Cinder: remove, or move to the RBD trash
                disk = self.disks.pop(n)
                try:
                    world.remove("vms", disk)
                except errors.InUse:
                    world.trash_move("vms", disk)
            elif op == "boot-from-snapshot" and self.snaps.get(n):
                # a new instance from the snapshot image: its disk is a
                # clone of the chain image (never destroyed here)
                world.clone(f"images/{self.snaps[n][-1]}@snap", "vms",
                            self.fresh("booted-"))
            elif op == "backup-snapshot" and n in self.disks:
                # Cinder's backup driver keeps a snapshot of its own
                world.snapshot("vms", self.disks[n], self.fresh("backup."))
            elif op == "remove-snapshot-image" and self.snaps.get(n):
                name = self.snaps[n][0]
                image = world.image("images", name)
                if not world.children("images", image, "snap"):
                    world.drop(image)
                    self.snaps[n].pop(0)
        except errors.NotFound:
            pass


@settings(max_examples=300, deadline=None)
@given(clusters, operations)
def test_cleanup_settles_in_one_pass_and_never_breaks_a_clone(cluster, ops):
    cloud = Cloud(*cluster)
    for op, n in ops:
        cloud.act(op, n)
    fake = cloud.fake
    _, failures = run_cleanup(fake)
    assert failures == []
    settled = picture(fake)
    items, failures = run_cleanup(fake)
    assert failures == [] and picture(fake) == settled
    assert not [i for i in items if i.actionable]
    world = fake.world
    for (pool, _), image in world.all.items():
        if image.parent is not None:  # every parent is still there
            ppool, pid, snap_id = image.parent
            assert snap_id in world.all[ppool, pid].snaps
        if image.name.endswith(schema.RETIRED_SUFFIX) or image.trash:
            # nothing left behind: a clone, or a snapshot that is not the
            # store's, keeps it
            state = fake.images.by_id(pool, image.id)
            assert core.dependants(state, core.owned_snapshots(
                state, POLICY) or frozenset())
        for snap in image.snaps.values():  # no snapshot of ours is idle
            if snap.name.startswith("backup.") or pool == "images":
                continue
            assert world.children(pool, image, snap.id), (image, snap)


def test_a_corrupt_record_is_reported_and_everything_else_is_done():
    fake = FakeCeph()
    for name in ("a_to_be_deleted", "b_to_be_deleted", "c_to_be_deleted"):
        image = fake.world.create("vms", name)
        image.metadata.__setitem__(*schema.dump(schema.RetiredRecord(
            image.id, name[:1], "2026-01-01T00:00:00Z", "clones")))
    fake.world.image("vms", "b_to_be_deleted").metadata[
        schema.RETIRED_KEY] = "{not json"
    fake.journal.update("images", put={"intent/chain/images/x": "{oops",
                                       "stray": "{}"})
    items = cleanup.plan(fake, POLICY, LATER, datetime.timedelta(0))
    corrupt = [(i.target, i.reason) for i in items if i.failed]
    assert corrupt == [
        ("intent/chain/images/x", "metadata 'intent/chain/images/x' is not "
         "JSON: Expecting property name enclosed in double quotes: line 1 "
         "column 2 (char 1)"),
        ("stray", "unknown journal entry 'stray'"),
        ("vms/b_to_be_deleted", "vms/b_to_be_deleted: metadata "
         "'rbd_tracked.retired' is not JSON: Expecting property name "
         "enclosed in double quotes: line 1 column 2 (char 1)")]
    assert cleanup.execute(fake, items, POLICY) == []
    assert list(fake.world.names("vms")) == ["b_to_be_deleted"]


def trashed_disk(fake):
    """A disk Cinder moved to the RBD trash whose chain image is gone: only
    the store's snapshot keeps it there, so cleanup removes it."""
    fake.world.upload(GLANCE_IDS[0])
    fake.world.clone(f"images/{GLANCE_IDS[0]}@snap", "vms", "disk")
    (made,) = chains.snapshot(fake, [chains.Request("vms/disk",
                                                    GLANCE_IDS[1])], POLICY)
    fake.world.drop(fake.world.image("images", made.glance_id))
    fake.journal.update("images", remove=list(fake.journal.entries("images")))
    fake.world.trash_move("vms", "disk")
    (image,) = fake.world.trashed("vms")
    return image


def test_an_image_that_leaves_the_trash_between_list_and_read_is_absent():
    """Another worker restores (or ``rbd rm`` parks and then restores) an
    image the survey listed in the RBD trash, before its state is read:
    the plan leaves it out instead of failing an assertion."""
    fake = FakeCeph()
    image = trashed_disk(fake)
    assert [(i.kind, i.action) for i in cleanup.plan(
        fake, POLICY, LATER, datetime.timedelta(0))] == [("trashed",
                                                          "remove")]
    fake.world.before("state", lambda pool, image_id:
                      fake.world.trash_restore(pool, image_id))
    assert cleanup.plan(fake, POLICY, LATER, datetime.timedelta(0)) == []
    assert image.trash is None and fake.world.exists("vms", "disk")


def test_an_image_that_leaves_the_trash_before_it_is_acted_on_is_kept():
    fake = FakeCeph()
    image = trashed_disk(fake)
    items = cleanup.plan(fake, POLICY, LATER, datetime.timedelta(0))
    fake.world.trash_restore("vms", image.id)
    before = picture(fake)
    assert cleanup.execute(fake, items, POLICY) == []
    assert picture(fake) == before


# -- the plan is what runs: one handler per (kind, action) ---------------------

Kind = plans.Kind


@pytest.mark.parametrize("kind, action, handler", [
    (Kind.INTENT, Action.ROLL_BACK, cleanup._roll_back),
    (Kind.INTENT, Action.FINISH_RETIRE, cleanup._finish_retire),
    (Kind.INTENT, Action.FINISH_DELETE, cleanup._finish_delete),
    (Kind.INTENT, Action.FINISH_UPLOAD, cleanup._finish_upload),
    (Kind.ORPHAN_SNAPSHOT, Action.TRIM, cleanup._release_orphan),
    (Kind.RETIRED, Action.REMOVE, cleanup._reclaim_retired),
    (Kind.RETIRED, Action.TRIM, cleanup._reclaim_retired),
    (Kind.TRASHED, Action.REMOVE, cleanup._reclaim_trashed),
    (Kind.TRASHED, Action.TRIM, cleanup._reclaim_trashed),
    # what no plan names has no handler
    (Kind.INTENT, Action.TRIM, None),
    (Kind.RETIRED, Action.FINISH_DELETE, None),
    (Kind.ORPHAN_SNAPSHOT, Action.REMOVE, None),
    (Kind.CORRUPT, Action.SKIP, None),
    (Kind.RETIRED, Action.KEEP, None),
])
def test_handlers(kind, action, handler):
    assert cleanup.HANDLERS.get((kind, action)) is handler


@given(plan_surveys)
@settings(max_examples=50)
def test_every_item_a_plan_acts_on_has_its_handler(surveyed):
    for item in plans.plan_cleanup(surveyed, LATER, datetime.timedelta(0)):
        if item.actionable:
            assert (item.kind, item.action) in cleanup.HANDLERS, item


def test_an_item_no_handler_takes_is_a_failure_not_a_guess():
    fake = FakeCeph()
    image = fake.world.create("vms", "a_to_be_deleted")
    image.metadata.__setitem__(*schema.dump(schema.RetiredRecord(
        image.id, "a", "2026-01-01T00:00:00Z", "clones")))
    item = plans.Item(Kind.RETIRED, "vms/a_to_be_deleted",
                      Action.FINISH_DELETE, "made up")
    (failure,) = cleanup.execute(fake, [item], POLICY)
    assert failure[0] is item
    assert "no cleanup handler" in failure[1]
    assert fake.world.exists("vms", "a_to_be_deleted")
