"""Copies to an edge site (copies.py, ceph/deltas.py, Data.write_clone)
against two real clusters: the test cluster and one in a network
namespace behind a tbf-shaped link (tools/edge-rig; 500 Mbit/s here), whose
counters measure what crossed it."""

import datetime
import hashlib
import os
import signal
import subprocess
import sys
import uuid

import pytest
import rbd

from glance_rbd_tracked import ceph as ceph_mod
from glance_rbd_tracked import chains
from glance_rbd_tracked import cleanup
from glance_rbd_tracked import copies
from glance_rbd_tracked import core
from glance_rbd_tracked import delta
from glance_rbd_tracked import errors
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import plans
from glance_rbd_tracked import schema
from glance_rbd_tracked import uploads
from tests.functional.test_crash import fence_watchers

MiB = 1 << 20
SIZE = 32 * MiB
POLICY = core.Policy(pool="images")


@pytest.fixture(scope="module")
def central(ceph_conf):
    c = ceph_mod.connect(ceph_conf)
    yield c
    c.close()


@pytest.fixture(scope="module")
def far(edge):
    c = ceph_mod.connect(edge.conf, timeout=10)
    yield c
    c.close()


def upload(ceph, data, name=None):
    name = name or str(uuid.uuid4())
    uploads.upload(ceph, POLICY, name,
                   [data[i:i + 8 * MiB] for i in range(0, len(data), 8 * MiB)],
                   size=len(data), order=22)
    return name


def snapshot_of(central, base, change):
    """A chain snapshot (images/X) of an instance disk cloned from
    ``base``, after ``change(image)`` wrote into the disk."""
    disk = f"disk-{uuid.uuid4().hex[:8]}"
    central.changes.clone(f"images/{base}@snap", "vms", disk)
    client = central.connection.client()
    with client.open_ioctx("vms") as ioctx, rbd.Image(ioctx, disk) as image:
        change(image)
    name = str(uuid.uuid4())
    chains.snapshot(central, [chains.Request(f"vms/{disk}", name)], POLICY)
    return name


