"""Unmodified Nova 34 and Cinder 29 (their stock code, no integration) on
images and chains of the store, in clone format 1 and 2 (issue 7).

Nova boots from an image of the store (``RBDDriver.parse_url``,
``is_cloneable``, ``clone``) and destroys the instance
(``LibvirtDriver._cleanup_rbd``); Cinder makes a volume of an image
(``clone_image``) and deletes volumes (``delete_volume``), with Glance's
pool writable and read-only for its key.  Each scenario deletes the images
it made, then runs ``glance-rbd-tracked cleanup --execute --grace 0`` as
glance, and checks every pool, every RBD trash (``rbd trash ls --all``) and
the journal for what is left: nothing on clone format 2 with the pool option
``rbd_move_parent_to_trash_on_remove`` (the dev cluster's setting), what
doc/source/metadata.rst says on clone format 1, which ``doctor`` and
``cleanup`` report.  One more test runs clone format 2 on pools without
that option.
"""

from __future__ import annotations

from collections.abc import Iterator
import json
import os
import subprocess
import sys
from typing import Any

from glance_store import location as gs_location
from oslo_config import cfg
import pytest
import rbd

from glance_rbd_tracked import chains
from glance_rbd_tracked import core
from glance_rbd_tracked import doctor
from glance_rbd_tracked import driver
from tests.e2e.openstack.conftest import MiB
from tests.e2e.openstack.conftest import delete
from tests.e2e.openstack.conftest import new_id
from tests.e2e.openstack.conftest import own_bytes
from tests.e2e.openstack.conftest import payload
from tests.e2e.openstack.conftest import upload
from tests.e2e.openstack.worker import Failed

POOLS = ("images", "vms", "volumes")
POLICY = core.Policy(pool="images")
POLICY_CHECKS = (doctor.POLICY_CHECK, doctor.VIEW_CHECK)
GUEST = b"written by the guest before the snapshot"


def mon(side: Any, **command: Any) -> str:
    ret, out, err = side.client.mon_command(json.dumps(command), b"")
    assert ret == 0, err
    return out


@pytest.fixture(scope="module", params=[1, 2], ids=["clone-v1", "clone-v2"])
def fmt(request: pytest.FixtureRequest, side: Any) -> Iterator[int]:
    """The cluster's clone format: for 1 it acts as an older cluster
    (require_min_compat_client luminous), so the store's own chain clones
    are format 1 too; restored afterwards."""
    was = json.loads(mon(side, prefix="osd dump", format="json"))
    mon(side, prefix="osd set-require-min-compat-client",
        version="luminous" if request.param == 1 else "mimic")
    yield request.param
    mon(side, prefix="osd set-require-min-compat-client",
        version=was["require_min_compat_client"])


@pytest.fixture(scope="module")
def nova(start: Any, fmt: int) -> Iterator[Any]:
    """nova-compute's RBD code as Nova ships it, cloning in ``fmt``."""
    worker = start("nova_side", "stock", clone_format=fmt)
    assert worker.hello["nova"].startswith("34."), worker.hello
    assert (worker.hello["installed"], worker.hello["changed"]) == (False, [])
    yield worker
    worker.close()


@pytest.fixture(scope="module")
def cinder(start: Any, fmt: int) -> Iterator[Any]:
    """Cinder's RBDDriver, as client.cinder (profile rbd on images too)."""
    worker = start("cinder_side", "stock", clone_format=fmt)
    assert worker.hello["cinder"].startswith("29."), worker.hello
    assert worker.hello["driver"] == "RBDDriver"
    yield worker
    worker.close()


@pytest.fixture(scope="module")
def cinder_ro(start: Any, users: Any, fmt: int) -> Iterator[Any]:
    """Cinder's RBDDriver with Ceph's usual caps: read-only on images."""
    if users is None:
        pytest.fail("needs a cephx cluster (tools/run-tests sets "
                    "CEPH_DEV_AUTH=cephx)")
    worker = start("cinder_side", "stock", clone_format=fmt,
                   rbd_user="grt-cinder-ro-images")
    assert worker.hello["driver"] == "RBDDriver"
    yield worker
    worker.close()


@pytest.fixture(scope="module")
def tracked(ceph_conf: str) -> driver.Store:
    """The store's glance_store driver as glance-api runs it, as
    client.glance: deletes the chain images (they are not in Glance)."""
    conf = cfg.ConfigOpts()
    conf([], project="glance-rbd-tracked-tests", default_config_files=[])
    store = driver.Store(conf)
    for key, value in (("rbd_store_ceph_conf", ceph_conf),
                       ("rbd_store_pool", "images"),
                       ("rbd_store_user", "glance")):
        conf.set_override(key, value, group="glance_store")
    store.configure(re_raise_bsc=True)
    return store


