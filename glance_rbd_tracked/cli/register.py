"""``snapshot --register``: a disk or volume becomes a Glance image in one
command, as Nova does it: create the queued image through the Glance API,
make the chain, register its location.  The Glance side is
:mod:`glance_rbd_tracked.integrations.glance` (openstacksdk).

A chain whose location Glance does not take is removed again, with its
image; the line says ``failed`` and why.  ``registered`` is printed only
after Glance, asked again, shows the image with its location's status.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from typing import Any

from glance_rbd_tracked import chains
from glance_rbd_tracked import errors
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import ports
from glance_rbd_tracked import settings as settings_mod
from glance_rbd_tracked.cli.common import emit
from glance_rbd_tracked.cli.common import following
from glance_rbd_tracked.cli.common import parse_pairs
from glance_rbd_tracked.cli.common import parse_paths
from glance_rbd_tracked.cli.common import plan_only
from glance_rbd_tracked.cli.common import refused
from glance_rbd_tracked.cli.common import report_failures
from glance_rbd_tracked.cli.common import snapshot_plan
from glance_rbd_tracked.integrations import glance

LOG = logging.getLogger(__name__)
COLUMNS = ("source", "image_id", "location", "result")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Glance", "with --register, =IMAGE_ID may be left out (Glance "
        "chooses the id)")
    group.add_argument("--register", action="store_true",
                       help="create each image and register its location "
                            "through the Glance API (openstacksdk; needs "
                            "the service role)")
    group.add_argument("--name", help="the images' name (default: "
                                      "'snapshot of POOL/DISK')")
    group.add_argument("--os-cloud", metavar="CLOUD",
                       default=os.environ.get("OS_CLOUD"),
                       help="a cloud of clouds.yaml (default: $OS_CLOUD, "
                            "else the OS_* variables)")


def snapshot(args: argparse.Namespace, ceph: ports.Backend,
             settings: settings_mod.Settings) -> int:
    pairs = parse_pairs(args.pairs, glance_id_required=False)
    paths = parse_paths(args.paths)
    settings = following(ceph, settings)
    if not args.execute:
        rows = snapshot_plan(ceph, settings.policy, pairs,
                             "planned: create, chain, register", location="-")
        emit(rows, args.format, COLUMNS)
        report_failures(rows, "source")
        plan_only(True)
        return 1 if refused(rows) else 0
    conn = glance.connect(args.os_cloud, timeout=settings.timeout)
    made = _create_and_chain(conn, ceph, settings, pairs, paths,
                             args.name)
    rows, failed = [], 0
    for result in made:
        row: dict[str, Any] = {"source": result.source,
                               "image_id": result.glance_id,
                               "location": result.location,
                               "path": result.path,
                               "seconds": round(result.seconds, 3),
                               "method": None, "status": None}
        try:
            row["method"] = glance.add_location(conn, result.glance_id,
                                                result.location)
            row["status"] = glance.image_status(conn, result.glance_id)
            row["result"] = f"registered ({row['status']})"
        except errors.TrackedError as exc:
            failed += 1
            row["result"] = f"failed: {exc}"
            _undo(conn, ceph, settings, result.glance_id)
        rows.append(row)
    emit(rows, args.format, COLUMNS)
    report_failures(rows, "source")
    return 1 if failed else 0


def _create_and_chain(conn: Any, ceph: ports.Backend,
                      settings: settings_mod.Settings,
                      pairs: list[tuple[str, str | None]],
                      paths: tuple[chains.Path, ...],
                      name: str | None) -> list[chains.Result]:
    """Create the queued images, then all chains at once; on failure
    delete the images made so far (chains.snapshot removes its own)."""
    created: list[str] = []
    try:
        for source, image_id in pairs:
            created.append(glance.create_image(
                conn, name or f"snapshot of {source}", image_id))
        return chains.snapshot(
            ceph, [chains.Request(source, image_id) for (source, _), image_id
                   in zip(pairs, created, strict=True)],
            settings.policy, paths=paths)
    except BaseException:
        for image_id in created:
            with contextlib.suppress(errors.TrackedError):
                glance.delete_image(conn, image_id)
        raise


def _undo(conn: Any, ceph: ports.Backend, settings: settings_mod.Settings,
          image_id: str) -> None:
    """Remove a chain Glance did not take, and its queued image."""
    try:
        lifecycle.delete(ceph, settings.pool, image_id, settings.policy)
    except errors.TrackedError as exc:
        LOG.warning("the chain of %s stays (%s); glance-rbd-tracked cleanup",
                    image_id, exc)
    with contextlib.suppress(errors.TrackedError):
        glance.delete_image(conn, image_id)
