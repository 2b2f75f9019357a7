import dataclasses
import datetime

from hypothesis import given
from hypothesis import strategies as st
import pytest

from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import schema

NOW = datetime.datetime(2026, 11, 21, tzinfo=datetime.UTC)
POLICY = core.Policy(pool="images")
GLANCE_ID = "0b4bb3a4-4c0e-4dc7-8c1b-8f6f2a0e8b11"


def owner(image_id="id1", snapshot="snap"):
    return schema.OwnerRecord(image_id=image_id, kind="upload",
                              snapshot=snapshot, created="t")


def state(name=GLANCE_ID, pool="images", snaps=(), own=True, retired=None,
          image_id="id1"):
    records = schema.Records(owner=owner(image_id) if own else None,
                             retired=retired)
    return core.ImageState(pool=pool, name=name, image_id=image_id,
                           snaps=tuple(snaps), records=records)


SNAP = core.Snap("snap", protected=True)
SNAP_CLONED = core.Snap("snap", children=("vms/disk",), protected=True)
TRASH_CLONED = core.Snap("x", children=("vms/disk",), namespace="trash")
FOREIGN = core.Snap("backup")


@pytest.mark.parametrize("image, expected", [
    # owned upload, nothing hanging off it: removed at once
    (state(snaps=[SNAP]), core.Remove(("snap",))),
    (state(snaps=[]), core.Remove(())),
    # stock-driver image in our pool: adopted and removed
    (state(snaps=[SNAP], own=False), core.Remove(("snap",))),
    # clones hang off the snapshot: retired
    (state(snaps=[SNAP_CLONED]), core.Retire),
    (state(snaps=[SNAP, TRASH_CLONED]), core.Retire),
    # a snapshot somebody else made: retired, never removed with the image
    (state(snaps=[SNAP, FOREIGN]), core.Retire),
    # not ours: wrong pool, not a Glance id, or a foreign snapshot name
    (state(snaps=[SNAP], own=False, pool="vms"), core.Refuse),
    (state(name="my-disk", snaps=[SNAP], own=False), core.Refuse),
    (state(snaps=[FOREIGN], own=False), core.Refuse),
    # already retired under its new name: nothing more to do
    (state(name=GLANCE_ID + "_to_be_deleted", snaps=[SNAP_CLONED],
           retired=schema.RetiredRecord("id1", GLANCE_ID, "t", "r")),
     core.Keep),
    # marked but not yet renamed (interrupted): finish the rename
    (state(snaps=[SNAP_CLONED],
           retired=schema.RetiredRecord("id1", GLANCE_ID, "t", "r")),
     core.Retire(GLANCE_ID + "_to_be_deleted", (), "r")),
])
def test_decide_delete(image, expected):
    decision = core.decide_delete(image, POLICY, NOW)
    if isinstance(expected, type):
        assert isinstance(decision, expected)
    else:
        assert decision == expected


def test_adoption_can_be_switched_off():
    image = state(snaps=[SNAP], own=False)
    policy = core.Policy(pool="images", adopt_stock_images=False)
    assert isinstance(core.decide_delete(image, policy, NOW), core.Refuse)


def test_retire_records_name_the_image_and_why():
    decision = core.decide_delete(state(snaps=[SNAP_CLONED]), POLICY, NOW)
    assert decision.new_name == GLANCE_ID + "_to_be_deleted"
    (retired,) = decision.records
    assert retired.image_id == "id1"
    assert retired.original_name == GLANCE_ID
    assert retired.since == "2026-11-21T00:00:00Z"
    assert "vms/disk" in retired.reason


def test_retiring_an_adopted_image_records_the_adoption():
    decision = core.decide_delete(state(snaps=[SNAP_CLONED], own=False),
                                  POLICY, NOW)
    adopted, retired = decision.records
    assert adopted.kind == "stock-adopted" and adopted.snapshot == "snap"
    assert retired.original_name == GLANCE_ID


