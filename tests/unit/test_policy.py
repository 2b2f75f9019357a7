"""The chain policy kept in the cluster: which policy wins, what doctor
sets, its records."""

import json

import pytest

from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import policy
from glance_rbd_tracked.policy import Local
from glance_rbd_tracked.policy import Source

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
