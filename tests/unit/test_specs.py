import pytest

from glance_rbd_tracked import errors
from glance_rbd_tracked import specs
from glance_rbd_tracked.specs import ImageSpec
from glance_rbd_tracked.specs import SnapSpec


@pytest.mark.parametrize("text, parsed, pool_spec", [
    ("images/abc", ImageSpec("images", "abc"), "images"),
    ("vms/ns/disk", ImageSpec("vms", "disk", "ns"), "vms/ns"),
    # what follows the last "/" is the image, as the old parsers took it
    ("vms/a/b/disk", ImageSpec("vms", "disk", "a/b"), "vms/a/b"),
    # an image name may hold what is not "/" (an "@" without a snapshot)
    ("vms/a@b", ImageSpec("vms", "a@b"), "vms"),
    ("vms/d_disk_to_be_deleted", ImageSpec("vms", "d_disk_to_be_deleted"),
     "vms"),
])
def test_image_specs_round_trip(text, parsed, pool_spec):
    spec = ImageSpec.parse(text)
    assert spec == parsed
    assert str(spec) == text
    assert spec.pool_spec == pool_spec
    assert spec.parts == (pool_spec, parsed.name)
    assert ImageSpec.parse(str(spec)) == spec
    assert ImageSpec.in_pool(pool_spec, parsed.name) == spec


@pytest.mark.parametrize("text", ["", "abc", "/abc", "images/", "images//abc",
                                  "/", "//", "vms/ns/", "vms//ns/disk"])
def test_what_is_not_an_image_spec_is_invalid(text):
    with pytest.raises(errors.Invalid, match="is not of the form pool/image"):
        ImageSpec.parse(text)


@pytest.mark.parametrize("pool, name, namespace", [
    ("", "x", ""), ("p", "", ""), ("p/q", "x", ""), ("p", "a/b", ""),
    ("p", "x", "/ns"), ("p", "x", "ns/")])
def test_an_image_spec_is_never_built_wrong(pool, name, namespace):
    with pytest.raises(errors.Invalid):
        ImageSpec(pool, name, namespace)


def test_a_default_pool_takes_a_bare_image_name():
    assert ImageSpec.parse("abc", "images") == ImageSpec("images", "abc")
    assert ImageSpec.parse("vms/abc", "images") == ImageSpec("vms", "abc")
    with pytest.raises(errors.Invalid):
        ImageSpec.parse("", "images")


@pytest.mark.parametrize("text, parsed", [
    ("vms/disk@rbd_tracked-abc",
     SnapSpec(ImageSpec("vms", "disk"), "rbd_tracked-abc")),
    ("images/abc@snap", SnapSpec(ImageSpec("images", "abc"), "snap")),
    ("vms/ns/disk@s", SnapSpec(ImageSpec("vms", "disk", "ns"), "s")),
    # the snapshot is what follows the last "@"
    ("vms/a@b@c", SnapSpec(ImageSpec("vms", "a@b"), "c")),
    # no snapshot: the image itself (where a release goes on to an image
    # whose snapshot it does not know)
    ("images/abc_to_be_deleted@",
     SnapSpec(ImageSpec("images", "abc_to_be_deleted"), "")),
])
def test_snapshot_specs_round_trip(text, parsed):
    spec = SnapSpec.parse(text)
    assert spec == parsed
    assert str(spec) == text
    assert spec.parts == (parsed.image.pool_spec, parsed.image.name,
                          parsed.snapshot)
    assert parsed.image.at(parsed.snapshot) == spec


@pytest.mark.parametrize("text", ["", "vms/disk", "disk@snap", "@snap",
                                  "vms/@snap", "/disk@snap", "vms//d@s",
                                  "fsid:vms@s"])
def test_what_is_not_a_snapshot_spec_is_invalid(text):
    with pytest.raises(errors.Invalid,
                       match="is not of the form pool/image@snapshot"):
        SnapSpec.parse(text)


def test_a_renamed_image_stays_in_its_pool():
    spec = ImageSpec("vms", "disk", "ns")
    assert str(spec.renamed("disk_to_be_deleted")) == \
        "vms/ns/disk_to_be_deleted"


@pytest.mark.parametrize("text, parsed", [
    ("vms/disk", (None, "vms/disk")),
    ("f00d:vms/disk", ("f00d", "vms/disk")),
])
def test_a_source_in_another_cluster_carries_its_fsid(text, parsed):
    assert specs.cluster_of(text) == parsed
    fsid, spec = parsed
    if fsid is not None:
        assert specs.in_cluster(fsid, ImageSpec.parse(spec)) == text


def test_specs_are_frozen_values():
    spec = ImageSpec("vms", "disk")
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]
    assert {spec, ImageSpec.parse("vms/disk")} == {spec}