@pytest.mark.parametrize("snaps, expected", [
    ([SNAP_CLONED], core.Keep),
    ([SNAP], core.Remove(("snap",))),
    ([], core.Remove(())),
    ([SNAP, FOREIGN], core.Keep),
    ([core.Snap("x", namespace="trash")], core.Remove(())),
])
def test_decide_reclaim(snaps, expected):
    retired = schema.RetiredRecord("id1", GLANCE_ID, "t", "r")
    decision = core.decide_reclaim(state(snaps=snaps, retired=retired), NOW)
    if isinstance(expected, type):
        assert isinstance(decision, expected)
    else:
        assert decision == expected


def test_reclaim_keeps_an_image_that_is_not_retired():
    assert isinstance(core.decide_reclaim(state(snaps=[SNAP]), NOW), core.Keep)


@pytest.mark.parametrize("fsid, pool, refused", [
    (None, None, False),
    ("fsid-a", "images", False),
    ("fsid-b", "images", True),
    ("fsid-a", "vms", True),
])
def test_check_location(fsid, pool, refused):
    result = core.check_location(fsid, pool, "fsid-a", POLICY)
    assert (result is not None) == refused


# -- properties ---------------------------------------------------------------

snaps_st = st.lists(
    st.builds(core.Snap,
              name=st.sampled_from(["snap", "backup", "x", "y"]),
              children=st.lists(st.sampled_from(["vms/a", "vms/b",
                                                 "volumes/c"]),
                                max_size=2, unique=True).map(tuple),
              protected=st.booleans(),
              namespace=st.sampled_from(["user", "trash"])),
    max_size=4, unique_by=lambda s: (s.name, s.namespace))
states_st = st.builds(
    state, name=st.sampled_from([GLANCE_ID, "disk", GLANCE_ID + "_x"]),
    pool=st.sampled_from(["images", "vms"]), snaps=snaps_st,
    own=st.booleans())


def apply(image, decision):
    """The in-memory effect of a decision: None once the image is removed."""
    if isinstance(decision, core.Remove):
        return None
    if isinstance(decision, core.Retire):
        records = dict(owner=image.records.owner, retired=None)
        for record in decision.records:
            records["owner" if isinstance(record, schema.OwnerRecord)
                    else "retired"] = record
        return dataclasses.replace(image, name=decision.new_name,
                                   records=schema.Records(**records))
    return image


@given(states_st)
def test_a_plan_never_removes_an_image_whose_snapshots_have_clones(image):
    for decision in (core.decide_delete(image, POLICY, NOW),
                     core.decide_reclaim(image, NOW)):
        if isinstance(decision, core.Remove):
            assert not any(s.children for s in image.snaps)
            assert set(decision.snapshots) <= {s.name for s in image.snaps}


@given(states_st)
def test_a_plan_never_removes_what_the_store_does_not_own(image):
    decision = core.decide_delete(image, POLICY, NOW)
    if isinstance(decision, (core.Remove, core.Retire)):
        assert core.owned_snapshots(image, POLICY) is not None
        foreign = {s.name for s in image.snaps if s.namespace == "user"} - \
            core.owned_snapshots(image, POLICY)
        if isinstance(decision, core.Remove):
            assert not foreign


@given(states_st)
def test_deleting_twice_changes_nothing_more(image):
    once = apply(image, core.decide_delete(image, POLICY, NOW))
    if once is None or once is image:
        return
    again = core.decide_delete(once, POLICY, NOW)
    assert isinstance(again, core.Keep)
    assert apply(once, again) == once


