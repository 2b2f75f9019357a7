"""Real Nova and Cinder (PyPI, each in its own process: the workers of
tests/e2e/openstack) on the test cluster, without glance-api: what the
integrations' seams do with Nova's and Cinder's own code."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
import uuid

import pytest

from glance_rbd_tracked import ceph as ceph_mod
from tests import sides
from tests.e2e.openstack.worker import Worker
from tests.sides import Side

#: nothing listens there: these tests never reach Glance
NO_GLANCE = "http://127.0.0.1:9/"


@pytest.fixture(scope="session")
def side(ceph_conf: str) -> Iterator[Side]:
    """The cluster as an operator sees it (plain librbd)."""
    s = Side(ceph_conf)
    yield s
    s.close()


@pytest.fixture(scope="session")
def store(ceph_conf: str) -> Iterator[Any]:
    """The store as glance-api runs it (deletes an image as Glance does)."""
    backend = ceph_mod.connect(ceph_conf)
    yield backend
    backend.close()


@pytest.fixture
def start(ceph_conf: str, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Any]:
    """``start(module, mode, **config)``: a Nova (``nova_side``) or Cinder
    (``cinder_side``) worker, stopped after the test.  On a cephx cluster
    it runs as client.nova or client.cinder (doc/source/cephx.rst)."""
    workers: list[Worker] = []
    cephx = sides.conf_value(ceph_conf, "auth client required") == "cephx"

    def start_worker(module: str, mode: str, **config: Any) -> Worker:
        state = tmp_path_factory.mktemp(f"{module}-{mode}")
        if cephx:
            config.setdefault("rbd_user", "nova" if module == "nova_side"
                              else "cinder")
            config.setdefault("keyring",
                              sides.conf_value(ceph_conf, "keyring"))
        worker = Worker(f"tests.e2e.openstack.{module}",
                        {"ceph_conf": ceph_conf, "mode": mode,
                         "glance_url": NO_GLANCE, "state_dir": str(state),
                         **config},
                        str(state / "worker.log"))
        workers.append(worker)
        return worker

    yield start_worker
    for worker in workers:
        worker.close()


def new_id() -> str:
    return str(uuid.uuid4())
