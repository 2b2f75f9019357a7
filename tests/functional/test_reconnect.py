"""The store survives its cluster going away and coming back.

This test runs a second throwaway cluster of its own (another directory and
port), so stopping it does not disturb the other tests.
"""

import os
import subprocess
import uuid

import pytest
from glance_store import exceptions

from tests.functional.conftest import location_of
from tests.functional.conftest import make_store
from tests.functional.conftest import read_all
from tests.functional.conftest import upload

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "tools",
                      "ceph-dev-cluster")


def cluster_cmd(env, command):
    result = subprocess.run([SCRIPT, command], env=env, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture
def own_cluster():
    env = dict(os.environ,
               CEPH_DEV_DIR=os.environ["CEPH_DEV_DIR"] + "-second"
               if "CEPH_DEV_DIR" in os.environ
               else "/tmp/glance-rbd-tracked-second-ceph",
               CEPH_DEV_MON_PORT=os.environ.get("GRT_SECOND_MON_PORT", "3330"),
               CEPH_DEV_MEMSTORE_BYTES=str(1 << 30))
    cluster_cmd(env, "down")  # whatever a crashed run left behind
    cluster_cmd(env, "up")
    yield env
    cluster_cmd(env, "down")


def test_store_reconnects_to_a_cluster_restarted_at_the_same_address(
        own_cluster):
    conf = os.path.join(own_cluster["CEPH_DEV_DIR"], "ceph.conf")
    store = make_store(conf, rados_connect_timeout=5)
    image_id = str(uuid.uuid4())
    uri, *_ = upload(store, image_id, b"before" * 1000)
    old_fsid = store.cluster.fsid()
    assert store.url_prefix == f"rbd://{old_fsid}/images/"

    cluster_cmd(own_cluster, "down")
    cluster_cmd(own_cluster, "up")  # a new cluster: new fsid, no images

    # The first read notices the dead connection, reconnects, and answers.
    with pytest.raises(exceptions.NotFound):
        store.get_size(location_of(store, uri))
    new_fsid = store.cluster.fsid()
    assert new_fsid != old_fsid
    assert store.url_prefix == f"rbd://{new_fsid}/images/"
    uri, *_ = upload(store, str(uuid.uuid4()), b"after" * 1000)
    assert uri.startswith(f"rbd://{new_fsid}/images/")
    assert read_all(store, uri) == b"after" * 1000