@pytest.mark.parametrize("decide", [
    lambda s: core.decide_delete(s, POLICY, NOW),
    lambda s: core.decide_reclaim(s, NOW),
    lambda s: core.decide_retire(s, core.Policy(pool="images"), NOW),
    lambda s: core.decide_finish_delete(s, POLICY, NOW),
])
def test_a_half_removed_image_is_finished_whoever_owns_it(decide):
    for image in (state(pool="vms", own=False),
                  state(retired=schema.RetiredRecord("id1", "x", "t", "r"))):
        half = dataclasses.replace(image, removing=True)
        assert decide(half) == core.Remove(
            (), "its removal was interrupted; finishing it")
        with_snaps = dataclasses.replace(half, snaps=(SNAP,))
        assert isinstance(decide(with_snaps), core.Keep)
    assert isinstance(core.decide_finish_retire(dataclasses.replace(
        state(retired=schema.RetiredRecord("id1", GLANCE_ID, "t", "r")),
        removing=True)), core.Keep)


# -- snapshots the store did not make, the trash namespace, the RBD trash ----

MADE = schema.SnapRecord("id1", "rbd_tracked-c", "images/c", "t")
DISK_SNAP = core.Snap("rbd_tracked-c", protected=True)
HOPPED = core.Snap("a1b2c3", children=("images/c",), namespace="trash",
                   original="rbd_tracked-c")
BACKUP = core.Snap("backup.v1.snap.123")


def disk(snaps, made=(MADE,), retired=False, trash=None, name="d_disk"):
    records = schema.Records(
        snaps=tuple(made),
        retired=schema.RetiredRecord("id1", "d_disk", "t", "r")
        if retired else None)
    return core.ImageState("vms", name, "id1", tuple(snaps), records,
                           trash=trash)


@pytest.mark.parametrize("snaps, expected", [
    ([], core.Remove(())),
    ([DISK_SNAP], core.Remove(("rbd_tracked-c",))),
    # a snapshot the store did not make: kept, retired with the reason
    ([BACKUP], core.Retire),
    ([DISK_SNAP, BACKUP], core.Retire),
    # a chain's source snapshot in the trash namespace still has its clone
    ([HOPPED], core.Retire),
])
def test_retire_never_removes_a_snapshot_the_store_did_not_make(snaps,
                                                                expected):
    decision = core.decide_retire(disk(snaps), POLICY, NOW)
    if isinstance(expected, type):
        assert isinstance(decision, expected)
    else:
        assert decision == expected
    if isinstance(decision, core.Retire) and BACKUP in snaps:
        assert "backup.v1.snap.123 was not made by this store" in \
            decision.reason


@pytest.mark.parametrize("image, expected", [
    # a plain disk its owner destroyed: decided as its retire was (a delete
    # would refuse it: it has no record of the store)
    (disk([], made=()), core.Remove(())),
    (disk([DISK_SNAP]), core.Remove(("rbd_tracked-c",))),
    (disk([HOPPED]), core.Retire),
    # a retired disk or image: reclaimed
    (disk([], retired=True, name="d_disk_to_be_deleted"), core.Remove(())),
    (disk([HOPPED], retired=True, name="d_disk_to_be_deleted"), core.Keep),
    (state(name=GLANCE_ID + "_to_be_deleted", snaps=[SNAP],
           retired=schema.RetiredRecord("id1", GLANCE_ID, "t", "r")),
     core.Remove(("snap",))),
    # a Glance image of the store's pool: deleted
    (state(snaps=[SNAP]), core.Remove(("snap",))),
    (state(snaps=[SNAP_CLONED]), core.Retire),
    # a disk with a snapshot the store did not make: retired, never removed
    (state(snaps=[SNAP], own=False, pool="vms", name="x"), core.Retire),
    # somebody else's in a pool the store neither owns nor retires in
    (dataclasses.replace(disk([]), pool="backups"), core.Refuse),
])
def test_an_interrupted_removal_is_decided_again_as_it_was(image, expected):
    decision = core.decide_finish_delete(image, POLICY, NOW)
    if isinstance(expected, type):
        assert isinstance(decision, expected), decision
    else:
        assert decision == expected


