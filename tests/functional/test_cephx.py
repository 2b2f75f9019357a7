"""The cephx users of doc/source/cephx.rst, on the real cluster.

``tools/run-tests`` starts the test cluster with cephx, and
``tools/ceph-dev-cluster`` creates client.glance, client.nova, client.cinder
and client.operator with the caps the docs give (the first test checks
that they still match).  Each documented set does what the docs say it
does; each narrower set the docs warn about fails with a clear error and
leaves nothing that ``cleanup --execute`` with the glance key does not
finish.  The narrower users are made here and removed afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import re
import subprocess
import sys
import uuid

from glance_store import exceptions
import pytest
import rados
import rbd

from glance_rbd_tracked import ceph as ceph_mod
from glance_rbd_tracked import chains
from glance_rbd_tracked import cleanup
from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import schema
from glance_rbd_tracked import specs
from tests.functional import crash_worker
from tests.functional.conftest import location_of
from tests.functional.conftest import make_store
from tests.functional.conftest import read_all
from tests.functional.conftest import upload

DOC = pathlib.Path(__file__).parents[2] / "doc" / "source" / "cephx.rst"
POLICY = core.Policy(pool="images")
#: what the driver raises for a failure that is not NotFound, Duplicate, ...
GLANCE_ERRORS = (exceptions.BackendException, exceptions.GlanceStoreException)
DENIED = re.compile(r"permission|not permitted|denied", re.IGNORECASE)
#: a pool none of the users may read, as every real cluster has one
#: (.mgr, device_health_metrics, another tenant's)
FOREIGN_POOL = "grt-cephx-foreign"

# The narrower sets the docs warn about (and Ceph's guide's stock keys).
OLD_OPERATOR = ("allow r", "profile rbd-read-only pool=images, "
                "profile rbd-read-only pool=vms, "
                "profile rbd-read-only pool=volumes")
NOVA_WITHOUT_VOLUMES = ("profile rbd",
                        "profile rbd pool=vms, profile rbd pool=images")
NOVA_READ_ONLY_VOLUMES = ("profile rbd", "profile rbd pool=vms, "
                          "profile rbd pool=images, "
                          "profile rbd-read-only pool=volumes")
GLANCE_READ_ONLY_VMS = ("profile rbd", "profile rbd pool=images, "
                        "profile rbd-read-only pool=vms, "
                        "profile rbd pool=volumes")
GLANCE_READ_ONLY_IMAGES = ("profile rbd", "profile rbd-read-only pool=images, "
                           "profile rbd pool=vms, profile rbd pool=volumes")
STOCK_CINDER = ("profile rbd", "profile rbd pool=volumes, profile rbd pool=vms, "
                "profile rbd-read-only pool=images")
STOCK_NOVA_OWN_KEY = ("profile rbd",
                      "profile rbd pool=vms, profile rbd-read-only pool=images")


@dataclasses.dataclass(frozen=True)
class User:
    """A cephx user and the ceph.conf whose keyring holds its key."""

    name: str  # the id, without "client."
    conf: str


def documented_caps() -> dict[str, dict[str, str]]:
    """``{user: {"mon": caps, "osd": caps}}`` from the docs' commands."""
    text = DOC.read_text().replace("\\\n", " ")
    found = {}
    for user, caps in re.findall(
            r"ceph auth get-or-create client\.(\w+)((?:\s+\w+ '[^']*')+)",
            text):
        found[user] = dict(re.findall(r"(\w+) '([^']*)'", caps))
    return found


def mon(client, **command):
    ret, out, err = client.mon_command(json.dumps(command), b"")
    assert ret == 0, err
    return out


@pytest.fixture(scope="module")
def documented(rados_client, ceph_conf):
    """The documented users, as tools/ceph-dev-cluster made them."""
    users = {}
    for name in documented_caps():
        ret, _, _ = rados_client.mon_command(json.dumps(
            {"prefix": "auth get", "entity": f"client.{name}"}), b"")
        if ret != 0:
            pytest.fail(f"the test cluster has no client.{name}: it must "
                        "run with cephx (tools/run-tests starts it with "
                        "CEPH_DEV_AUTH=cephx)")
        users[name] = User(name, ceph_conf)
    return users


