import dataclasses
import datetime

from hypothesis import given
from hypothesis import strategies as st
import pytest

from glance_rbd_tracked import core
from glance_rbd_tracked import plans
from glance_rbd_tracked import schema
from glance_rbd_tracked.plans import Action
from glance_rbd_tracked.plans import Kind

NOW = datetime.datetime(2026, 11, 21, 12, tzinfo=datetime.UTC)
GRACE = datetime.timedelta(minutes=10)
OLD = "2026-11-21T11:00:00Z"
RECENT = "2026-11-21T11:59:00Z"


def intent(op, target="images/new", started=OLD):
    return schema.Intent(op=op, target=target, source="vms/d",
                         snapshot="rbd_tracked-new" if op == "chain" else "",
                         started=started)


def link(target="images/c", source="vms/d@rbd_tracked-c"):
    return schema.ChainLink(target=target, source=source, created=OLD)


def retired(name="d_to_be_deleted", pool="vms", snaps=(), made=()):
    """A retired disk; ``made``: the chain snapshots the store made on it."""
    record = schema.RetiredRecord("id9", name.replace("_to_be_deleted", ""),
                                  OLD, "clones")
    chain = tuple(schema.SnapRecord("id9", snap, f"images/{snap}", OLD)
                  for snap in made)
    return core.ImageState(pool, name, "id9", tuple(snaps),
                           schema.Records(retired=record, snaps=chain))


def survey(intents=(), links=(), images=None, states=()):
    return plans.Survey(journal=schema.Journal(tuple(intents), tuple(links)),
                        images=images or {"images": frozenset(),
                                          "vms": frozenset()},
                        retired=tuple(states))


@pytest.mark.parametrize("entry, action", [
    (intent("chain", started=RECENT), Action.WAIT),
    (intent("chain"), Action.ROLL_BACK),
    (intent("delete"), Action.FINISH_DELETE),
    (intent("retire"), Action.FINISH_RETIRE),
])
def test_intents_wait_out_the_grace_period_then_are_finished(entry, action):
    (item,) = plans.plan_cleanup(survey([entry]), NOW, GRACE)
    assert (item.kind, item.target, item.action) == (
        Kind.INTENT, entry.target, action)
    assert item.journal_key == ("" if action is Action.WAIT else entry.key)
    assert item.actionable == (action is not Action.WAIT)


def test_a_link_whose_clone_is_gone_is_an_orphaned_snapshot():
    gone, alive = link("images/gone"), link("images/alive",
                                             "vms/d@rbd_tracked-alive")
    items = plans.plan_cleanup(survey(links=[gone, alive], images={
        "images": frozenset({"alive"}), "vms": frozenset({"d"})}), NOW, GRACE)
    assert items == [plans.Item(Kind.ORPHAN_SNAPSHOT, gone.source,
                                Action.TRIM, "its clone images/gone is gone",
                                gone.key)]


def test_a_retired_source_of_an_orphan_is_not_planned_twice():
    orphan = link("images/gone", "vms/d@rbd_tracked-gone")
    items = plans.plan_cleanup(survey(links=[orphan], states=[
        retired(snaps=[core.Snap("rbd_tracked-gone")])]), NOW, GRACE)
    assert [i.kind for i in items] == [Kind.ORPHAN_SNAPSHOT]


@pytest.mark.parametrize("snaps, made, action", [
    ([], (), Action.REMOVE),
    ([core.Snap("s", children=("images/c",))], ("s",), Action.KEEP),
    ([core.Snap("s", children=("images/c",)), core.Snap("t")], ("s", "t"),
     Action.TRIM),
    # a snapshot the store did not make: kept, however idle
    ([core.Snap("backup")], (), Action.KEEP),
])
def test_retired_images_are_planned_as_reclaim_decides(snaps, made, action):
    (item,) = plans.plan_cleanup(survey(states=[retired(
        snaps=snaps, made=made)]), NOW, GRACE)
    assert (item.kind, item.target, item.action) == (
        Kind.RETIRED, "vms/d_to_be_deleted", action)
    assert item.reason


def test_a_chain_in_flight_keeps_its_snapshot_on_a_retired_disk():
    building = intent("chain", "images/new", started=RECENT)
    state = retired(snaps=[core.Snap("rbd_tracked-new")])
    items = plans.plan_cleanup(survey([building], states=[state]), NOW, GRACE)
    assert [i.action for i in items] == [Action.WAIT, Action.KEEP]


