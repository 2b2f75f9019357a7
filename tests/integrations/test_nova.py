"""The Nova integration's switch, without Nova (the rest runs against
Nova's own code in tests/e2e/openstack)."""

import logging

from oslo_config import cfg

from glance_rbd_tracked.integrations import nova


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