@pytest.fixture
def make_user(rados_client, ceph_conf, tmp_path):
    """Create a user with ``(mon caps, osd caps)``; removed afterwards."""
    made = []

    def make(label, caps):
        name = f"grt-{label}-{uuid.uuid4().hex[:6]}"
        out = mon(rados_client, prefix="auth get-or-create",
                  entity=f"client.{name}", caps=["mon", caps[0], "osd", caps[1]],
                  format="json")
        made.append(name)
        keyring = tmp_path / f"{name}.keyring"
        keyring.write_text(f"[client.{name}]\n\tkey = "
                           f"{json.loads(out)[0]['key']}\n")
        conf = tmp_path / f"{name}.conf"
        conf.write_text(pathlib.Path(ceph_conf).read_text()
                        + f"\n[client.{name}]\n\tkeyring = {keyring}\n")
        return User(name, str(conf))
    yield make
    for name in made:
        mon(rados_client, prefix="auth rm", entity=f"client.{name}")


@pytest.fixture(scope="module")
def foreign_pool(rados_client):
    mon(rados_client, prefix="osd pool create", pool=FOREIGN_POOL, pg_num=1,
        pgp_num=1)
    yield FOREIGN_POOL
    mon(rados_client, prefix="osd pool rm", pool=FOREIGN_POOL,
        pool2=FOREIGN_POOL, yes_i_really_really_mean_it=True)


@pytest.fixture
def engines():
    """``engine(user)``: the chain engine's connection as that user."""
    opened = []

    def engine(user):
        opened.append(ceph_mod.connect(user.conf, user.name, timeout=30))
        return opened[-1]
    yield engine
    for ceph in opened:
        ceph.close()


def store_as(user):
    return make_store(user.conf, rbd_store_user=user.name)


def cli(user, *args):
    return subprocess.run([sys.executable, "-m", "glance_rbd_tracked.cli",
                           "--ceph-conf", user.conf, "--user", user.name,
                           *args], capture_output=True, text=True, timeout=180)


def rows(result):
    """The JSON rows of a CLI run, by target (cleanup) or subject."""
    return json.loads(result.stdout)


def assert_denied(result):
    """Exit 1 with one sentence saying permission was denied."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert DENIED.search(result.stdout + result.stderr), result
    assert "Traceback" not in result.stderr


@contextlib.contextmanager
def rados_as(user):
    client = rados.Rados(conffile=user.conf, rados_id=user.name,
                         conf={"client_mount_timeout": "15",
                               "rados_osd_op_timeout": "30",
                               "rados_mon_op_timeout": "30"})
    client.connect()
    try:
        yield client
    finally:
        client.shutdown()


def clone_as(user, parent, child):
    """Boot from ``pool/image@snap`` as ``pool/name``, as Nova or Cinder
    do with that user's key."""
    ppool, pname, psnap = specs.SnapSpec.parse(parent).parts
    pool, _, name = child.partition("/")
    with rados_as(user) as client, client.open_ioctx(ppool) as src, \
            client.open_ioctx(pool) as dst:
        rbd.RBD().clone(src, pname, psnap, dst, name)


def remove_as(user, spec):
    pool, _, name = spec.partition("/")
    with rados_as(user) as client, client.open_ioctx(pool) as ioctx:
        rbd.RBD().remove(ioctx, name)


def names(ceph, pool):
    return set(ceph.images.list_images(pool))


def snapshot_as(ceph, source):
    image_id = str(uuid.uuid4())
    (result,) = chains.snapshot(ceph, [chains.Request(source, image_id)],
                                POLICY)
    return image_id, result


def delete_from_glance(store, image_id):
    store.delete(location_of(
        store, f"rbd://{store.ceph.fsid()}/images/{image_id}/snap"))


def cleanup_rows(user, targets):
    """``cleanup --execute`` as ``user``; the rows about ``targets``."""
    done = cli(user, "cleanup", "--execute", "--grace", "0", "--format",
               "json")
    assert "Traceback" not in done.stderr
    return {r["target"]: r for r in rows(done)
            if any(t in r["target"] for t in targets)}


def release_volume(admin, volume):
    """The chain image made from ``volume`` is gone: the store took its
    snapshot and record off the volume, which stays Cinder's; remove it."""
    state = admin.images.state("volumes", volume)
    assert not state.snaps and not state.records.snaps, state
    lifecycle.retire(admin, "volumes", volume, POLICY)
    assert volume not in names(admin, "volumes")