def delete_chain(tracked: driver.Store, location: str) -> None:
    tracked.delete(gs_location.Location("rbd_tracked", driver.StoreLocation,
                                        tracked.conf, uri=location))


def chain(store: Any, source: str) -> chains.Result:
    """``glance-rbd-tracked snapshot source=<new id>``: a chain image."""
    (made,) = chains.snapshot(store, [chains.Request(source, new_id())],
                              POLICY)
    return made


def cli(*args: str) -> tuple[int, Any]:
    """``glance-rbd-tracked`` as glance: glance-api's own configuration
    file and client.glance; (exit code, the JSON it printed)."""
    conf = os.path.join(os.environ.get(
        "GLANCE_E2E_DIR", "/tmp/glance-rbd-tracked-e2e-glance"),
        "glance-api.conf")
    run = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "glance-rbd-tracked"),
         "--config-file", conf, "--user", "glance", *args, "--format",
         "json"], capture_output=True, text=True, timeout=300)
    assert run.returncode in (0, 1), run.stderr[-3000:]
    return run.returncode, json.loads(run.stdout)


def cleanup(*names: str) -> list[tuple[str, str, str, str]]:
    """One ``cleanup --execute --grace 0``: its rows about ``names``
    (kind, target, action, result)."""
    _, rows = cli("cleanup", "--execute", "--grace", "0")
    return [(r["kind"], r["target"], r["action"], r["result"]) for r in rows
            if any(n in r["target"] for n in names)]


def trash(ceph_conf: str, pool: str) -> list[dict[str, Any]]:
    """``rbd trash ls --all --long --format json``."""
    out = subprocess.run(
        ["rbd", "-c", ceph_conf, "trash", "ls", "--all", "--long",
         "--format", "json", "-p", pool],
        check=True, capture_output=True, text=True, timeout=60).stdout
    return json.loads(out)


def snapshot_lines(image: str, opened: rbd.Image) -> list[str]:
    """``image@snap`` per snapshot; one in the trash namespace by the name
    it had (``rbd_tracked-<chain image>``)."""
    return [f"{image}@{snap['trash']['original_name']} (trash namespace)"
            if snap.get("namespace") == rbd.RBD_SNAP_NAMESPACE_TYPE_TRASH
            else f"{image}@{snap['name']}" for snap in opened.list_snaps()]


def residue(side: Any, store: Any, ceph_conf: str, *names: str) -> list[str]:
    """What names any of ``names``, sorted: images in every pool (with
    their snapshots), every RBD trash, and the journal."""
    def ours(text: str) -> bool:
        return any(n in text for n in names)

    found = []
    for pool in POOLS:
        for image in sorted(filter(ours, side.names(pool))):
            found.append(f"{pool}/{image}")
            with side.ioctx(pool) as ioctx, rbd.Image(
                    ioctx, image, read_only=True) as opened:
                found += snapshot_lines(f"{pool}/{image}", opened)
        for entry in trash(ceph_conf, pool):
            if not ours(entry["name"]):
                continue
            found.append(f"{pool} trash/{entry['name']} ({entry['source']})")
            with side.ioctx(pool) as ioctx, rbd.Image(
                    ioctx, image_id=entry["id"], read_only=True) as opened:
                found += snapshot_lines(f"{pool} trash/{entry['name']}",
                                        opened)
    found += [f"journal {key}" for key, value in
              store.journal.entries("images").items()
              if ours(key) or ours(value)]
    return sorted(found)


def parent_spec(side: Any, pool: str, name: str) -> str | None:
    """``pool/image@snap`` of the parent, wherever it is (a parent in the
    RBD trash, a snapshot in the trash namespace), None when flat."""
    with side.ioctx(pool) as ioctx, rbd.Image(ioctx, name,
                                              read_only=True) as image:
        try:
            spec = image.get_parent_image_spec()
        except rbd.ImageNotFound:
            return None
        return f"{spec['pool_name']}/{spec['image_name']}@{spec['snap_name']}"


def log_tail(worker: Any, since: int) -> list[str]:
    """What the worker logged at INFO or above since ``since``."""
    return [line for line in worker.log()[since:].splitlines()
            if line.startswith(("INFO", "WARNING", "ERROR"))]


