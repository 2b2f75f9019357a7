"""Faults of the cluster itself: the OSD killed or paused, the monitor killed,
in the middle of an upload, a delete and a chain snapshot.

Each test starts the operation in a thread, lets it reach its middle (an
upload after a few chunks, a delete with its intent journalled, a chain
snapshot with the disk's snapshot made), stops the daemon, lets the
operation go on, and shows that it answers within a bound with an error
that says the cluster did not answer; then the daemon comes back, one
``glance-rbd-tracked cleanup --execute`` runs, and the pools, their RBD
trashes and the journal hold exactly what they held before, the base
image, the disk and the earlier chain image reading back byte for byte.

The module runs its own cluster (BlueStore: memstore loses its objects when
the OSD is killed; auth as ``$CEPH_DEV_AUTH`` says) in
``$CEPH_DEV_DIR-faults/ceph`` on port ``$GRT_FAULTS_MON_PORT`` (3385).  With
``GRT_FAULTS_RESULTS=<file>`` the measured figures are written there (JSON).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import subprocess
import sys
import threading
import time
import uuid

from glance_store import exceptions
import pytest
import rados
import rbd

from glance_rbd_tracked import chains
from glance_rbd_tracked import errors
from glance_rbd_tracked import schema
from glance_rbd_tracked.ceph import lease
from tests.functional.conftest import SCRIPT
from tests.functional.conftest import cluster_cmd
from tests.functional.conftest import location_of
from tests.functional.conftest import make_store
from tests.functional.conftest import upload
from tests.functional.test_cli import glance_api_conf
from tests.sides import Side

T = 3  # rbd_tracked_op_timeout of the store under test, seconds
BOUND = 4 * T + 10  # what an answer may take at most
MiB = 1 << 20
CHUNK = 8 * MiB  # rbd_store_chunk_size's default


@dataclasses.dataclass(frozen=True)
class Fault:
    name: str
    stop: tuple[str, ...]  # ceph-dev-cluster arguments
    back: tuple[tuple[str, ...], ...]

    def __str__(self) -> str:
        return self.name


OSD_KILLED = Fault("OSD killed", ("kill", "osd.0"),
                   (("start-daemon", "osd.0"),))
# start-daemon of a running daemon waits until the cluster has it again
OSD_PAUSED = Fault("OSD paused", ("pause", "osd.0"),
                   (("resume", "osd.0"), ("start-daemon", "osd.0")))
MON_KILLED = Fault("monitor killed", ("kill", "mon.a"),
                   (("start-daemon", "mon.a"),))
FAULTS = (OSD_KILLED, OSD_PAUSED, MON_KILLED)


class Observer(Side):
    """Nova and the operator, whose client finds a restarted OSD within a
    second or two.  A client that was idle while the only OSD restarted
    asks for the new OSD map only once an op has waited objecter_timeout
    (10 s, checked every objecter_tick_interval, 5 s): ~12 s."""

    def __init__(self, conffile: str) -> None:
        self.client = rados.Rados(conffile=conffile, conf={
            "objecter_timeout": "1", "objecter_tick_interval": "1"})
        self.client.connect(timeout=30)
        self.clone_format = 2


class Cluster:
    """The module's own cluster, and what it held before the faults."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.conf = os.path.join(env["CEPH_DEV_DIR"], "ceph.conf")
        self.side = Observer(self.conf)
        self.store = make_store(self.conf, rbd_tracked_op_timeout=T)
        self.baseline: dict[str, list[str]] = {}
        self.kept: dict[str, bytes] = {}  # pool/image[@snap] -> its bytes
        self.disk = ""
        self.base = ""  # the Glance image's location
        self.cli_conf = ""

    def daemon(self, *args: str) -> float:
        """``ceph-dev-cluster ARGS``; the seconds it took."""
        began = time.monotonic()
        self._script(*args)
        return time.monotonic() - began

    def _script(self, *args: str) -> str:
        run = subprocess.run([SCRIPT, *args], env=self.env,
                             capture_output=True, text=True, timeout=180)
        assert run.returncode == 0, run.stderr[-3000:]
        return run.stdout

    def restore(self) -> None:
        """Every daemon running again, whatever a failed test left."""
        for line in self._script("daemons").splitlines():
            name, state, _ = line.split()
            if state == "paused":
                self.daemon("resume", name)
            if state != "running":
                self.daemon("start-daemon", name)

    def contents(self) -> dict[str, list[str]]:
        """Each pool's images with their snapshots (any namespace) and the
        store's metadata keys, each pool's RBD trash (all of it, as ``rbd
        trash ls --all``), and the journal's keys."""
        found = {}
        for pool in ("images", "vms", "volumes"):
            found[pool] = []
            with self.side.ioctx(pool) as ioctx:
                for name in sorted(rbd.RBD().list(ioctx)):
                    found[pool].append(name)
                    with rbd.Image(ioctx, name, read_only=True) as image:
                        found[pool] += sorted(
                            f"{name}@{s['name']}" for s in image.list_snaps())
                        found[pool] += sorted(
                            f"{name} {key}" for key, _ in image.metadata_list()
                            if key.startswith("rbd_tracked"))
                found[f"{pool} trash"] = sorted(
                    f"{e['name']} ({e['id']})"
                    for e in rbd.RBD().trash_list(ioctx))
        found["journal"] = self.journal()
        return found

    def journal(self) -> list[str]:
        with self.side.ioctx("images") as ioctx, rados.ReadOpCtx() as op:
            keys, _ = ioctx.get_omap_keys(op, "", 10000)
            try:
                ioctx.operate_read_op(op, schema.JOURNAL_OBJECT)
            except rados.ObjectNotFound:
                return []
            return sorted(k for k, _ in keys)

    def extra(self) -> list[str]:
        """What the cluster holds beyond the baseline."""
        now = self.contents()
        return [f"{where}: {name}" for where, names in now.items()
                for name in names if name not in self.baseline[where]]

    def read(self, spec: str) -> bytes:
        pool, _, rest = spec.partition("/")
        name, _, snap = rest.partition("@")
        return self.side.read(pool, name, len(self.kept[spec]), snap or None)

    def lockers(self, pool: str, name: str) -> list[str]:
        """The owners of librbd's exclusive lock on the image, and whether
        each is the store's client."""
        mine = self.store.ceph.connection.client().get_addrs()
        with self.side.ioctx(pool) as ioctx, \
                rbd.Image(ioctx, name, read_only=True) as image:
            info = image.list_lockers()  # [] when there is none
            return [f"{a}{' (the store, alive)' if a == mine else ''}"
                    for _, _, a in (info["lockers"] if info else ())]

    def unfence(self, address: str) -> bool:
        """Whether a client is blocklisted; if so, lift that."""
        ret, out, err = self.side.client.mon_command(
            json.dumps({"prefix": "osd blocklist ls"}), b"")
        assert ret == 0, err
        if address not in out.decode() + err:
            return False
        self.side.client.mon_command(json.dumps(
            {"prefix": "osd blocklist", "blocklistop": "rm",
             "addr": address}), b"")
        return True

    def watchers(self, pool: str, name: str) -> list[str]:
        with self.side.ioctx(pool) as ioctx, \
                rbd.Image(ioctx, name, read_only=True) as image:
            return [w["addr"] for w in image.watchers_list()]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    parent = (os.environ["CEPH_DEV_DIR"] + "-faults"
              if "CEPH_DEV_DIR" in os.environ
              else "/tmp/glance-rbd-tracked-faults")
    # its own parent directory: ceph-dev-cluster locks the parent directory
    # for up/down and start-daemon, and must not wait for other clusters
    env = dict(os.environ, CEPH_DEV_DIR=f"{parent}/ceph",
               CEPH_DEV_MON_PORT=os.environ.get("GRT_FAULTS_MON_PORT", "3385"),
               CEPH_DEV_OBJECTSTORE="bluestore",
               CEPH_DEV_BLUESTORE_BYTES=str(4 << 30))
    cluster_cmd(env, "down")  # whatever a crashed run left behind
    cluster_cmd(env, "up")
    c = Cluster(env)
    try:
        _populate(c)
        c.cli_conf = glance_api_conf(tmp_path_factory.mktemp("faults")
                                     / "glance-api.conf", c.conf,
                                     rbd_tracked_op_timeout=T)
        yield c
    finally:
        c.store.ceph.close()
        c.side.close()
        cluster_cmd(env, "down")
        os.rmdir(parent)


