"""The Nova integration's switch, without Nova (the rest runs against
Nova's own code in tests/e2e/openstack)."""

import logging

from oslo_config import cfg

from glance_rbd_tracked import core
from glance_rbd_tracked import policy
from glance_rbd_tracked.integrations import nova
from tests.fakes import FakeCeph
from tests.fakes import World


def test_disabled_in_nova_conf_it_changes_nothing_and_says_so(caplog):
    conf = cfg.ConfigOpts()
    conf([], project="nova-test", default_config_files=[])
    conf.register_opts(nova.OPTS, group=nova.GROUP)
    conf.set_override("enabled", False, group=nova.GROUP)
    with caplog.at_level(logging.INFO, logger=nova.__name__):
        outcome = nova.install(conf)
    assert outcome == nova.Outcome(False, "[rbd_tracked] enabled = false")
    assert [r.getMessage() for r in caplog.records] == [
        "glance_rbd_tracked: Nova left unchanged: [rbd_tracked] enabled = "
        "false"]


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
