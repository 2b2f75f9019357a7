"""``tools/ceph-dev-cluster`` with three OSDs (memstore, pools of size 3 and
min_size 2), as the load benchmark uses it: one OSD SIGKILLed and started
again while the store and a plain librbd client read and write, without a
single error; the monitor killed and started again while an upload waits
for it; and ``doctor`` against the cluster's failure detection.

The module runs its own cluster in ``$CEPH_DEV_DIR-three/ceph`` on port
``$GRT_THREE_MON_PORT`` (3370), auth as ``$CEPH_DEV_AUTH`` says.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import threading
import time
import uuid

import pytest
import rados
import rbd

from glance_rbd_tracked import cli
from tests.functional.conftest import SCRIPT
from tests.functional.conftest import cluster_cmd
from tests.functional.conftest import location_of
from tests.functional.conftest import make_store
from tests.functional.conftest import read_all
from tests.functional.conftest import upload
from tests.functional.test_cli import glance_api_conf

T = 30  # the store's op timeout: outlasts failure detection (10 + 2 s)
DETECTION = 12  # osd_heartbeat_grace + osd_heartbeat_interval it sets
KINDS = {"upload", "download", "size", "delete", "disk write", "disk read"}
MiB = 1 << 20


class Three:
    """The module's cluster."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.conf = os.path.join(env["CEPH_DEV_DIR"], "ceph.conf")
        self.store = make_store(self.conf, rbd_tracked_op_timeout=T)
        self.client = rados.Rados(conffile=self.conf, conf={
            "rados_osd_op_timeout": str(T), "rados_mon_op_timeout": str(T)})
        self.client.connect(timeout=T)

    def script(self, *args: str) -> tuple[str, float]:
        """``ceph-dev-cluster ARGS``: its output and the seconds it took."""
        began = time.monotonic()
        run = subprocess.run([SCRIPT, *args], env=self.env,
                             capture_output=True, text=True, timeout=180)
        assert run.returncode == 0, run.stderr[-3000:]
        return run.stdout, time.monotonic() - began

    def mon(self, **command: str) -> dict:
        ret, out, err = self.client.mon_command(
            json.dumps({**command, "format": "json"}), b"")
        assert ret == 0, err
        return json.loads(out)

    def up(self, osd: int) -> bool:
        (found,) = [o for o in self.mon(prefix="osd dump")["osds"]
                    if o["osd"] == osd]
        return bool(found["up"])

    def close(self) -> None:
        self.store.ceph.close()
        self.client.shutdown()


@pytest.fixture(scope="module")
def three():
    parent = (os.environ["CEPH_DEV_DIR"] + "-three"
              if "CEPH_DEV_DIR" in os.environ
              else "/tmp/glance-rbd-tracked-three")
    # its own parent directory: ceph-dev-cluster locks it for up/down and
    # start-daemon, and must not wait for other clusters
    env = dict(os.environ, CEPH_DEV_DIR=f"{parent}/ceph",
               CEPH_DEV_MON_PORT=os.environ.get("GRT_THREE_MON_PORT", "3370"),
               CEPH_DEV_OSDS="3", CEPH_DEV_OBJECTSTORE="memstore",
               CEPH_DEV_MEMSTORE_BYTES=str(1 << 30))
    cluster_cmd(env, "down")  # whatever a crashed run left behind
    cluster_cmd(env, "up")
    c = Three(env)
    try:
        yield c
    finally:
        c.close()
        cluster_cmd(env, "down")
        os.rmdir(parent)


@dataclasses.dataclass
class Op:
    kind: str
    began: float
    ended: float
    error: str = ""


class Traffic:
    """Two clients at work until stopped, at a pace that keeps the data
    small (the restarted OSD backfills all that was written meanwhile): the
    store uploading, reading back, sizing and deleting images (at most
    KEPT at a time); a plain librbd client writing and reading back a disk
    it keeps open, as a virtual machine does."""

    KEPT = 16
    PAUSE = 0.02  # seconds between two ops of one client

    def __init__(self, three: Three) -> None:
        self.three = three
        self.ops: list[Op] = []
        self.images: dict[str, bytes] = {}  # location -> its bytes
        self.disk = f"{uuid.uuid4()}_disk"
        self.disk_data = bytearray(8 * MiB)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(work,))
                         for work in (self._store, self._librbd)]

    def __enter__(self) -> Traffic:
        with self.three.client.open_ioctx("vms") as ioctx:
            rbd.RBD().create(ioctx, self.disk, len(self.disk_data))
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2 * T)
        assert not any(t.is_alive() for t in self._threads), "an op hangs"

    def _run(self, work) -> None:
        with contextlib.ExitStack() as stack:
            steps = work(stack)
            while not self._stop.is_set():
                began = time.monotonic()
                kind = "?"
                try:
                    kind = next(steps)
                    error = ""
                except Exception as exc:  # every error a user would see
                    error = f"{type(exc).__name__}: {exc}"
                    steps = work(stack)
                self.ops.append(Op(kind, began, time.monotonic(), error))
                self._stop.wait(self.PAUSE)

    def _store(self, stack):
        store = self.three.store
        while True:
            data = os.urandom(MiB)
            location, *_ = upload(store, str(uuid.uuid4()), data)
            self.images[location] = data
            yield "upload"
            assert read_all(store, location) == data
            yield "download"
            assert store.get_size(location_of(store, location)) == MiB
            yield "size"
            if len(self.images) > self.KEPT:
                oldest = next(iter(self.images))
                store.delete(location_of(store, oldest))
                del self.images[oldest]
                yield "delete"

    def _librbd(self, stack):
        ioctx = stack.enter_context(self.three.client.open_ioctx("vms"))
        image = stack.enter_context(rbd.Image(ioctx, self.disk))
        offset = 0
        while True:
            data = os.urandom(256 * 1024)
            image.write(data, offset)
            self.disk_data[offset:offset + len(data)] = data
            yield "disk write"
            assert image.read(offset, len(data)) == data
            yield "disk read"
            offset = (offset + len(data)) % len(self.disk_data)

    def kinds(self, began: float, ended: float = float("inf")) -> set[str]:
        """The kinds of the ops made entirely within [began, ended]."""
        return {o.kind for o in self.ops[:]
                if o.began >= began and o.ended <= ended}

    def errors(self) -> list[Op]:
        return [o for o in self.ops if o.error]


