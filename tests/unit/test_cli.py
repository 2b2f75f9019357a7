import pytest

from glance_rbd_tracked import cli
from glance_rbd_tracked import errors
from glance_rbd_tracked.cli.common import parse_target


@pytest.mark.parametrize("target, expected", [
    ("rbd://f/images/abc/snap", ("f", "images", "abc")),
    ("rbd://abc", (None, "images", "abc")),
    ("vms/disk", (None, "vms", "disk")),
    ("abc", (None, "images", "abc")),
])
def test_parse_target(target, expected):
    assert parse_target(target, "images") == expected


@pytest.mark.parametrize("target", ["rbd://a/b", "rbd://", "pool/"])
def test_parse_target_rejects_malformed(target):
    with pytest.raises(errors.TrackedError):
        parse_target(target, "images")


def test_version_and_usage_errors(capsys):
    assert cli.main(["--version"]) == 0
    assert "glance-rbd-tracked" in capsys.readouterr().out
    assert cli.main(["show"]) == 2
    assert cli.main(["frobnicate"]) == 2
