"""The Nova integration: its switch without Nova; its seams with Nova's own
code (PyPI nova 34, in a worker process) on the test cluster, without
glance-api (the flows through Glance are in tests/e2e/openstack)."""

import logging

from oslo_config import cfg
import pytest
import rbd

from glance_rbd_tracked import core
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import policy
from glance_rbd_tracked.integrations import nova
from tests.e2e.openstack.conftest import leftovers
from tests.e2e.openstack.conftest import parent
from tests.e2e.openstack.worker import Failed
from tests.fakes import FakeCeph
from tests.fakes import World
from tests.integrations.conftest import new_id

MiB = 1 << 20
POLICY = core.Policy(pool="images")


def test_disabled_in_nova_conf_it_changes_nothing_and_says_so(caplog):
    conf = cfg.ConfigOpts()
    conf([], project="nova-test", default_config_files=[])
    conf.register_opts(nova.OPTS, group=nova.GROUP)
    conf.set_override("enabled", False, group=nova.GROUP)
    with caplog.at_level(logging.INFO, logger=nova.__name__):
        outcome = nova.install(conf)
    assert outcome == nova.Outcome(False, "[rbd_tracked] enabled = false")
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == (
        "glance_rbd_tracked: nova-compute runs without chain snapshots "
        "([rbd_tracked] enabled = false): instance snapshots are copied, as "
        "stock Nova does; chain images made before stay valid and "
        "deletable, but a destroyed instance's disk one of them depends on "
        "is not retired: it stays in its pool for good (glance-rbd-tracked "
        "retire removes it) unless clone format 2 and the pool's "
        "rbd_move_parent_to_trash_on_remove let librbd trash it "
        "(glance-rbd-tracked doctor checks both)")


