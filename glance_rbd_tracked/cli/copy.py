"""``copy IMAGE_ID... --to BACKEND``: Glance images to another
``rbd_tracked`` backend of the same glance-api (another cluster, an edge
site), sending only what differs from an ancestor already there
(:mod:`glance_rbd_tracked.copies`).

The plan says, for each image, where its copy starts (an ancestor's copy
there, or ``whole``) and how many bytes it sends; ``--execute`` copies,
with progress on stderr.  ``--register`` then adds the new location to the
Glance image: Glance takes a location of an active image only through
``PATCH add /locations/-``, which needs ``show_multiple_locations = True``
in glance-api.conf (and the ``service`` or admin role); without it the
copy stays, and the line says ``failed`` and why.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from typing import Any

from glance_rbd_tracked import ceph as ceph_mod
from glance_rbd_tracked import copies
from glance_rbd_tracked import delta
from glance_rbd_tracked import errors
from glance_rbd_tracked import ports
from glance_rbd_tracked import settings as settings_mod
from glance_rbd_tracked.cli.common import add_execute
from glance_rbd_tracked.cli.common import add_format
from glance_rbd_tracked.cli.common import emit
from glance_rbd_tracked.cli.common import plan_only
from glance_rbd_tracked.cli.common import progress
from glance_rbd_tracked.cli.common import report_failures

COLUMNS = ("image_id", "to", "start", "bytes", "result")


def add_command(sub: Any) -> None:
    copy = sub.add_parser(
        "copy", help="copy images to another rbd_tracked backend, sending "
                     "only what differs from an ancestor there")
    copy.add_argument("images", nargs="+", metavar="IMAGE_ID")
    copy.add_argument("--to", required=True, metavar="BACKEND",
                      help="the rbd_tracked backend of enabled_backends to "
                           "copy to (the source is --backend)")
    copy.add_argument("--register", action="store_true",
                      help="add the copy's location to the Glance image "
                           "(needs show_multiple_locations = True)")
    copy.add_argument("--os-cloud", metavar="CLOUD",
                      default=os.environ.get("OS_CLOUD"),
                      help="with --register: a cloud of clouds.yaml "
                           "(default: $OS_CLOUD, else the OS_* variables)")
    add_execute(copy)
    add_format(copy)
    copy.set_defaults(run=copy_images)


def copy_images(args: argparse.Namespace, ceph: ports.Backend,
                settings: settings_mod.Settings) -> int:
    there = settings_mod.load(args.config_file, args.config_dir, args.to)
    target = ceph_mod.connect(there.ceph_conf, there.user,
                              timeout=there.timeout,
                              connect_timeout=there.connect_timeout)
    try:
        if target.fsid() == ceph.fsid():
            raise errors.Invalid(f"backend {args.to!r} is in the same "
                                 f"cluster ({ceph.fsid()})")
        rows = [_one(args, ceph, target, settings.pool, there.pool, image)
                for image in args.images]
    finally:
        target.close()
    emit(rows, args.format, COLUMNS)
    report_failures(rows, "image_id")
    plan_only(not args.execute)
    return 1 if any(str(r["result"]).startswith(("failed", "refused"))
                    for r in rows) else 0


def _one(args: argparse.Namespace, source: ports.Backend,
         target: ports.Backend, source_pool: str, target_pool: str,
         image: str) -> dict[str, Any]:
    row: dict[str, Any] = {"image_id": image, "to": args.to, "start": "-",
                           "reason": "", "order": None, "objects": None,
                           "bytes": None, "size": None, "location": None,
                           "seconds": None}
    began = time.monotonic()
    try:
        planned = copies.plan(source, target, source_pool, target_pool,
                              image)
    except errors.TrackedError as exc:
        row["result"] = f"refused: {exc}"
        return row
    p = planned.plan
    row.update(start=(f"{p.start.name}@{copies.SNAPSHOT}"
                      if isinstance(p.start, delta.Base) else "whole"),
               reason=p.start.reason, order=p.order,
               objects=len(p.objects), bytes=p.bytes, size=p.source.size,
               result="planned")
    if not args.execute:
        return row
    try:
        result = copies.execute(
            source, target, planned, target_pool,
            on_progress=functools.partial(_progress, image))
    except errors.TrackedError as exc:
        row["result"] = f"failed: {exc}"
        return row
    row.update(location=result.location, bytes=result.sent,
               seconds=round(time.monotonic() - began, 3), result="copied")
    if args.register:
        row.update(_register(args, image, result.location, target))
    return row


def _progress(image: str, done: int, total: int) -> None:
    progress(done, total, f"copying {image}")


def _register(args: argparse.Namespace, image: str, location: str,
              target: ports.Backend) -> dict[str, Any]:
    from glance_rbd_tracked.integrations import glance
    try:
        conn = glance.connect(args.os_cloud)
        method = glance.add_another_location(conn, image, location)
    except glance.GlanceError as exc:
        return {"result": f"failed: copied, not registered: {exc}"}
    return {"result": "registered", "method": method}