def snaps(pool: str, image: str, *names: str) -> list[str]:
    """``residue`` lines of an image and its user snapshots ``names``."""
    return [f"{pool}/{image}", *(f"{pool}/{image}@{n}" for n in names)]


def never_flattened(side: Any, image: str, source: str) -> None:
    """The chain image still clones its source's snapshot and holds no
    data of its own: nothing was copied into it."""
    assert (parent_spec(side, "images", image) or "").startswith(
        f"{source}@"), parent_spec(side, "images", image)
    assert own_bytes(side, "images", image) == 0


# -- Nova ---------------------------------------------------------------


def test_nova_boots_from_the_store_and_destroys_after_glance_deleted(
        nova, glance, side, store, ceph_conf, fmt):
    """RBDDriver.parse_url / is_cloneable / clone on the store's location;
    Glance deletes the image while the disk clones it (204: retired);
    stock _cleanup_rbd removes the disk; cleanup reclaims the image."""
    base = upload(glance, payload(4 * MiB, f"stock-nova-base-{fmt}"))
    instance = new_id()
    booted = nova.call("clone_location", instance=instance,
                       url=base["direct_url"])
    assert booted["parsed"] == [side.fsid(), "images", base["id"], "snap"]
    assert booted["cloneable"]
    pool, disk = booted["disk"].split("/")
    assert parent_spec(side, pool, disk) == f"images/{base['id']}@snap"
    assert side.clone_format_of(pool, disk) == fmt
    names = (base["id"], instance)

    assert delete(glance, base["id"]) == 204
    retired = snaps("images", f"{base['id']}_to_be_deleted", "snap")
    assert residue(side, store, ceph_conf, *names) == sorted([
        *retired, f"{pool}/{disk}"])
    nova.call("destroy", instance=instance)
    assert residue(side, store, ceph_conf, *names) == retired
    assert cleanup(*names) == [
        ("retired", f"images/{base['id']}_to_be_deleted", "remove", "done")]
    assert residue(side, store, ceph_conf, *names) == []


def test_nova_destroys_an_instance_a_chain_was_made_of(
        nova, glance, side, store, ceph_conf, fmt, tracked):
    """A chain of an instance's disk, stock _cleanup_rbd, then the chain
    image and the base image deleted.  Format 2: the disk has no user
    snapshot, Nova removes it, librbd keeps it in the RBD trash until the
    chain image goes; nothing is left.  Format 1: Nova silently leaves the
    disk under its name, not marked; it stays after its chain image is
    gone, and keeps the retired base image, which cleanup reports as kept
    by it; retiring the disk (what the docs prescribe) ends both."""
    base = upload(glance, payload(4 * MiB, f"stock-nova-chain-{fmt}"))
    instance = new_id()
    pool, disk = nova.call("boot", instance=instance,
                           image_id=base["id"]).split("/")
    side.write(pool, disk, GUEST)
    made = chain(store, f"{pool}/{disk}")
    image = made.glance_id
    names = (base["id"], instance, image)
    assert side.clone_format_of("images", image) == fmt
    snapshot = f"rbd_tracked-{image}"
    assert side.snapshots(pool, disk) == ([] if fmt == 2
                                          else [(snapshot, True)])
    never_flattened(side, image, f"{pool}/{disk}")

    since = len(nova.log())
    nova.call("destroy", instance=instance)
    assert log_tail(nova, since) == []  # Nova says nothing either way
    never_flattened(side, image, f"{pool}/{disk}")
    images = [*snaps("images", base["id"], "snap"),
              *snaps("images", image, "snap")]
    link = f"journal chain/images/{image}"
    if fmt == 2:
        assert residue(side, store, ceph_conf, *names) == sorted([
            *images, f"{pool} trash/{disk} (USER_PARENT)",
            f"{pool} trash/{disk}@{snapshot} (trash namespace)", link])
    else:
        assert residue(side, store, ceph_conf, *names) == sorted([
            *images, *snaps(pool, disk, snapshot), link])
        assert "rbd_tracked.retired" not in side.metadata(pool, disk)

    delete_chain(tracked, made.location)
    assert delete(glance, base["id"]) == 204
    left = [] if fmt == 2 else sorted([
        *snaps("images", f"{base['id']}_to_be_deleted", "snap"),
        f"{pool}/{disk}"])
    assert residue(side, store, ceph_conf, *names) == left
    rows = cleanup(*names)
    assert residue(side, store, ceph_conf, *names) == left
    if fmt == 2:
        assert rows == []
        return
    assert rows == [("retired", f"images/{base['id']}_to_be_deleted",
                     "keep", "-")]
    _, plan = cli("cleanup")
    (kept,) = [r for r in plan if base["id"] in r["target"]]
    assert kept["reason"] == f"snapshot snap (user) has 1 clone(s): " \
        f"{pool}/{disk}"
    # the remedy: retire the disk instead of removing it
    rc, out = cli("retire", f"{pool}/{disk}", "--execute")
    assert (rc, [r["outcome"] for r in out]) == (0, ["removed"]), out
    assert residue(side, store, ceph_conf, *names) == []


