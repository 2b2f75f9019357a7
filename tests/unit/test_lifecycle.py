import datetime

import pytest

from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import schema

POLICY = core.Policy(pool="images")
NAME = "0b4bb3a4-4c0e-4dc7-8c1b-8f6f2a0e8b11"
NOW = lambda: datetime.datetime(2026, 11, 21, tzinfo=datetime.timezone.utc)  # noqa


class InMemoryCluster:
    """A double of lifecycle.ClusterAPI: images in a dict.

    ``clone_during_apply`` simulates Nova cloning the snapshot between the
    read and the destructive step, which the real adapter detects and
    reports as Conflict.
    """

    def __init__(self, images, clone_during_apply=0):
        self.images = dict(images)
        self.clone_during_apply = clone_during_apply
        self.applied = []
        self.entries = {}

    def journal(self, pool):
        return dict(self.entries)

    def journal_update(self, pool, put=None, remove=()):
        self.entries.update(put or {})
        for key in remove:
            self.entries.pop(key, None)

    def state(self, pool, name):
        try:
            return self.images[(pool, name)]
        except KeyError:
            raise errors.NotFound(f"{pool}/{name}") from None

    def apply(self, state, decision):
        if self.clone_during_apply:
            self.clone_during_apply -= 1
            snap = core.Snap("snap", children=("vms/disk",), protected=True)
            self.images[(state.pool, state.name)] = core.ImageState(
                state.pool, state.name, state.image_id, (snap,), state.records)
            raise errors.Conflict("a clone appeared")
        self.applied.append(decision)
        del self.images[(state.pool, state.name)]
        if isinstance(decision, core.Retire):
            records = dict(owner=state.records.owner,
                           retired=decision.records[-1])
            self.images[(state.pool, decision.new_name)] = core.ImageState(
                state.pool, decision.new_name, state.image_id, state.snaps,
                schema.Records(**records))


def owned_image(snaps=(core.Snap("snap", protected=True),)):
    owner = schema.OwnerRecord("id1", "upload", "snap", "t")
    return core.ImageState("images", NAME, "id1", tuple(snaps),
                           schema.Records(owner=owner))


def test_delete_removes_an_unused_image():
    fake = InMemoryCluster({("images", NAME): owned_image()})
    decision = lifecycle.delete(fake, "images", NAME, POLICY, NOW)
    assert decision == core.Remove(("snap",))
    assert fake.images == {}


def test_a_clone_appearing_mid_delete_turns_removal_into_retirement():
    fake = InMemoryCluster({("images", NAME): owned_image()},
                           clone_during_apply=1)
    decision = lifecycle.delete(fake, "images", NAME, POLICY, NOW)
    assert isinstance(decision, core.Retire)
    assert list(fake.images) == [("images", NAME + "_to_be_deleted")]
    assert fake.entries == {}  # the retire intent is settled


def test_an_interrupted_retirement_stays_journalled():
    fake = InMemoryCluster({("images", NAME): owned_image(
        (core.Snap("snap", children=("vms/d",)),))})

    def crash(step):
        if step == "retire-apply":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lifecycle.delete(fake, "images", NAME, POLICY, NOW, on_step=crash)
    (key,) = fake.entries
    intents, _ = schema.load_journal(fake.entries)
    assert intents[0].op == "retire" and intents[0].target == f"images/{NAME}"


def test_endless_conflicts_give_up_with_a_clear_error():
    fake = InMemoryCluster({("images", NAME): owned_image()},
                           clone_during_apply=lifecycle.ATTEMPTS)
    with pytest.raises(errors.Conflict,
                       match=r"gave up .* after 8 attempts \(a clone appeared"):
        lifecycle.delete(fake, "images", NAME, POLICY, NOW)


def test_refusal_raises_not_owned_and_touches_nothing():
    foreign = core.ImageState("images", "somebody-elses", "id9",
                              (core.Snap("snap"),))
    fake = InMemoryCluster({("images", "somebody-elses"): foreign})
    with pytest.raises(errors.NotOwned, match="no ownership record"):
        lifecycle.delete(fake, "images", "somebody-elses", POLICY, NOW)
    assert fake.applied == []


def test_missing_image_is_not_found():
    with pytest.raises(errors.NotFound):
        lifecycle.delete(InMemoryCluster({}), "images", NAME, POLICY, NOW)
