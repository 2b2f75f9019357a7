"""Records the store keeps in RBD image metadata and in its journal.

Rules this module owns:

* Every key we write starts with ``KEY_PREFIX``; librbd reads keys starting
  with ``conf_`` as per-image configuration, so ours never do.
* Every value is a JSON object.  An image's records carry ``"image_id"``: the
  RBD id of the image the record describes.  A clone copies its parent's
  metadata, and ``rbd rename`` keeps the id, so a record whose ``image_id``
  is not the id of the image it was read from was inherited from a parent
  and means nothing here.
* Versions, as Ceph encodes its own structures (``ENCODE_START(v,
  compat)``): each record kind has a version (``VERSION``), and a value
  carries the version it was written at (``"v"``) and the oldest version of
  a reader that may read it (``"compat"``).  ``"compat"`` is left out only
  when it and ``"v"`` are both 1: everything 0.1.0 wrote, and what 0.1.0,
  which refuses any field it does not know, reads.
* A reader of version R of a kind reads a value whose compat is at most R:
  a version up to R field by field (a field added in version n, ``since``
  n in its metadata, is absent before n and takes its default), a newer
  one by the fields it knows, ignoring the others.  A value whose compat is
  above R, or that does not parse, raises
  :class:`~glance_rbd_tracked.errors.CorruptMetadata` naming the key (the
  adapter adds the image): the store never guesses about data it might
  delete.  A key of ours whose kind this release does not know is of
  version 0 to it: ignored when its value says ``"compat": 0``, refused
  otherwise.
* A writer never downgrades a value it did not understand:
  :func:`supersede` is what replaces an entry that may hold one; it keeps a
  newer value's version and the fields this release does not know, and
  refuses to replace one it may not read.  Image records are never
  rewritten: the store writes a kind only where the image has none of it.

The full description for operators is in ``doc/source/metadata.rst``, the
changes of each release in ``doc/source/changelog.rst``.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import datetime
import enum
import json
from typing import Any
from typing import ClassVar

from glance_rbd_tracked import errors

KEY_PREFIX = "rbd_tracked."
OWNER_KEY = KEY_PREFIX + "owner"
RETIRED_KEY = KEY_PREFIX + "retired"
ORIGIN_KEY = KEY_PREFIX + "origin"
SNAP_KEY_PREFIX = KEY_PREFIX + "snap."
RETIRED_SUFFIX = "_to_be_deleted"
#: RADOS object (in the store's pool) whose omap holds the journal.
JOURNAL_OBJECT = "rbd_tracked.journal"


class Versioned:
    """A record kind: the version this release reads up to and writes, and
    the oldest reader version that may read what it writes.  Raise
    ``VERSION`` with every change of the kind's fields; a field added in
    version n has a default and ``metadata={"since": n}``.  Raise
    ``COMPAT`` to it when an older reader acting on the known fields alone,
    or an older writer replacing them and keeping the new ones
    (:func:`supersede`), would do wrong (a new meaning, a new value of
    ``kind`` or ``op``).  Name the change in ``doc/source/changelog.rst``."""

    VERSION: ClassVar[int] = 1
    COMPAT: ClassVar[int] = 1


class Kind(enum.StrEnum):
    """What wrote an image that the store owns."""

    UPLOAD = "upload"          # add(): an upload through Glance
    CHAIN = "chain"            # a chain clone
    COPY = "copy"              # a chain's fallback: a copy
    STOCK = "stock-adopted"    # the stock rbd driver's, adopted on retiring


class Op(enum.StrEnum):
    """What an intent in the journal is doing."""

    CHAIN = "chain"
    DELETE = "delete"
    RETIRE = "retire"
    UPLOAD = "upload"


def timestamp(now: datetime.datetime) -> str:
    """ISO 8601 in UTC, second precision: the form every record uses."""
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True)
class OwnerRecord(Versioned):
    """The store owns this image and the snapshot that its location names."""

    image_id: str
    kind: Kind
    snapshot: str
    created: str

    key = OWNER_KEY


@dataclasses.dataclass(frozen=True)
class RetiredRecord(Versioned):
    """The image is pending deletion: remove it once nothing depends on it."""

    image_id: str
    original_name: str
    since: str
    reason: str

    key = RETIRED_KEY


@dataclasses.dataclass(frozen=True)
class SnapRecord(Versioned):
    """The store made snapshot ``snapshot`` of this image (a chain's step 1)
    for the chain clone ``clone`` (``pool/name``)."""

    image_id: str
    snapshot: str
    clone: str
    created: str

    @property
    def key(self) -> str:
        return SNAP_KEY_PREFIX + self.snapshot


@dataclasses.dataclass(frozen=True)
class OriginRecord(Versioned):
    """The image's location snapshot (RBD id ``image_id``, snapshot id
    ``snap_id``) holds exactly what the snapshot ``source_snap_id``
    (``snapshot``) of the image of RBD id ``source_id`` in pool ``pool`` of
    cluster ``fsid`` holds, ``size`` bytes: it was copied from there
    (:mod:`glance_rbd_tracked.copies`).  Both sides by identity: neither
    image id nor snapshot id is ever reused, and a snapshot never changes.

    Compat 0: a release that does not know the kind may ignore it (it only
    lets a later copy to this cluster start from this image)."""

    COMPAT: ClassVar[int] = 0

    image_id: str
    snap_id: str
    fsid: str
    pool: str
    source_id: str
    source_snap_id: str
    snapshot: str
    size: str
    copied: str

    key = ORIGIN_KEY


Record = OwnerRecord | RetiredRecord | SnapRecord | OriginRecord


@dataclasses.dataclass(frozen=True)
class Intent(Versioned):
    """A multi-step operation in flight, journalled before it acts.

    ``op`` is ``chain`` (building ``target`` from ``source``, whose chain
    snapshot is ``snapshot``), ``delete`` (removing ``target``, then
    releasing its parent ``source``, a ``pool/image@snap`` spec),
    ``retire`` (marking, then renaming ``target``) or ``upload`` (writing
    ``target`` for Glance; ``snapshot`` is made last).
    """

    op: Op
    target: str
    source: str
    snapshot: str
    started: str

    @property
    def key(self) -> str:
        return intent_key(self.op, self.target)


def intent_key(op: Op, target: str) -> str:
    """The journal key of the intent of ``op`` on ``target``."""
    return f"intent/{op}/{target}"


@dataclasses.dataclass(frozen=True)
class ChainLink(Versioned):
    """A finished chain: ``target`` was cloned from ``source`` (a
    ``pool/image@snap`` spec).  Lets cleanup find chain snapshots whose clone
    something else removed, without opening every disk."""

    target: str
    source: str
    created: str

    @property
    def key(self) -> str:
        return f"chain/{self.target}"


@dataclasses.dataclass(frozen=True)
class Journal:
    """The journal's entries, parsed; ``bad`` holds each entry that does
    not parse or that this release may not read, with why (it is reported,
    never acted on)."""

    intents: tuple[Intent, ...] = ()
    links: tuple[ChainLink, ...] = ()
    bad: tuple[tuple[str, str], ...] = ()
    #: keys of kinds this release does not know that may be ignored
    ignored: tuple[str, ...] = ()


def parse_journal(entries: Mapping[str, str]) -> Journal:
    """Parse the journal object's omap entries, one at a time."""
    intents: list[Intent] = []
    links: list[ChainLink] = []
    bad: list[tuple[str, str]] = []
    ignored: list[str] = []
    for key, value in sorted(entries.items()):
        try:
            entry = _journal_entry(key, value)
        except errors.CorruptMetadata as exc:
            bad.append((key, str(exc)))
            continue
        if entry is None:
            ignored.append(key)
        elif isinstance(entry, Intent):
            intents.append(entry)
        else:
            links.append(entry)
    return Journal(tuple(intents), tuple(links), tuple(bad), tuple(ignored))


