"""The chain policy kept in the cluster: which policy wins, what doctor
sets, its records; and :class:`settings.Policies` on the in-memory
cluster."""

import json
import logging

import pytest

from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import policy
from glance_rbd_tracked import settings
from glance_rbd_tracked.policy import Local
from glance_rbd_tracked.policy import Source
from tests.fakes import FakeCeph
from tests.fakes import World

DEFAULT = core.Policy(pool="images")
CLUSTER = core.Policy(pool="images", chain_pools=frozenset({"vms"}),
                      max_clone_depth=3, adopt_stock_images=False)
VMS = frozenset({"vms"})
BOTH = frozenset({"vms", "volumes"})


@pytest.mark.parametrize("local, cluster, expected, source, ignored", [
    # nothing set anywhere: core.Policy's defaults
    (Local(), None, DEFAULT, Source.LOCAL, ()),
    # the cluster's wins over options set without the override...
    (Local(chain_pools=BOTH), CLUSTER, CLUSTER, Source.CLUSTER,
     ("chain_pools",)),
    (Local(chain_pools=VMS), CLUSTER, CLUSTER, Source.CLUSTER, ()),
    (Local(), CLUSTER, CLUSTER, Source.CLUSTER, ()),
    # ...and before there is one, the options set apply, over the defaults
    (Local(chain_pools=VMS), None,
     core.Policy(pool="images", chain_pools=VMS), Source.LOCAL, ()),
    # the override: the options set, over the defaults (not the cluster's)
    (Local(override=True, max_clone_depth=9), CLUSTER,
     core.Policy(pool="images", max_clone_depth=9), Source.OVERRIDE, ()),
    (Local(override=True), CLUSTER, DEFAULT, Source.OVERRIDE, ()),
])
def test_which_policy_wins(local, cluster, expected, source, ignored):
    resolved = policy.resolve("images", local, cluster)
    assert resolved == policy.Resolved(expected, source, ignored)


def test_the_cluster_policy_applies_to_the_pool_it_is_read_for():
    kept = core.Policy(pool="", chain_pools=VMS)
    assert policy.resolve("glance", Local(), kept).policy.pool == "glance"


@pytest.mark.parametrize("local, cluster, expected", [
    (Local(), None, DEFAULT),
    (Local(), CLUSTER, CLUSTER),  # unset never changes the cluster
    (Local(chain_pools=BOTH), CLUSTER,
     core.Policy(pool="images", chain_pools=BOTH, max_clone_depth=3,
                 adopt_stock_images=False)),
    (Local(override=True, max_clone_depth=2), None,
     core.Policy(pool="images", max_clone_depth=2)),
])
def test_what_doctor_sets(local, cluster, expected):
    assert policy.wanted("images", local, cluster) == expected


def test_differences_name_each_field_both_ways():
    assert policy.differences(DEFAULT, CLUSTER) == (
        "chain_pools vms,volumes -> vms", "max_clone_depth 5 -> 3",
        "adopt_stock_images true -> false")
    assert policy.differences(CLUSTER, CLUSTER) == ()
    empty = core.Policy(pool="images", chain_pools=frozenset())
    assert policy.differences(DEFAULT, empty) == (
        "chain_pools vms,volumes -> (none)",)
    assert policy.fingerprint(DEFAULT) != policy.fingerprint(CLUSTER)
    assert policy.same(DEFAULT, core.Policy(pool="elsewhere"))


def test_the_record_round_trips_as_version_1():
    value = policy.dump(policy.to_record(CLUSTER, "2026-12-07T03:00:00Z",
                                         "host1"))
    assert json.loads(value) == {
        "v": 1, "chain_pools": "vms", "max_clone_depth": "3",
        "adopt_stock_images": "false", "set": "2026-12-07T03:00:00Z",
        "by": "host1"}
    assert policy.load_policy(value, "images") == CLUSTER


RECORD = {"chain_pools": "vms,volumes", "max_clone_depth": "5",
          "adopt_stock_images": "true", "set": "t", "by": "h"}


@pytest.mark.parametrize("body, readable", [
    ({**RECORD, "v": 1}, True),
    # a later version that older readers may read: its new field ignored
    ({**RECORD, "v": 2, "compat": 1, "quota": "x"}, True),
    # one they may not
    ({**RECORD, "v": 2, "compat": 2}, False),
    ({**RECORD, "v": 2}, False),  # no compat
    ({**RECORD, "v": 1, "max_clone_depth": "0"}, False),
    ({**RECORD, "v": 1, "max_clone_depth": "deep"}, False),
    ({**RECORD, "v": 1, "adopt_stock_images": "yes"}, False),
    ({**RECORD, "v": 1, "max_clone_depth": 5}, False),  # not a string
    ({"v": 1, "chain_pools": "vms"}, False),
])
def test_which_records_this_release_reads(body, readable):
    value = json.dumps(body)
    if readable:
        assert policy.load_policy(value, "images") == DEFAULT
    else:
        with pytest.raises(errors.CorruptMetadata, match=r"rbd_tracked\.policy"):
            policy.load_policy(value, "images")


def test_a_view_names_its_service_and_host_in_its_key():
    resolved = policy.resolve("images", Local(override=True, chain_pools=VMS),
                              None)
    view = policy.view_of(resolved, "nova-compute", "cmp1", "t")
    assert view.key == "rbd_tracked.view.nova-compute@cmp1"
    read, seen = policy.load_view(view.key, policy.dump(view))
    assert read == view and seen.chain_pools == VMS
    assert view.source == "override"
    with pytest.raises(errors.CorruptMetadata, match="describes"):
        policy.load_view("rbd_tracked.view.nova-compute@cmp2",
                         policy.dump(view))