def chain_from_a_volume(glance_store, cinder, engine):
    """An uploaded image, a volume made from it, and a Glance image made
    from the volume by the chain engine as cinder: (base, volume, image)."""
    base = str(uuid.uuid4())
    upload(glance_store, base, b"base" * 2048)
    volume = f"volume-{uuid.uuid4()}"
    clone_as(cinder, f"images/{base}@snap", f"volumes/{volume}")
    image_id, result = snapshot_as(engine(cinder), f"volumes/{volume}")
    assert result.path == "chain"
    return base, volume, image_id


# -- the documented users ------------------------------------------------------

def test_the_cluster_has_the_users_of_the_docs(rados_client, documented):
    caps = documented_caps()
    assert set(caps) == {"glance", "nova", "cinder", "operator"}
    for name in documented:
        (entry,) = json.loads(mon(rados_client, prefix="auth get",
                                  entity=f"client.{name}", format="json"))
        assert entry["caps"] == caps[name], name


def test_glance_runs_the_store_and_nova_the_chain_engine(documented, engines):
    glance, nova = documented["glance"], documented["nova"]
    store = store_as(glance)
    base = str(uuid.uuid4())
    uri, size, *_ = upload(store, base, b"g" * 65536)
    assert size == 65536 and read_all(store, uri) == b"g" * 65536
    disk = f"vms/{uuid.uuid4()}_disk"
    clone_as(nova, f"images/{base}@snap", disk)

    as_nova = engines(nova)
    image_id, result = snapshot_as(as_nova, disk)
    assert result.path == "chain" and result.depth == 2
    # glance reads a chain image, whose data lies partly in vms and images
    assert read_all(store, result.location) == b"g" * 65536

    delete_from_glance(store, base)  # the disk still needs it: retired
    assert f"{base}_to_be_deleted" in names(as_nova, "images")
    retired = lifecycle.retire(as_nova, "vms", disk.partition("/")[2], POLICY)
    assert isinstance(retired, core.Retire)  # the chain image needs it
    delete_from_glance(store, image_id)  # the chain image and all above
    assert not {image_id, f"{base}_to_be_deleted"} & names(as_nova, "images")
    assert not any(disk.partition("/")[2] in n for n in names(as_nova, "vms"))
    assert not any(k.endswith(image_id)
                   for k in as_nova.journal.entries("images"))


def test_cinder_chains_a_volume_and_nova_releases_across_pools(
        documented, engines):
    glance, nova, cinder = (documented[u] for u in ("glance", "nova",
                                                     "cinder"))
    store = store_as(glance)
    base, volume, image_id = chain_from_a_volume(store, cinder, engines)
    disk = f"{uuid.uuid4()}_disk"
    clone_as(nova, f"images/{image_id}@snap", f"vms/{disk}")

    as_cinder, as_nova = engines(cinder), engines(nova)
    assert isinstance(lifecycle.retire(as_cinder, "volumes", volume, POLICY),
                      core.Retire)
    delete_from_glance(store, image_id)  # retired: the disk boots from it
    # the disk goes; its release climbs to images and then to volumes
    assert isinstance(lifecycle.retire(as_nova, "vms", disk, POLICY),
                      core.Remove)
    assert not any(image_id in n for n in names(as_nova, "images"))
    assert not any(volume in n for n in names(as_nova, "volumes"))
    assert base in names(as_nova, "images")  # Glance still has it
    delete_from_glance(store, base)


