"""Fixtures every suite against a real cluster shares."""

import os

import pytest


@pytest.fixture(scope="session")
def ceph_conf() -> str:
    """The test cluster's ceph.conf.  ``tools/run-tests`` starts the
    cluster and exports CEPH_CONF; without it these tests fail rather than
    skip: a green run must have touched Ceph."""
    path = os.environ.get("CEPH_CONF")
    if not path or not os.path.exists(path):
        pytest.fail("no cluster: run `tools/ceph-dev-cluster up` and export "
                    "CEPH_CONF (tools/run-tests does both)")
    return path