def test_a_retired_disk_with_a_foreign_snapshot_is_kept_and_says_why():
    decision = core.decide_reclaim(disk([BACKUP], made=(), retired=True,
                                        name="d_disk_to_be_deleted"), NOW)
    assert decision == core.Keep("snapshot backup.v1.snap.123 was not made "
                                 "by this store")


def test_the_source_snapshot_is_known_under_its_original_name():
    state = disk([HOPPED], retired=True, name="d_disk_to_be_deleted")
    assert state.snap("rbd_tracked-c") is HOPPED
    # its record is not "a chain snapshot that was never made"
    assert isinstance(core.decide_reclaim(state, NOW), core.Keep)
    gone = disk([], retired=True, name="d_disk_to_be_deleted")
    assert core.decide_reclaim(gone, NOW) == core.Remove(())


LATER = NOW + datetime.timedelta(days=1)
TRASH = core.Trash(core.TRASH_USER, NOW, NOW)


@pytest.mark.parametrize("state, expected", [
    # librbd's own: it removes it with the last clone
    (disk([HOPPED], trash=core.Trash(core.TRASH_USER_PARENT, NOW, NOW)),
     core.Keep),
    # Cinder trashed it; the store's snapshot has a clone: wait
    (disk([core.Snap("rbd_tracked-c", ("images/c",), True)], trash=TRASH),
     core.Keep),
    # ... the clone is gone: the snapshot goes, then the image
    (disk([DISK_SNAP], trash=TRASH), core.Remove(("rbd_tracked-c",))),
    # ... and a snapshot of somebody else's keeps it: only ours goes
    (disk([DISK_SNAP, BACKUP], trash=TRASH), core.Trim(("rbd_tracked-c",))),
    # not before the end of the deferment its owner set
    (disk([DISK_SNAP], trash=core.Trash(core.TRASH_USER, NOW, LATER)),
     core.Trim(("rbd_tracked-c",))),
    # (the record of a snapshot librbd removed goes too)
    (disk([], trash=core.Trash(core.TRASH_USER, NOW, LATER)),
     core.Trim(("rbd_tracked-c",))),
    # nothing of the store's on it: not its business
    (disk([BACKUP], made=(), trash=TRASH), core.Keep),
])
def test_an_image_in_the_rbd_trash(state, expected):
    for decision in (core.decide_trashed(state, NOW),
                     core.decide_reclaim(state, NOW),
                     core.decide_retire(state, POLICY, NOW)):
        if isinstance(expected, type):
            assert isinstance(decision, expected)
        else:
            assert (type(decision), decision.snapshots) == (
                type(expected), expected.snapshots)


@given(states_st)
def test_an_image_in_the_trash_with_clones_is_never_removed(image):
    trashed = dataclasses.replace(image, trash=TRASH)
    decision = core.decide_trashed(trashed, NOW)
    if any(s.children for s in image.snaps):
        assert not isinstance(decision, core.Remove)
    if isinstance(decision, (core.Remove, core.Trim)):
        owned = core.owned_snapshots(trashed, None) or frozenset()
        assert set(decision.snapshots) <= owned


def test_only_format_2_clones_let_the_source_snapshot_move_to_the_trash():
    assert [core.moves_to_trash(f) for f in (1, 2)] == [False, True]