def _populate(c: Cluster) -> None:
    """A Glance image, a disk booted from it with data of its own, and an
    earlier snapshot of that disk as a chain image: all still needed."""
    base = str(uuid.uuid4())
    base_data = os.urandom(MiB)
    c.base, *_ = upload(c.store, base, base_data)
    c.disk = f"{uuid.uuid4()}_disk"
    c.side.clone("images", base, "snap", "vms", c.disk)
    disk_data = b"precious instance data " + os.urandom(4096)
    c.side.write("vms", c.disk, disk_data)
    (earlier,) = chains.snapshot(c.store.ceph, [chains.Request(
        f"vms/{c.disk}", str(uuid.uuid4()))], c.store.settings.policy)
    c.kept = {f"images/{base}@snap": base_data,
              f"vms/{c.disk}": disk_data,
              f"images/{earlier.glance_id}@snap": disk_data}
    c.baseline = c.contents()


@pytest.fixture(autouse=True)
def daemons_back(cluster):
    yield
    cluster.restore()


# -- the figures -------------------------------------------------------------

FIGURES: list[dict] = []


@pytest.fixture(scope="module", autouse=True)
def figures():
    yield FIGURES
    path = os.environ.get("GRT_FAULTS_RESULTS")
    if path and FIGURES:
        with open(path, "w") as out:
            json.dump(FIGURES, out, indent=1)


