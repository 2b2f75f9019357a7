"""Fixtures for tests against the real single-node cluster.

``tools/run-tests`` starts the cluster and exports CEPH_CONF.  Without it
these tests fail rather than skip: a green run must have touched Ceph.
"""

import io
import json
import os
import subprocess
import uuid

from glance_store import location as gs_location
from oslo_config import cfg
import pytest
import rados
import rbd

from glance_rbd_tracked import ceph as ceph_mod
from glance_rbd_tracked import driver
from glance_rbd_tracked import policy
from tests.sides import Side


@pytest.fixture(scope="session")
def rados_client(ceph_conf):
    """A plain librados client playing Nova/Cinder/the operator."""
    client = rados.Rados(conffile=ceph_conf)
    client.connect()
    yield client
    client.shutdown()


@pytest.fixture(scope="session", params=[1, 2], ids=["clone-v1", "clone-v2"])
def nova(request, ceph_conf):
    """Nova or Cinder (plain librbd), cloning in clone format v1 and v2, on
    a cluster whose clients clone in that format by default: for v1 the
    cluster acts as an older one (require_min_compat_client luminous), so
    the store's own chain clones are format 1 too."""
    side = Side(ceph_conf, request.param)
    was = json.loads(_mon(side.client, {"prefix": "osd dump",
                                        "format": "json"}))
    _mon(side.client, {"prefix": "osd set-require-min-compat-client",
                       "version": "luminous" if request.param == 1
                       else "mimic"})
    yield side
    _mon(side.client, {"prefix": "osd set-require-min-compat-client",
                       "version": was["require_min_compat_client"]})
    side.close()


def _mon(client, command):
    ret, out, err = client.mon_command(json.dumps(command), b"")
    assert ret == 0, err
    return out


@pytest.fixture(scope="session")
def operator(ceph_conf):
    """An operator with plain librbd."""
    side = Side(ceph_conf, 2)
    yield side
    side.close()


def make_store(ceph_conf, pool="images", **overrides):
    conf = cfg.ConfigOpts()
    conf([], project="glance-rbd-tracked-tests", default_config_files=[])
    store = driver.Store(conf)
    conf.set_override("rbd_store_ceph_conf", ceph_conf, group="glance_store")
    conf.set_override("rbd_store_pool", pool, group="glance_store")
    for key, value in overrides.items():
        conf.set_override(key, value, group="glance_store")
    store.configure(re_raise_bsc=True)
    return store


@pytest.fixture(scope="session")
def store(ceph_conf):
    return make_store(ceph_conf)


def forget_chain_policy(client, pool="images"):
    """Remove the chain policy and every service's view of it from the
    pool's metadata."""
    with client.open_ioctx(pool) as ioctx:
        for key, _ in list(rbd.RBD().pool_metadata_list(ioctx)):
            if key == policy.POLICY_KEY or key.startswith(
                    policy.VIEW_KEY_PREFIX):
                rbd.RBD().pool_metadata_remove(ioctx, key)


@pytest.fixture
def no_chain_policy(rados_client):
    """``images`` keeps no chain policy and no views, before and after: a
    test that has doctor set it (or services record views) leaves none to
    the others."""
    forget_chain_policy(rados_client)
    yield
    forget_chain_policy(rados_client)


@pytest.fixture
def image_id():
    return str(uuid.uuid4())


def location_of(store, uri):
    return gs_location.Location("rbd_tracked", driver.StoreLocation,
                                store.conf, uri=uri)


def upload(store, image_id, data, size=None, algo="sha512"):
    size = len(data) if size is None else size
    return store.add(image_id, io.BytesIO(data), size, algo)


def read_all(store, uri, **kwargs):
    chunks, _ = store.get(location_of(store, uri), **kwargs)
    return b"".join(chunks)


@pytest.fixture
def cluster(ceph_conf):
    c = ceph_mod.connect(ceph_conf)
    yield c
    c.close()


SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "tools",
                      "ceph-dev-cluster")


def cluster_cmd(env, command):
    result = subprocess.run([SCRIPT, command], env=env, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture
def second_cluster():
    """Another throwaway cluster (own directory and port), to stop, replace
    or use as "another cluster" without disturbing the other tests."""
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
