"""Failures that must be answered clearly and leave nothing in the way, on
the real cluster (faults of the cluster itself: tests/functional/
test_faults.py)."""

import datetime
import json
import subprocess
import sys
import urllib.parse
import uuid

from glance_store import exceptions
import pytest
import rbd

from glance_rbd_tracked import cleanup
from glance_rbd_tracked import schema
from tests.functional import crash_worker
from tests.functional.conftest import location_of
from tests.functional.conftest import read_all
from tests.functional.conftest import upload
from tests.functional.test_crash import fence_watchers

LATER = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)


def cli(ceph_conf, *args):
    return subprocess.run([sys.executable, "-m", "glance_rbd_tracked.cli",
                           "--ceph-conf", ceph_conf, *args],
                          capture_output=True, text=True, timeout=120)


def test_a_missing_pool_is_not_found(store):
    where = location_of(store, f"rbd://{store.ceph.fsid()}/nosuchpool/"
                               f"{uuid.uuid4()}/snap")
    with pytest.raises(exceptions.NotFound, match="nosuchpool"):
        store.get_size(where)
    with pytest.raises(exceptions.NotFound):
        store.get(where)


def test_a_location_naming_another_snapshot_changes_nothing(store, image_id):
    uri, *_ = upload(store, image_id, b"kept" * 1000)
    bogus = uri.rpartition("/")[0] + "/nosuchsnap"
    with pytest.raises(exceptions.NotFound):
        store.get_size(location_of(store, bogus))
    with pytest.raises(exceptions.NotFound, match="has no snapshot "
                       "nosuchsnap"):
        store.delete(location_of(store, bogus))
    assert read_all(store, uri) == b"kept" * 1000
    store.delete(location_of(store, uri))


def test_show_follows_the_location_the_store_published(store, ceph_conf):
    image_id = f"été-{uuid.uuid4()}"  # Glance ids are strings; store them
    uri, *_ = upload(store, image_id, b"n" * 4096)
    assert urllib.parse.quote(image_id, "") in uri
    shown = cli(ceph_conf, "show", "--format", "json", uri)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["image"] == image_id
    malformed = cli(ceph_conf, "show", "rbd://only/three/parts")
    assert malformed.returncode == 2
    assert "is not an rbd:// location" in malformed.stderr
    assert cli(ceph_conf, "retire", "--execute", "no-pool").returncode == 2
    store.delete(location_of(store, uri))


def test_one_corrupt_record_is_reported_and_the_rest_is_done(
        store, nova, ceph_conf):
    from glance_rbd_tracked import lifecycle
    disks = []
    for _ in range(2):
        disk = f"{uuid.uuid4()}_disk"
        nova.create("vms", disk, snaps=("nova-kept",))
        lifecycle.retire(store.ceph, "vms", disk, store.settings.policy)
        disks.append(disk + schema.RETIRED_SUFFIX)
    bad, good = disks
    with nova.ioctx("vms") as ioctx, rbd.Image(ioctx, bad) as image:
        image.metadata_set(schema.RETIRED_KEY, "{broken")
    for disk in disks:  # their owner is done with its snapshot
        with nova.ioctx("vms") as ioctx, rbd.Image(ioctx, disk) as image:
            image.unprotect_snap("nova-kept")
            image.remove_snap("nova-kept")
    run = cli(ceph_conf, "cleanup", "--execute", "--grace", "0",
              "--format", "json")
    assert run.returncode == 1, run.stderr
    rows = {r["target"]: r for r in json.loads(run.stdout)}
    assert rows[f"vms/{bad}"]["kind"] == "corrupt"
    assert rows[f"vms/{bad}"]["result"].startswith(
        f"failed: vms/{bad}: metadata 'rbd_tracked.retired' is not JSON")
    assert rows[f"vms/{good}"]["result"] == "done"
    assert not nova.exists("vms", good) and nova.exists("vms", bad)
    with nova.ioctx("vms") as ioctx, rbd.Image(ioctx, bad) as image:
        image.metadata_remove(schema.RETIRED_KEY)
    nova.remove("vms", bad)


def test_a_killed_upload_blocks_neither_glance_nor_cleanup(store, operator,
                                                          ceph_conf):
    """A writer killed mid-upload leaves a partial image with its exclusive
    lock.  Once nothing watches it (here: the dead client is fenced, as
    osd_client_watch_timeout would do after 30 s), a new upload of the same
    Glance image replaces it, and cleanup removes one nobody retried."""
    for retried in (True, False):
        image_id = str(uuid.uuid4())
        run = crash_worker.run(ceph_conf, "chunk-3", "upload", image_id)
        assert run.returncode == -9, run.stdout + run.stderr
        state = store.ceph.images.state("images", image_id)
        assert state.snaps == () and state.records.owner.kind == "upload"
        with operator.ioctx("images") as ioctx, \
                rbd.Image(ioctx, image_id) as image:
            assert len(list(image.lock_get_owners())) == 1  # the dead one
        with pytest.raises(exceptions.Duplicate, match="still written by"):
            upload(store, image_id, b"again" * 100)
        fence_watchers(ceph_conf, "images", state.image_id)
        if retried:
            uri, *_ = upload(store, image_id, b"again" * 100)
            assert read_all(store, uri) == b"again" * 100
            store.delete(location_of(store, uri))
        else:
            items = [i for i in cleanup.plan(store.ceph,
                                             store.settings.policy, LATER,
                                             datetime.timedelta(0))
                     if i.target == f"images/{image_id}"]
            assert [i.action for i in items] == ["finish upload"]
            assert cleanup.execute(store.ceph, items,
                                   store.settings.policy) == []
        assert not operator.exists("images", image_id)
        intents, _ = schema.load_journal(
            store.ceph.journal.entries("images"))
        assert not [i for i in intents if image_id in i.target]
