import datetime
import json

import pytest

from glance_rbd_tracked import errors
from glance_rbd_tracked import schema

OWNER = schema.OwnerRecord(image_id="abc", kind="upload", snapshot="snap",
                           created="2026-11-21T10:00:00Z")
RETIRED = schema.RetiredRecord(image_id="abc", original_name="img",
                               since="2026-11-21T10:00:00Z", reason="clones")


@pytest.mark.parametrize("record", [OWNER, RETIRED])
def test_dump_load_round_trip(record):
    key, value = schema.dump(record)
    assert key.startswith(schema.KEY_PREFIX)
    assert not key.startswith("conf_")
    assert json.loads(value)["v"] == schema.SCHEMA_VERSION
    assert schema.load(key, value) == record


@pytest.mark.parametrize("value, message", [
    ("not json", "is not JSON"),
    ("[1, 2]", "is not a JSON object"),
    ('{"v": 2, "image_id": "abc"}', "schema version 2"),
    ('{"image_id": "abc"}', "schema version None"),
    ('{"v": 1, "image_id": "abc"}', "does not have the fields"),
    ('{"v": 1, "image_id": 7, "kind": "u", "snapshot": "s", "created": "t"}',
     "does not have the fields"),
])
def test_corrupt_values_are_refused(value, message):
    with pytest.raises(errors.CorruptMetadata, match=message):
        schema.load(schema.OWNER_KEY, value)


def test_unknown_key_of_ours_is_refused():
    with pytest.raises(errors.CorruptMetadata, match="unknown metadata key"):
        schema.records_of("abc", {schema.KEY_PREFIX + "future": "{}"})


def test_records_of_keeps_own_and_drops_inherited_records():
    parent_owner = schema.dump(OWNER)
    own_retired = schema.dump(RETIRED)
    records = schema.records_of("abc", dict([own_retired, ("other", "x")]))
    assert records == schema.Records(owner=None, retired=RETIRED)
    # A clone (id "child") carries its parent's owner record: ignored.
    records = schema.records_of("child", dict([parent_owner, ("conf_x", "1")]))
    assert records.owner is None
    assert records.inherited == (schema.OWNER_KEY,)


def test_timestamp_is_utc_seconds():
    tz = datetime.timezone(datetime.timedelta(hours=2))
    now = datetime.datetime(2026, 11, 21, 12, 30, 5, 999, tzinfo=tz)
    assert schema.timestamp(now) == "2026-11-21T10:30:05Z"
