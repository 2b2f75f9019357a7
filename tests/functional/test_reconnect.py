"""The store survives its cluster going down and coming back.

This test runs a second throwaway cluster of its own (another directory and
port), so stopping it does not disturb the other tests.  The cluster is
restarted for real (`ceph-dev-cluster stop` / `start`: same fsid, same
images).  It is not replaced by a new cluster at the same address: librados
16.2 can abort the process when a connected client meets another cluster
there, which no driver can prevent.
"""

import os
import uuid

from glance_store import exceptions
import pytest

from tests.functional.conftest import cluster_cmd
from tests.functional.conftest import location_of
from tests.functional.conftest import make_store
from tests.functional.conftest import read_all
from tests.functional.conftest import upload


def test_store_reconnects_after_its_cluster_restarts(second_cluster):
    conf = os.path.join(second_cluster["CEPH_DEV_DIR"], "ceph.conf")
    store = make_store(conf, rbd_tracked_op_timeout=3)
    try:
        _reconnects(store, second_cluster)
    finally:
        store.ceph.close()


def _reconnects(store, second_cluster):
    uri, *_ = upload(store, str(uuid.uuid4()), b"before" * 1000)
    fsid = store.ceph.fsid()
    first = store.ceph.connection.client()

    cluster_cmd(second_cluster, "stop")
    # While it is down a request fails in bounded time with a glance error
    # (no hang, no crash) ...
    with pytest.raises(exceptions.BackendException,
                       match="did not answer within 3 s"):
        store.get_size(location_of(store, uri))
    cluster_cmd(second_cluster, "start")

    # ... and the same client serves again once it is back: a timeout does
    # not drop it (a new one could not connect while a monitor is gone)
    assert store.get_size(location_of(store, uri)) == 6000
    assert store.ceph.connection.client() is first
    assert store.ceph.fsid() == fsid
    assert read_all(store, uri) == b"before" * 1000
    uri, *_ = upload(store, str(uuid.uuid4()), b"after" * 1000)
    assert uri.startswith(f"rbd://{fsid}/images/")
    assert read_all(store, uri) == b"after" * 1000