def load_journal(entries: Mapping[str, str]
                 ) -> tuple[list[Intent], list[ChainLink]]:
    """The intents and links of the journal; bad entries are left out
    (:func:`parse_journal` reports them)."""
    journal = parse_journal(entries)
    return list(journal.intents), list(journal.links)


def _journal_entry(key: str, value: str) -> Intent | ChainLink | None:
    """The entry at ``key``; None for a kind this release does not know
    whose value says that it may be ignored."""
    cls: type[Intent | ChainLink]
    if key.startswith("intent/"):
        cls = Intent
    elif key.startswith("chain/"):
        cls = ChainLink
    elif _ignorable(value):
        return None
    else:
        raise errors.CorruptMetadata(f"unknown journal entry {key!r}")
    entry = from_json(cls, value, key)
    if isinstance(entry, Intent):
        entry = dataclasses.replace(entry, op=_member(Op, entry.op, key))
    if entry.key != key:
        raise errors.CorruptMetadata(
            f"journal entry {key!r} describes {entry.key!r}")
    return entry


_RECORD_TYPES = {OWNER_KEY: OwnerRecord, RETIRED_KEY: RetiredRecord,
                 ORIGIN_KEY: OriginRecord}


def dump(record: Record) -> tuple[str, str]:
    """The metadata key and JSON value for ``record``."""
    return record.key, to_json(record)


