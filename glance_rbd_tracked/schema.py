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

import dataclasses
import datetime
import json
from typing import Mapping

from glance_rbd_tracked import errors

SCHEMA_VERSION = 1
KEY_PREFIX = "rbd_tracked."
OWNER_KEY = KEY_PREFIX + "owner"
RETIRED_KEY = KEY_PREFIX + "retired"
RETIRED_SUFFIX = "_to_be_deleted"

#: What wrote an image that the store owns.
KIND_UPLOAD = "upload"


def timestamp(now: datetime.datetime) -> str:
    """ISO 8601 in UTC, second precision: the form every record uses."""
    return now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True)
class OwnerRecord:
    """The store owns this image and the snapshot that its location names."""

    image_id: str
    kind: str
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


_RECORD_TYPES = {OWNER_KEY: OwnerRecord, RETIRED_KEY: RetiredRecord}


def dump(record: OwnerRecord | RetiredRecord) -> tuple[str, str]:
    """The metadata key and JSON value for ``record``."""
    body = {"v": SCHEMA_VERSION, **dataclasses.asdict(record)}
    return record.key, json.dumps(body, sort_keys=True, separators=(",", ":"))


def load(key: str, value: str) -> OwnerRecord | RetiredRecord:
    """Parse one record; raise CorruptMetadata when it is not one we wrote."""
    cls = _RECORD_TYPES.get(key)
    if cls is None:
        raise errors.CorruptMetadata(f"unknown metadata key {key!r}")
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
    inherited: tuple[str, ...] = ()


def records_of(image_id: str, metadata: Mapping[str, str]) -> Records:
    """Select and parse our records from an image's full metadata."""
    found: dict[str, OwnerRecord | RetiredRecord] = {}
    inherited = []
    for key, value in metadata.items():
        if not key.startswith(KEY_PREFIX):
            continue
        record = load(key, value)
        if record.image_id != image_id:
            inherited.append(key)
            continue
        found[key] = record
    return Records(owner=found.get(OWNER_KEY),
                   retired=found.get(RETIRED_KEY),
                   inherited=tuple(sorted(inherited)))
