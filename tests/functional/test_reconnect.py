"""The store survives its cluster going away and coming back.

This test runs a second throwaway cluster of its own (another directory and
port), so stopping it does not disturb the other tests.
"""

import os
import uuid

import pytest
from glance_store import exceptions

from tests.functional.conftest import location_of
from tests.functional.conftest import make_store
from tests.functional.conftest import read_all
from tests.functional.conftest import cluster_cmd
from tests.functional.conftest import upload


def test_store_reconnects_to_a_cluster_restarted_at_the_same_address(
        second_cluster):
    conf = os.path.join(second_cluster["CEPH_DEV_DIR"], "ceph.conf")
    store = make_store(conf, rados_connect_timeout=5)
    try:
        _reconnects(store, second_cluster)
    finally:
        # shut the clients down while their cluster still answers
        store.cluster.close()


def _reconnects(store, second_cluster):
    image_id = str(uuid.uuid4())
    uri, *_ = upload(store, image_id, b"before" * 1000)
    old_fsid = store.cluster.fsid()
    assert store.url_prefix == f"rbd://{old_fsid}/images/"

    cluster_cmd(second_cluster, "down")
    cluster_cmd(second_cluster, "up")  # a new cluster: new fsid, no images

    # The first read notices the dead connection, reconnects, and answers.
    with pytest.raises(exceptions.NotFound):
        store.get_size(location_of(store, uri))
    new_fsid = store.cluster.fsid()
    assert new_fsid != old_fsid
    assert store.url_prefix == f"rbd://{new_fsid}/images/"
    uri, *_ = upload(store, str(uuid.uuid4()), b"after" * 1000)
    assert uri.startswith(f"rbd://{new_fsid}/images/")
    assert read_all(store, uri) == b"after" * 1000
