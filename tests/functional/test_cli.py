"""glance-rbd-tracked show, against the real cluster."""

import json
import subprocess
import sys
import uuid

from glance_rbd_tracked import cli
from glance_rbd_tracked import lineage
from tests.functional.conftest import upload


def run(*args):
    return subprocess.run([sys.executable, "-m", "glance_rbd_tracked.cli",
                           *args], capture_output=True, text=True)


def test_show_a_retired_image_and_why_it_is_kept(store, nova, image_id,
                                                 ceph_conf):
    uri, *_ = upload(store, image_id, b"a" * 4096)
    disk = f"{uuid.uuid4()}_disk"
    nova.clone("images", image_id, "snap", "vms", disk)
    from tests.functional.conftest import location_of
    store.delete(location_of(store, uri))

    result = run("--ceph-conf", ceph_conf, "show", "--format", "json",
                 f"images/{image_id}_to_be_deleted")
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert view["owned"] is True
    assert view["retired"]["original_name"] == image_id
    assert view["snapshots"][0]["children"] == [f"vms/{disk}"]
    assert view["blocked_by"]

    table = run("--ceph-conf", ceph_conf, "show",
                f"images/{image_id}_to_be_deleted")
    assert f"vms/{disk}" in table.stdout and "retired" in table.stdout
    nova.remove("vms", disk)


def test_show_by_location_and_errors(store, image_id, ceph_conf, capsys):
    uri, *_ = upload(store, image_id, b"b" * 4096)
    assert cli.main(["--ceph-conf", ceph_conf, "show", uri]) == 0
    assert image_id in capsys.readouterr().out
    missing = run("--ceph-conf", ceph_conf, "show", f"images/{uuid.uuid4()}")
    assert missing.returncode == 1
    assert "no such image" in missing.stderr
    assert "Traceback" not in missing.stderr
    other = uri.replace(store.ceph.fsid(), str(uuid.uuid4()))
    assert run("--ceph-conf", ceph_conf, "show", other).returncode == 1


def test_snapshot_retire_cleanup_through_the_cli(store, nova, ceph_conf):
    base = str(uuid.uuid4())
    upload(store, base, b"c" * 8192)
    disk = f"{uuid.uuid4()}_disk"
    nova.clone("images", base, "snap", "vms", disk)
    image_id = str(uuid.uuid4())
    made = run("--ceph-conf", ceph_conf, "snapshot", "--execute",
               "--format", "json", f"vms/{disk}={image_id}")
    assert made.returncode == 0, made.stderr
    (row,) = json.loads(made.stdout)
    assert row["path"] == "chain"
    assert row["location"].endswith(f"/images/{image_id}/snap")

    shown = run("--ceph-conf", ceph_conf, "show", "--format", "dot",
                f"vms/{disk}")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("digraph lineage {")
    assert f'"images/{base}" -> "vms/{disk}"' in shown.stdout
    assert f'"vms/{disk}" -> "images/{image_id}"' in shown.stdout
    text = run("--ceph-conf", ceph_conf, "show", f"vms/{disk}")
    assert "lineage:" in text.stdout and "chain clone" in text.stdout

    retired = run("--ceph-conf", ceph_conf, "retire", "--execute",
                  "--format", "json", f"vms/{disk}")
    assert json.loads(retired.stdout)[0]["outcome"] == "retired"

    from glance_rbd_tracked import lifecycle
    # Glance deletes the snapshot image: the disk goes with it
    lifecycle.delete(store.ceph, "images", image_id, store.settings.policy)
    assert not nova.exists("vms", disk + "_to_be_deleted")
    plan = run("--ceph-conf", ceph_conf, "cleanup", "--format", "json")
    assert plan.returncode == 0
    assert not [r for r in json.loads(plan.stdout) if disk in r["target"]]


def test_cli_usage_errors_exit_2(ceph_conf):
    assert run("--ceph-conf", ceph_conf, "snapshot", "vms/x").returncode == 2
    assert run("--ceph-conf", ceph_conf, "snapshot", "--paths", "teleport",
               "vms/x=y").returncode == 2
    assert run("--ceph-conf", ceph_conf, "cleanup", "--grace").returncode == 2


def test_cli_bad_input_exits_1_and_removes_nothing(store, nova, ceph_conf):
    out = run("--ceph-conf", ceph_conf, "snapshot", "--execute",
              "images/whatever=abc")
    assert out.returncode == 1 and "not one the store makes" in out.stderr
    base = str(uuid.uuid4())
    upload(store, base, b"d" * 4096)
    out = run("--ceph-conf", ceph_conf, "retire", "--execute",
              f"images/{base}")
    assert out.returncode == 1
    assert nova.exists("images", base)


