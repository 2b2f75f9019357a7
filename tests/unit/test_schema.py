import dataclasses
import datetime
import json
import pathlib
import re

from hypothesis import given
from hypothesis import strategies as st
import pytest

from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import schema
from tests.fakes import NOW as NOW_VALUE
from tests.fakes import FakeCeph

RECORDS = pathlib.Path(__file__).parent.parent / "data" / "records"
RELEASES = sorted(p.name for p in RECORDS.iterdir()
                  if p.is_dir() and p.name[0].isdigit())

OWNER = schema.OwnerRecord(image_id="abc", kind=schema.Kind.UPLOAD,
                           snapshot="snap", created="2026-11-21T10:00:00Z")
RETIRED = schema.RetiredRecord(image_id="abc", original_name="img",
                               since="2026-11-21T10:00:00Z", reason="clones")
SNAP = schema.SnapRecord(image_id="abc", snapshot="rbd_tracked-x",
                         clone="images/x", created="2026-11-21T10:00:00Z")
INTENT = schema.Intent(op=schema.Op.DELETE, target="images/x",
                       source="vms/d@rbd_tracked-x", snapshot="",
                       started="2026-11-21T10:00:00Z")
LINK = schema.ChainLink(target="images/x", source="vms/d@rbd_tracked-x",
                        created="2026-11-21T10:00:00Z")
KINDS = [schema.OwnerRecord, schema.RetiredRecord, schema.SnapRecord,
         schema.Intent, schema.ChainLink]


def body(record, **more):
    """``record``'s JSON object, with ``more`` (None: leave that key out)."""
    out = {**json.loads(schema.to_json(record)), **more}
    return json.dumps({k: v for k, v in out.items() if v is not None})


def read(path):
    return json.loads(path.read_text())


def image_id_of(metadata):
    (image_id,) = {json.loads(v)["image_id"] for v in metadata.values()}
    return image_id


# -- this release's writer -------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_is_still_version_1_and_written_as_0_1_0_reads_it(kind):
    """0.1.0 refuses any version but 1 and any key it does not know, a
    "compat" too: no kind has changed, so each is written as 0.1.0 wrote
    it (the corpus tests below compare the bytes)."""
    assert (kind.VERSION, kind.COMPAT) == (1, 1)


@pytest.mark.parametrize("record", [OWNER, RETIRED, SNAP])
def test_dump_load_round_trip(record):
    key, value = schema.dump(record)
    assert key.startswith(schema.KEY_PREFIX)
    assert not key.startswith("conf_")
    assert json.loads(value)["v"] == 1
    assert "compat" not in json.loads(value)
    assert schema.load(key, value) == record


@pytest.mark.parametrize("entry", [INTENT, LINK])
def test_journal_entry_round_trip(entry):
    journal = schema.parse_journal({entry.key: schema.to_json(entry)})
    assert journal.intents + journal.links == (entry,)


# -- the corpus: what every release wrote ----------------------------------

def test_the_corpus_has_0_1_0():
    assert "0.1.0" in RELEASES


@pytest.mark.parametrize("path", sorted(
    p.relative_to(RECORDS) for r in RELEASES
    for p in (RECORDS / r / "image-metadata").glob("*.json")), ids=str)
def test_every_release_s_image_records_read(path):
    metadata = read(RECORDS / path)
    records = schema.records_of(image_id_of(metadata), metadata)
    found = [records.owner, records.retired, *records.snaps]
    assert sorted(r.key for r in found if r) == sorted(metadata)
    assert records.inherited == records.ignored == ()
    for key, value in metadata.items():
        record = schema.load(key, value)
        if json.loads(value)["v"] == type(record).VERSION:
            # a kind unchanged since: written byte for byte as then
            assert schema.dump(record) == (key, value)


@pytest.mark.parametrize("path", sorted(
    p.relative_to(RECORDS) for r in RELEASES
    for p in [RECORDS / r / "journal.json",
              *(RECORDS / r).glob("journal/*.json")] if p.exists()),
    ids=str)
