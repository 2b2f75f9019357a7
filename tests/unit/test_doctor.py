import dataclasses

import pytest

from glance_rbd_tracked import core
from glance_rbd_tracked import doctor
from glance_rbd_tracked import policy
from glance_rbd_tracked.doctor import Status


def facts(release="mimic", client="auto", vms_option=True, **pool):
    pools = tuple(doctor.PoolFacts(name, exists=True,
                                   parent_to_trash=vms_option,
                                   can_read=True, can_write=True,
                                   can_list_clones=True)
                  for name in ("images", "vms"))
    if pool:
        pools = (pools[0], doctor.PoolFacts("vms", **{
            "exists": True, "parent_to_trash": vms_option, "can_read": True,
            "can_write": True, "can_list_clones": True, **pool}))
    return doctor.Facts(require_min_compat_client=release,
                        client_clone_format=client, user="glance",
                        store_pool="images", chain_pools=("vms",),
                        pools=pools)


@pytest.mark.parametrize("release, client, expected", [
    ("luminous", "auto", 1), ("mimic", "auto", 2), ("reef", "auto", 2),
    ("luminous", "2", 2), ("mimic", "1", 1), (None, "auto", 1),
    ("a-release-from-the-future", "auto", 1),
])
def test_the_clone_format_in_effect(release, client, expected):
    assert doctor.clone_format(facts(release, client)) == expected


def test_all_good():
    findings = doctor.evaluate(facts())
    assert {f.status for f in findings} == {Status.OK}
    assert [(f.subject, f.check) for f in findings] == [
        ("cluster", "clone format"),
        ("images", "read"), ("images", "write"), ("images", "list clones"),
        ("vms", "read"), ("vms", "write"), ("vms", "list clones"),
        ("vms", doctor.PARENT_TO_TRASH)]


def test_format_1_says_what_stock_nova_and_cinder_leave():
    (cluster, *_), = [doctor.evaluate(facts("luminous"))]
    assert cluster.status is Status.FIX
    assert "leave such disks and volumes until they are retired" in \
        cluster.detail
    assert cluster.fix.startswith("ceph osd set-require-min-compat-client")


def test_the_pool_option_is_to_fix_and_settable():
    (option,) = [f for f in doctor.evaluate(facts(vms_option=False))
                 if f.check == doctor.PARENT_TO_TRASH]
    assert (option.status, option.settable) == (Status.FIX, True)
    assert "stock Cinder flattens the chain image" in option.detail
    assert option.fix == ("rbd config pool set vms "
                          "rbd_move_parent_to_trash_on_remove true")


def test_missing_access_names_the_caps_to_add():
    findings = doctor.evaluate(facts(can_list_clones=False, can_write=None))
    bad = [f for f in findings if f.status is Status.FIX]
    assert [(f.subject, f.check) for f in bad] == [("vms", "list clones")]
    assert "class-read object_prefix rbd_children" in bad[0].fix
    # what could not be told is not reported either way
    assert ("vms", "write") not in {(f.subject, f.check) for f in findings}


def test_a_missing_pool_is_reported_not_probed():
    missing = doctor.Facts("mimic", "auto", "glance", "images", ("vms",), (
        doctor.PoolFacts("images", True, None, True, True, True),
        doctor.PoolFacts("vms", exists=False)))
    assert [(f.subject, f.check, f.status) for f in
            doctor.evaluate(missing)][-1] == ("vms", "exists", Status.FIX)


def test_clones_must_be_listable_in_every_pool_of_the_cluster():
    other = doctor.PoolFacts("backups", exists=True, can_list_clones=False)
    base = facts()
    findings = doctor.evaluate(doctor.Facts(
        base.require_min_compat_client, base.client_clone_format, base.user,
        base.store_pool, base.chain_pools, (*base.pools, other)))
    (bad,) = [f for f in findings if f.status is Status.FIX]
    assert (bad.subject, bad.check) == ("backups", "list clones")
    assert "class-read object_prefix rbd_children" in bad.fix


def timed(op_timeout, grace, interval):
    return dataclasses.replace(facts(), op_timeout=op_timeout,
                               osd_heartbeat_grace=grace,
                               osd_heartbeat_interval=interval)


@pytest.mark.parametrize("op_timeout, grace, interval, expected", [
    (30, 20, 6, Status.OK),  # the defaults of both
    (26, 20, 6, Status.FIX),  # not longer: the op gives up as it is resent
    (26.5, 20, 6, Status.OK),
    (10, 20, 6, Status.FIX),
    (13, 10, 2, Status.OK),  # tools/ceph-dev-cluster with three OSDs
    (12, 10, 2, Status.FIX),
    (5, 2.5, 1.5, Status.OK),
])
def test_the_op_timeout_must_outlast_failure_detection(
        op_timeout, grace, interval, expected):
    (found,) = [f for f in doctor.evaluate(timed(op_timeout, grace, interval))
                if f.check == "op timeout"]
    assert (found.subject, found.status, found.settable) == (
        "store", expected, False)
    bound = f"= {grace + interval:g} s"
    assert bound in found.detail
    assert (found.fix == "") is (expected is Status.OK)