def test_retire_trims_a_volume_in_the_rbd_trash(store, nova, operator,
                                                ceph_conf):
    """A volume its owner moved to the RBD trash (kept there for an hour),
    whose chain image went behind the store's back: retire names it, finds
    it in the trash and trims the store's idle snapshot (or its record),
    and says so."""
    import datetime

    import rbd

    from glance_rbd_tracked import chains
    from glance_rbd_tracked import cleanup

    volume = f"volume-{uuid.uuid4()}"
    nova.create("volumes", volume)
    (made,) = chains.snapshot(store.ceph, [chains.Request(
        f"volumes/{volume}", str(uuid.uuid4()))], store.settings.policy)
    with operator.ioctx("images") as ioctx:
        with rbd.Image(ioctx, made.glance_id) as image:
            image.unprotect_snap("snap")
            image.remove_snap("snap")
        rbd.RBD().remove(ioctx, made.glance_id)
    with nova.ioctx("volumes") as ioctx:
        rbd.RBD().trash_move(ioctx, volume, 3600)
    # the chain snapshot stays (format 1), or librbd took it from the trash
    # namespace with its clone (format 2): its record stays in either case
    before = store.ceph.images.state("volumes", volume)
    assert [r.snapshot for r in before.records.snaps] == [
        f"rbd_tracked-{made.glance_id}"]

    plan = run("--ceph-conf", ceph_conf, "retire", "--format", "json",
               f"volumes/{volume}")
    assert plan.returncode == 0, plan.stderr
    assert [r["outcome"] for r in json.loads(plan.stdout)] == ["trim"]
    assert store.ceph.images.state("volumes", volume) == before  # plan only

    done = run("--ceph-conf", ceph_conf, "retire", "--execute", "--format",
               "json", f"volumes/{volume}")
    assert done.returncode == 0, done.stderr
    assert [r["outcome"] for r in json.loads(done.stdout)] == ["trimmed"]
    state = store.ceph.images.state("volumes", volume)
    assert state.snaps == () and state.records.snaps == ()
    assert state.trash is not None  # still its owner's

    with nova.ioctx("volumes") as ioctx:
        rbd.RBD().trash_remove(ioctx, state.image_id, force=True)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=2)
    items = [i for i in cleanup.plan(store.ceph, store.settings.policy, later,
                                     datetime.timedelta(0))
             if volume in i.target]
    assert cleanup.execute(store.ceph, items, store.settings.policy) == []


def glance_api_conf(path, ceph_conf, **options):
    """A multi-store glance-api.conf whose rbd_tracked backend is ``fast``."""
    lines = ["[DEFAULT]", "enabled_backends = cheap:file, fast:rbd_tracked",
             "[glance_store]", "default_backend = cheap",
             "[fast]", "rbd_store_pool = images",
             f"rbd_store_ceph_conf = {ceph_conf}"]
    lines += [f"{key} = {value}" for key, value in options.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_flatten_detaches_chains_deeper_than_the_limit(store, nova,
                                                        ceph_conf, tmp_path):
    base = str(uuid.uuid4())
    upload(store, base, b"f" * 8192)
    disk = f"{uuid.uuid4()}_disk"
    nova.clone("images", base, "snap", "vms", disk)
    image_id = str(uuid.uuid4())
    conf = glance_api_conf(tmp_path / "glance-api.conf", ceph_conf,
                           rbd_tracked_max_clone_depth=1)
    made = run("--config-file", conf, "--backend", "fast",
               "snapshot", "--execute", "--format", "json",
               f"vms/{disk}={image_id}")
    (row,) = json.loads(made.stdout)
    assert row["depth"] == 2 and row["needs_flatten"] is True

    plan = run("--config-file", conf, "--backend", "fast",
               "flatten", "--format", "json")
    assert {"image": f"images/{image_id}", "depth": 2,
            "result": "planned"} in json.loads(plan.stdout)
    assert lineage.depth(store.ceph.images, "images", image_id) == 2  # plan

    done = run("--config-file", conf, "--backend", "fast",
               "flatten", "--execute", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert {"image": f"images/{image_id}", "depth": 2,
            "result": "flattened"} in json.loads(done.stdout)
    assert "[" in done.stderr  # progress on stderr
    assert lineage.depth(store.ceph.images, "images", image_id) == 0
    # the disk's chain snapshot is no longer needed and was released
    assert store.ceph.images.state("vms", disk).snaps == ()
    from tests.functional.conftest import read_all
    assert read_all(store, row["location"]) == b"f" * 8192