@pytest.mark.parametrize("decision, after, why", [
    (core.Remove(()), None, None),
    (core.Remove(()), "same", "vms/d_disk is still there"),
    (core.Remove(()), "other", None),  # a new image took the name
    (core.Retire("d_disk_to_be_deleted", (), "r"), "retired", None),
    (core.Retire("d_disk_to_be_deleted", (), "r"), "same",
     "vms/d_disk was not renamed to d_disk_to_be_deleted"),
    (core.Retire("d_disk_to_be_deleted", (), "r"), "marked",
     "vms/d_disk was not renamed to d_disk_to_be_deleted"),
    (core.Retire("d_disk_to_be_deleted", (), "r"), "renamed",
     "vms/d_disk_to_be_deleted is not marked retired"),
    (core.Trim(("rbd_tracked-c",)), "same", "vms/d_disk still has "
     "rbd_tracked-c"),
    (core.Trim(("rbd_tracked-c",)), "trimmed", None),
    # another worker removed it meanwhile
    (core.Trim(("rbd_tracked-c",)), None, None),
    (core.Retire("d_disk_to_be_deleted", (), "r"), None, None),
])
def test_a_step_counts_only_when_a_re_read_shows_it(decision, after, why):
    before = disk([DISK_SNAP])
    after_state = {
        None: None, "same": before,
        "other": dataclasses.replace(before, image_id="id2"),
        "retired": disk([DISK_SNAP], retired=True,
                        name="d_disk_to_be_deleted"),
        "marked": disk([DISK_SNAP], retired=True),
        "renamed": disk([DISK_SNAP], name="d_disk_to_be_deleted"),
        "trimmed": disk([], made=()),
    }[after]
    assert core.unfinished(decision, before, after_state) == why


def test_a_chain_intent_that_does_not_parse_still_keeps_its_snapshot():
    journal = schema.Journal(bad=(("intent/chain/images/abc", "not JSON"),
                                  ("intent/delete/images/x", "not JSON")))
    assert core.busy_snapshots(journal) == {"rbd_tracked-abc"}


@pytest.mark.parametrize("snaps, writers, expected", [
    ([], (), core.Remove((), "an upload that did not finish, whose writer "
                         "is gone", break_locks=True)),
    ([], ("10.0.0.1:0/7",), core.Keep),
    ([SNAP], (), core.Keep),  # finished
])
def test_decide_partial(snaps, writers, expected):
    decision = core.decide_partial(state(snaps=snaps), writers)
    if isinstance(expected, type):
        assert isinstance(decision, expected)
    else:
        assert decision == expected
    assert isinstance(core.decide_partial(state(own=False), ()), core.Refuse)


@pytest.mark.parametrize("left", [
    disk([DISK_SNAP]),                                  # restored
    dataclasses.replace(disk([]), removing=True),       # rbd rm under way
])
def test_an_image_that_left_the_rbd_trash_is_absent_not_a_crash(left):
    assert core.decide_trashed(left, NOW) == core.Absent(
        "vms/d_disk is no longer in the RBD trash")


MiB = 1 << 20


@pytest.mark.parametrize("size, quota, used, available, thin, fits", [
    (64 * MiB, 20 * MiB, 0, 8 << 30, False, False),   # over the quota
    (20 * MiB, 20 * MiB, 0, 8 << 30, False, True),    # exactly the quota
    (10 * MiB, 20 * MiB, 11 * MiB, 8 << 30, False, False),  # with what is used
    (10 * MiB, 20 * MiB, 10 * MiB, 8 << 30, False, True),
    (64 * MiB, 0, 5 << 30, 8 << 30, False, True),     # no quota
    (64 * MiB, 0, 0, 63 * MiB, False, False),         # past MAX AVAIL
    (64 * MiB, 1 << 40, 0, 63 * MiB, False, False),   # the quota is no space
    (0, 20 * MiB, 30 * MiB, 0, False, True),          # size unknown
    (64 * MiB, 20 * MiB, 0, 0, True, True),           # thin: zeros not written
])
def test_an_announced_size_is_checked_against_quota_and_free_space(
        size, quota, used, available, thin, fits):
    space = core.PoolSpace("images", quota=quota, used=used,
                           available=available)
    refusal = core.check_space(size, space, thin)
    assert (refusal is None) == fits, refusal
    assert core.space_matters(size, thin) == (size > 0 and not thin)


def test_a_pool_the_mgr_has_not_reported_yet_is_not_checked():
    assert core.check_space(64 * MiB, None) is None