def test_the_glance_key_runs_every_command(documented, operator, engines,
                                          no_chain_policy):
    glance = documented["glance"]
    store = store_as(glance)
    base = str(uuid.uuid4())
    upload(store, base, b"c" * 8192)
    disk = f"{uuid.uuid4()}_disk"
    operator.clone("images", base, "snap", "vms", disk)

    shown = cli(glance, "show", "--format", "json", f"images/{base}")
    assert shown.returncode == 0, shown.stderr
    assert rows(shown)["snapshots"][0]["children"] == [f"vms/{disk}"]
    # it sets the chain policy, and finds nothing else to fix
    doctor = cli(glance, "doctor", "--execute", "--format", "json")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    image_id = str(uuid.uuid4())
    made = cli(glance, "snapshot", "--execute", "--format", "json",
               f"vms/{disk}={image_id}")
    assert made.returncode == 0, made.stderr
    retire = cli(glance, "retire", "--execute", "--format", "json",
                 f"vms/{disk}")
    assert retire.returncode == 0, retire.stderr
    assert rows(retire)[0]["outcome"] == "retired"
    flat = cli(glance, "flatten", "--format", "json")
    assert flat.returncode == 0, flat.stderr
    # flatten --execute, for this image only (depth 2: image, disk)
    as_glance, shallow = engines(glance), dataclasses.replace(
        POLICY, max_clone_depth=1)
    (item,) = [i for i in cleanup.plan_flatten(as_glance, shallow)
               if i.target == f"images/{image_id}"]
    cleanup.flatten(as_glance, item, shallow)
    assert as_glance.images.parent("images", image_id) is None
    with rados_as(glance) as client:  # to break a dead writer's lock
        client.blocklist_add("127.0.0.1:0/1", 1)
    with rados_as(documented["operator"]) as client, \
            pytest.raises(rados.PermissionDeniedError):
        client.blocklist_add("127.0.0.1:0/1", 1)
    delete_from_glance(store, image_id)
    delete_from_glance(store, base)
    assert not {image_id, base} & names(engines(glance), "images")


def test_stock_keys_boot_from_chain_images_only_with_read_on_every_pool(
        documented, make_user, engines):
    """Ceph's guide's Cinder key (Nova uses it too) clones chain images and
    removes the clones, which the store then reclaims; a Nova key that
    cannot read volumes cannot boot from an image made from a volume."""
    glance, cinder = documented["glance"], documented["cinder"]
    store = store_as(glance)
    base, volume, image_id = chain_from_a_volume(store, cinder, engines)
    stock = make_user("stock-cinder", STOCK_CINDER)
    children = (f"vms/{uuid.uuid4()}_disk", f"volumes/volume-{uuid.uuid4()}")
    for child in children:
        clone_as(stock, f"images/{image_id}@snap", child)
    own_key = make_user("stock-nova", STOCK_NOVA_OWN_KEY)
    disk = f"vms/{uuid.uuid4()}_disk"
    # the chain image's parent is volumes/<volume>: opened with it
    with pytest.raises(rbd.PermissionError):
        clone_as(own_key, f"images/{image_id}@snap", disk)
    assert disk.partition("/")[2] not in names(store.ceph, "vms")

    delete_from_glance(store, image_id)  # retired: its clones need it
    for child in children:
        remove_as(stock, child)
    # what cleanup --execute does with it (cleanup itself would also list
    # the chain link of the retired image as an orphan: plans.plan_cleanup)
    reclaimed = lifecycle.reclaim(engines(glance), "images",
                                  f"{image_id}_to_be_deleted", POLICY)
    assert isinstance(reclaimed, core.Remove)
    assert not any(image_id in n for n in names(store.ceph, "images"))
    release_volume(store.ceph, volume)
    delete_from_glance(store, base)


# -- narrower nova keys ----------------------------------------------------------

def test_nova_without_volumes_fails_before_changing_anything(
        documented, make_user, engines, operator):
    store = store_as(documented["glance"])
    base, volume, image_id = chain_from_a_volume(store, documented["cinder"],
                                                 engines)
    disk = f"{uuid.uuid4()}_disk"
    operator.clone("images", image_id, "snap", "vms", disk)
    admin = store.ceph
    before = (admin.images.state("vms", disk), admin.journal.entries("images"))

    narrow = make_user("nova-novolumes", NOVA_WITHOUT_VOLUMES)
    as_narrow = engines(narrow)
    with pytest.raises(errors.ClusterError, match=DENIED):
        snapshot_as(as_narrow, f"vms/{disk}")
    with pytest.raises(errors.ClusterError, match=DENIED):
        lifecycle.retire(as_narrow, "vms", disk, POLICY)
    assert_denied(cli(narrow, "snapshot", "--execute",
                      f"vms/{disk}={uuid.uuid4()}"))
    assert_denied(cli(narrow, "retire", "--execute", f"vms/{disk}"))
    assert (admin.images.state("vms", disk),
            admin.journal.entries("images")) == before

    operator.remove("vms", disk)
    delete_from_glance(store, image_id)
    release_volume(admin, volume)
    delete_from_glance(store, base)