def test_every_release_s_journal_reads(path):
    entries = read(RECORDS / path)
    journal = schema.parse_journal(entries)
    assert journal.bad == journal.ignored == ()
    parsed = journal.intents + journal.links
    assert sorted(e.key for e in parsed) == sorted(entries)
    for entry in parsed:
        if json.loads(entries[entry.key])["v"] == type(entry).VERSION:
            assert schema.to_json(entry) == entries[entry.key]


def test_0_1_0_wrote_every_kind_of_record_and_entry():
    root = RECORDS / "0.1.0"
    records = [schema.load(key, value)
               for path in (root / "image-metadata").glob("*.json")
               for key, value in read(path).items()]
    journal = schema.parse_journal(read(root / "journal.json"))
    assert {type(r) for r in records} == {
        schema.OwnerRecord, schema.RetiredRecord, schema.SnapRecord}
    assert {r.kind for r in records
            if isinstance(r, schema.OwnerRecord)} == set(schema.Kind)
    assert {i.op for i in journal.intents} == set(schema.Op)
    assert journal.links


# -- hand-written records of later releases --------------------------------

HAND = RECORDS / "hand-written"
C = "6c1d8e2f-3a4b-4c5d-9e6f-7a8b9c0d1e2f"
D = "4a3b2c1d-0e9f-4a8b-b7c6-d5e4f3a2b1c0"
G = "2b9f3c1e-7d4a-4f6b-8e2c-1a5d9b7c3e8f"
HAND_OWNER = schema.OwnerRecord(image_id="5e1f6b8a2c3d",
                                kind=schema.Kind.UPLOAD, snapshot="snap",
                                created="2027-03-01T08:00:00Z")


@pytest.mark.parametrize("name, expected", [
    ("owner-v2-compat1", schema.Records(owner=HAND_OWNER)),
    ("disk-retired-v3-compat1", schema.Records(
        retired=schema.RetiredRecord(
            image_id="4f5a6b7c8d9e", original_name=f"{D}_disk",
            since="2027-03-02T09:00:00Z",
            reason=f"snapshot rbd_tracked-{C} has 1 clone(s): images/{C}"),
        snaps=(schema.SnapRecord(image_id="4f5a6b7c8d9e",
                                 snapshot=f"rbd_tracked-{C}",
                                 clone=f"images/{C}",
                                 created="2027-03-01T08:00:00Z"),))),
    ("unknown-kind-compat0", schema.Records(
        owner=HAND_OWNER, ignored=("rbd_tracked.hint",))),
])
def test_later_image_records_this_release_may_read(name, expected):
    metadata = read(HAND / "image-metadata" / f"{name}.json")
    assert schema.records_of(image_id_of(metadata), metadata) == expected


@pytest.mark.parametrize("name, message", [
    ("owner-v2-compat2", r"metadata 'rbd_tracked.owner' is of version 2, "
     r"which only a release reading version 2 or later may read; this "
     r"release reads version 1"),
    ("unknown-kind-compat1", r"unknown metadata key 'rbd_tracked.hold'"),
])
def test_later_image_records_this_release_may_not_read(name, message):
    metadata = read(HAND / "image-metadata" / f"{name}.json")
    with pytest.raises(errors.CorruptMetadata, match=message):
        schema.records_of(image_id_of(metadata), metadata)


def test_a_refused_record_names_the_image_and_the_key():
    fake = FakeCeph()
    image = fake.world.upload("x")
    image.metadata[schema.OWNER_KEY] = read(
        HAND / "image-metadata" / "owner-v2-compat2.json")[schema.OWNER_KEY]
    with pytest.raises(errors.CorruptMetadata,
                       match=r"^images/x: metadata 'rbd_tracked.owner' is "
                             r"of version 2"):
        fake.images.state("images", "x")