def to_json(record: Versioned) -> str:
    """``record`` as this release writes it: at its kind's version, with
    ``"compat"`` unless both are 1."""
    cls = type(record)
    body = _fields(record)
    body["v"] = cls.VERSION
    if (cls.VERSION, cls.COMPAT) != (1, 1):
        body["compat"] = cls.COMPAT
    return _encode(body)


def supersede(record: Versioned, old: str | None, key: str) -> str:
    """The value to write for ``record`` at ``key``, which holds ``old``
    (None: nothing).  A newer version of the kind that this release may
    read keeps its version and the fields this release does not know, with
    ``record``'s known fields; one it may not read is not replaced
    (CorruptMetadata).  Anything else, a value that is not a record
    included, is replaced by ``record`` as :func:`to_json` writes it."""
    cls = type(record)
    if old is None:
        return to_json(record)
    try:
        body = _object(old, key)
        version, compat = _header(body, key)
    except errors.CorruptMetadata:
        return to_json(record)
    if compat > cls.VERSION:
        raise errors.CorruptMetadata(
            _too_new(key, version, compat, cls.VERSION) + "; not replaced")
    if version <= cls.VERSION:
        return to_json(record)
    names = {f.name for f in dataclasses.fields(record)}  # type: ignore[arg-type]
    kept = {name: value for name, value in body.items() if name not in names}
    return _encode({**kept, **_fields(record), "v": version,
                    "compat": compat})


def load(key: str, value: str) -> Record:
    """Parse one record; raise CorruptMetadata when it is not one we may
    read."""
    cls: type | None = _RECORD_TYPES.get(key)
    if cls is None and key.startswith(SNAP_KEY_PREFIX):
        cls = SnapRecord
    if cls is None:
        raise errors.CorruptMetadata(f"unknown metadata key {key!r}")
    record = from_json(cls, value, key)
    if isinstance(record, SnapRecord) and record.key != key:
        raise errors.CorruptMetadata(
            f"metadata {key!r} describes snapshot {record.snapshot!r}")
    if isinstance(record, OwnerRecord):
        record = dataclasses.replace(record,
                                     kind=_member(Kind, record.kind, key))
    return record