def test_nova_read_only_on_volumes_leaves_the_release_to_cleanup(
        documented, make_user, engines, operator):
    glance = documented["glance"]
    store = store_as(glance)
    base, volume, image_id = chain_from_a_volume(store, documented["cinder"],
                                                 engines)
    disk = f"{uuid.uuid4()}_disk"
    operator.clone("images", image_id, "snap", "vms", disk)
    admin = store.ceph
    lifecycle.retire(engines(documented["cinder"]), "volumes", volume, POLICY)
    delete_from_glance(store, image_id)  # retired: the disk boots from it

    narrow = engines(make_user("nova-rovolumes", NOVA_READ_ONLY_VOLUMES))
    with pytest.raises(errors.ClusterError, match=DENIED):
        lifecycle.retire(narrow, "vms", disk, POLICY)
    # the disk and the chain image went; the volume could not
    assert not any(disk in n for n in names(admin, "vms"))
    intents, _ = schema.load_journal(admin.journal.entries("images"))
    assert any(i.target == f"vms/{disk}" for i in intents)

    done = cleanup_rows(glance, (disk, volume, image_id))
    assert done and all(r["result"] == "done" for r in done.values()), done
    assert not any(volume in n for n in names(admin, "volumes"))
    assert not any(image_id in n for n in names(admin, "images"))
    intents, _ = schema.load_journal(admin.journal.entries("images"))
    assert not any(i.target == f"vms/{disk}" for i in intents)
    delete_from_glance(store, base)


# -- narrower glance keys --------------------------------------------------------

def test_glance_read_only_on_vms_cannot_release_a_chain_source(
        documented, make_user, nova):
    glance = documented["glance"]
    store = store_as(glance)
    base = str(uuid.uuid4())
    upload(store, base, b"v" * 8192)
    disk = f"{uuid.uuid4()}_disk"
    nova.clone("images", base, "snap", "vms", disk)
    image_id, _ = snapshot_as(store.ceph, f"vms/{disk}")
    narrow = store_as(make_user("glance-rovms", GLANCE_READ_ONLY_VMS))

    with pytest.raises(GLANCE_ERRORS, match=DENIED):
        delete_from_glance(narrow, image_id)
    admin = store.ceph
    assert image_id not in names(admin, "images")  # the chain image went
    done = cleanup_rows(glance, (disk, image_id))
    assert done and all(r["result"] == "done" for r in done.values()), done
    source = admin.images.state("vms", disk)
    assert not source.snaps and not source.records.snaps
    nova.remove("vms", disk)
    delete_from_glance(store, base)


def test_glance_read_only_on_images_uploads_nothing(documented, make_user):
    narrow = store_as(make_user("glance-roimages", GLANCE_READ_ONLY_IMAGES))
    image_id = str(uuid.uuid4())
    with pytest.raises(GLANCE_ERRORS, match=DENIED):
        upload(narrow, image_id, b"x" * 4096)
    store = store_as(documented["glance"])
    assert not any(image_id in n for n in names(store.ceph, "images"))
    assert not any(image_id in k for k in store.ceph.journal.entries("images"))
    uri, *_ = upload(store, image_id, b"y" * 4096)
    assert read_all(narrow, uri) == b"y" * 4096  # reading is allowed
    delete_from_glance(store, image_id)


def test_the_glance_key_breaks_a_dead_writers_lock(documented, ceph_conf):
    """A writer killed mid-upload leaves a partial image locked; once its
    watch is gone (fenced here with glance's key, as the 30 s
    osd_client_watch_timeout would), cleanup with the glance key breaks the
    lock (blocklisting the dead writer), the operator's key cannot."""
    glance = documented["glance"]
    image_id = str(uuid.uuid4())
    run = crash_worker.run(ceph_conf, "chunk-3", "upload", image_id)
    assert run.returncode == -9, run.stdout + run.stderr
    as_glance = store_as(glance).ceph
    state = as_glance.images.state("images", image_id)
    with rados_as(glance) as client:
        for watcher in rados_watchers(glance, "images",
                                      f"rbd_header.{state.image_id}"):
            client.blocklist_add(watcher, 3600)

    failed = cleanup_rows(documented["operator"], (image_id,))
    assert failed and all(DENIED.search(r["result"])
                          for r in failed.values()), failed
    done = cleanup_rows(glance, (image_id,))
    assert done and all(r["result"] == "done" for r in done.values()), done
    assert image_id not in names(as_glance, "images")