# -- Cinder -------------------------------------------------------------


def test_cinder_clones_an_image_of_the_store_and_deletes_the_volume(
        cinder, glance, side, store, ceph_conf, fmt):
    """clone_image from the store's location; Glance deletes the image
    while the volume clones it (204: retired); stock delete_volume removes
    the volume; cleanup reclaims the image."""
    base = upload(glance, payload(4 * MiB, f"stock-cinder-base-{fmt}"))
    volume = cinder.call("clone_image", image_id=base["id"])
    assert volume["cloned"], volume
    assert base["direct_url"] in volume["locations"]
    name = volume["name"]
    assert parent_spec(side, "volumes", name) == f"images/{base['id']}@snap"
    assert side.clone_format_of("volumes", name) == fmt
    names = (base["id"], name)

    assert delete(glance, base["id"]) == 204
    retired = snaps("images", f"{base['id']}_to_be_deleted", "snap")
    assert residue(side, store, ceph_conf, *names) == sorted([
        *retired, f"volumes/{name}"])
    cinder.call("delete_volume", volume_id=volume["id"])
    assert residue(side, store, ceph_conf, *names) == retired
    assert cleanup(*names) == [
        ("retired", f"images/{base['id']}_to_be_deleted", "remove", "done")]
    assert residue(side, store, ceph_conf, *names) == []


@pytest.mark.parametrize("caps", ["images-writable", "images-read-only"])
def test_cinder_deletes_a_volume_a_chain_was_made_of(
        request, side, store, ceph_conf, fmt, tracked, caps):
    """A chain of a volume, stock delete_volume, then the chain image
    deleted.  Format 2: the volume goes to the RBD trash (librbd's), the
    chain image is never flattened, nothing is left, whatever Cinder's
    caps on images.  Format 1, images writable: Cinder flattens the chain
    image and moves the volume to the trash; deleting the chain image
    finishes it (its journal link names the source).  Format 1, images
    read-only: the delete fails until the chain image is gone."""
    worker = request.getfixturevalue(
        "cinder" if caps == "images-writable" else "cinder_ro")
    volume = worker.call("create_volume", size_gib=1)
    name = volume["name"]
    data = payload(2 * MiB, f"stock-cinder-{caps}")
    side.write("volumes", name, data)
    made = chain(store, f"volumes/{name}")
    image = made.glance_id
    names = (name, image)
    assert side.clone_format_of("images", image) == fmt
    never_flattened(side, image, f"volumes/{name}")
    snapshot = f"rbd_tracked-{image}"
    chain_image = snaps("images", image, "snap")
    link = f"journal chain/images/{image}"

    since = len(worker.log())
    if fmt == 1 and caps == "images-read-only":
        with pytest.raises(Failed) as failed:
            worker.call("delete_volume", volume_id=volume["id"])
        assert failed.value.kind == "PermissionError"
        assert f"error opening image b'{image}'" in failed.value.message
    else:
        worker.call("delete_volume", volume_id=volume["id"])
    said = log_tail(worker, since)
    if fmt == 2:
        assert said == []
        never_flattened(side, image, f"volumes/{name}")
        assert residue(side, store, ceph_conf, *names) == sorted([
            *chain_image, f"volumes trash/{name} (USER_PARENT)",
            f"volumes trash/{name}@{snapshot} (trash namespace)", link])
    elif caps == "images-writable":
        assert said[0] == f"INFO cinder.volume.drivers.rbd: Image " \
            f"images/{image} is dependent on the image {name}."
        assert parent_spec(side, "images", image) is None  # flattened
        assert own_bytes(side, "images", image) == len(data)
        assert residue(side, store, ceph_conf, *names) == sorted([
            *chain_image, f"volumes trash/{name} (USER)",
            f"volumes trash/{name}@{snapshot}", link])
    else:
        never_flattened(side, image, f"volumes/{name}")
        assert residue(side, store, ceph_conf, *names) == sorted([
            *chain_image, *snaps("volumes", name, snapshot), link])

    delete_chain(tracked, made.location)
    if fmt == 2:
        assert residue(side, store, ceph_conf, *names) == []
    elif caps == "images-writable":
        # flattened, the chain image no longer clones the volume's
        # snapshot; its link still names it: released with the image
        assert residue(side, store, ceph_conf, *names) == []
    else:  # the chain's snapshot went with it: Cinder may delete now
        assert residue(side, store, ceph_conf, *names) == [f"volumes/{name}"]
        worker.call("delete_volume", volume_id=volume["id"])
    rows = cleanup(*names)
    assert residue(side, store, ceph_conf, *names) == []
    assert rows == []


