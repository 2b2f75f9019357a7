import pytest

from glance_rbd_tracked import errors
from glance_rbd_tracked import locations
from glance_rbd_tracked.locations import Location


@pytest.mark.parametrize("url, parsed", [
    ("rbd://f/images/abc/snap", Location("f", "images", "abc", "snap")),
    ("rbd://abc", Location(None, None, "abc", None)),
    # glance_store percent-encodes every part of a location it writes
    ("rbd://f/im%2Fages/%C3%A9t%C3%A9%2Fx/sn%40p",
     Location("f", "im/ages", "été/x", "sn@p")),
])
def test_parse_reads_as_glance_store_does(url, parsed):
    assert locations.parse(url) == parsed


@pytest.mark.parametrize("url", ["rbd://f/images/abc", "rbd://f//abc/snap",
                                 "rbd://", "http://f/images/abc/snap"])
def test_what_glance_store_does_not_take_is_invalid(url):
    with pytest.raises(errors.Invalid, match="is not an rbd:// location"):
        locations.parse(url)


@pytest.mark.parametrize("parts", [
    ("f", "images", "abc", "snap"),
    ("f", "im/ages", "été/x", "sn@p"),
    ("4f1c-99", "images", "3b2c6c62-5a8e-4d0a-9d5c-0d4f0b6f6a11", "snap"),
])
def test_format_writes_what_glance_store_writes_and_parse_reads(parts):
    from glance_store._drivers.rbd import StoreLocation

    fsid, pool, image, snapshot = parts
    url = locations.format(*parts)
    stock = StoreLocation({"fsid": fsid, "pool": pool, "image": image,
                           "snapshot": snapshot}, None)
    assert url == stock.get_uri()
    assert url.startswith(locations.prefix(fsid, pool))
    assert locations.parse(url) == Location(*parts)


def test_format_needs_every_part():
    with pytest.raises(errors.Invalid, match="a location needs"):
        locations.format("f", "images", "abc", "")
