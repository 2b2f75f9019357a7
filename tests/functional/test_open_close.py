"""No image is closed right after its open (ceph/connection.py's rule).

librbd 16.2 frees an image under one of its own threads when it is closed
right after its open with no I/O between; the store did that on every
download.  The old adapter died here within 20 s in most runs (SIGSEGV,
SIGABRT or a hang); with every read-only open parked and shared by
ceph/handles.py none has.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
import rbd

from glance_rbd_tracked import ceph as ceph_mod
from glance_rbd_tracked import errors

SECONDS = 20


@pytest.fixture
def snapshot_image(rados_client):
    """``images/NAME@snap``, 1 MiB of data, made with plain librbd."""
    name = f"open-close-{uuid.uuid4()}"
    with rados_client.open_ioctx("images") as ioctx:
        rbd.RBD().create(ioctx, name, 1 << 20, old_format=False)
        with rbd.Image(ioctx, name) as image:
            image.write(b"x" * (1 << 20), 0)
            image.create_snap("snap")
        yield name
        with rbd.Image(ioctx, name) as image:
            image.remove_snap("snap")
        rbd.RBD().remove(ioctx, name)


def test_threads_opening_through_the_adapter_survive(ceph_conf,
                                                      snapshot_image):
    """8 threads x 20 s of sizes, empty reads, parents and reads by id."""
    try:
        result = subprocess.run(
            [sys.executable, "-X", "faulthandler", "-m",
             "tests.functional.open_close_worker", ceph_conf, snapshot_image,
             str(SECONDS), "8"],
            capture_output=True, text=True, timeout=SECONDS + 60)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the worker hung (a librbd thread on freed memory?): "
                    f"{(exc.stderr or b'')[-4000:]!r}")
    if result.returncode < 0:
        name = signal.Signals(-result.returncode).name
        pytest.fail(f"the worker died of {name}:\n{result.stderr[-6000:]}")
    assert result.returncode == 0, result.stderr[-6000:]
    report = json.loads(result.stdout.splitlines()[-1])
    # it did work, and parked handles were all closed at exit
    assert min(report["counts"].values()) > 100, report
    assert report["open at the end"] == 0, report


def test_a_snapshot_is_opened_once_for_many_reads(ceph_conf, snapshot_image):
    cluster = ceph_mod.connect(ceph_conf)
    try:
        handles = cluster.connection.handles
        for _ in range(20):
            assert cluster.data.size("images", snapshot_image, "snap") == \
                1 << 20
            assert b"".join(cluster.data.read(
                "images", snapshot_image, "snap")) == b"x" * (1 << 20)
        assert handles.open_count() == 1
    finally:
        cluster.close()


def test_a_shared_handle_never_reads_a_removed_image_as_zeros(
        ceph_conf, rados_client):
    """Another process removes the image between two downloads, and in
    the middle of one: NotFound, never zeros; and the removal succeeds
    although this process has the snapshot open."""
    name = f"open-close-{uuid.uuid4()}"
    cluster = ceph_mod.connect(ceph_conf)
    try:
        with rados_client.open_ioctx("images") as ioctx:
            for _ in range(2):
                rbd.RBD().create(ioctx, name, 4 << 20, old_format=False)
                with rbd.Image(ioctx, name) as image:
                    image.write(b"y" * (4 << 20), 0)
                    image.create_snap("snap")
                assert cluster.data.size("images", name, "snap") == 4 << 20
                chunks = cluster.data.read("images", name, "snap",
                                           chunk_size=1 << 20, depth=1)
                assert next(chunks) == b"y" * (1 << 20)
                with rbd.Image(ioctx, name) as image:
                    image.remove_snap("snap")
                rbd.RBD().remove(ioctx, name)  # not kept by our open
                with pytest.raises(errors.NotFound):
                    b"".join(chunks)
                with pytest.raises(errors.NotFound):
                    cluster.data.size("images", name, "snap")
                with pytest.raises(errors.NotFound):
                    list(cluster.data.read("images", name, "snap"))
            # the same name again, a new image: its own data
            rbd.RBD().create(ioctx, name, 1 << 20, old_format=False)
            with rbd.Image(ioctx, name) as image:
                image.write(b"z" * (1 << 20), 0)
                image.create_snap("snap")
            assert b"".join(cluster.data.read("images", name, "snap")) == \
                b"z" * (1 << 20)
            with rbd.Image(ioctx, name) as image:
                image.remove_snap("snap")
            rbd.RBD().remove(ioctx, name)
    finally:
        cluster.close()


def test_a_forked_child_reads_with_its_own_handles(ceph_conf, snapshot_image):
    """glance-api's uWSGI forks its workers: a child must neither use nor
    close (nor free: the rbd module would close) the parent's handles,
    and must not wait on a lock the parent's reaper held at the fork."""
    cluster = ceph_mod.connect(ceph_conf)
    try:
        for _ in range(3):
            cluster.data.size("images", snapshot_image, "snap")
        assert cluster.connection.handles.open_count() >= 1
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                data = b"".join(cluster.data.read("images", snapshot_image,
                                                  "snap"))
                code = 0 if data == b"x" * (1 << 20) else 1
            finally:
                os._exit(code)
        deadline = 60.0
        while deadline > 0:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.5)
            deadline -= 0.5
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        cluster.close()


def test_handles_are_closed_once_settled_and_idle(ceph_conf, snapshot_image):
    from glance_rbd_tracked.ceph.handles import Handles
    cluster = ceph_mod.connect(ceph_conf)
    handles = cluster.connection.handles = Handles(
        cluster.connection, settle=0.2, idle=0.6, limit=1)
    try:
        cluster.data.size("images", snapshot_image, "snap")   # shared
        cluster.images.parent("images", snapshot_image)       # parked
        assert handles.open_count() == 2
        time.sleep(0.45)   # the parked one is settled, the shared in use
        assert handles.open_count() == 1
        time.sleep(0.6)    # and the shared one idle
        assert handles.open_count() == 0
        # the newest of more than `limit` idle shared handles stays shared
        with cluster.connection.ioctx("images") as ioctx, \
                rbd.Image(ioctx, snapshot_image) as image:
            image.create_snap("second")
        try:
            cluster.data.size("images", snapshot_image, "snap")
            cluster.data.size("images", snapshot_image, "second")
            shared = [h.snapshot for h in handles._shared.values()]
            assert shared == ["second"]
        finally:
            time.sleep(0.3)
            handles.reap()
            with cluster.connection.ioctx("images") as ioctx, \
                    rbd.Image(ioctx, snapshot_image) as image:
                image.remove_snap("second")
    finally:
        cluster.close()
    assert handles.open_count() == 0