def test_retired_names_lists_only_retired_images():
    assert plans.retired_names({"vms": {"a", "b_to_be_deleted"},
                                "images": {"c_to_be_deleted"}}) == [
        "images/c_to_be_deleted", "vms/b_to_be_deleted"]


def test_flatten_selects_chains_deeper_than_the_limit_in_link_order():
    a, b, c = link("images/a"), link("images/b"), link("images/c")
    chosen = plans.plan_flatten([a, b, c], {"images/a": 3, "images/b": 9},
                                max_depth=3)
    assert chosen == [plans.Flatten("images/b", 9, b)]


# -- properties ---------------------------------------------------------------

snap_names = st.sampled_from(["rbd_tracked-x", "rbd_tracked-y", "backup"])
snaps_st = st.lists(
    st.builds(core.Snap, name=snap_names,
              children=st.lists(st.sampled_from(["images/x", "images/y"]),
                                max_size=2, unique=True).map(tuple)),
    max_size=3, unique_by=lambda s: s.name)
surveys = st.builds(
    survey,
    intents=st.lists(st.builds(intent, op=st.sampled_from(list(schema.Op)),
                               target=st.sampled_from(["images/x",
                                                       "images/y"]),
                               started=st.sampled_from([OLD, RECENT])),
                     max_size=3, unique_by=lambda i: i.key),
    links=st.lists(st.builds(link, target=st.sampled_from(["images/x",
                                                           "images/y"]),
                             source=st.sampled_from(
                                 ["vms/d@rbd_tracked-x",
                                  "vms/e@rbd_tracked-y"])),
                   max_size=2, unique_by=lambda link: link.key),
    images=st.fixed_dictionaries({
        "images": st.frozensets(st.sampled_from(["x", "y"])),
        "vms": st.just(frozenset())}),
    states=st.lists(st.builds(retired, name=st.sampled_from(
        ["d_to_be_deleted", "e_to_be_deleted"]), snaps=snaps_st),
        max_size=2, unique_by=lambda s: s.name))


@given(surveys)
def test_a_plan_never_removes_what_still_has_children(surveyed):
    states = {s.spec: s for s in surveyed.retired}
    for item in plans.plan_cleanup(surveyed, NOW, GRACE):
        if item.action in (Action.REMOVE, Action.TRIM) and \
                item.kind is Kind.RETIRED:
            assert not (item.action is Action.REMOVE
                        and any(s.children for s in states[item.target].snaps))


@given(surveys)
def test_every_planned_item_says_why_and_acts_only_when_it_may(surveyed):
    for item in plans.plan_cleanup(surveyed, NOW, GRACE):
        assert item.reason
        assert item.actionable == (item.action not in (Action.KEEP,
                                                       Action.WAIT))
        if item.actionable and item.kind is not Kind.RETIRED:
            assert item.journal_key  # what it settles


def test_a_link_to_a_retired_chain_image_is_no_orphan():
    """Glance deleted the chain image while an instance boots from it: it
    is retired under a new name, and its source snapshot still needed."""
    kept = link("images/j", "vms/d@rbd_tracked-j")
    items = plans.plan_cleanup(survey(links=[kept], images={
        "images": frozenset({"j_to_be_deleted"}), "vms": frozenset({"d"})}),
        NOW, GRACE)
    assert items == []


def test_an_image_that_left_the_rbd_trash_before_its_read_is_not_planned():
    """The survey lists the trash, then reads each image: one restored
    meanwhile, or removed by ``rbd rm`` (which parks it in the trash as
    ``removing``), is absent from the plan."""
    made = (schema.SnapRecord("id9", "rbd_tracked-c", "images/c", OLD),)
    in_trash = core.ImageState(
        "vms", "d", "id9", (core.Snap("rbd_tracked-c"),),
        schema.Records(snaps=made),
        trash=core.Trash(core.TRASH_USER, NOW, NOW))
    restored = dataclasses.replace(in_trash, image_id="id8", trash=None)
    removing = dataclasses.replace(in_trash, image_id="id7", trash=None,
                                   removing=True)
    items = plans.plan_cleanup(dataclasses.replace(
        survey(), trashed=(restored, removing, in_trash)), NOW, GRACE)
    assert [(i.kind, i.target, i.action, i.image_id) for i in items] == [
        (Kind.TRASHED, "vms/d", Action.REMOVE, "id9")]