@pytest.mark.parametrize("name, expected", [
    ("v2-compat1", schema.Journal(
        intents=(schema.Intent(op=schema.Op.DELETE, target=f"images/{C}",
                               source=f"vms/{D}_disk@rbd_tracked-{C}",
                               snapshot="", started="2027-03-02T09:00:00Z"),),
        links=(schema.ChainLink(target=f"images/{C}",
                                source=f"vms/{D}_disk@rbd_tracked-{C}",
                                created="2027-03-01T08:00:00Z"),))),
    ("v2-compat2", schema.Journal(
        links=(schema.ChainLink(target=f"images/{C}",
                                source=f"vms/{D}_disk@rbd_tracked-{C}",
                                created="2027-03-01T08:00:00Z"),),
        bad=((f"intent/chain/images/{G}",
              f"metadata 'intent/chain/images/{G}' is of version 2, which "
              "only a release reading version 2 or later may read; this "
              "release reads version 1"),))),
    ("unknown-kind", schema.Journal(
        bad=((f"lease/images/{G}",
              f"unknown journal entry 'lease/images/{G}'"),),
        ignored=("policy/images",))),
])
def test_later_journal_entries(name, expected):
    """Each entry on its own: one this release may not read is reported
    (never acted on), the others are read."""
    assert schema.parse_journal(read(HAND / "journal" / f"{name}.json")) \
        == expected


# -- the rules of reading, one value at a time -----------------------------

@pytest.mark.parametrize("value, message", [
    ("not json", "is not JSON"),
    ("[1, 2]", "is not a JSON object"),
    ('{"image_id": "abc"}', "has the version None"),
    (body(OWNER, v="1"), "has the version '1'"),
    (body(OWNER, v=True), "has the version True"),
    (body(OWNER, v=0), "has the version 0"),
    (body(OWNER, v=2), "is of version 2 without compat"),
    (body(OWNER, v=2, compat=3), "of version 2 has the compat 3"),
    (body(OWNER, v=2, compat=-1), "of version 2 has the compat -1"),
    (body(OWNER, v=2, compat="1"), "of version 2 has the compat '1'"),
    (body(OWNER, v=2, compat=2), "only a release reading version 2 or later"),
    (body(OWNER, v=9, compat=5, new="x"), "only a release reading version 5"),
    # a version this release knows has exactly its fields
    (body(OWNER, extra="x"), "of version 1 does not have the fields"),
    (body(OWNER, compat=1, extra="x"), "does not have the fields"),
    (body(OWNER, kind=None), "of version 1 does not have the fields"),
    (body(OWNER, image_id=7), "does not have the fields"),
    # a newer one has at least the fields this release knows, as it knows them
    (body(OWNER, v=2, compat=1, kind=None), "of version 2 does not have"),
    (body(OWNER, v=2, compat=1, image_id=7), "of version 2 does not have"),
    # a new value of a field this release checks needs compat raised
    (body(OWNER, v=2, compat=1, kind="encrypted"), "unknown kind"),
])
def test_values_this_release_may_not_read_are_refused(value, message):
    with pytest.raises(errors.CorruptMetadata, match=message):
        schema.load(schema.OWNER_KEY, value)


@pytest.mark.parametrize("value", [
    body(OWNER),
    body(OWNER, compat=1),
    body(OWNER, compat=0),
    body(OWNER, v=2, compat=1, glance_id="g"),
    body(OWNER, v=2, compat=0, more={"nested": [1, None]}),
    body(OWNER, v=7, compat=1, n=3, flag=False),
])
def test_values_this_release_may_read(value):
    assert schema.load(schema.OWNER_KEY, value) == OWNER


def test_unknown_key_of_ours_is_refused_unless_it_may_be_ignored():
    key = schema.KEY_PREFIX + "future"
    for value in ["{}", '{"v": 1}', '{"v": 1, "compat": 1}', "x"]:
        with pytest.raises(errors.CorruptMetadata,
                           match="unknown metadata key"):
            schema.records_of("abc", {key: value})
    records = schema.records_of("abc", {key: '{"v": 3, "compat": 0}'})
    assert records == schema.Records(ignored=(key,))