def test_a_refused_size_says_which_limit_and_by_how_much():
    assert core.check_space(64 * MiB, core.PoolSpace(
        "images", quota=20 * MiB, used=MiB, available=8 << 30)) == \
        core.Refuse("67108864 bytes do not fit in the quota of pool "
                    "'images': 1048576 of 20971520 bytes are used")
    assert core.check_space(64 * MiB, core.PoolSpace(
        "images", quota=0, used=0, available=MiB)) == \
        core.Refuse("67108864 bytes do not fit in pool 'images': the "
                    "cluster can write 1048576 more bytes into it")


# -- the phase every decider starts from -------------------------------------

RETIRED_GLANCE = schema.RetiredRecord("id1", GLANCE_ID, "t", "r")


@pytest.mark.parametrize("image, policy, expected", [
    # librbd's removal did not finish: before anything else
    (dataclasses.replace(state(snaps=[SNAP]), removing=True), POLICY,
     core.Phase.REMOVING),
    (dataclasses.replace(disk([], retired=True), removing=True), POLICY,
     core.Phase.REMOVING),
    # in the RBD trash, whatever its records say
    (disk([DISK_SNAP], trash=TRASH), POLICY, core.Phase.TRASHED),
    (disk([], retired=True, trash=TRASH), None, core.Phase.TRASHED),
    # marked retired: renamed or not (a crash in between)
    (disk([HOPPED], retired=True), POLICY, core.Phase.RETIRING),
    (disk([HOPPED], retired=True, name="d_disk_to_be_deleted"), POLICY,
     core.Phase.RETIRED),
    (state(name=GLANCE_ID + "_to_be_deleted", snaps=[SNAP_CLONED],
           retired=RETIRED_GLANCE), POLICY, core.Phase.RETIRED),
    (state(snaps=[SNAP_CLONED], retired=RETIRED_GLANCE), POLICY,
     core.Phase.RETIRING),
    # the store's own upload, chain or copy
    (state(snaps=[SNAP]), POLICY, core.Phase.OWNED),
    (state(snaps=[SNAP]), None, core.Phase.OWNED),
    # the stock driver's, in the store's pool: adopted if the policy says so
    (state(snaps=[SNAP], own=False), POLICY, core.Phase.ADOPTABLE),
    (state(snaps=[], own=False), POLICY, core.Phase.ADOPTABLE),
    (state(snaps=[SNAP], own=False), None, core.Phase.FOREIGN),
    (state(snaps=[SNAP], own=False),
     core.Policy(pool="images", adopt_stock_images=False), core.Phase.FOREIGN),
    # ... not in another pool, not under another name, not with other snaps
    (state(snaps=[SNAP], own=False, pool="vms"), POLICY, core.Phase.FOREIGN),
    (state(name="my-disk", snaps=[SNAP], own=False), POLICY,
     core.Phase.FOREIGN),
    (state(snaps=[SNAP, FOREIGN], own=False), POLICY, core.Phase.FOREIGN),
    # a disk with only the store's chain snapshot records is still its owner's
    (disk([DISK_SNAP]), POLICY, core.Phase.FOREIGN),
])
def test_phase(image, policy, expected):
    assert core.phase(image, policy) is expected


@given(states_st)
def test_a_pending_deletion_is_never_refused_nor_retired_again(image):
    """The deciders follow the phase: an image marked retired and renamed
    is kept or reclaimed, never refused or renamed once more."""
    image = dataclasses.replace(
        image, name=core.retired_name(image.name),
        records=dataclasses.replace(image.records, retired=schema.RetiredRecord(
            "id1", image.name, "t", "r")))
    assert core.phase(image, POLICY) is core.Phase.RETIRED
    for decision in (core.decide_delete(image, POLICY, NOW),
                     core.decide_reclaim(image, NOW)):
        assert not isinstance(decision, (core.Refuse, core.Retire))


