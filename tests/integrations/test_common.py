"""The integrations' shared rules, on plain functions and the in-memory
cluster (no Nova, no Cinder)."""

import inspect

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


def extended(self, volume, pool=None, force=False, *, timeout=None):
    """A later release: more parameters, each with a default."""


def annotated(self, volume: "Volume", pool: "str | None" = None) -> None:  # noqa: F821
    """The same parameters, annotated (or annotated differently)."""


def renamed(self, vol, pool=None):
    """A release that calls a parameter otherwise."""


def keyword_only(self, *, volume, pool=None):
    """A release that takes it by keyword only."""


def demanding(self, volume, pool=None, force=True, *, reason):
    """A release that needs one more argument."""


def undefaulted(self, volume, pool):
    """A release where what had a default has none."""


def shorter(self):
    """A release without it."""


KNOWN = common.Known("product", ("34.",), {"p:remove": "(self, volume, "
                                                      "pool=None)"})


@pytest.mark.parametrize("function, refusal", [
    (stock, None),
    (extended, None),
    (annotated, None),
    (renamed, "its parameter 2 is 'vol', not 'volume'"),
    (keyword_only, "'volume' is keyword-only, not positional or keyword"),
    (demanding, "it requires 'reason' too"),
    (undefaulted, "'pool' has no default"),
    (shorter, "it has no parameter 'volume'"),
])
def test_check_compares_names_and_kinds_not_text(function, refusal):
    found = common.check(KNOWN, {"p:remove": function}.__getitem__)
    if refusal is None:
        assert found is None
    else:
        assert found == f"p:remove is {inspect.signature(function)}: " \
            f"{refusal}"


def test_the_release_number_is_said_not_asked():
    assert KNOWN.tested_on("34.1.2.dev3")
    assert not KNOWN.tested_on("35.0.0")
    assert not KNOWN.tested_on("3.4.0")
    assert KNOWN.tested_text() == "34.x"


def test_parameters_reads_every_kind():
    kind = inspect.Parameter
    assert common.parameters("(a, /, b, c=1, *args, d, e=2, **kw)") == (
        ("a", kind.POSITIONAL_ONLY, False),
        ("b", kind.POSITIONAL_OR_KEYWORD, False),
        ("c", kind.POSITIONAL_OR_KEYWORD, True),
        ("args", kind.VAR_POSITIONAL, False),
        ("d", kind.KEYWORD_ONLY, False),
        ("e", kind.KEYWORD_ONLY, True),
        ("kw", kind.VAR_KEYWORD, False))


def test_check_names_what_is_missing():
    def find(path):
        raise AttributeError("type object 'Rbd' has no attribute 'remove'")

    assert common.check(KNOWN, find) == (
        "p:remove is not there (type object 'Rbd' has no attribute "
        "'remove')")


class Product:
    def remove(self, volume, pool=None, force=False):
        return ("stock", volume, pool, force)


def test_wrap_runs_ours_for_what_it_knows_and_stock_for_the_rest(caplog):
    calls = []

    def ours(stock, self, volume, pool=None):
        calls.append((volume, pool))
        return stock(self, volume, pool=pool)

    wrapped = common.wrap(Product.remove, "(self, volume, pool=None)", ours)
    assert inspect.signature(wrapped) == inspect.signature(Product.remove)
    assert wrapped.__wrapped__ is Product.remove
    product = Product()
    assert wrapped(product, "v") == ("stock", "v", None, False)
    assert wrapped(product, volume="v", pool="p") == ("stock", "v", "p",
                                                      False)
    assert calls == [("v", None), ("v", "p")]
    # a parameter the integration does not know: the product's own code
    with caplog.at_level("INFO", logger=common.__name__):
        assert wrapped(product, "v", force=True) == ("stock", "v", None,
                                                     True)
    assert calls == [("v", None), ("v", "p")]
    assert "Product.remove with force: stock code" in caplog.text
    with pytest.raises(TypeError):
        wrapped(product)  # as the product itself would


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
    lifecycle.delete(fake, "images", made.glance_id, POLICY)
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