def test_records_of_keeps_own_and_drops_inherited_records():
    parent_owner = schema.dump(OWNER)
    own_retired = schema.dump(RETIRED)
    records = schema.records_of("abc", dict([own_retired, ("other", "x")]))
    assert records == schema.Records(owner=None, retired=RETIRED)
    # A clone (id "child") carries its parent's owner record: ignored.
    records = schema.records_of("child", dict([parent_owner, ("conf_x", "1")]))
    assert records.owner is None
    assert records.inherited == (schema.OWNER_KEY,)


ORIGIN = schema.OriginRecord(
    image_id="copy-id", snap_id="11", fsid="central-fsid", pool="images",
    source_id="src-id", source_snap_id="4", snapshot="snap",
    size=str(1 << 30), copied="2026-12-07T12:00:00Z")


def test_the_origin_record_is_written_with_compat_0_and_read_back():
    key, value = schema.dump(ORIGIN)
    assert key == schema.ORIGIN_KEY
    assert (json.loads(value)["v"], json.loads(value)["compat"]) == (1, 0)
    assert json.loads(value)["snap_id"] == "11"
    assert schema.records_of("copy-id", dict([(key, value)])).origin == ORIGIN


def test_a_clone_of_a_copy_does_not_take_its_parent_s_origin():
    """librbd copies a parent's metadata into its clone: a clone of an
    edge copy must not claim the copy's origin."""
    records = schema.records_of("clone-id", dict([schema.dump(ORIGIN)]))
    assert records.origin is None
    assert records.inherited == (schema.ORIGIN_KEY,)


def test_timestamp_is_utc_seconds():
    tz = datetime.timezone(datetime.timedelta(hours=2))
    now = datetime.datetime(2026, 11, 21, 12, 30, 5, 999, tzinfo=tz)
    assert schema.timestamp(now) == "2026-11-21T10:30:05Z"


# -- a kind at version 3: every version up to the reader's ------------------

@dataclasses.dataclass(frozen=True)
class Toy(schema.Versioned):
    """A kind that gained ``b`` in version 2 and ``c`` in version 3; version
    3 may be read by readers of version 2 (``c`` may be ignored)."""

    VERSION = 3
    COMPAT = 2

    a: str
    b: str = dataclasses.field(default="", metadata={"since": 2})
    c: str = dataclasses.field(default="-", metadata={"since": 3})


@pytest.mark.parametrize("value, expected", [
    ({"v": 1, "a": "1"}, Toy("1")),
    ({"v": 2, "compat": 1, "a": "1", "b": "2"}, Toy("1", "2")),
    ({"v": 3, "compat": 2, "a": "1", "b": "2", "c": "3"}, Toy("1", "2", "3")),
    ({"v": 4, "compat": 3, "a": "1", "b": "2", "c": "3", "d": 4},
     Toy("1", "2", "3")),
    ({"v": 1, "a": "1", "b": "2"}, "of version 1 does not have"),
    ({"v": 2, "compat": 1, "a": "1"}, "of version 2 does not have"),
    ({"v": 4, "compat": 4, "a": "1", "b": "2", "c": "3"},
     "only a release reading version 4 or later may read; this release "
     "reads version 3"),
])
def test_a_reader_reads_every_version_up_to_its_own(value, expected):
    if isinstance(expected, str):
        with pytest.raises(errors.CorruptMetadata, match=expected):
            schema.from_json(Toy, json.dumps(value), "toy")
    else:
        assert schema.from_json(Toy, json.dumps(value), "toy") == expected


def test_a_kind_above_version_1_is_written_with_its_compat():
    assert json.loads(schema.to_json(Toy("1", "2", "3"))) == {
        "v": 3, "compat": 2, "a": "1", "b": "2", "c": "3"}


# -- a writer never downgrades what it did not understand -----------------

NEWER = body(INTENT, v=2, compat=1, started="2027-01-01T00:00:00Z",
             worker="w-2", steps=["a", "b"])