def test_a_short_op_timeout_says_what_to_change():
    facts = dataclasses.replace(timed(10, 20, 6),
                                failure_detection_from="somewhere")
    (found,) = [f for f in doctor.evaluate(facts) if f.check == "op timeout"]
    assert "rbd_tracked_op_timeout 10 s is not longer" in found.detail
    assert "= 26 s, read from somewhere)" in found.detail
    assert found.fix.startswith("set rbd_tracked_op_timeout above 26 (say 36)")
    assert "ceph config set global osd_heartbeat_grace" in found.fix


@pytest.mark.parametrize("op_timeout, grace, interval", [
    (None, 20, 6), (30, None, 6), (30, 20, None), (None, None, None)])
def test_failure_detection_not_told_is_not_reported(op_timeout, grace,
                                                    interval):
    assert "op timeout" not in {
        f.check for f in doctor.evaluate(timed(op_timeout, grace, interval))}


def test_the_op_timeout_comes_after_the_clone_format():
    checks = [(f.subject, f.check) for f in doctor.evaluate(timed(30, 20, 6))]
    assert checks[:3] == [("cluster", "clone format"), ("store", "op timeout"),
                          ("images", "read")]


# -- the chain policy kept in the cluster, and the services' views ----------

DEFAULT = core.Policy(pool="images")
NARROW = core.Policy(pool="images", chain_pools=frozenset({"vms"}))


def view(host, seen, source="cluster", service="nova-compute"):
    return doctor.ServiceView(policy.view_key(service, host), service, host,
                              source, "2026-12-07T03:00:00Z", seen)


def chain(cluster=DEFAULT, wanted=DEFAULT, *views, error=""):
    return doctor.evaluate_policy(doctor.PolicyFacts(
        "images", wanted, cluster, error, views))


@pytest.mark.parametrize("cluster, wanted, error, status, settable, words", [
    (DEFAULT, DEFAULT, "", Status.OK, False, "keeps the chain policy "
     "chain_pools=vms,volumes max_clone_depth=5 adopt_stock_images=true"),
    (None, DEFAULT, "", Status.FIX, True, "keeps no chain policy"),
    (DEFAULT, NARROW, "", Status.FIX, True,
     "is not glance-api's configuration: chain_pools vms,volumes -> vms"),
    (None, DEFAULT, "metadata 'rbd_tracked.policy' is of version 2",
     Status.FIX, False, "cannot be read"),
])
def test_the_cluster_policy_against_glance_apis_configuration(
        cluster, wanted, error, status, settable, words):
    (finding,) = chain(cluster, wanted, error=error)
    assert (finding.check, finding.subject) == ("chain policy", "images")
    assert (finding.status, finding.settable) == (status, settable)
    assert words in finding.detail


@pytest.mark.parametrize("cluster, seen, source, status, words, fix", [
    (DEFAULT, DEFAULT, "cluster", Status.OK, "runs with the cluster's", ""),
    (DEFAULT, DEFAULT, "override", Status.OK, "its own options, the same", ""),
    (DEFAULT, NARROW, "override", Status.FIX,
     "overrides the cluster's chain policy with its own options, since "
     "2026-12-07T03:00:00Z: chain_pools vms,volumes -> vms",
     "policy_override option false"),
    (DEFAULT, NARROW, "cluster", Status.FIX, "it read an older one",
     "within 60 s"),
    (DEFAULT, NARROW, "local", Status.FIX, "the cluster kept none",
     "within 60 s"),
    # before the first doctor --execute: against what it will set
    (None, NARROW, "local", Status.FIX, "than the one doctor --execute sets",
     "within 60 s"),
])
def test_each_service_whose_view_differs_is_reported(cluster, seen, source,
                                                     status, words, fix):
    _, finding = chain(cluster, DEFAULT, view("cmp1", seen, source))
    assert (finding.check, finding.subject) == ("service policy",
                                                "nova-compute@cmp1")
    assert finding.status is status and not finding.settable
    assert words in finding.detail
    assert fix in finding.fix
    if status is Status.FIX:
        assert "rbd pool metadata remove images " \
            "rbd_tracked.view.nova-compute@cmp1" in finding.fix


def test_views_are_reported_in_key_order_and_unreadable_ones_too():
    findings = chain(DEFAULT, DEFAULT, view("b", DEFAULT),
                     doctor.ServiceView("rbd_tracked.view.x@y",
                                        error="not JSON"),
                     view("a", DEFAULT, service="cinder-volume"))
    assert [f.subject for f in findings] == [
        "images", "cinder-volume@a", "nova-compute@b", "x@y"]
    assert findings[-1].status is Status.FIX
    assert "not JSON" in findings[-1].detail
