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