@pytest.mark.parametrize("old, expected", [
    (None, schema.to_json(INTENT)),
    (schema.to_json(dataclasses.replace(INTENT, started="t")),
     schema.to_json(INTENT)),
    ("not a record", schema.to_json(INTENT)),
    ('{"v": "x"}', schema.to_json(INTENT)),
    # newer and readable: its version and unknown fields stay, ours replace
    # the known ones
    (NEWER, body(INTENT, v=2, compat=1, worker="w-2", steps=["a", "b"])),
    (body(INTENT, v=5, compat=0, x={"y": 1}),
     body(INTENT, v=5, compat=0, x={"y": 1})),
])
def test_supersede(old, expected):
    assert json.loads(schema.supersede(INTENT, old, INTENT.key)) == \
        json.loads(expected)


def test_supersede_refuses_to_replace_what_it_may_not_read():
    old = body(INTENT, v=2, compat=2, staging="images/x.tmp")
    with pytest.raises(errors.CorruptMetadata,
                       match=r"'intent/delete/images/x' is of version 2.*"
                             r"reads version 1; not replaced"):
        schema.supersede(INTENT, old, INTENT.key)


POLICY = core.Policy(pool="images")
NAME = "0b4bb3a4-4c0e-4dc7-8c1b-8f6f2a0e8b11"


def newer(value, **more):
    """``value`` as a later release might write it: version 2, compat 1,
    with fields this release does not know."""
    return json.dumps({**json.loads(value), "v": 2, "compat": 1, **more})


def test_retiring_adds_records_and_leaves_newer_ones_as_they_are():
    """Retiring writes only the kinds an image lacks (here the retired
    record); the owner record of a later release stays byte for byte."""
    fake = FakeCeph()
    image = fake.world.upload(NAME)
    owner = newer(image.metadata[schema.OWNER_KEY], glance_id=NAME)
    image.metadata[schema.OWNER_KEY] = owner
    fake.world.clone(f"images/{NAME}@snap", "vms", "disk")
    decision = lifecycle.delete(fake, "images", NAME, POLICY,
                                lambda: NOW_VALUE)
    assert isinstance(decision, core.Retire)
    retired = fake.world.image("images", NAME + "_to_be_deleted")
    assert retired.metadata[schema.OWNER_KEY] == owner
    assert json.loads(retired.metadata[schema.RETIRED_KEY])["v"] == 1


@pytest.mark.parametrize("step", ["retire-apply", "delete-apply"])
def test_a_journalled_operation_keeps_a_newer_intent_s_fields(step):
    """The delete or retire intent may already be in the journal (a crash,
    another worker): written again, a newer one keeps its version and the
    fields this release does not know."""
    fake = FakeCeph()
    if step == "retire-apply":  # an image with a clone
        fake.world.upload(NAME)
        fake.world.clone(f"images/{NAME}@snap", "vms", "disk")
        op, source = schema.Op.RETIRE, ""
    else:  # a clone: removed, then its parent released
        fake.world.upload("parent")
        image = fake.world.clone("images/parent@snap", "images", NAME)
        fake.world.snapshot("images", NAME, "snap")
        image.metadata.__setitem__(*schema.dump(schema.OwnerRecord(
            image_id=image.id, kind=schema.Kind.CHAIN, snapshot="snap",
            created="2027-01-01T00:00:00Z")))
        op, source = schema.Op.DELETE, "images/parent@snap"
    key = schema.intent_key(op, f"images/{NAME}")
    fake.journal.update("images", put={key: newer(schema.to_json(
        schema.Intent(op=op, target=f"images/{NAME}", source=source,
                      snapshot="", started="2027-01-01T00:00:00Z")),
        worker="w-2")})
    seen = {}
    lifecycle.delete(fake, "images", NAME, POLICY, lambda: NOW_VALUE,
                     on_step=lambda s: seen.update(
                         fake.journal.entries("images")) if s == step
                     else None)
    written = json.loads(seen[key])
    assert (written["v"], written["compat"], written["worker"]) == \
        (2, 1, "w-2")
    assert written["started"] == schema.timestamp(NOW_VALUE)  # ours
    assert key not in fake.journal.entries("images")  # done: dropped


