"""Several processes acting on one chain at once, on the real cluster."""

import json
import subprocess
import sys
import time
import uuid

import rados
import rbd

from glance_rbd_tracked import ceph as ceph_mod
from glance_rbd_tracked import chains
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import schema
from tests.functional.conftest import upload


def start(ceph_conf, at, *args):
    return subprocess.Popen([sys.executable, "-m",
                             "tests.functional.race_worker", ceph_conf,
                             str(at), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc):
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_two_workers_reclaim_a_shared_retired_parent_exactly_once(
        store, nova, ceph_conf):
    base = str(uuid.uuid4())
    upload(store, base, b"base" * 1024)
    disk = f"{uuid.uuid4()}_disk"
    nova.clone("images", base, "snap", "vms", disk)
    made = chains.snapshot(
        store.ceph,
        [chains.Request(f"vms/{disk}", str(uuid.uuid4())) for _ in range(6)],
        store.settings.policy)
    lifecycle.retire(store.ceph, "vms", disk, store.settings.policy)
    ids = [m.glance_id for m in made]

    at = time.time() + 2
    workers = [start(ceph_conf, at, "delete", *ids[0::2]),
               start(ceph_conf, at, "delete", *ids[1::2])]
    results = [finish(w) for w in workers]

    assert [r["errors"] for r in results] == [[], []]
    assert sorted(i for r in results for i, _ in r["done"]) == sorted(ids)
    for image_id in ids:
        assert not nova.exists("images", image_id)
    assert not nova.exists("vms", disk + schema.RETIRED_SUFFIX)
    assert nova.exists("images", base)
    intents, links = schema.load_journal(store.ceph.journal.entries("images"))
    assert not [e for e in intents + links if disk in e.source]


def test_a_clone_racing_a_delete_keeps_its_parent_or_fails_cleanly(
        store, nova, ceph_conf):
    outcomes = set()
    for _ in range(4):
        base = str(uuid.uuid4())
        upload(store, base, b"b" * 4096)
        disk = f"{uuid.uuid4()}_disk"
        nova.clone("images", base, "snap", "vms", disk)
        (made,) = chains.snapshot(store.ceph,
                                  [chains.Request(f"vms/{disk}",
                                                  str(uuid.uuid4()))],
                                  store.settings.policy)
        child = f"{uuid.uuid4()}_disk"
        at = time.time() + 1
        cloner = start(ceph_conf, at, "clone", made.glance_id, child,
                       str(nova.clone_format))
        deleter = start(ceph_conf, at, "delete", made.glance_id)
        cloned, deleted = finish(cloner), finish(deleter)
        assert deleted["errors"] == []
        if cloned["done"]:
            # the clone won: the snapshot image is retired, not removed,
            # and the new disk reads its data
            outcomes.add("clone kept the parent")
            retired = made.glance_id + schema.RETIRED_SUFFIX
            assert nova.exists("images", retired)
            with nova.ioctx("vms") as ioctx, \
                    rbd.Image(ioctx, child, read_only=True) as image:
                assert image.read(0, 4096) == b"b" * 4096
            lifecycle.retire(store.ceph, "vms", child,
                             store.settings.policy)
            assert not nova.exists("images", retired)
        else:
            # e.g. ImageNotFound, or InvalidArgument for a format-1 clone
            # of a snapshot that was just unprotected
            outcomes.add("clone failed cleanly: " + cloned["errors"][0][1])
            assert not nova.exists("vms", child)
            assert not nova.exists("images", made.glance_id)
        assert store.ceph.images.state("vms", disk).snaps == ()
    assert outcomes  # which side wins is up to the scheduler


class _Interposed:
    """Real librbd, with ``hook(method, args)`` run before each image call
    it names: a way to land another worker's step in a chosen window."""

    def __init__(self, hook):
        self._hook = hook

    def __getattr__(self, name):
        return getattr(rbd, name)

    def Image(self, *args, **kwargs):
        return _InterposedImage(rbd.Image(*args, **kwargs), self._hook)


class _InterposedImage:
    def __init__(self, image, hook):
        self._image, self._hook = image, hook

    def __getattr__(self, name):
        method = getattr(self._image, name)

        def call(*args, **kwargs):
            self._hook(name, args)
            return method(*args, **kwargs)
        return call


def test_a_snapshot_unprotected_elsewhere_mid_removal_is_decided_again(
        store, nova, ceph_conf):
    image_id = str(uuid.uuid4())
    upload(store, image_id, b"u" * 4096)
    raced = []

    def other_worker_unprotects(method, args):
        # between our is_protected_snap() and our unprotect_snap()
        if method == "unprotect_snap" and not raced:
            raced.append(args)
            with nova.ioctx("images") as ioctx, \
                    rbd.Image(ioctx, image_id) as image:
                image.unprotect_snap("snap")

    cluster = ceph_mod.connect(
        ceph_conf, rados_rbd=(rados, _Interposed(other_worker_unprotects)))
    try:
        decision = lifecycle.delete(cluster, "images", image_id,
                                    store.settings.policy)
    finally:
        cluster.close()
    assert raced == [("snap",)]
    assert type(decision).__name__ == "Remove"
    assert not nova.exists("images", image_id)