def _member(cls: type[enum.StrEnum], value: str, key: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        raise errors.CorruptMetadata(
            f"metadata {key!r} has the unknown {cls.__name__.lower()} "
            f"{value!r}") from None


def from_json(cls: type[Versioned], value: str, key: str) -> Any:
    """Parse a versioned JSON object into ``cls``; CorruptMetadata if this
    release may not read it, or it does not parse."""
    body = _object(value, key)
    version, compat = _header(body, key)
    if compat > cls.VERSION:
        raise errors.CorruptMetadata(
            _too_new(key, version, compat, cls.VERSION))
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    names = {f.name for f in fields if f.metadata.get("since", 1) <= version}
    if version > cls.VERSION:  # newer: what this release does not know
        body = {name: body[name] for name in names & set(body)}
    if set(body) != names or not all(isinstance(v, str) for v in body.values()):
        raise errors.CorruptMetadata(
            f"metadata {key!r} of version {version} does not have the "
            f"fields {sorted(names)}")
    return cls(**body)


def _too_new(key: str, version: int, compat: int, reader: int) -> str:
    return (f"metadata {key!r} is of version {version}, which only a "
            f"release reading version {compat} or later may read; this "
            f"release reads version {reader}")


def _object(value: str, key: str) -> dict[str, Any]:
    try:
        body = json.loads(value)
    except ValueError as exc:
        raise errors.CorruptMetadata(
            f"metadata {key!r} is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise errors.CorruptMetadata(f"metadata {key!r} is not a JSON object")
    return body


def _header(body: dict[str, Any], key: str) -> tuple[int, int]:
    """Pop ``"v"`` and ``"compat"`` from ``body``: (version, compat)."""
    version = body.pop("v", None)
    if not _counts(version) or version < 1:
        raise errors.CorruptMetadata(
            f"metadata {key!r} has the version {version!r}")
    if "compat" not in body:
        if version != 1:
            raise errors.CorruptMetadata(
                f"metadata {key!r} is of version {version} without compat")
        return 1, 1
    compat = body.pop("compat")
    if not _counts(compat) or not 0 <= compat <= version:
        raise errors.CorruptMetadata(
            f"metadata {key!r} of version {version} has the compat "
            f"{compat!r}")
    return version, compat


def _counts(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ignorable(value: str) -> bool:
    """Whether a value of a kind this release does not know says that
    readers not knowing its kind may ignore it (compat 0)."""
    try:
        return _header(_object(value, ""), "")[1] == 0
    except errors.CorruptMetadata:
        return False


def _fields(record: Versioned) -> dict[str, Any]:
    return {f.name: getattr(record, f.name)
            for f in dataclasses.fields(record)}  # type: ignore[arg-type]


def _encode(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


@dataclasses.dataclass(frozen=True)
class Records:
    """The records that belong to one image (inherited ones dropped)."""

    owner: OwnerRecord | None = None
    retired: RetiredRecord | None = None
    snaps: tuple[SnapRecord, ...] = ()
    origin: OriginRecord | None = None
    inherited: tuple[str, ...] = ()
    #: keys of kinds this release does not know that may be ignored
    ignored: tuple[str, ...] = ()

    def snap(self, name: str) -> SnapRecord | None:
        return next((r for r in self.snaps if r.snapshot == name), None)


def records_of(image_id: str, metadata: Mapping[str, str]) -> Records:
    """Select and parse our records from an image's full metadata."""
    found: dict[str, Record] = {}
    inherited = []
    ignored = []
    for key, value in metadata.items():
        if not key.startswith(KEY_PREFIX):
            continue
        if _unknown_key(key) and _ignorable(value):
            ignored.append(key)
            continue
        record = load(key, value)
        if record.image_id != image_id:
            inherited.append(key)
            continue
        found[key] = record
    snaps = tuple(sorted((r for r in found.values()
                          if isinstance(r, SnapRecord)),
                         key=lambda r: r.snapshot))
    return Records(owner=found.get(OWNER_KEY),  # type: ignore[arg-type]
                   retired=found.get(RETIRED_KEY),  # type: ignore[arg-type]
                   snaps=snaps,
                   origin=found.get(ORIGIN_KEY),  # type: ignore[arg-type]
                   inherited=tuple(sorted(inherited)),
                   ignored=tuple(sorted(ignored)))


def _unknown_key(key: str) -> bool:
    return key not in _RECORD_TYPES and not key.startswith(SNAP_KEY_PREFIX)