def test_the_module_imports_neither_nova_nor_eventlet():
    """The launcher imports it before nova.cmd.compute, whose first
    statement refuses to run once eventlet is imported."""
    import subprocess
    import sys
    code = ("import sys, glance_rbd_tracked.integrations.nova; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('nova', 'eventlet', 'cinder')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


def nova_conf(**options):
    conf = cfg.ConfigOpts()
    conf([], project="nova-test", default_config_files=[])
    conf.register_opts(nova.OPTS, group=nova.GROUP)
    for key, value in options.items():
        conf.set_override(key, value, group=nova.GROUP)
    return conf


def test_nova_follows_the_cluster_policy_unless_it_overrides_it():
    follows = nova.Integration(nova_conf()).policies
    assert (follows.local, follows.service) == (policy.Local(), "nova-compute")
    fake = FakeCeph(World())
    kept = core.Policy(pool="images", chain_pools=frozenset({"volumes"}))
    fake.setup.set_pool_metadata("images", policy.POLICY_KEY, policy.dump(
        policy.to_record(kept, "t", "h")))
    assert follows.get(fake, "images") == kept
    # chain_pools alone is ignored (and said to be); with the override it wins
    ignored = nova.Integration(nova_conf(chain_pools=["vms"])).policies
    assert ignored.get(fake, "images") == kept
    overriding = nova.Integration(nova_conf(chain_pools=["vms"],
                                            policy_override=True)).policies
    assert overriding.get(fake, "images") == core.Policy(
        pool="images", chain_pools=frozenset({"vms"}))
    assert overriding.override_option == "[rbd_tracked] policy_override"


# -- with Nova's own code, on the cluster -----------------------------------

LINE = nova.DECLINED.split("({why})")


def disk_of_an_instance(side, instance):
    """What booting does, without Glance: a base image in Glance's pool
    and the instance's root disk, a clone of it."""
    base = f"base-{instance}"
    side.create("images", base, MiB, snaps=["snap"])
    side.clone("images", base, "snap", "vms", f"{instance}_disk")
    return base


def delete_image(store, image_id):
    """What glance-api does when the image is deleted."""
    lifecycle.delete(store, "images", image_id, POLICY)


def remove_base(side, base):
    with side.ioctx("images") as ioctx, rbd.Image(ioctx, base) as image:
        image.unprotect_snap("snap")
        image.remove_snap("snap")
    side.remove("images", base)


def left(side, store, *names):
    return leftovers(side, store, *names)


def test_novas_methods_are_wrapped_not_copied(start):
    worker = start("nova_side", "integration")
    assert worker.hello["installed"], worker.hello
    replaced = ["cleanup_direct_snapshot", "cleanup_volumes",
                "direct_snapshot"]
    assert worker.hello["changed"] == replaced
    # each replacement runs Nova's own method, the one it replaced
    assert worker.hello["wrapping"] == replaced
    assert worker.hello["lines"] == [
        f"INFO glance_rbd_tracked: Nova {worker.hello['nova']}: instance "
        "snapshots are chains, destroyed disks with chains are retired"]


@pytest.mark.parametrize("mode, installed, says", [
    ("unknown-version", True,
     "INFO glance_rbd_tracked: Nova 35.0.0: instance snapshots are chains, "
     "destroyed disks with chains are retired (tested on 34.x; this release "
     "has every method it wraps or calls, with the parameters it needs)"),
    ("renamed-parameter", False,
     f"WARNING glance_rbd_tracked: {LINE[0]}(nova.virt.libvirt.imagebackend:"
     "Rbd.direct_snapshot is (self, context, snapshot_name, image_format, "
     "image_uuid, base_image_id): its parameter 5 is 'image_uuid', not "
     f"'image_id'){LINE[1]}"),
])
def test_nova_is_served_by_its_parameters_not_its_release_number(
        start, mode, installed, says):
    worker = start("nova_side", mode)
    assert worker.hello["installed"] is installed
    assert bool(worker.hello["changed"]) is installed
    assert worker.hello["lines"] == [says]


def test_a_parameter_of_a_later_nova_goes_to_novas_own_code(start, side,
                                                            store):
    """Nova's direct_snapshot takes a parameter the store does not know
    (``share``): installed all the same; a call without it makes a chain,
    a call with it is Nova's own clone and flatten."""
    worker = start("nova_side", "extended-signature")
    assert worker.hello["installed"], worker.hello
    instance, chained, stock = new_id(), new_id(), new_id()
    base = disk_of_an_instance(side, instance)
    disk = f"{instance}_disk"

    made = worker.call("direct_snapshot", instance=instance,
                       image_id=chained, base_image_id=base)
    assert made["location"].endswith(f"/images/{chained}/snap")
    assert side.parent_of("images", chained).startswith(f"vms/{disk}@")
    made = worker.call("direct_snapshot", instance=instance, image_id=stock,
                       base_image_id=base, share=True)
    assert made["location"].endswith(f"/images/{stock}/snap")
    assert parent(side, "images", stock) is None  # flattened by Nova
    log = worker.log()
    assert "direct_snapshot with share: stock code" in log
    assert "Nova's direct_snapshot, share=True" in log

    delete_image(store, chained)
    delete_image(store, stock)
    worker.call("destroy", instance=instance)
    remove_base(side, base)
    assert left(side, store, instance, chained, stock, base) == []


def test_destroy_is_novas_loop_with_disks_that_chains_need_retired(
        start, side, store):
    worker = start("nova_side", "integration")
    instance, other, image_id = new_id(), new_id(), new_id()
    base = disk_of_an_instance(side, instance)
    disk = f"{instance}_disk"
    side.create("vms", f"{instance}_disk.local", MiB)  # nothing needs it
    side.create("vms", f"{other}_disk", MiB)  # not the instance's
    worker.call("direct_snapshot", instance=instance, image_id=image_id,
                base_image_id=base)

    worker.call("destroy", instance=instance)
    assert sorted(n for n in side.names("vms") if n.startswith(instance)) \
        == [f"{disk}_to_be_deleted"]
    assert side.exists("vms", f"{other}_disk")
    worker.call("destroy", instance=instance)  # again: no change
    assert side.exists("vms", f"{disk}_to_be_deleted")

    delete_image(store, image_id)  # the retired disk goes with it
    side.remove("vms", f"{other}_disk")
    remove_base(side, base)
    assert left(side, store, instance, other, image_id, base) == []


@pytest.mark.parametrize("error, nova_gets", [
    ("ClusterError", "ImageUnacceptable"),  # Nova's standard snapshot
    ("RuntimeError", "RuntimeError"),  # a bug: loud
])
def test_only_the_stores_errors_send_a_snapshot_to_novas_fallback(
        start, side, store, error, nova_gets):
    worker = start("nova_side", "integration", bug={
        "target": "glance_rbd_tracked.chains:snapshot", "error": error})
    instance, image_id = new_id(), new_id()
    base = disk_of_an_instance(side, instance)
    with pytest.raises(Failed) as failed:
        worker.call("direct_snapshot", instance=instance, image_id=image_id,
                    base_image_id=base)
    assert failed.value.kind == nova_gets
    assert "injected into glance_rbd_tracked.chains:snapshot" in \
        failed.value.message
    assert side.snapshots("vms", f"{instance}_disk") == []
    worker.call("destroy", instance=instance)
    remove_base(side, base)
    assert left(side, store, instance, image_id, base) == []


@pytest.mark.parametrize("error", ["ClusterError", "RuntimeError"])
def test_only_the_stores_errors_send_a_disk_to_novas_stock_destroy(
        start, side, store, error):
    """The store cannot retire the disk: Nova's stock destroy (on this
    cluster's clone format 2 with rbd_move_parent_to_trash_on_remove,
    librbd keeps the disk in its trash until the chain goes).  A bug in
    the store: the destroy fails, the disk is left as it was."""
    worker = start("nova_side", "integration", bug={
        "target": "glance_rbd_tracked.lifecycle:retire", "error": error})
    instance, image_id = new_id(), new_id()
    base = disk_of_an_instance(side, instance)
    disk = f"{instance}_disk"
    worker.call("direct_snapshot", instance=instance, image_id=image_id,
                base_image_id=base)
    if error == "RuntimeError":
        with pytest.raises(Failed) as failed:
            worker.call("destroy", instance=instance)
        assert failed.value.kind == "RuntimeError"
        assert sorted(n for n in side.names("vms")
                      if n.startswith(instance)) == [disk]
        assert side.parent_of("images", image_id).startswith(f"vms/{disk}@")
    else:
        worker.call("destroy", instance=instance)
        assert [n for n in side.names("vms") if n.startswith(instance)] == []
        assert "not retired" in worker.log()
    delete_image(store, image_id)
    if error == "RuntimeError":
        worker.close()
        start("nova_side", "integration").call("destroy", instance=instance)
    remove_base(side, base)
    assert left(side, store, instance, image_id, base) == []