def clustered(image):
    image.write(os.urandom(SIZE // 100), SIZE // 3 + 12345)


def scattered(image):
    for offset in range(0, SIZE, MiB):
        image.write(os.urandom(4096), offset + 77 * 4096)


def digest(ceph, name):
    h = hashlib.sha256()
    for chunk in ceph.data.read("images", name, "snap"):
        h.update(chunk)
    return h.hexdigest()


def copy(central, far, name, **kwargs):
    planned = copies.plan(central, far, "images", "images", name)
    return planned, copies.execute(central, far, planned, "images", **kwargs)


@pytest.fixture(scope="module")
def base(central, far):
    """A base image in both clusters: the edge's a faithful copy."""
    name = upload(central, os.urandom(SIZE))
    planned, result = copy(central, far, name)
    assert isinstance(planned.plan.start, delta.Whole)
    assert result.faithful
    return name


def nothing_left(ceph, name=None):
    """No intent in the journal, and (with ``name``) no such image."""
    journal = schema.parse_journal(ceph.journal.entries("images"))
    assert [i for i in journal.intents if i.op is schema.Op.UPLOAD] == []
    if name is not None:
        with pytest.raises(errors.NotFound):
            ceph.images.state("images", name)


def test_a_whole_copy_records_its_origin(central, far, base):
    state = far.images.state("images", base)
    origin = state.records.origin
    source = central.images.state("images", base)
    assert origin is not None and origin.image_id == state.image_id
    assert (origin.fsid, origin.source_id) == (central.fsid(),
                                               source.image_id)
    assert digest(central, base) == digest(far, base)


@pytest.mark.parametrize("change, limit", [
    (clustered, lambda changed: 1.1 * changed + MiB),
    (scattered, lambda changed: 0.10 * SIZE)], ids=["clustered", "scattered"])
def test_a_snapshot_sends_only_what_differs(central, far, edge, base,
                                            change, limit):
    name = snapshot_of(central, base, change)
    before = edge.counters()
    planned, _ = copy(central, far, name)
    sent = edge.counters()["to_edge"] - before["to_edge"]
    assert planned.plan.start.name == base
    changed = SIZE // 100 if change is clustered else SIZE // 256
    assert sent <= limit(changed), (sent, planned.plan)
    assert digest(central, name) == digest(far, name)
    state = far.images.state("images", name)
    assert state.parent == f"images/{base}@snap"
    assert state.records.origin is not None
    nothing_left(far)


def test_an_ancestor_of_other_content_is_not_used(central, far, base):
    """The edge holds an image of the ancestor's name that was not copied
    from it: the copy is whole, and says why."""
    other = upload(central, os.urandom(SIZE))
    upload(far, os.urandom(SIZE), name=other)  # same name, other content
    name = snapshot_of(central, other, clustered)
    planned = copies.plan(central, far, "images", "images", name)
    assert isinstance(planned.plan.start, delta.Whole)
    assert "no origin record" in planned.plan.start.reason


def test_a_forged_origin_is_not_trusted(central, far, base):
    """An origin record naming another snapshot id: whole."""
    other = upload(central, os.urandom(SIZE))
    copy(central, far, other)
    state = far.images.state("images", other)
    origin = state.records.origin
    forged = schema.OriginRecord(**{**origin.__dict__,
                                    "source_snap_id": "999999"})
    client = far.connection.client()
    with client.open_ioctx("images") as ioctx, \
            rbd.Image(ioctx, other) as image:
        image.metadata_set(*schema.dump(forged))
    name = snapshot_of(central, other, clustered)
    planned = copies.plan(central, far, "images", "images", name)
    assert isinstance(planned.plan.start, delta.Whole)
    assert "999999" in planned.plan.start.reason


def test_a_location_snapshot_made_again_is_not_trusted(central, far):
    """At the edge, the ancestor's snapshot is removed, its head written
    and the snapshot made again under the same name: the origin record is
    the image's own, but not of this snapshot: whole."""
    ancestor = upload(central, os.urandom(SIZE))
    copy(central, far, ancestor)
    client = far.connection.client()
    with client.open_ioctx("images") as ioctx, \
            rbd.Image(ioctx, ancestor) as image:
        image.unprotect_snap("snap")
        image.remove_snap("snap")
        image.write(b"x" * 4096, 0)
        image.create_snap("snap")
        image.protect_snap("snap")
    name = snapshot_of(central, ancestor, clustered)
    planned = copies.plan(central, far, "images", "images", name)
    assert isinstance(planned.plan.start, delta.Whole)
    assert "is not the one copied onto" in planned.plan.start.reason


def test_the_ancestor_deleted_at_the_edge_meanwhile(central, far):
    """Planned on an ancestor, which is deleted at the edge before the
    clone: the copy fails, leaving nothing; planned again, it is whole."""
    ancestor = upload(central, os.urandom(SIZE))
    copy(central, far, ancestor)
    name = snapshot_of(central, ancestor, clustered)
    planned = copies.plan(central, far, "images", "images", name)
    assert isinstance(planned.plan.start, delta.Base)
    lifecycle.delete(far, "images", ancestor, POLICY)
    with pytest.raises(errors.NotFound):
        copies.execute(central, far, planned, "images")
    nothing_left(far, name)
    _, result = copy(central, far, name)
    assert result.start == "whole"
    assert digest(central, name) == digest(far, name)


def test_at_the_edge_the_copy_lives_like_any_image(central, far, base):
    """Deleting the ancestor there retires it while the copy needs it;
    deleting the copy reclaims both."""
    ancestor = upload(central, os.urandom(SIZE))
    copy(central, far, ancestor)
    name = snapshot_of(central, ancestor, clustered)
    copy(central, far, name)
    decision = lifecycle.delete(far, "images", ancestor, POLICY)
    assert isinstance(decision, core.Retire)
    assert digest(central, name) == digest(far, name)
    lifecycle.delete(far, "images", name, POLICY)
    nothing_left(far, name)
    names = far.images.list_images("images")
    assert core.retired_name(ancestor) not in names


def test_receive_takes_whatever_the_stream_holds(central, far, base):
    """Glance's stream (copy-image) differing from the source: the copy
    holds the stream, and has no origin record (nothing starts from it)."""
    name = snapshot_of(central, base, clustered)
    data = bytearray(b"".join(central.data.read("images", name, "snap")))
    data[5 * MiB:5 * MiB + 10] = b"not theirs"
    planned = copies.plan(central, far, "images", "images", name)
    result = copies.receive(central, far, planned, "images",
                            [bytes(data[i:i + MiB])
                             for i in range(0, len(data), MiB)],
                            size=len(data))
    assert not result.faithful
    assert digest(far, name) == hashlib.sha256(bytes(data)).hexdigest()
    assert far.images.state("images", name).records.origin is None


def clean_up(ceph, conf, name):
    """cleanup --execute; a killed writer's watch stays on its image until
    the OSD drops it (osd_client_watch_timeout, 30 s), and cleanup waits
    for it: the dead client is fenced here instead."""
    items = cleanup.plan(ceph, POLICY, lifecycle.utcnow(),
                         datetime.timedelta(0))
    if any(i.action is plans.Action.WAIT and "written by" in i.reason
           for i in items):
        fence_watchers(conf, "images",
                       ceph.images.state("images", name).image_id)
        items = cleanup.plan(ceph, POLICY, lifecycle.utcnow(),
                             datetime.timedelta(0))
    assert cleanup.execute(ceph, items, POLICY, now=lifecycle.utcnow) == []


KILLER = """
import os, signal, sys
sys.path.insert(0, {root!r})
from glance_rbd_tracked import ceph as ceph_mod, copies
central = ceph_mod.connect({central!r})
far = ceph_mod.connect({far!r}, timeout=10)
planned = copies.plan(central, far, "images", "images", {name!r})
def step(name):
    if name == {at!r}:
        os.kill(os.getpid(), signal.SIGKILL)
def progress(done, total):
    if {at!r} == "writing" and done * 2 >= total:
        os.kill(os.getpid(), signal.SIGKILL)
copies.execute(central, far, planned, "images", on_step=step,
               on_progress=progress, depth=1)
"""


@pytest.mark.parametrize("at", ["planned", "writing", "written", "checked"])
def test_killed_at_each_step_cleanup_leaves_nothing(central, far, edge, base,
                                                    ceph_conf, at):
    name = snapshot_of(central, base, scattered)
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    proc = subprocess.run(
        [sys.executable, "-c", KILLER.format(root=root, central=ceph_conf,
                                             far=edge.conf, name=name,
                                             at=at)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    # cleanup in both clusters, as an operator runs it there
    clean_up(far, edge.conf, name)
    clean_up(central, ceph_conf, name)
    nothing_left(far)
    try:
        state = far.images.state("images", name)
    except errors.NotFound:
        return  # rolled back
    # killed after the copy was complete: it stays, whole and correct
    assert at in ("written", "checked")
    assert state.snap("snap") is not None
    assert digest(central, name) == digest(far, name)


def test_a_cut_link_fails_in_bounded_time_and_cleanup_leaves_nothing(
        central, edge, base):
    """The link goes down mid-copy: the copy fails within a few op
    timeouts; once the link is back, cleanup leaves nothing."""
    far = ceph_mod.connect(edge.conf, timeout=5)
    try:
        name = snapshot_of(central, base, scattered)
        planned = copies.plan(central, far, "images", "images", name)
        cut = []

        def progress(done, total):
            if not cut and done * 2 >= total:
                cut.append(edge.rig("cut"))

        import time
        began = time.monotonic()
        try:
            with pytest.raises(errors.TrackedError):
                copies.execute(central, far, planned, "images",
                               on_progress=progress, depth=1)
            assert time.monotonic() - began < 60
        finally:
            edge.rig("mend")
        clean_up(far, edge.conf, name)
        nothing_left(far, name)
    finally:
        far.close()


def test_edge_monitor_down_is_a_clear_error(central, edge, base):
    name = snapshot_of(central, base, clustered)
    edge.rig("cluster", "kill", "mon.a")
    try:
        far = ceph_mod.connect(edge.conf, timeout=5, connect_timeout=5)
        with pytest.raises(errors.ClusterError):
            copies.plan(central, far, "images", "images", name)
        far.close()
    finally:
        edge.rig("cluster", "start-daemon", "mon.a")


def test_the_glance_user_of_each_cluster_may_copy(central, ceph_conf, edge,
                                                  base):
    """As client.glance on both clusters, with the caps of
    doc/source/cephx.rst (tools/run-tests runs both with cephx)."""
    name = snapshot_of(central, base, clustered)
    source = ceph_mod.connect(ceph_conf, "glance")
    target = ceph_mod.connect(edge.conf, "glance")
    try:
        planned, result = copy(source, target, name)
        assert isinstance(planned.plan.start, delta.Base)
        assert result.faithful
        assert digest(central, name) == digest(target, name)
    finally:
        source.close()
        target.close()


@pytest.fixture
def two_backends(tmp_path, ceph_conf, edge):
    """glance-api.conf with a central and an edge backend."""
    path = tmp_path / "glance-api.conf"
    path.write_text(
        "[DEFAULT]\nenabled_backends = central:rbd_tracked, "
        "edge1:rbd_tracked\n[glance_store]\ndefault_backend = central\n"
        f"[central]\nrbd_store_pool = images\nrbd_store_ceph_conf = "
        f"{ceph_conf}\n[edge1]\nrbd_store_pool = images\n"
        f"rbd_store_ceph_conf = {edge.conf}\n")
    return ["--config-file", str(path), "--backend", "central"]


def test_the_copy_command_plans_then_copies_and_show_draws_both(
        central, far, base, two_backends, capsys):
    from glance_rbd_tracked import cli
    name = snapshot_of(central, base, clustered)
    assert cli.main([*two_backends, "copy", name, "--to", "edge1",
                     "--format", "json"]) == 0
    import json
    [row] = json.loads(capsys.readouterr().out)
    assert (row["result"], row["start"]) == ("planned", f"{base}@snap")
    with pytest.raises(errors.NotFound):
        far.images.state("images", name)  # a plan changes nothing
    assert cli.main([*two_backends, "copy", name, "--to", "edge1",
                     "--execute", "--format", "json"]) == 0
    out = capsys.readouterr()
    [row] = json.loads(out.out)
    assert row["result"] == "copied" and row["bytes"] < SIZE // 10
    assert "copying" in out.err  # progress
    assert row["location"] == f"rbd://{far.fsid()}/images/{name}/snap"
    assert cli.main([*two_backends, "show", name, "--across", "edge1"]) == 0
    text = capsys.readouterr().out
    assert f"in backend edge1 (cluster {far.fsid()}): a copy of this image" \
        in text
    assert f"images/{base}" in text.split("in backend edge1")[1]
    # the same name holding something else there is told apart
    other = upload(central, os.urandom(MiB))
    upload(far, os.urandom(MiB), name=other)
    assert cli.main([*two_backends, "show", other, "--across",
                     "edge1"]) == 0
    assert "not a copy of this image: it has no origin record" in \
        capsys.readouterr().out
