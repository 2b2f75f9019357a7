import pytest

from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import schema
from tests.fakes import NOW as NOW_VALUE
from tests.fakes import FakeCeph

POLICY = core.Policy(pool="images")
NAME = "0b4bb3a4-4c0e-4dc7-8c1b-8f6f2a0e8b11"
NOW = lambda: NOW_VALUE  # noqa: E731
QUICK = lifecycle.Backoff(pause=lambda seconds: None)


@pytest.fixture
def fake():
    return FakeCeph()


def test_delete_removes_an_unused_image(fake):
    fake.world.upload(NAME)
    decision = lifecycle.delete(fake, "images", NAME, POLICY, NOW)
    assert decision == core.Remove(("snap",))
    assert fake.world.names("images") == {}


def test_a_clone_appearing_mid_delete_turns_removal_into_retirement(fake):
    fake.world.upload(NAME)
    fake.world.before("apply", lambda *args: fake.world.clone(
        f"images/{NAME}@snap", "vms", "disk"))
    decision = lifecycle.delete(fake, "images", NAME, POLICY, NOW,
                                backoff=QUICK)
    assert isinstance(decision, core.Retire)
    assert list(fake.world.names("images")) == [NAME + "_to_be_deleted"]
    assert fake.journal.entries("images") == {}  # the retire intent settled


def test_an_interrupted_retirement_stays_journalled(fake):
    fake.world.upload(NAME)
    fake.world.clone(f"images/{NAME}@snap", "vms", "d")

    def crash(step):
        if step == "retire-apply":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lifecycle.delete(fake, "images", NAME, POLICY, NOW, on_step=crash)
    (_key,) = fake.journal.entries("images")
    intents, _ = schema.load_journal(fake.journal.entries("images"))
    assert intents[0].op == "retire" and intents[0].target == f"images/{NAME}"


def test_endless_conflicts_give_up_with_a_clear_error(fake):
    fake.world.upload(NAME)
    fake.world.fail("apply", errors.Conflict("a clone appeared"),
                    times=QUICK.attempts)
    with pytest.raises(errors.Conflict,
                       match=r"gave up .* after 8 attempts \(a clone appeared"):
        lifecycle.delete(fake, "images", NAME, POLICY, NOW, backoff=QUICK)
    assert fake.world.exists("images", NAME)


def test_a_lease_held_for_the_whole_wait_is_not_waited_out_again(fake):
    """Busy: the lease's own wait was the bound; deciding again would only
    wait again (up to 8 times over)."""
    waits = []
    fake.world.upload(NAME)
    fake.world.fail("apply", errors.Busy("held by another worker"), times=8)
    with pytest.raises(errors.Busy, match="held by another worker"):
        lifecycle.delete(fake, "images", NAME, POLICY, NOW,
                         backoff=lifecycle.Backoff(pause=waits.append))
    assert waits == []
    assert [c for c, _ in fake.world.calls if c == "apply"] == ["apply"]
    assert fake.world.exists("images", NAME)


def test_backoff_waits_longer_after_each_conflict(fake):
    waits = []
    fake.world.upload(NAME)
    fake.world.fail("apply", errors.Conflict("busy"), times=3)
    lifecycle.delete(fake, "images", NAME, POLICY, NOW,
                     backoff=lifecycle.Backoff(attempts=4,
                                               pause=waits.append))
    assert waits == [0.05, 0.1, 0.15000000000000002]
    assert not fake.world.exists("images", NAME)


def test_refusal_raises_not_owned_and_touches_nothing(fake):
    fake.world.create("images", "somebody-elses", snaps=["snap"])
    with pytest.raises(errors.NotOwned, match="no ownership record"):
        lifecycle.delete(fake, "images", "somebody-elses", POLICY, NOW)
    assert [c for c, _ in fake.world.calls if c == "apply"] == []


def test_missing_image_is_not_found(fake):
    with pytest.raises(errors.NotFound):
        lifecycle.delete(fake, "images", NAME, POLICY, NOW)


def test_deleting_a_clone_releases_its_retired_parent(fake):
    base = "9d2f6c1e-0d7a-4a43-9a0e-2a1f6a0b7c55"
    fake.world.upload(base)
    # a stock-driver Glance image that is a clone of another
    fake.world.clone(f"images/{base}@snap", "images", NAME)
    fake.world.snapshot("images", NAME, "snap")
    assert isinstance(lifecycle.delete(fake, "images", base, POLICY, NOW),
                      core.Retire)
    lifecycle.delete(fake, "images", NAME, POLICY, NOW)
    assert fake.world.names("images") == {}
    assert fake.journal.entries("images") == {}


def test_retire_removes_a_disk_nothing_depends_on(fake):
    fake.world.upload(NAME)
    fake.world.clone(f"images/{NAME}@snap", "vms", "disk")
    assert isinstance(lifecycle.retire(fake, "vms", "disk", POLICY, NOW),
                      core.Remove)
    assert not fake.world.exists("vms", "disk")
    assert fake.world.exists("images", NAME)  # not retired: stays


def test_a_location_is_followed_exactly(fake):
    fake.world.upload(NAME)
    with pytest.raises(errors.NotFound, match="has no snapshot nosuchsnap"):
        lifecycle.delete(fake, "images", NAME, POLICY, NOW,
                         snapshot="nosuchsnap")
    assert fake.world.exists("images", NAME)
    assert [c for c, _ in fake.world.calls if c in ("apply", "journal")] == []
    lifecycle.delete(fake, "images", NAME, POLICY, NOW, snapshot="snap")
    assert not fake.world.exists("images", NAME)


def test_a_journal_entry_that_does_not_parse_stops_nothing(fake):
    """A retire once failed after it had removed the disk, because it read
    the journal again and met an entry it did not know."""
    fake.journal.update("images", put={"stray": "{}"})
    fake.world.upload(NAME)
    fake.world.clone(f"images/{NAME}@snap", "vms", "disk")
    assert isinstance(lifecycle.retire(fake, "vms", "disk", POLICY, NOW),
                      core.Remove)
    assert not fake.world.exists("vms", "disk")