# -- an operation in the middle of a fault -----------------------------------

class Middle:
    """Where an operation waits for the fault: ``reached`` once it is
    there, it goes on at ``go``."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.go = threading.Event()

    def step(self, name: str, at: str) -> None:
        if name == at:
            self.reached.set()
            assert self.go.wait(120)


class SlowUpload(io.RawIOBase):
    """An image file that stops before its chunk ``at`` until ``go``."""

    def __init__(self, size: int, at: int, middle: Middle) -> None:
        self.data = os.urandom(size)
        self.at, self.middle, self.chunks, self.offset = at, middle, 0, 0

    def read(self, n: int = -1) -> bytes:
        self.chunks += 1
        if self.chunks == self.at:
            self.middle.step("chunk", "chunk")
        n = len(self.data) - self.offset if n < 0 else n
        chunk = self.data[self.offset:self.offset + n]
        self.offset += len(chunk)
        return chunk


@dataclasses.dataclass
class Answer:
    error: BaseException | None = None
    seconds: float = 0.0


def faulted(c: Cluster, fault: Fault, operation, middle: Middle,
            go=None) -> Answer:
    """Run ``operation`` in a thread; once it is in its middle stop the
    daemon, let it go on (``go``, by default ``middle.go``) and time its
    answer."""
    answer = Answer()
    released = [0.0]

    def run() -> None:
        try:
            operation()
        except BaseException as exc:  # it is the answer
            answer.error = exc
        answer.seconds = time.monotonic() - released[0]

    worker = threading.Thread(target=run, name="operation", daemon=True)
    worker.start()
    began = time.monotonic()
    while not middle.reached.wait(0.1):
        assert worker.is_alive(), f"it ended before its middle: {answer}"
        assert time.monotonic() - began < 60, "it never reached its middle"
    c.daemon(*fault.stop)
    released[0] = time.monotonic()
    (go or middle.go.set)()
    worker.join(BOUND + 60)
    assert not worker.is_alive(), f"no answer {BOUND + 60} s into the fault"
    return answer


def recovered(c: Cluster, fault: Fault) -> float:
    return sum(c.daemon(*args) for args in fault.back)


def cleaned_up(c: Cluster) -> tuple[list[dict], float]:
    """One ``glance-rbd-tracked cleanup --execute``: its rows, its time."""
    began = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "glance_rbd_tracked.cli",
                          "--config-file", c.cli_conf, "--backend", "fast",
                          "cleanup", "--execute", "--grace", "0",
                          "--format", "json"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = json.loads(run.stdout)
    assert all(r["result"] == "done" for r in rows), rows
    return rows, time.monotonic() - began


def nothing_left_nothing_lost(c: Cluster) -> None:
    assert c.contents() == c.baseline
    for spec in c.kept:
        assert c.read(spec) == c.kept[spec], spec
    assert serving(c) == ""


def serving(c: Cluster) -> str:
    """Why the store does not serve a request now ("" if it does)."""
    try:
        assert c.store.get_size(location_of(c.store, c.base)) == MiB
    except exceptions.BackendException as exc:
        return str(exc)
    return ""


def record(fault: Fault, operation: str, answer: Answer, left: list[str],
           rows: list[dict], **more: float | str) -> None:
    FIGURES.append({"fault": fault.name, "operation": operation,
                    "seconds": round(answer.seconds, 1),
                    **{k: round(v, 1) if isinstance(v, float) else v
                       for k, v in more.items()},
                    "answer": f"{type(answer.error).__name__}: {answer.error}"
                    if answer.error else "done",
                    "left before cleanup": left,
                    "cleanup": [f"{r['action']} {r['target']}: {r['result']}"
                                for r in rows]})


def answered_in_time(answer: Answer) -> None:
    assert answer.seconds <= BOUND, f"answered after {answer.seconds:.1f} s"


# -- the tests -----------------------------------------------------------------

class Fenced(AssertionError):
    """Cleanup had the store's own, live client blocklisted."""


