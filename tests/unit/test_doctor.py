import dataclasses

import pytest

from glance_rbd_tracked import doctor
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
