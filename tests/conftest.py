"""Fixtures every suite against a real cluster shares."""

from collections.abc import Iterator
import json
import os
import subprocess

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


#: The modules that start clusters of their own and never touch the shared
#: test cluster (whose settings the clone-v1 tests change, and whose pools
#: cleanup tests sweep): ``tools/run-tests`` runs them
#: in a second pytest-xdist worker, beside the rest.  The rest stay in one
#: worker: they share the test cluster's pools and session fixtures on
#: fixed ports (glance-api, the second and edge clusters).
OWN_CLUSTERS = (
    "tests/functional/test_faults.py",
    "tests/functional/test_dev_cluster.py",
    "tests/e2e/test_soak.py",
    "tests/upgrade/",
)


def pytest_xdist_make_scheduler(config, log):
    """Two work units, one per worker (xdist's own ``xdist_group`` marks
    are lost on pytest 9, which no longer reads ``item._nodeid``)."""
    from xdist.scheduler import LoadScopeScheduling

    class OwnClustersBesideTheRest(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return ("own clusters" if nodeid.startswith(OWN_CLUSTERS)
                    else "the shared cluster")

    return OwnClustersBesideTheRest(config, log)


def pytest_terminal_summary(terminalreporter):
    """What a test left for the log (``record_property("summary", ...)``,
    the rolling upgrade's matrix), printed at the end of the run: a
    pytest-xdist worker's own output is never shown."""
    for outcome in ("passed", "failed"):
        for report in terminalreporter.getreports(outcome):
            for name, value in getattr(report, "user_properties", ()):
                if name == "summary" and report.when == "call":
                    terminalreporter.write_sep("-", report.nodeid)
                    terminalreporter.write_line(value)


TOOLS = os.path.join(os.path.dirname(__file__), "..", "tools")


class Edge:
    """An edge site: a second cluster in a network namespace behind a
    shaped veth link (``tools/edge-rig``)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.conf = os.path.join(env["EDGE_DIR"], "ceph.conf")

    def rig(self, *args: str) -> str:
        result = subprocess.run([os.path.join(TOOLS, "edge-rig"), *args],
                                env=self.env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    def counters(self) -> dict[str, int]:
        """Bytes sent over the link so far, each way."""
        return json.loads(self.rig("counters"))


@pytest.fixture(scope="session")
def edge() -> Iterator[Edge]:
    """The edge site, started once per session and removed at its end
    (needs root: ip netns, tc)."""
    base = os.environ.get("CEPH_DEV_DIR", "/tmp/glance-rbd-tracked-ceph")
    site = Edge(dict(os.environ, EDGE_NS=os.environ.get("GRT_EDGE_NS",
                                                        "grt-test-edge"),
                     EDGE_NET=os.environ.get("GRT_EDGE_NET", "10.98.0"),
                     EDGE_DIR=base + "-edge/ceph",
                     # the tests count bytes, not seconds: a faster link
                     # (the benchmark keeps 100 Mbit/s)
                     EDGE_RATE=os.environ.get("GRT_EDGE_RATE", "500mbit"),
                     CEPH_DEV_MEMSTORE_BYTES=str(2 << 30)))
    site.rig("down")  # whatever a crashed run left behind
    site.rig("up")
    yield site
    site.rig("down")