@pytest.mark.parametrize("fault", [OSD_KILLED, OSD_PAUSED, MON_KILLED],
                         ids=str)
def test_upload(cluster, fault):
    """add() gives up with a glance error; the partial image and its intent
    stay for cleanup, which removes them once nothing watches the image,
    and leaves the store's client alone."""
    c, image_id, middle = cluster, str(uuid.uuid4()), Middle()
    data = SlowUpload(6 * CHUNK, at=4, middle=middle)  # 3 chunks written
    answer = faulted(c, fault, lambda: c.store.add(
        image_id, data, len(data.data), "sha512"), middle)

    assert isinstance(answer.error, exceptions.BackendException), answer
    # the OSD is needed for the data, the monitor for the snapshot after it
    doing = "snapshotting" if fault is MON_KILLED else "writing"
    assert str(answer.error) == (f"{doing} images/{image_id}: the cluster "
                                 f"did not answer within {T} s")
    answered_in_time(answer)
    # the bound doc/source/metadata.rst gives (Failed uploads): about one
    # timeout, whichever is gone (each write has its deadline: librbd would
    # take two timeouts, the object map's update and then its invalidation)
    assert answer.seconds < T + 2, answer
    # The image is closed in the background, in at most 5 T (librbd); here
    # the outage outlasts that, as most do.
    for thread in threading.enumerate():
        if thread.name == f"closing images/{image_id}":
            thread.join(5 * T + 10)
            assert not thread.is_alive()
    back = recovered(c, fault)
    # The store kept its client (the error did not pass its I/O context),
    # and that client had every op time out while the OSD was away.
    assert serving(c) == ""
    left = c.extra()  # the partial image, without its snapshot
    assert f"journal: intent/upload/images/{image_id}" in left
    assert f"images: {image_id}" in left
    assert not [e for e in left if image_id not in e or "@" in e], left
    locked = c.lockers("images", image_id)
    # When the writer's close could not reach the OSD, the OSD keeps its
    # watch (a killed OSD reloads it) until osd_client_watch_timeout (30 s)
    # ends it; until then cleanup waits: a watcher list cannot tell a
    # writer that is gone from one that is not.
    began = time.monotonic()
    while c.watchers("images", image_id):
        assert time.monotonic() - began < 45, c.watchers("images", image_id)
        time.sleep(0.5)
    watched = time.monotonic() - began

    store = c.store.ceph.connection.client().get_addrs()
    rows, took = cleaned_up(c)
    assert [(r["action"], r["target"]) for r in rows] == [
        ("finish upload", f"images/{image_id}")]
    fenced = c.unfence(store)
    if fenced:  # a blocklisted client stays so: the store needs a new one
        c.store.ceph.connection.reset(c.store.ceph.connection.client())
    nothing_left_nothing_lost(c)
    record(fault, "upload (add)", answer, left + [
        f"exclusive lock of {owner}" for owner in locked], rows,
        recovery=back, watched=watched, cleanup_seconds=took,
        fenced=f"cleanup blocklisted the store's client {store}"
        if fenced else "no")
    if fenced:
        raise Fenced(f"cleanup blocklisted the store's client {store}")


@dataclasses.dataclass(frozen=True)
class DeleteCase:
    fault: Fault
    held: str  # "chain image": stopped before its removal;
    #            "disk": stopped after it, before the release of its source

    def __str__(self) -> str:
        return f"{self.fault}-{self.held.replace(' ', '-')}"


DELETE_CASES = (DeleteCase(OSD_KILLED, "chain image"),
                DeleteCase(OSD_KILLED, "disk"),
                DeleteCase(OSD_PAUSED, "chain image"),
                DeleteCase(MON_KILLED, "chain image"),
                DeleteCase(MON_KILLED, "disk"))


