"""glance-rbd-tracked show, against the real cluster."""

import json
import subprocess
import sys
import uuid

from glance_rbd_tracked import cli
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
    other = uri.replace(store.cluster.fsid(), str(uuid.uuid4()))
    assert run("--ceph-conf", ceph_conf, "show", other).returncode == 1