def test_a_trashed_image_being_finished_keeps_snapshots_in_flight():
    """decide_finish_delete finishes an image in the RBD trash as reclaim
    does: a chain snapshot an operation in flight is building stays."""
    image = disk([DISK_SNAP], trash=TRASH)
    assert core.decide_finish_delete(image, POLICY, NOW) == \
        core.decide_trashed(image, NOW)
    assert core.decide_finish_delete(
        image, POLICY, NOW, busy=frozenset({"rbd_tracked-c"})) == \
        core.decide_trashed(image, NOW, frozenset({"rbd_tracked-c"}))


# -- a chain's fall-back paths -----------------------------------------------

@pytest.mark.parametrize("exc, next_path", [
    # the store may not, or must not, go on: no other path would do better
    (errors.NotOwned("not ours"), False),
    (errors.CorruptMetadata("bad record"), False),
    (errors.NoSpace("full"), False),
    (errors.AlreadyExists("made meanwhile"), False),
    # the cluster did not answer: another path would wait as long again
    (errors.ClusterError("no answer", timed_out=True), False),
    # this path failed: the next may work
    (errors.ClusterError("EIO"), True),
    (errors.InUse("busy"), True),
    (errors.Conflict("changed"), True),
    (errors.Busy("leased"), True),
    (errors.Unfinished("did not hold"), True),
    (errors.NotFound("gone"), True),
    (errors.Invalid("clone format"), True),
    # not the store's error: loud
    (RuntimeError("bug"), False),
    (KeyboardInterrupt(), False),
])
def test_after_path_failure(exc, next_path):
    after = core.after_path_failure(exc)
    assert after.next_path is next_path
    assert after.reason


# -- what is journalled before acting ----------------------------------------

@pytest.mark.parametrize("decision, source, op", [
    # a removal that leaves a parent to release: finished by cleanup
    (core.Remove(("snap",)), "vms/disk@rbd_tracked-x", schema.Op.DELETE),
    (core.Remove(()), "images/a_to_be_deleted@snap", schema.Op.DELETE),
    # ... with nothing above it, nothing is left to finish
    (core.Remove(("snap",)), None, None),
    (core.Remove(("snap",)), "", None),
    # a retirement: its rename may be interrupted, parent or not
    (core.Retire("d_to_be_deleted", (), "r"), None, schema.Op.RETIRE),
    (core.Retire("d_to_be_deleted", (), "r"), "vms/disk@s", schema.Op.RETIRE),
    # a trim keeps the image, and the rest does nothing
    (core.Trim(("rbd_tracked-x",)), "vms/disk@s", None),
    (core.Keep("in use"), "vms/disk@s", None),
    (core.Refuse("not ours"), None, None),
    (core.Absent("no such snapshot"), "vms/disk@s", None),
])
def test_journalled_op(decision, source, op):
    assert core.journalled_op(decision, source) is op


# -- where a release stops ---------------------------------------------------

CHAINS = core.Policy(pool="images", chain_pools=frozenset({"vms"}))


@pytest.mark.parametrize("spec, inside", [
    ("images/a@snap", True),
    ("vms/disk@rbd_tracked-x", True),
    ("vms/ns/disk@rbd_tracked-x", False),  # a namespace is another pool
    ("volumes/v@s", False),                # not a chain pool of this policy
    ("backups/b@s", False),
])
def test_release_bound(spec, inside):
    assert (core.release_bound(spec, CHAINS) is None) is inside


def with_parent(parent):
    return dataclasses.replace(disk([], retired=True,
                                    name="d_disk_to_be_deleted"),
                               parent=parent)


