"""snapshot --register without Glance: its plan and its usage errors, on
the in-memory cluster."""

import json

from glance_rbd_tracked import cli
from tests.fakes import FakeCeph
from tests.fakes import World


def run(fake, *argv):
    return cli.main(["snapshot", "--register", "--format", "json", *argv],
                    ceph=fake)


def test_the_plan_creates_nothing(capsys):
    fake = FakeCeph(World())
    fake.world.create("vms", "disk", b"data")
    fake.world.create("images", "taken", b"data")
    assert run(fake, "vms/disk", "vms/disk=taken", "images/x") == 1
    rows = json.loads(capsys.readouterr().out)
    assert [(r["image_id"], r["result"].split(":")[0]) for r in rows] == [
        ("(new)", "planned"), ("taken", "refused"), ("(new)", "refused")]
    assert "exists already" in rows[1]["result"]
    assert sorted(fake.world.names("images")) == ["taken"]
    assert fake.images.state("vms", "disk").snaps == ()


def test_usage_errors_exit_2():
    fake = FakeCeph(World())
    assert run(fake, "disk-without-pool") == 2
    assert run(fake, "vms/disk", "--paths", "teleport") == 2
    # without --register the image id stays required
    assert cli.main(["snapshot", "vms/disk"], ceph=fake) == 2