# -- settings.Policies: read, cached, refreshed, recorded ---------------------

class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def policies(local=None, service="glance-api", clock=None):
    return settings.Policies(local or Local(), service, host="h1",
                             clock=clock or Clock(),
                             now=lambda: "2026-12-07T03:00:00Z")


def keep(fake, kept, pool="images"):
    fake.setup.set_pool_metadata(pool, policy.POLICY_KEY, policy.dump(
        policy.to_record(kept, "t", "h")))


def views(fake, pool="images"):
    return {k: json.loads(v) for k, v in fake.setup.pool_metadata_with(
        pool, policy.VIEW_KEY_PREFIX).items()}


def reads(fake):
    return sum(1 for name, _ in fake.world.calls if name == "pool_metadata")


def test_a_service_follows_the_cluster_and_records_its_view():
    fake, clock = FakeCeph(World()), Clock()
    keep(fake, CLUSTER)
    p = policies(clock=clock)
    assert p.get(fake, "images") == CLUSTER
    assert p.get(fake, "images") == CLUSTER
    assert reads(fake) == 1  # cached
    (view,) = views(fake).values()
    assert (view["service"], view["host"], view["source"],
            view["chain_pools"]) == ("glance-api", "h1", "cluster", "vms")

    keep(fake, DEFAULT)  # doctor --execute, elsewhere
    clock.now += settings.Policies.REFRESH - 1
    assert p.get(fake, "images") == CLUSTER
    clock.now += 1
    assert p.get(fake, "images") == DEFAULT
    assert reads(fake) == 2
    assert views(fake)["rbd_tracked.view.glance-api@h1"]["chain_pools"] == \
        "vms,volumes"


def test_without_a_cluster_policy_the_options_apply_and_the_view_says_so(
        caplog):
    fake = FakeCeph(World())
    with caplog.at_level(logging.WARNING):
        got = policies(Local(chain_pools=VMS)).get(fake, "images")
    assert got == core.Policy(pool="images", chain_pools=VMS)
    assert "doctor --execute sets it" in caplog.text
    (view,) = views(fake).values()
    assert view["source"] == "local"


def test_options_the_cluster_overrules_are_named_in_a_warning(caplog):
    fake = FakeCeph(World())
    keep(fake, CLUSTER)
    with caplog.at_level(logging.WARNING):
        got = policies(Local(max_clone_depth=7)).get(fake, "images")
    assert got == CLUSTER
    assert "options max_clone_depth differ" in caplog.text
    assert "rbd_tracked_policy_override = true overrides it" in caplog.text


def test_an_override_never_reads_the_cluster():
    fake = FakeCeph(World())
    keep(fake, CLUSTER)
    p = policies(Local(override=True, chain_pools=VMS))
    assert p.get(fake, "images") == core.Policy(pool="images", chain_pools=VMS)
    assert reads(fake) == 0
    (view,) = views(fake).values()
    assert view["source"] == "override"


def test_a_command_records_no_view():
    fake = FakeCeph(World())
    policies(service=None).get(fake, "images")
    assert views(fake) == {}


def test_a_cluster_that_cannot_be_read_keeps_the_last_policy_or_fails():
    fake, clock = FakeCeph(World()), Clock()
    keep(fake, CLUSTER)
    p = policies(clock=clock)
    fake.world.fail("pool_metadata", errors.ClusterError("timed out"))
    with pytest.raises(errors.ClusterError):
        p.get(fake, "images")  # never read: the request fails
    assert p.get(fake, "images") == CLUSTER
    clock.now += settings.Policies.REFRESH
    fake.world.fail("pool_metadata", errors.ClusterError("timed out"))
    assert p.get(fake, "images") == CLUSTER


def test_a_policy_this_release_may_not_read_is_an_error_not_a_guess():
    fake, clock = FakeCeph(World()), Clock()
    p = policies(clock=clock)
    keep(fake, CLUSTER)
    assert p.get(fake, "images") == CLUSTER
    fake.setup.set_pool_metadata("images", policy.POLICY_KEY, json.dumps(
        {**RECORD, "v": 2, "compat": 2}))  # a later release's
    clock.now += settings.Policies.REFRESH
    with pytest.raises(errors.CorruptMetadata, match="version 2"):
        p.get(fake, "images")  # not the one read before either
    with pytest.raises(errors.CorruptMetadata, match="version 2"):
        policies().get(fake, "images")


def test_a_view_that_cannot_be_written_is_logged_and_the_service_goes_on(
        caplog):
    fake = FakeCeph(World())
    keep(fake, CLUSTER)
    fake.world.fail("set_pool_metadata",
                    errors.ClusterError("permission denied"))
    with caplog.at_level(logging.WARNING):
        assert policies().get(fake, "images") == CLUSTER
    assert "cannot record the chain policy glance-api runs with" in \
        caplog.text


def test_each_pool_has_its_own_policy():
    fake = FakeCeph(World())
    keep(fake, CLUSTER, pool="images")
    p = policies()
    assert p.get(fake, "images") == CLUSTER
    assert p.get(fake, "glance") == core.Policy(pool="glance")
