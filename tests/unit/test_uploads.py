"""Uploads through Glance on the in-memory cluster: journalled, and what a
failed one leaves is replaced or cleaned up."""

import datetime

import pytest

from glance_rbd_tracked import cleanup
from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import schema
from glance_rbd_tracked import uploads
from tests.fakes import FakeCeph

POLICY = core.Policy(pool="images")
ID = "3f0c8a51-6b3e-4e8e-9d3a-7c2b1a0f9e64"
LATER = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
UNANSWERED = errors.ClusterError("writing: the cluster did not answer "
                                 "within 30 s", timed_out=True)


def put(fake, data=b"x" * 10, size=None):
    return uploads.upload(fake, POLICY, ID, [data[:5], data[5:]],
                          size=len(data) if size is None else size, order=22)


def intents(fake):
    return schema.parse_journal(fake.journal.entries("images")).intents


@pytest.fixture
def fake():
    return FakeCeph()


def test_an_upload_is_journalled_until_it_is_complete(fake):
    seen = []
    fake.world.before("write_new", lambda *a: seen.extend(intents(fake)))
    assert put(fake) == 10
    assert [(i.op, i.target) for i in seen] == [("upload", f"images/{ID}")]
    assert intents(fake) == ()
    state = fake.images.state("images", ID)
    assert state.records.owner.kind == "upload" and state.snap("snap")


def test_a_failed_upload_that_removed_its_image_leaves_nothing(fake):
    with pytest.raises(errors.SizeMismatch):
        put(fake, size=11)
    assert not fake.world.exists("images", ID)
    assert intents(fake) == ()


def test_an_unanswered_upload_leaves_its_image_and_intent_for_cleanup(fake):
    fake.world.fail("write", UNANSWERED)
    with pytest.raises(errors.ClusterError, match="did not answer"):
        put(fake)
    partial = fake.images.state("images", ID)
    assert partial.snaps == () and partial.records.owner.kind == "upload"
    (intent,) = intents(fake)
    assert (intent.op, intent.target) == ("upload", f"images/{ID}")
    # cleanup waits while a writer still has it open
    fake.world.writers[partial.image_id] = ["127.0.0.1:0/4242"]
    items = cleanup.plan(fake, POLICY, LATER, datetime.timedelta(0))
    assert [(i.action, i.reason) for i in items] == [
        ("wait", "upload still written by 127.0.0.1:0/4242")]
    # ... and removes it once the writer is gone, lock and all
    del fake.world.writers[partial.image_id]
    items = cleanup.plan(fake, POLICY, LATER, datetime.timedelta(0))
    assert [i.action for i in items] == ["finish upload"]
    assert cleanup.execute(fake, items, POLICY) == []
    assert not fake.world.exists("images", ID)
    assert intents(fake) == ()
    (remove,) = [args[1] for name, args in fake.world.calls
                 if name == "apply"]
    assert remove.break_locks


def test_a_new_upload_replaces_a_partial_one_of_its_own(fake):
    fake.world.fail("write", UNANSWERED)
    with pytest.raises(errors.ClusterError):
        put(fake)
    assert put(fake, b"y" * 10) == 10
    assert bytes(fake.world.image("images", ID).data) == b"y" * 10
    assert intents(fake) == ()


@pytest.mark.parametrize("setup, why", [
    (lambda f: f.world.writers.__setitem__(
        f.world.image("images", ID).id, ["10.0.0.9:0/1"]),
     "still written by 10.0.0.9:0/1"),
    (lambda f: f.world.snapshot("images", ID, "snap"), "finished upload"),
])
def test_anything_but_an_abandoned_partial_upload_is_a_duplicate(fake, setup,
                                                                why):
    fake.world.fail("write", UNANSWERED)
    with pytest.raises(errors.ClusterError):
        put(fake)
    (first,) = [i.started for i in intents(fake)]
    setup(fake)
    with pytest.raises(errors.AlreadyExists, match=why):
        put(fake)
    assert fake.world.exists("images", ID)
    # the failed upload's own intent, neither replaced nor dropped
    assert [i.started for i in intents(fake)] == [first]


def test_an_image_of_somebody_else_is_a_duplicate(fake):
    fake.world.create("images", ID, b"not ours")
    with pytest.raises(errors.AlreadyExists, match="not an upload of"):
        put(fake)
    assert bytes(fake.world.image("images", ID).data) == b"not ours"
    assert intents(fake) == ()  # nothing left that cleanup could not finish
    items = cleanup.plan(fake, POLICY, LATER, datetime.timedelta(0))
    assert [i for i in items if i.actionable] == []


def test_an_announced_size_past_the_quota_is_refused_before_any_write(fake):
    fake.world.quotas["images"] = 15
    with pytest.raises(errors.NoSpace, match="quota of pool 'images'"):
        put(fake, b"x" * 20)
    assert [name for name, _ in fake.world.calls] == ["space"]
    assert not fake.world.exists("images", ID) and intents(fake) == ()
    assert put(fake, b"x" * 15) == 15  # what fits is taken


def test_an_unknown_or_thin_size_is_not_checked(fake):
    fake.world.quotas["images"] = 5
    assert put(fake, b"x" * 10, size=0) == 10
    fake.world.capacity = 0
    assert uploads.upload(fake, POLICY, "other", [b"\0" * 10], size=10,
                          order=22, thin=True) == 10
    assert "space" not in [name for name, _ in fake.world.calls]
