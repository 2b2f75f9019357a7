"""Write the corpus of records as one release writes them.

Run as a script with the release's own code first on the path (it says on
stderr which ``schema`` it used), e.g. for 0.1.0 (commit 0e6448e)::

    git worktree add /tmp/grt-0.1.0 0.1.0
    PYTHONPATH=/tmp/grt-0.1.0 .venv/bin/python tests/data/records/generate.py \\
        tests/data/records/0.1.0
    git worktree remove /tmp/grt-0.1.0

Every file is a JSON object of key -> value exactly as the release stores
it: ``image-metadata/<case>.json`` one image's RBD metadata (what
``rbd image-meta list`` shows), ``journal.json`` the journal object's omap.
The records are built with the release's constructors and encoded with its
``schema.dump`` / ``schema.to_json``; a later release whose constructors
differ keeps its own copy of this script's cases.
"""

from __future__ import annotations

import json
import pathlib
import sys

from glance_rbd_tracked import schema

FSID = "0f6d2a34-5b1c-4c8e-9d2f-3a7b6c5d4e1f"
UPLOAD = "2b9f3c1e-7d4a-4f6b-8e2c-1a5d9b7c3e8f"      # Glance image ids
CHAIN = "6c1d8e2f-3a4b-4c5d-9e6f-7a8b9c0d1e2f"
COPY = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"
DISK = "4a3b2c1d-0e9f-4a8b-b7c6-d5e4f3a2b1c0"      # a Nova instance
WHEN = "2026-01-05T10:00:00Z"
LATER = "2026-01-06T11:30:00Z"


def owner(image_id: str, kind: schema.Kind) -> schema.OwnerRecord:
    return schema.OwnerRecord(image_id=image_id, kind=kind, snapshot="snap",
                              created=WHEN)


def retired(image_id: str, name: str, reason: str) -> schema.RetiredRecord:
    return schema.RetiredRecord(image_id=image_id, original_name=name,
                                since=LATER, reason=reason)


def snap(image_id: str, glance_id: str) -> schema.SnapRecord:
    return schema.SnapRecord(image_id=image_id,
                             snapshot=f"rbd_tracked-{glance_id}",
                             clone=f"images/{glance_id}", created=WHEN)


IMAGES: dict[str, list[schema.Record]] = {
    "upload": [owner("5e1f6b8a2c3d", schema.Kind.UPLOAD)],
    "chain": [owner("7a2b3c4d5e6f", schema.Kind.CHAIN)],
    "copy": [owner("8b3c4d5e6f70", schema.Kind.COPY)],
    "upload-retired": [
        owner("1c2d3e4f5a6b", schema.Kind.UPLOAD),
        retired("1c2d3e4f5a6b", UPLOAD,
                "snapshot snap has 1 clone(s): vms/" + DISK + "_disk")],
    "stock-adopted": [
        owner("2d3e4f5a6b7c", schema.Kind.STOCK),
        retired("2d3e4f5a6b7c", "3f4e5d6c-7b8a-4f9e-8d7c-6b5a4f3e2d1c",
                "snapshot snap has 2 clone(s): volumes/volume-1, "
                "vms/" + DISK + "_disk")],
    "disk-with-chain-snapshots": [
        snap("3e4f5a6b7c8d", CHAIN), snap("3e4f5a6b7c8d", COPY)],
    "disk-retired": [
        snap("4f5a6b7c8d9e", CHAIN),
        retired("4f5a6b7c8d9e", DISK + "_disk",
                "snapshot rbd_tracked-" + CHAIN + " (trash: "
                "5c3b2a19-0f8e-4d7c-b6a5-948372615049) has 1 clone(s): "
                "images/" + CHAIN)],
}

JOURNAL: list[schema.Intent | schema.ChainLink] = [
    schema.Intent(op=schema.Op.CHAIN, target=f"images/{CHAIN}",
                  source=f"vms/{DISK}_disk",
                  snapshot=f"rbd_tracked-{CHAIN}", started=WHEN),
    schema.Intent(op=schema.Op.CHAIN, target=f"images/{COPY}",
                  source=f"{FSID}:vms/{DISK}_disk",
                  snapshot=f"rbd_tracked-{COPY}", started=WHEN),
    schema.Intent(op=schema.Op.DELETE, target=f"images/{CHAIN}",
                  source=f"vms/{DISK}_disk@rbd_tracked-{CHAIN}", snapshot="",
                  started=LATER),
    schema.Intent(op=schema.Op.RETIRE, target=f"vms/{DISK}_disk",
                  source=f"images/{UPLOAD}@snap", snapshot="", started=LATER),
    schema.Intent(op=schema.Op.RETIRE, target=f"images/{UPLOAD}", source="",
                  snapshot="", started=LATER),
    schema.Intent(op=schema.Op.UPLOAD, target=f"images/{UPLOAD}", source="",
                  snapshot="snap", started=WHEN),
    schema.ChainLink(target=f"images/{CHAIN}",
                     source=f"vms/{DISK}_disk@rbd_tracked-{CHAIN}",
                     created=WHEN),
]


def write(path: pathlib.Path, entries: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")


def main(out: str) -> None:
    print(f"encoding with {schema.__file__}", file=sys.stderr)
    root = pathlib.Path(out)
    for case, records in IMAGES.items():
        write(root / "image-metadata" / f"{case}.json",
              dict(schema.dump(r) for r in records))
    write(root / "journal.json", {e.key: schema.to_json(e) for e in JOURNAL})


if __name__ == "__main__":
    main(sys.argv[1])
