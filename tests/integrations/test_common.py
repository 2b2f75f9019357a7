"""The integrations' shared rules, on plain functions and the in-memory
cluster (no Nova, no Cinder)."""

import pytest

from glance_rbd_tracked import chains
from glance_rbd_tracked import core
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import policy
from glance_rbd_tracked.integrations import common
from tests.fakes import FakeCeph
from tests.fakes import World


def stock(self, volume, pool=None):
    """What the product has."""


def changed(self, volume, pool=None, force=False):
    """What another release of it has."""


KNOWN = common.Known("product", "34.", {"p:remove": "(self, volume, pool=None)"})


@pytest.mark.parametrize("version, function, refusal", [
    ("34.0.0", stock, None),
    ("34.1.2.dev3", stock, None),
    ("35.0.0", stock, "product 35.0.0 is not a release it knows (34.x)"),
    ("3.4.0", stock, "product 3.4.0 is not a release it knows (34.x)"),
    ("34.0.0", changed, "p:remove is (self, volume, pool=None, force=False), "
                        "not the (self, volume, pool=None) it was written "
                        "against"),
])
def test_check(version, function, refusal):
    assert common.check(KNOWN, version, {"p:remove": function}.__getitem__) \
        == refusal


def test_check_names_what_is_missing():
    def find(path):
        raise AttributeError("type object 'Rbd' has no attribute 'remove'")

    assert common.check(KNOWN, "34.0.0", find) == (
        "p:remove is not there (type object 'Rbd' has no attribute "
        "'remove')")


def test_resolve_finds_methods_of_classes():
    assert common.resolve("glance_rbd_tracked.core:Policy.__init__") is \
        core.Policy.__init__
    with pytest.raises(AttributeError):
        common.resolve("glance_rbd_tracked.core:Policy.nothing")


@pytest.fixture
def fake():
    return FakeCeph(World())


POLICY = core.Policy(pool="images")


def test_a_disk_is_the_stores_once_a_chain_is_made_of_it(fake):
    fake.world.create("vms", "a_disk", b"disk")
    fake.world.create("vms", "b_disk", b"disk", snaps=["nova-resize"])
    assert not common.has_chains(fake.images.state("vms", "a_disk"))
    assert not common.has_chains(fake.images.state("vms", "b_disk"))
    assert common.glance_pool(fake.images.state("vms", "a_disk")) is None

    (made,) = chains.snapshot(fake, [chains.Request("vms/a_disk", "img")],
                              POLICY)
    state = fake.images.state("vms", "a_disk")
    assert common.has_chains(state)
    assert common.glance_pool(state) == "images"

    lifecycle.retire(fake, "vms", "a_disk", POLICY)
    retired = fake.images.state("vms", "a_disk_to_be_deleted")
    assert common.has_chains(retired)
    # the chain image goes: the retired disk goes with it
    lifecycle.delete(fake, "images", made.image_id, POLICY)
    assert not fake.world.exists("vms", "a_disk_to_be_deleted")



def test_nova_and_cinder_follow_the_cluster_policy_unless_they_override_it():
    fake = FakeCeph(World())
    kept = core.Policy(pool="images", chain_pools=frozenset({"vms"}))
    fake.setup.set_pool_metadata("images", policy.POLICY_KEY, policy.dump(
        policy.to_record(kept, "t", "h")))
    follows = common.policies("cinder-volume", "rbd_tracked_policy_override",
                              False, None)
    assert follows.local == policy.Local()
    assert follows.get(fake, "images") == kept
    # chain_pools alone is ignored (and a warning says so)
    assert common.policies("cinder-volume", "o", False, ["volumes"]).get(
        fake, "images") == kept
    overriding = common.policies("cinder-volume", "o", True, ["volumes"])
    assert overriding.get(fake, "images") == core.Policy(
        pool="images", chain_pools=frozenset({"volumes"}))
    (view,) = fake.setup.pool_metadata_with(
        "images", policy.VIEW_KEY_PREFIX).values()
    assert '"service":"cinder-volume"' in view
    assert '"source":"override"' in view  # the last to change it