def test_three_osds_one_killed_and_restarted_nobody_notices(three):
    out, _ = three.script("daemons")
    assert [line.split()[:2] for line in out.splitlines()] == [
        [name, "running"] for name in ("mon.a", "mgr.x", "osd.0", "osd.1",
                                       "osd.2")]
    pools = three.mon(prefix="osd pool ls", detail="detail")
    assert {(p["pool_name"], p["size"], p["min_size"]) for p in pools} == {
        (name, 3, 2) for name in ("images", "vms", "volumes")}

    with Traffic(three) as traffic:
        time.sleep(1)
        _, killing = three.script("kill", "osd.1")
        killed = time.monotonic()
        while three.up(1):
            assert time.monotonic() - killed < DETECTION + 5, \
                "osd.1 is not marked down"
            time.sleep(0.1)
        marked_down = time.monotonic()
        # the store and the disk go on with two copies: every kind of op
        # made while osd.1 is down (3 s at least, 20 s at most)
        while time.monotonic() - marked_down < 3 or (
                traffic.kinds(marked_down) != KINDS
                and time.monotonic() - marked_down < 20):
            time.sleep(0.1)
        down_until = time.monotonic()
        out, restarting = three.script("start-daemon", "osd.1")
        time.sleep(1)
    print(f"kill {killing:.1f} s, marked down after "
          f"{marked_down - killed:.1f} s, start-daemon (mkfs, backfill, "
          f"clean) {restarting:.1f} s, {len(traffic.ops)} ops, slowest "
          f"{max(o.ended - o.began for o in traffic.ops):.1f} s")

    assert traffic.errors() == []
    assert traffic.kinds(marked_down, down_until) == KINDS
    # osd.1 backfilled: every PG whole again, on all three OSDs
    pgs = three.mon(prefix="pg ls")["pg_stats"]
    assert {p["state"] for p in pgs} == {"active+clean"}
    assert all(sorted(p["acting"]) == [0, 1, 2] for p in pgs)
    for location, data in traffic.images.items():
        assert read_all(three.store, location) == data
    with three.client.open_ioctx("vms") as ioctx, \
            rbd.Image(ioctx, traffic.disk, read_only=True) as image:
        assert image.read(0, len(traffic.disk_data)) == traffic.disk_data


def test_the_monitor_restarted_an_upload_waits_for_it(three):
    data = os.urandom(MiB)
    before, *_ = upload(three.store, str(uuid.uuid4()), data)
    _, killing = three.script("kill", "mon.a")
    killed = time.monotonic()
    # an image's snapshot needs the monitor: the upload waits for it
    done: dict[str, object] = {}

    def add() -> None:
        try:
            done["location"] = upload(three.store, str(uuid.uuid4()), data)[0]
        except Exception as exc:
            done["error"] = exc
        done["at"] = time.monotonic()

    adding = threading.Thread(target=add)
    adding.start()
    assert read_all(three.store, before) == data  # reads need no monitor
    time.sleep(2)
    assert "at" not in done, done
    _, restarting = three.script("start-daemon", "mon.a")
    adding.join(T)
    print(f"kill {killing:.1f} s, start-daemon {restarting:.1f} s, upload "
          f"done {done['at'] - killed:.1f} s after the kill")
    assert "error" not in done, done
    assert read_all(three.store, done["location"]) == data


@pytest.mark.parametrize("op_timeout, status", [(12, "fix"), (13, "ok")])
def test_doctor_reports_an_op_timeout_shorter_than_failure_detection(
        three, tmp_path, capsys, op_timeout, status):
    conf = glance_api_conf(tmp_path / "glance-api.conf", three.conf,
                           rbd_tracked_op_timeout=op_timeout)
    code = cli.main(["--config-file", conf, "doctor", "--format", "json"])
    rows = json.loads(capsys.readouterr().out)
    (found,) = [r for r in rows if r["check"] == "op timeout"]
    assert (found["subject"], found["status"]) == ("store", status)
    assert "osd_heartbeat_grace 10 s + osd_heartbeat_interval 2 s = 12 s" \
        in found["detail"]
    # 1 for anything to fix: the cluster here keeps no chain policy either
    assert code == (1 if any(r["status"] == "fix" for r in rows) else 0)
    if status == "fix":
        assert found["fix"].startswith("set rbd_tracked_op_timeout above 12")


def test_doctor_table_says_what_to_change(three, tmp_path, capsys):
    conf = glance_api_conf(tmp_path / "glance-api.conf", three.conf,
                           rbd_tracked_op_timeout=5)
    assert cli.main(["--config-file", conf, "doctor"]) == 1
    out = capsys.readouterr().out
    assert "fix store: set rbd_tracked_op_timeout above 12 (say 22)" in out