def test_doctor_names_the_clone_format(fmt):
    """doctor: on format 1 the one thing to fix is the clone format, and
    it says what stock Nova and Cinder then leave behind."""
    rc, findings = cli("doctor")
    assert rc == (1 if any(f["status"] == "fix" for f in findings) else 0)
    # the chain policy and the services' views of it are the tests' own
    # (some override it on purpose): reported apart
    to_fix = [(f["check"], f["subject"]) for f in findings
              if f["status"] == "fix" and f["check"] not in POLICY_CHECKS]
    if fmt == 2:
        assert to_fix == []
        return
    assert to_fix == [("clone format", "cluster")]
    (finding,) = [f for f in findings if f["check"] == "clone format"]
    assert "stock Nova and Cinder leave such disks and volumes until they " \
        "are retired" in finding["detail"]


@pytest.mark.parametrize("fmt", [2], ids=["clone-v2"], indirect=True)
def test_format_2_without_the_pool_option(
        nova, cinder, glance, side, store, ceph_conf, fmt, tracked):
    """Clone format 2 on pools without rbd_move_parent_to_trash_on_remove:
    stock Nova cannot remove the disk (ImageHasSnapshots, though it has no
    user snapshot) and leaves it, unmarked, after its chain image is gone;
    stock Cinder flattens the chain image, and then removes the volume
    (the trash-namespace snapshot went with its last clone): nothing in
    the trash."""
    key = "rbd_move_parent_to_trash_on_remove"
    for pool in ("vms", "volumes"):
        subprocess.run(["rbd", "-c", ceph_conf, "config", "pool", "rm", pool,
                        key], check=True, timeout=60)
    try:
        base = upload(glance, payload(MiB, "stock-no-option"))
        instance = new_id()
        pool, disk = nova.call("boot", instance=instance,
                               image_id=base["id"]).split("/")
        on_disk = chain(store, f"{pool}/{disk}")
        volume = cinder.call("create_volume", size_gib=1)
        name = volume["name"]
        data = payload(2 * MiB, "stock-no-option")
        side.write("volumes", name, data)
        on_volume = chain(store, f"volumes/{name}")
        names = (base["id"], instance, on_disk.glance_id, name,
                 on_volume.glance_id)

        nova.call("destroy", instance=instance)
        cinder.call("delete_volume", volume_id=volume["id"])
        never_flattened(side, on_disk.glance_id, f"{pool}/{disk}")
        assert side.snapshots(pool, disk) == []
        assert parent_spec(side, "images", on_volume.glance_id) is None
        assert own_bytes(side, "images", on_volume.glance_id) == len(data)
        assert residue(side, store, ceph_conf, *names) == sorted([
            *snaps("images", base["id"], "snap"),
            *snaps("images", on_disk.glance_id, "snap"),
            *snaps("images", on_volume.glance_id, "snap"),
            f"{pool}/{disk}",
            f"{pool}/{disk}@rbd_tracked-{on_disk.glance_id} (trash namespace)",
            f"journal chain/images/{on_disk.glance_id}",
            f"journal chain/images/{on_volume.glance_id}"])

        delete_chain(tracked, on_disk.location)
        delete_chain(tracked, on_volume.location)
        assert delete(glance, base["id"]) == 204
        rows = cleanup(*names)
        assert residue(side, store, ceph_conf, *names) == sorted([
            *snaps("images", f"{base['id']}_to_be_deleted", "snap"),
            f"{pool}/{disk}"])
        assert "rbd_tracked.retired" not in side.metadata(pool, disk)
        # (the flattened chain image's link went with it)
        assert rows == [("retired", f"images/{base['id']}_to_be_deleted",
                         "keep", "-")]
        rc, _ = cli("retire", f"{pool}/{disk}", "--execute")
        assert rc == 0
        assert residue(side, store, ceph_conf, *names) == []
    finally:
        for pool in ("vms", "volumes"):
            subprocess.run(["rbd", "-c", ceph_conf, "config", "pool", "set",
                            pool, key, "true"], check=True, timeout=60)
