"""The chain policy kept in the store pool's RBD metadata, on the real
cluster: set by ``doctor --execute`` as glance, read by every documented
user (glance, nova, cinder, the operator), each service's view recorded
with its own key and compared by doctor.

What these tests keep in ``images`` (the policy is the defaults there,
as every other test expects) is removed afterwards; a policy other than
the defaults is kept only in a pool of its own.
"""

from __future__ import annotations

import json
import socket

import pytest
import rbd

from glance_rbd_tracked import ceph as ceph_mod
from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import policy
from glance_rbd_tracked import settings
from tests.functional.conftest import make_store
from tests.functional.test_cephx import cli
from tests.functional.test_cephx import documented  # noqa: F401 (fixture)
from tests.functional.test_cephx import engines  # noqa: F401 (fixture)
from tests.functional.test_cephx import mon
from tests.functional.test_cli import glance_api_conf
from tests.functional.test_cli import run

POOL = "grt-policy"  # a pool whose policy is not the defaults
DEFAULT = core.Policy(pool="images")


def metadata(rados_client, pool):
    with rados_client.open_ioctx(pool) as ioctx:
        return dict(rbd.RBD().pool_metadata_list(ioctx))


@pytest.fixture
def own_pool(rados_client):
    mon(rados_client, prefix="osd pool create", pool=POOL, pg_num=1,
        pgp_num=1)
    with rados_client.open_ioctx(POOL) as ioctx:
        rbd.RBD().pool_init(ioctx, True)
    yield POOL
    mon(rados_client, prefix="osd pool rm", pool=POOL, pool2=POOL,
        yes_i_really_really_mean_it=True)


def rows(result):
    return {(r["subject"], r["check"]): r for r in json.loads(result.stdout)}


def test_glance_sets_it_every_user_reads_it_services_record_their_views(
        documented, engines, no_chain_policy, rados_client):  # noqa: F811
    glance, op = documented["glance"], documented["operator"]
    before = cli(glance, "doctor", "--format", "json")
    assert before.returncode == 1
    assert rows(before)["images", "chain policy"]["status"] == "fix"
    done = cli(glance, "doctor", "--execute", "--format", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert rows(done)["images", "chain policy"]["status"] == "ok"
    assert policy.load_policy(metadata(rados_client, "images")[
        policy.POLICY_KEY], "images") == DEFAULT

    for user, service in ((glance, "glance-api"), (documented["nova"],
                                                   "nova-compute"),
                          (documented["cinder"], "cinder-volume")):
        follows = settings.Policies(policy.Local(), service, host="test-host")
        resolved = follows.resolved(engines(user), "images")
        assert resolved == policy.Resolved(DEFAULT, policy.Source.CLUSTER)
        view, seen = policy.load_view(
            policy.view_key(service, "test-host"), metadata(
                rados_client, "images")[policy.view_key(service, "test-host")])
        assert (view.source, seen.chain_pools) == ("cluster",
                                                   DEFAULT.chain_pools)

    # the operator reads the policy and the views, and may not change them
    as_operator = engines(op)
    assert settings.cluster_policy(as_operator.setup, "images") == DEFAULT
    with pytest.raises(errors.TrackedError, match=r"[Pp]ermission"):
        as_operator.setup.set_pool_metadata("images", policy.POLICY_KEY, "{}")
    checked = cli(op, "doctor", "--format", "json")
    assert checked.returncode == 1  # it may not write in the pools
    found = rows(checked)
    assert found["images", "chain policy"]["status"] == "ok"
    for service in ("glance-api", "nova-compute", "cinder-volume"):
        assert found[f"{service}@test-host", "service policy"][
            "status"] == "ok"


def test_doctor_reports_each_service_whose_view_differs(
        documented, engines, no_chain_policy, rados_client):  # noqa: F811
    glance = documented["glance"]
    # a compute host that read before the cluster kept a policy, with
    # chain_pools set in its nova.conf
    early = settings.Policies(
        policy.Local(chain_pools=frozenset({"vms"})), "nova-compute",
        host="cmp-early")
    assert early.resolved(engines(documented["nova"]), "images").source \
        is policy.Source.LOCAL
    assert cli(glance, "doctor", "--execute").returncode == 1  # cmp-early
    # a glance-api that overrides the cluster's on purpose
    store = make_store(glance.conf, rbd_store_user=glance.name,
                       rbd_tracked_policy_override=True,
                       rbd_tracked_max_clone_depth=2)
    assert store.policy == core.Policy(pool="images", max_clone_depth=2)

    table = cli(glance, "doctor")
    print(table.stdout)  # the sample in the docs
    assert table.returncode == 1
    found = rows(cli(glance, "doctor", "--format", "json"))
    host = socket.gethostname()
    override = found[f"glance-api@{host}", "service policy"]
    assert override["status"] == "fix"
    assert "overrides the cluster's chain policy with its own options" in \
        override["detail"]
    assert "max_clone_depth 5 -> 2" in override["detail"]
    stale = found["nova-compute@cmp-early", "service policy"]
    assert stale["status"] == "fix"
    assert "the cluster kept none when it read it" in stale["detail"]
    assert "chain_pools vms,volumes -> vms" in stale["detail"]
    key = policy.view_key("nova-compute", "cmp-early")
    assert f"rbd pool metadata remove images {key}" in stale["fix"]
    assert found["images", "chain policy"]["status"] == "ok"


def test_the_driver_and_the_cli_follow_the_cluster_and_doctor_keeps_what_is_unset(
        ceph_conf, own_pool, tmp_path, rados_client):
    narrow = core.Policy(pool=own_pool, chain_pools=frozenset({"vms"}),
                         max_clone_depth=1, adopt_stock_images=False)
    admin = ceph_mod.connect(ceph_conf)
    try:
        admin.setup.set_pool_metadata(own_pool, policy.POLICY_KEY, policy.dump(
            policy.to_record(narrow, "2026-12-07T03:00:00Z", "test")))
        # glance-api's configuration sets none of the policy's options
        store = make_store(ceph_conf, pool=own_pool)
        assert store.policy == narrow
        conf = glance_api_conf(tmp_path / "glance-api.conf", ceph_conf,
                               rbd_store_pool=own_pool)
        with rados_client.open_ioctx("volumes") as ioctx:
            rbd.RBD().create(ioctx, "grt-policy-volume", 4096)
        try:
            retire = run("--config-file", conf, "retire", "--format", "json",
                         "volumes/grt-policy-volume")
        finally:
            with rados_client.open_ioctx("volumes") as ioctx:
                rbd.RBD().remove(ioctx, "grt-policy-volume")
        assert retire.returncode == 1
        assert "is not one the store retires disks in (vms)" in \
            retire.stderr, retire.stderr

        checked = rows(run("--config-file", conf, "doctor", "--format",
                           "json"))
        assert checked[own_pool, "chain policy"]["status"] == "ok"
        # one option set in glance-api's: doctor --execute sets that one
        conf = glance_api_conf(tmp_path / "glance-api.conf", ceph_conf,
                               rbd_store_pool=own_pool,
                               rbd_tracked_max_clone_depth=4)
        plan = rows(run("--config-file", conf, "doctor", "--format", "json"))
        assert "max_clone_depth 1 -> 4" in plan[own_pool, "chain policy"][
            "detail"]
        run("--config-file", conf, "doctor", "--execute")
        assert settings.cluster_policy(admin.setup, own_pool) == \
            core.Policy(pool=own_pool, chain_pools=frozenset({"vms"}),
                        max_clone_depth=4, adopt_stock_images=False)
    finally:
        admin.close()

