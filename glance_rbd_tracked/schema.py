"""Metadata records the store keeps in RBD image metadata (schema version 1).

Rules this module owns:

* Every key we write starts with ``KEY_PREFIX``; librbd reads keys starting
  with ``conf_`` as per-image configuration, so ours never do.
* Every value is a JSON object with ``"v"`` (the schema version) and
  ``"image_id"``: the RBD id of the image the record describes.  A clone
  copies its parent's metadata, and ``rbd rename`` keeps the id, so a record
  whose ``image_id`` is not the id of the image it was read from was inherited
  from a parent and means nothing here.
* A value we cannot parse, or of a version we do not know, raises
  :class:`~glance_rbd_tracked.errors.CorruptMetadata`: the store never guesses
  about data it might delete.

The full description for operators is in ``doc/source/metadata.rst``.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import datetime
import enum
import json
from typing import Any

from glance_rbd_tracked import errors

SCHEMA_VERSION = 1
KEY_PREFIX = "rbd_tracked."
OWNER_KEY = KEY_PREFIX + "owner"
RETIRED_KEY = KEY_PREFIX + "retired"
SNAP_KEY_PREFIX = KEY_PREFIX + "snap."
RETIRED_SUFFIX = "_to_be_deleted"
#: RADOS object (in the store's pool) whose omap holds the journal.
JOURNAL_OBJECT = "rbd_tracked.journal"



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
class OwnerRecord:
    """The store owns this image and the snapshot that its location names."""

    image_id: str
    kind: Kind
    snapshot: str
    created: str

    key = OWNER_KEY


@dataclasses.dataclass(frozen=True)
class RetiredRecord:
    """The image is pending deletion: remove it once nothing depends on it."""

    image_id: str
    original_name: str
    since: str
    reason: str

    key = RETIRED_KEY


@dataclasses.dataclass(frozen=True)
class SnapRecord:
    """The store made snapshot ``snapshot`` of this image (a chain's step 1)
    for the chain clone ``clone`` (``pool/name``)."""

    image_id: str
    snapshot: str
    clone: str
    created: str

    @property
    def key(self) -> str:
        return SNAP_KEY_PREFIX + self.snapshot


Record = OwnerRecord | RetiredRecord | SnapRecord


@dataclasses.dataclass(frozen=True)
class Intent:
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
class ChainLink:
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
    not parse, with why (it is reported, never acted on)."""

    intents: tuple[Intent, ...] = ()
    links: tuple[ChainLink, ...] = ()
    bad: tuple[tuple[str, str], ...] = ()


def parse_journal(entries: Mapping[str, str]) -> Journal:
    """Parse the journal object's omap entries, one at a time."""
    intents: list[Intent] = []
    links: list[ChainLink] = []
    bad: list[tuple[str, str]] = []
    for key, value in sorted(entries.items()):
        try:
            entry = _journal_entry(key, value)
        except errors.CorruptMetadata as exc:
            bad.append((key, str(exc)))
            continue
        if isinstance(entry, Intent):
            intents.append(entry)
        else:
            links.append(entry)
    return Journal(tuple(intents), tuple(links), tuple(bad))


def load_journal(entries: Mapping[str, str]
                 ) -> tuple[list[Intent], list[ChainLink]]:
    """The intents and links of the journal; bad entries are left out
    (:func:`parse_journal` reports them)."""
    journal = parse_journal(entries)
    return list(journal.intents), list(journal.links)


def _journal_entry(key: str, value: str) -> Intent | ChainLink:
    cls: type
    if key.startswith("intent/"):
        cls = Intent
    elif key.startswith("chain/"):
        cls = ChainLink
    else:
        raise errors.CorruptMetadata(f"unknown journal entry {key!r}")
    entry = from_json(cls, value, key)
    if isinstance(entry, Intent):
        entry = dataclasses.replace(entry, op=_member(Op, entry.op, key))
    if entry.key != key:
        raise errors.CorruptMetadata(
            f"journal entry {key!r} describes {entry.key!r}")
    return entry


_RECORD_TYPES = {OWNER_KEY: OwnerRecord, RETIRED_KEY: RetiredRecord}


def dump(record: Record) -> tuple[str, str]:
    """The metadata key and JSON value for ``record``."""
    return record.key, to_json(record)


def to_json(record: Any) -> str:
    body = {"v": SCHEMA_VERSION, **dataclasses.asdict(record)}
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def load(key: str, value: str) -> Record:
    """Parse one record; raise CorruptMetadata when it is not one we wrote."""
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


def from_json(cls: type, value: str, key: str) -> Any:
    """Parse a versioned JSON object into ``cls``; CorruptMetadata if not."""
    try:
        body = json.loads(value)
    except ValueError as exc:
        raise errors.CorruptMetadata(
            f"metadata {key!r} is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise errors.CorruptMetadata(f"metadata {key!r} is not a JSON object")
    version = body.pop("v", None)
    if version != SCHEMA_VERSION:
        raise errors.CorruptMetadata(
            f"metadata {key!r} has schema version {version!r}; "
            f"this release reads version {SCHEMA_VERSION}")
    names = {f.name for f in dataclasses.fields(cls)}
    if set(body) != names or not all(isinstance(v, str) for v in body.values()):
        raise errors.CorruptMetadata(
            f"metadata {key!r} does not have the fields {sorted(names)}")
    return cls(**body)


@dataclasses.dataclass(frozen=True)
class Records:
    """The records that belong to one image (inherited ones dropped)."""

    owner: OwnerRecord | None = None
    retired: RetiredRecord | None = None
    snaps: tuple[SnapRecord, ...] = ()
    inherited: tuple[str, ...] = ()

    def snap(self, name: str) -> SnapRecord | None:
        return next((r for r in self.snaps if r.snapshot == name), None)


def records_of(image_id: str, metadata: Mapping[str, str]) -> Records:
    """Select and parse our records from an image's full metadata."""
    found: dict[str, Record] = {}
    inherited = []
    for key, value in metadata.items():
        if not key.startswith(KEY_PREFIX):
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
                   snaps=snaps, inherited=tuple(sorted(inherited)))
