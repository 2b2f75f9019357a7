"""The soak benchmark's short version (``benchmarks/bench_soak.py``, run as
``tools/bench soak`` runs it): 60 s of mixed traffic from 8 locust clients
through glance-api under uWSGI (2 processes x 4 threads, rbd_tracked), on
a cluster of its own with three OSDs on BlueStore, one of them killed and
started again meanwhile.

It fails on any uWSGI worker death or fatal line in glance-api's log, any
error a user saw (a status other than the expected one, no answer, wrong
bytes), anything left in the pools, the RBD trashes or the store's journal
once every image is deleted and cleanup has run, and on open files a worker
gained: :func:`bench_soak.problems`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.functional.conftest import cluster_cmd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
BENCH = os.path.join(ROOT, "benchmarks", "bench_soak.py")
SECONDS = 60
#: every kind of request the load makes: a green run must have made each
OPERATIONS = {
    "upload (Content-Length)", "upload (chunked)", "download",
    "download (Range)", "show (GET /v2/images/{id})",
    "delete (image has a clone)", "snapshot --register (CLI)",
    "download (chain)", "cleanup --execute (cron)",
}


@pytest.fixture(scope="module")
def three_osds():
    """Three BlueStore OSDs (pools of size 3, min_size 2): an OSD may die
    while users see nothing."""
    parent = os.environ.get("CEPH_DEV_DIR",
                            "/tmp/glance-rbd-tracked-test-ceph") + "-soak"
    # its own parent directory: ceph-dev-cluster locks it for up/down and
    # start-daemon, which must not wait for other clusters mid-run
    env = dict(os.environ, CEPH_DEV_DIR=f"{parent}/ceph",
               CEPH_DEV_MON_PORT=os.environ.get("GRT_SOAK_MON_PORT", "3350"),
               CEPH_DEV_OSDS="3", CEPH_DEV_OBJECTSTORE="bluestore")
    cluster_cmd(env, "down")  # whatever a crashed run left behind
    out = cluster_cmd(env, "up")
    env["CEPH_CONF"] = out.strip().rsplit("=", 1)[1]
    yield env
    cluster_cmd(env, "down")
    os.rmdir(parent)


def test_8_clients_through_an_osd_restart(three_osds, tmp_path):
    out = tmp_path / "soak"
    port = int(os.environ.get("GLANCE_E2E_PORT", "9393")) + 5
    res = subprocess.run(
        [sys.executable, BENCH, "--drivers", "rbd_tracked", "--clients", "8",
         "--seconds", str(SECONDS), "--faults", "osd",
         "--glance-port", str(port),
         "--glance-dir", os.environ.get(
             "GLANCE_E2E_DIR", "/tmp/glance-rbd-tracked-e2e-glance") + "-soak",
         "--out", str(out)],
        env=three_osds, capture_output=True, text=True, cwd=ROOT,
        timeout=SECONDS + 480)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    print(res.stdout)  # the table, for the log of a failed run
    (run,) = json.loads((out / "summary.json").read_text())["runs"]

    made = {o["op"] for o in run["ops"] if o["count"]}
    assert not OPERATIONS - made, f"the load never made {OPERATIONS - made}"
    assert [(f["command"], f["daemon"]) for f in run["faults"]] == [
        ("kill", "osd.1"), ("start-daemon", "osd.1")], run["faults"]
    assert run["uwsgi"]["deaths"] == 0, run["uwsgi"]
    assert run["problems"] == [], "\n".join(run["problems"]) + \
        f"\n(results and glance-api's log: {run['dir']})"
