import json

import pytest

from glance_rbd_tracked import cli
from glance_rbd_tracked import errors
from glance_rbd_tracked import schema
from glance_rbd_tracked.cli.common import UsageError
from glance_rbd_tracked.cli.common import parse_target
from tests.fakes import FakeCeph
from tests.fakes import World


@pytest.mark.parametrize("target, expected", [
    ("rbd://f/images/abc/snap", ("f", "images", "abc")),
    ("rbd://abc", (None, "images", "abc")),
    ("vms/disk", (None, "vms", "disk")),
    ("abc", (None, "images", "abc")),
])
def test_parse_target(target, expected):
    assert parse_target(target, "images") == expected


@pytest.mark.parametrize("target", ["rbd://a/b", "rbd://", "pool/",
                                    "rbd://f//abc/snap"])
def test_parse_target_rejects_malformed(target):
    with pytest.raises(UsageError):
        parse_target(target, "images")


def test_parse_target_decodes_what_the_store_publishes():
    # glance_store percent-encodes every part of a location it writes
    assert parse_target("rbd://f/images/%C3%A9t%C3%A9%2Fx/snap",
                        "images") == ("f", "images", "été/x")


def test_malformed_targets_are_usage_errors(capsys):
    assert cli.main(["show", "rbd://a/b"]) == 2
    assert "is not an rbd:// location" in capsys.readouterr().err


def test_version_and_usage_errors(capsys):
    assert cli.main(["--version"]) == 0
    assert "glance-rbd-tracked" in capsys.readouterr().out
    assert cli.main(["show"]) == 2
    assert cli.main(["frobnicate"]) == 2


def test_a_configuration_that_cannot_be_read_exits_2(tmp_path, capsys):
    broken = tmp_path / "glance-api.conf"
    broken.write_text("[glance_store\n")
    for path in (str(tmp_path / "missing.conf"), str(broken)):
        assert cli.main(["--config-file", path, "show", "x"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("glance-rbd-tracked: ") and path in err
        assert "Traceback" not in err


@pytest.mark.parametrize("argv, form", [
    (["snapshot", "vms=abc"], "POOL/DISK=IMAGE_ID"),
    (["snapshot", "vms/disk"], "POOL/DISK=IMAGE_ID"),
    (["snapshot", "--register", "vms=abc"], "POOL/DISK[=IMAGE_ID]"),
])
@pytest.mark.parametrize("execute", [[], ["--execute"]])
def test_a_malformed_pair_is_a_usage_error_planned_or_not(argv, form, execute,
                                                          capsys):
    fake = FakeCeph(World())
    fake.world.create("vms", "disk", b"data")
    assert cli.main([*argv, *execute], ceph=fake) == 2
    assert f"is not {form}" in capsys.readouterr().err
    assert fake.images.state("vms", "disk").snaps == ()


def test_the_plan_checks_every_pair_and_makes_nothing(capsys):
    fake = FakeCeph(World())
    fake.world.create("vms", "disk", b"data")
    assert cli.main(["snapshot", "--format", "json", "--paths", "copy,chain",
                     "vms/disk=new", "vms/gone=other"], ceph=fake) == 1
    rows = json.loads(capsys.readouterr().out)
    assert [(r["source"], r["image_id"], r["paths"], r["result"][:7])
            for r in rows] == [("vms/disk", "new", "copy,chain", "planned"),
                               ("vms/gone", "other", "copy,chain", "refused")]
    assert fake.images.state("vms", "disk").snaps == ()


CORRUPT = ("glance-rbd-tracked: intent/chain/images/x: failed: metadata "
           "'intent/chain/images/x' is not JSON: Expecting property name "
           "enclosed in double quotes: line 1 column 2 (char 1)")


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_cleanup_says_why_on_stderr_one_line_per_failure(fmt, capsys):
    """doc/source/cli.rst: exit 1, and the reason on stderr; the rows stay
    data on stdout."""
    fake = FakeCeph(World())
    fake.journal.update("images", put={"intent/chain/images/x": "{oops"})
    image = fake.world.create("vms", "a_to_be_deleted")
    image.metadata.__setitem__(*schema.dump(schema.RetiredRecord(
        image.id, "a", "2026-01-01T00:00:00Z", "clones")))
    assert cli.main(["cleanup", "--format", fmt], ceph=fake) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [CORRUPT, "(plan only: run with --execute "
                                         "to act)"]
    assert "intent/chain/images/x" in out and "glance-rbd-tracked:" not in out

    fake.world.fail("apply", errors.ClusterError("osd down"))
    assert cli.main(["cleanup", "--execute", "--format", fmt],
                    ceph=fake) == 1
    err = capsys.readouterr().err
    assert [line for line in err.splitlines()
            if line.startswith("glance-rbd-tracked:")] == [
        CORRUPT, "glance-rbd-tracked: vms/a_to_be_deleted: failed: osd down"]


def test_retire_says_why_a_disk_is_refused_on_stderr(capsys):
    fake = FakeCeph(World())
    fake.world.create("images", "x")
    assert cli.main(["retire", "images/x", "--format", "json"],
                    ceph=fake) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)[0]["outcome"] == "refuse"
    assert err.splitlines()[0] == (
        "glance-rbd-tracked: images/x: refused: pool 'images' is not one "
        "the store retires disks in (vms, volumes)")