@pytest.mark.parametrize("case", DELETE_CASES, ids=str)
def test_delete(cluster, case):
    """Glance deletes a chain image.  Another worker (the test) holds the
    store's lease on the chain image or on its disk, so the delete waits in
    its middle: intent journalled, and the chain image not removed yet, or
    removed with the release of its source to come."""
    c, fault = cluster, case.fault
    policy = c.store.settings.policy
    (victim,) = chains.snapshot(c.store.ceph, [chains.Request(
        f"vms/{c.disk}", str(uuid.uuid4()))], policy)
    pool, name = (("images", victim.glance_id) if case.held == "chain image"
                  else ("vms", c.disk))
    header = f"rbd_header.{c.store.ceph.images.state(pool, name).image_id}"
    ioctx = c.side.ioctx(pool)
    ioctx.lock_exclusive(header, lease.NAME, "test", desc="another worker",
                         duration=300)
    middle = Middle()
    intent = f"intent/delete/images/{victim.glance_id}"

    def watch() -> None:  # until the delete waits for the lease
        while intent not in c.journal() or (
                case.held == "disk"
                and c.side.exists("images", victim.glance_id)):
            time.sleep(0.05)
        time.sleep(0.3)
        middle.reached.set()
    threading.Thread(target=watch, daemon=True).start()

    def unlock() -> None:
        # (unlocked already, or removed with its image)
        with contextlib.suppress(rados.ObjectNotFound):
            ioctx.unlock(header, lease.NAME, "test")

    # with the OSD down the delete's next attempt at the lease times out;
    # with the monitor down the lease is given up so that it goes on
    go = unlock if fault is MON_KILLED else (lambda: None)
    try:
        answer = faulted(c, fault, lambda: c.store.delete(
            location_of(c.store, victim.location)), middle, go)
        answered_in_time(answer)
        if not (fault is MON_KILLED and case.held == "disk"):
            assert isinstance(answer.error, exceptions.BackendException), \
                answer
            assert f"did not answer within {T} s" in str(answer.error)
        else:  # releasing needs no monitor: the delete is done
            assert answer.error is None, answer
        back = recovered(c, fault)
    finally:
        unlock()
        ioctx.close()
    left = c.extra()
    rows, took = cleaned_up(c)
    nothing_left_nothing_lost(c)
    record(fault, f"delete (lease held on the {case.held})", answer, left,
           rows, recovery=back, cleanup_seconds=took)


@pytest.mark.parametrize("fault", FAULTS, ids=str)
def test_chain_snapshot(cluster, fault):
    """A chain snapshot of the disk stopped after the disk's snapshot, before
    its clone: the clone's own error, after one timeout (no other path is
    tried and nothing is rolled back then: each would wait again), and
    cleanup rolls it back."""
    c, image_id, middle = cluster, str(uuid.uuid4()), Middle()
    answer = faulted(c, fault, lambda: chains.snapshot(
        c.store.ceph, [chains.Request(f"vms/{c.disk}", image_id)],
        c.store.settings.policy,
        on_step=lambda name: middle.step(name, "chain")), middle)

    assert isinstance(answer.error, errors.ClusterError), answer
    assert answer.error.timed_out
    # the step that met the fault: the clone (OSD), its snapshot (monitor)
    step = str(answer.error).partition(":")[0]
    assert step.startswith((f"opening vms/{c.disk}", f"cloning vms/{c.disk}",
                            f"snapshotting images/{image_id}")), answer
    assert f"did not answer within {T} s" in str(answer.error)
    answered_in_time(answer)
    assert answer.seconds < 2 * T, answer  # one timeout, not one a step
    back = recovered(c, fault)
    left = c.extra()
    rows, took = cleaned_up(c)
    assert [(r["action"], r["target"]) for r in rows] == [
        ("roll back", f"images/{image_id}")]
    nothing_left_nothing_lost(c)
    record(fault, "chain snapshot (chains.snapshot)", answer, left, rows,
           recovery=back, cleanup_seconds=took)


def test_downloads_go_on_while_the_monitor_is_down(cluster):
    c = cluster
    doomed, *_ = upload(c.store, str(uuid.uuid4()), b"doomed" * 1000)
    base = location_of(c.store, c.base)
    c.daemon(*MON_KILLED.stop)
    try:
        assert c.store.get_size(base) == MiB  # reads need no monitor
        with pytest.raises(exceptions.BackendException,
                           match=f"monitors did not answer within {T} s"):
            c.store.delete(location_of(c.store, doomed))  # unprotect: needs one
        answer = Answer()
        began = time.monotonic()
        try:
            c.store.get_size(base)
        except exceptions.BackendException as exc:
            answer.error = exc
        answer.seconds = time.monotonic() - began
        record(MON_KILLED, "download (get_size) after a timed-out delete",
               answer, [], [])
        assert answer.error is None, answer
    finally:
        c.daemon(*MON_KILLED.back[0])
        c.store.delete(location_of(c.store, doomed))
    nothing_left_nothing_lost(c)