def rados_watchers(user, pool, obj):
    out = subprocess.run(["rados", "-c", user.conf, "--id", user.name, "-p",
                          pool, "listwatchers", obj], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    return [line.split()[0].partition("=")[2] for line in out.splitlines()
            if line.startswith("watcher=")]


def test_a_user_without_a_key_gets_a_clear_error(ceph_conf):
    result = cli(User("nosuchuser", ceph_conf), "show", "images/x")
    assert result.returncode == 1, result
    assert DENIED.search(result.stderr), result.stderr
    assert "Traceback" not in result.stderr


# -- the operator --------------------------------------------------------------

@pytest.fixture
def retired_image(documented, operator):
    """A Glance image deleted while a disk booted from it, then the disk
    removed by stock Nova: a retired image that cleanup reclaims."""
    store = store_as(documented["glance"])
    image_id = str(uuid.uuid4())
    upload(store, image_id, b"r" * 8192)
    disk = f"{uuid.uuid4()}_disk"
    operator.clone("images", image_id, "snap", "vms", disk)
    delete_from_glance(store, image_id)
    operator.remove("vms", disk)
    return f"images/{image_id}_to_be_deleted"


def plan_of(user, *command):
    result = cli(user, *command, "--format", "json")
    assert "Traceback" not in result.stderr
    return result.returncode, sorted(
        (r.get("kind"), r.get("target") or r.get("image"), r.get("action"))
        for r in rows(result))


def test_the_operator_reads_what_glance_reads(documented, foreign_pool,
                                              retired_image):
    glance, op = documented["glance"], documented["operator"]
    shown = cli(op, "show", "--format", "json", retired_image)
    assert shown.returncode == 0, shown.stderr
    assert rows(shown)["retired"] is not None
    assert cli(op, "show", "--format", "dot", retired_image).returncode == 0
    for command in (("cleanup",), ("flatten",)):
        assert plan_of(op, *command) == plan_of(glance, *command), command
    doctor = cli(op, "doctor", "--format", "json")
    assert doctor.returncode == 1, doctor.stderr  # it may not write
    checks = {(r["subject"], r["check"]): r["status"] for r in rows(doctor)}
    for pool in ("images", "vms", "volumes"):
        assert checks[pool, "read"] == "ok"
        assert checks[pool, "list clones"] == "ok"
        assert checks[pool, "write"] == "fix"


def test_the_operator_changes_nothing(documented, operator, retired_image):
    glance, op = documented["glance"], documented["operator"]
    admin = store_as(glance).ceph
    pool, name = retired_image.split("/")
    before = admin.images.state(pool, name)
    journal = admin.journal.entries("images")

    failed = cleanup_rows(op, (retired_image,))
    assert failed[retired_image]["result"].startswith("failed"), failed
    assert DENIED.search(failed[retired_image]["result"])
    disk = f"{uuid.uuid4()}_disk"
    operator.create("vms", disk)
    assert_denied(cli(op, "retire", "--execute", f"vms/{disk}"))
    assert_denied(cli(op, "snapshot", "--execute",
                      f"vms/{disk}={uuid.uuid4()}"))
    assert admin.images.state(pool, name) == before
    assert admin.journal.entries("images") == journal
    assert admin.images.state("vms", disk).snaps == ()

    done = cleanup_rows(glance, (retired_image,))
    assert done[retired_image]["result"] == "done", done
    assert name not in names(admin, pool)
    operator.remove("vms", disk)


def test_without_rbd_children_the_operator_cannot_list_clones(
        make_user, foreign_pool, retired_image):
    old = make_user("operator-old", OLD_OPERATOR)
    assert_denied(cli(old, "show", retired_image))
    assert_denied(cli(old, "cleanup", "--format", "json"))


def test_doctor_tells_a_key_that_cannot_list_clones_everywhere(
        make_user, foreign_pool):
    old = make_user("operator-old", OLD_OPERATOR)
    doctor = cli(old, "doctor", "--format", "json")
    assert any(r["check"] == "list clones" and r["status"] == "fix"
               for r in rows(doctor)), doctor.stdout