@pytest.mark.parametrize("spec, decision, image, expected", [
    # removed: on to its parent, forgetting the links of a retired clone
    ("vms/d_disk_to_be_deleted@", core.Remove(()),
     with_parent("images/a_to_be_deleted@snap"),
     ("images/a_to_be_deleted@snap", True)),
    # removed, and nothing above it: done
    ("vms/d_disk_to_be_deleted@", core.Remove(()), with_parent(None),
     (None, False)),
    ("vms/d_disk_to_be_deleted@", core.Remove(()), with_parent(""),
     (None, False)),
    # still needed: it stops there, whatever is above
    ("vms/d_disk@rbd_tracked-x", core.Keep("cloned"),
     with_parent("images/a@snap"), (None, False)),
    ("vms/d_disk@rbd_tracked-x", core.Trim(("rbd_tracked-x",)),
     with_parent("images/a@snap"), (None, False)),
    # not there: a chain link names the image as it was before retired
    ("vms/d_disk@rbd_tracked-x", None, None,
     ("vms/d_disk_to_be_deleted@", False)),
    # ... and under its retired name neither: gone
    ("vms/d_disk_to_be_deleted@", None, None, (None, False)),
])
def test_release_next(spec, decision, image, expected):
    step = core.release_next(spec, decision, image)
    assert (step.next, step.forget_links) == expected
    assert step.reason


# -- replacing a partial upload ----------------------------------------------

def upload(snaps=(), kind=schema.Kind.UPLOAD, **changes):
    records = schema.Records(owner=schema.OwnerRecord("id1", kind, "snap",
                                                      "t"))
    return dataclasses.replace(core.ImageState(
        "images", GLANCE_ID, "id1", tuple(snaps), records), **changes)


GONE_WRITER = core.Remove((), "an upload that did not finish, whose writer "
                          "is gone", break_locks=True)


@pytest.mark.parametrize("image, writers, expected", [
    # the store's upload, never finished, nobody writes it: replaced
    (upload(), (), GONE_WRITER),
    (upload([core.Snap("other")]), (), dataclasses.replace(
        GONE_WRITER, snapshots=("other",))),
    # ... while its writer still writes it: kept
    (upload(), ("10.0.0.1:0/7",), core.Keep),
    # finished: a duplicate
    (upload([SNAP]), (), core.Keep),
    # pending deletion, in whatever phase
    (upload(records=schema.Records(owner=owner(), retired=RETIRED_GLANCE)),
     (), core.Keep),
    (upload(name=GLANCE_ID + "_to_be_deleted", records=schema.Records(
        owner=owner(), retired=RETIRED_GLANCE)), (), core.Keep),
    (upload(trash=TRASH), (), core.Keep),
    # a chain or copy of the store's, a stock image, anybody's: not an upload
    (upload(kind=schema.Kind.CHAIN), (), core.Refuse),
    (upload(kind=schema.Kind.COPY), (), core.Refuse),
    (upload(records=schema.Records()), (), core.Refuse),
    # librbd's removal of it did not finish: finished
    (upload(removing=True), (), GONE_WRITER),
])
def test_decide_partial_by_phase(image, writers, expected):
    decision = core.decide_partial(image, writers)
    if isinstance(expected, type):
        assert isinstance(decision, expected), decision
    else:
        assert decision == expected


@pytest.mark.parametrize("existing, takes", [
    (None, False),
    (upload(trash=TRASH), False),  # the trash keeps no name
    (upload(), True),
    (upload([SNAP]), True),
    (upload(removing=True), True),
    (upload(records=schema.Records()), True),
])
def test_takes_upload_name(existing, takes):
    assert core.takes_upload_name(existing) is takes


@pytest.mark.parametrize("decision, writers, settled", [
    (GONE_WRITER, (), True),                      # removed
    (core.Keep("finished"), (), True),            # nothing left to do
    (core.Keep("gone"), (), True),
    (core.Keep("written"), ("10.0.0.1:0/7",), False),  # its writer is there
    (core.Trim(("x",)), ("10.0.0.1:0/7",), False),
])
def test_upload_intent_done(decision, writers, settled):
    assert core.upload_intent_done(decision, writers) is settled
