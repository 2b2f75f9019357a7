"""What the commands share: targets, snapshot pairs and their plan, output
and progress."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import dataclasses
import json
import sys
from typing import Any
import uuid

from glance_rbd_tracked import chains
from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import locations
from glance_rbd_tracked import ports
from glance_rbd_tracked import settings as settings_mod
from glance_rbd_tracked import specs


class UsageError(Exception):
    """The command line is wrong (exit 2)."""


def add_format(parser: argparse.ArgumentParser,
               *extra: str) -> None:
    parser.add_argument("--format", choices=("table", "json", *extra),
                        default="table", help="output format (default table)")


def add_execute(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--execute", action="store_true",
                        help="act on the plan (without it: print the plan)")


def following(ceph: ports.Backend,
              settings: settings_mod.Settings) -> settings_mod.Settings:
    """``settings`` with the chain policy the cluster keeps (unless the
    configuration overrides it): what glance-api runs with.  Called once
    the command line is known to be right."""
    return dataclasses.replace(settings, policy=settings_mod.Policies(
        settings.local).get(ceph, settings.pool))


def parse_target(target: str, default_pool: str) -> tuple[str | None, str, str]:
    """``(fsid, pool, image)`` from an rbd:// location (decoded as
    glance-api decodes the locations the store publishes), ``pool/image``
    or ``image``."""
    if target.startswith("rbd://"):
        try:
            location = locations.parse(target)
        except errors.Invalid as exc:
            raise UsageError(str(exc)) from None
        return location.fsid, location.pool or default_pool, location.image
    try:
        pool, image = specs.ImageSpec.parse(target, default_pool).parts
    except errors.Invalid:
        raise UsageError(f"{target!r} names no image") from None
    return None, pool, image


def parse_pairs(pairs: Sequence[str],
                glance_id_required: bool) -> list[tuple[str, str | None]]:
    """``(POOL/DISK, Glance id or None)`` of each ``POOL/DISK[=IMAGE_ID]``
    (``IMAGE_ID``: the Glance image's id); every one is checked before
    anything is planned."""
    form = ("POOL/DISK=IMAGE_ID" if glance_id_required
            else "POOL/DISK[=IMAGE_ID]")
    parsed = []
    for pair in pairs:
        source, _, glance_id = pair.partition("=")
        try:
            specs.ImageSpec.parse(source)
        except errors.Invalid:
            raise UsageError(f"{pair!r} is not {form}") from None
        if glance_id_required and not glance_id:
            raise UsageError(f"{pair!r} is not {form}")
        parsed.append((source, glance_id or None))
    return parsed


def parse_paths(spec: str) -> tuple[chains.Path, ...]:
    """The ``--paths`` to try, in order."""
    names = [p for p in spec.split(",") if p]
    if not names or set(names) - set(chains.PATHS):
        raise UsageError(f"--paths takes some of {','.join(chains.PATHS)}")
    return tuple(chains.Path(p) for p in names)


def snapshot_plan(ceph: ports.Backend, policy: core.Policy,
                  requested: list[tuple[str, str | None]], planned: str,
                  **same: str) -> list[dict[str, Any]]:
    """A row per pair, with the columns ``same``: ``planned``, or
    ``refused: <why>``; reads only.  A pair without a Glance id (Glance
    will choose it) is checked with a fresh one.  The ``image_id`` column
    is the Glance id (a stable key of the JSON output)."""
    rows = []
    for source, glance_id in requested:
        request = chains.Request(source, glance_id or str(uuid.uuid4()))
        why = chains.refusal(ceph, request, policy)
        rows.append({"source": source, "image_id": glance_id or "(new)",
                     **same,
                     "result": f"refused: {why}" if why else planned})
    return rows


def refused(rows: list[dict[str, Any]]) -> bool:
    return any(r["result"].startswith("refused") for r in rows)


def emit(rows: list[dict[str, Any]], fmt: str, columns: Sequence[str]) -> None:
    """Rows as JSON (every key) or as a table of ``columns``."""
    if fmt == "json":
        print(json.dumps(rows, indent=2, sort_keys=True))
        return
    widths = [max([len(c)] + [len(str(r[c])) for r in rows]) for c in columns]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row[c]).ljust(w)
                        for c, w in zip(columns, widths, strict=True)))


def report(what: str, why: str) -> None:
    """Why ``what`` failed or is refused, as one line on stderr: the rows
    on stdout are data, this is what a person (or cron's mail) reads."""
    print(f"glance-rbd-tracked: {what}: {' '.join(why.split())}",
          file=sys.stderr)


def report_failures(rows: list[dict[str, Any]], key: str) -> None:
    """:func:`report` every row whose ``result`` is ``failed: ...`` or
    ``refused: ...``, named by its ``key`` column."""
    for row in rows:
        if str(row["result"]).startswith(("failed", "refused")):
            report(str(row[key]), str(row["result"]))


def plan_only(acts: bool) -> None:
    if acts:
        print("(plan only: run with --execute to act)", file=sys.stderr)


def progress(done: int, total: int, what: str) -> None:
    """A progress bar on stderr; the line ends when done reaches total."""
    width, total = 30, max(total, 1)
    filled = width * done // total
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] "
          f"{100 * done // total:3d}% {what}",
          end="\n" if done >= total else "", file=sys.stderr, flush=True)
