import json

from glance_rbd_tracked import core
from glance_rbd_tracked import lineage
from tests.fakes import FakeCeph

POLICY = core.Policy(pool="images")
BASE = "5c1f0b6e-3a52-4c41-9d1e-0b7f64c0a1d2"


def family():
    """base image -> disk -> chain image -> a second disk."""
    fake = FakeCeph()
    fake.world.upload(BASE)
    fake.world.clone(f"images/{BASE}@snap", "vms", "disk")
    fake.world.snapshot("vms", "disk", "rbd_tracked-c")
    fake.world.clone("vms/disk@rbd_tracked-c", "images", "c")
    fake.world.snapshot("images", "c", "snap")
    fake.world.clone("images/c@snap", "vms", "disk2")
    return fake


def test_climb_and_depth_follow_the_parents():
    fake = family()
    assert list(lineage.climb(fake.images.parent("images", "c"),
                              fake.images.parent)) == [
        ("vms", "disk", "rbd_tracked-c"), ("images", BASE, "snap")]
    assert [lineage.depth(fake.images, p, n) for p, n in (
        ("images", BASE), ("vms", "disk"), ("images", "c"),
        ("vms", "disk2"))] == [0, 1, 2, 3]


def test_climb_stops_at_the_limit():
    fake = family()
    assert len(list(lineage.climb(fake.images.parent("vms", "disk2"),
                                  fake.images.parent, limit=2))) == 2


def test_walk_renders_as_text_dot_and_json():
    tree = lineage.walk(family().images, "vms", "disk", POLICY)
    assert [n.spec for n in tree] == [f"images/{BASE}", "vms/disk"]
    text = lineage.to_text(tree)
    assert f"images/{BASE} (glance image) [owned by the store]" in text
    assert "vms/disk (image) [inherited records ignored]   <==" in text
    assert "@rbd_tracked-c" in text and "images/c (image)" in text
    dot = lineage.to_dot(tree)
    assert f'"images/{BASE}" -> "vms/disk" [label="@snap"];' in dot
    assert '"vms/disk" -> "images/c" [label="@rbd_tracked-c"];' in dot
    assert '"images/c" -> "vms/disk2" [label="@snap"];' in dot
    view = json.loads(lineage.to_json(tree))
    assert view["ancestors"][0]["spec"] == f"images/{BASE}"
    (snap,) = view["image"]["snapshots"]
    assert snap["clones"][0]["spec"] == "images/c"