def test_a_journalled_operation_leaves_an_intent_it_may_not_read():
    fake = FakeCeph()
    fake.world.upload(NAME)
    fake.world.clone(f"images/{NAME}@snap", "vms", "disk")
    key = schema.intent_key(schema.Op.RETIRE, f"images/{NAME}")
    old = json.dumps({"v": 2, "compat": 2, "op": "retire",
                      "target": f"images/{NAME}", "source": "",
                      "snapshot": "", "started": "2027-01-01T00:00:00Z"})
    fake.journal.update("images", put={key: old})
    with pytest.raises(errors.CorruptMetadata, match="not replaced"):
        lifecycle.delete(fake, "images", NAME, POLICY, lambda: NOW_VALUE)
    assert fake.journal.entries("images") == {key: old}
    assert fake.world.exists("images", NAME)


# -- properties ------------------------------------------------------------

text = st.text(max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | text,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(text, inner, max_size=3), max_leaves=6)
records = st.one_of(
    st.builds(schema.OwnerRecord, image_id=text,
              kind=st.sampled_from(schema.Kind), snapshot=text,
              created=text),
    st.builds(schema.RetiredRecord, image_id=text, original_name=text,
              since=text, reason=text),
    st.builds(schema.SnapRecord, image_id=text, snapshot=text, clone=text,
              created=text))
entries = st.one_of(
    st.builds(schema.Intent, op=st.sampled_from(schema.Op), target=text,
              source=text, snapshot=text, started=text),
    st.builds(schema.ChainLink, target=text, source=text, created=text))


def unknown_fields(kind):
    names = {f.name for f in dataclasses.fields(kind)} | {"v", "compat"}
    return st.dictionaries(text.filter(lambda n: n not in names),
                           json_values, max_size=4)


@given(records)
def test_dump_then_load_is_the_record(record):
    assert schema.load(*schema.dump(record)) == record


@given(entries)
def test_to_json_then_parse_journal_is_the_entry(entry):
    journal = schema.parse_journal({entry.key: schema.to_json(entry)})
    assert journal.intents + journal.links == (entry,)


@given(records, st.data())
def test_a_newer_record_it_may_read_reads_as_its_known_part(record, data):
    extra = data.draw(unknown_fields(type(record)))
    version = data.draw(st.integers(2, 50))
    compat = data.draw(st.integers(0, 1))
    key, value = schema.dump(record)
    assert schema.load(key, newer_value(value, version, compat, extra)) \
        == record


@given(records, st.data())
def test_a_record_it_may_not_read_is_refused(record, data):
    version = data.draw(st.integers(2, 50))
    compat = data.draw(st.integers(2, version))
    extra = data.draw(unknown_fields(type(record)))
    key, value = schema.dump(record)
    with pytest.raises(errors.CorruptMetadata, match=re.escape(repr(key))):
        schema.load(key, newer_value(value, version, compat, extra))


@given(entries, st.data())
def test_supersede_keeps_what_it_does_not_know(entry, data):
    before = dataclasses.replace(entry, source=data.draw(text))  # same key
    extra = data.draw(unknown_fields(type(entry)))
    version = data.draw(st.integers(2, 50))
    compat = data.draw(st.integers(0, 1))
    old = newer_value(schema.to_json(before), version, compat, extra)
    written = schema.supersede(entry, old, entry.key)
    assert schema.from_json(type(entry), written, entry.key) == entry
    assert json.loads(written) == {
        **json.loads(schema.to_json(entry)), **extra,
        "v": version, "compat": compat}


def newer_value(value, version, compat, extra):
    return json.dumps({**extra, **json.loads(value), "v": version,
                       "compat": compat})
