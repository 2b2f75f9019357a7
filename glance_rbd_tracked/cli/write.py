"""Write commands: each prints its plan, and acts only with ``--execute``.

What is printed as ``done`` was re-read from the cluster by the library
call that did it; a failure says why and makes the exit code 1.
"""

from __future__ import annotations

import argparse
import datetime
import functools
from typing import Any

from glance_rbd_tracked import chains
from glance_rbd_tracked import cleanup
from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import plans
from glance_rbd_tracked import ports
from glance_rbd_tracked import settings as settings_mod
from glance_rbd_tracked import specs
from glance_rbd_tracked.cli import copy as copy_cmd
from glance_rbd_tracked.cli import register
from glance_rbd_tracked.cli.common import add_execute
from glance_rbd_tracked.cli.common import add_format
from glance_rbd_tracked.cli.common import emit
from glance_rbd_tracked.cli.common import following
from glance_rbd_tracked.cli.common import parse_pairs
from glance_rbd_tracked.cli.common import parse_paths
from glance_rbd_tracked.cli.common import plan_only
from glance_rbd_tracked.cli.common import progress
from glance_rbd_tracked.cli.common import refused
from glance_rbd_tracked.cli.common import report
from glance_rbd_tracked.cli.common import report_failures
from glance_rbd_tracked.cli.common import snapshot_plan

Settings = settings_mod.Settings


def add_commands(sub: Any) -> None:
    snap = sub.add_parser("snapshot", help="snapshot disks as clone chains")
    snap.add_argument("pairs", nargs="+", metavar="POOL/DISK=IMAGE_ID",
                      help="a source disk and the Glance image id to create")
    register.add_arguments(snap)
    snap.add_argument("--paths", default=",".join(chains.PATHS),
                      help="paths to try in order (default: "
                           "chain,copy,stream)")
    add_execute(snap)
    add_format(snap)
    snap.set_defaults(run=snapshot)

    copy_cmd.add_command(sub)

    retire = sub.add_parser("retire", help="destroy disks, or retire them "
                            "while snapshot images depend on them")
    retire.add_argument("disks", nargs="+", metavar="POOL/DISK")
    add_execute(retire)
    add_format(retire)
    retire.set_defaults(run=retire_disks)

    clean = sub.add_parser("cleanup", help="reclaim what nothing needs")
    clean.add_argument("--grace", type=float, default=600.0,
                       help="seconds an operation may be in flight before "
                            "it counts as interrupted (default 600)")
    add_execute(clean)
    add_format(clean)
    clean.set_defaults(run=clean_up)

    flat = sub.add_parser("flatten", help="flatten chain images deeper than "
                          "rbd_tracked_max_clone_depth")
    add_execute(flat)
    add_format(flat)
    flat.set_defaults(run=flatten)


def snapshot(args: argparse.Namespace, ceph: ports.Backend,
             settings: Settings) -> int:
    if args.register:
        return register.snapshot(args, ceph, settings)
    requested = parse_pairs(args.pairs, glance_id_required=True)
    paths = parse_paths(args.paths)
    settings = following(ceph, settings)
    if not args.execute:
        rows = snapshot_plan(ceph, settings.policy, requested, "planned",
                             paths=",".join(paths))
        emit(rows, args.format, ("source", "image_id", "paths", "result"))
        report_failures(rows, "source")
        plan_only(True)
        return 1 if refused(rows) else 0
    requests = [chains.Request(source, str(image_id))  # required above
                for source, image_id in requested]
    results = chains.snapshot(ceph, requests, settings.policy, paths=paths)
    emit([{"source": r.source, "image_id": r.glance_id,
           "location": r.location, "path": r.path, "depth": r.depth,
           "needs_flatten": r.needs_flatten,
           "seconds": round(r.seconds, 3), "fallbacks": list(r.fallbacks)}
          for r in results], args.format,
         ("source", "location", "path", "depth", "seconds"))
    return 0


# what retire can return (a Refuse raises NotOwned once it acts); a disk in
# the RBD trash is decided as the trash's rules say, which may trim it
_DONE = {core.Remove: "removed", core.Retire: "retired", core.Trim: "trimmed",
         core.Keep: "kept"}
_PLANNED = {core.Remove: "remove", core.Retire: "retire", core.Trim: "trim",
            core.Keep: "keep", core.Refuse: "refuse"}
_FAILED = {"failed": "failed", "refuse": "refused"}  # outcome: on stderr


def retire_disks(args: argparse.Namespace, ceph: ports.Backend,
                 settings: Settings) -> int:
    rows, failed = [], 0
    disks = [(spec, *specs.ImageSpec.parse(spec).parts)  # usage
             for spec in args.disks]
    settings = following(ceph, settings)
    for spec, pool, name in disks:
        try:
            if args.execute:
                decision = lifecycle.retire(ceph, pool, name, settings.policy)
                outcome = _DONE[type(decision)]
            else:
                decision = core.decide_retire(ceph.images.state(pool, name),
                                              settings.policy,
                                              lifecycle.utcnow())
                outcome = _PLANNED[type(decision)]
                failed += isinstance(decision, core.Refuse)
            rows.append({"disk": spec, "outcome": outcome,
                         "reason": getattr(decision, "reason", "")})
        except errors.TrackedError as exc:
            failed += 1
            rows.append({"disk": spec, "outcome": "failed", "reason": str(exc)})
    emit(rows, args.format, ("disk", "outcome", "reason"))
    for row in rows:
        if row["outcome"] in _FAILED:
            report(row["disk"], f"{_FAILED[row['outcome']]}: {row['reason']}")
    plan_only(not args.execute)
    return 1 if failed else 0


def clean_up(args: argparse.Namespace, ceph: ports.Backend,
             settings: Settings) -> int:
    policy = following(ceph, settings).policy
    items = cleanup.plan(ceph, policy, lifecycle.utcnow(),
                         datetime.timedelta(seconds=args.grace))
    failures: dict[plans.Item, str] = {}
    if args.execute:
        failures = dict(cleanup.execute(ceph, items, policy,
                                        progress=progress))
    failures.update({i: i.reason for i in items if i.failed})
    rows = [{"kind": i.kind.value, "target": i.target,
             "action": i.action.value, "reason": i.reason,
             "result": ("failed: " + failures[i] if i in failures
                        else ("done" if args.execute and i.actionable
                              else "planned" if i.actionable else "-"))}
            for i in items]
    emit(rows, args.format, ("kind", "target", "action", "result", "reason"))
    report_failures(rows, "target")
    plan_only(not args.execute and any(i.actionable for i in items))
    return 1 if failures else 0


def flatten(args: argparse.Namespace, ceph: ports.Backend,
            settings: Settings) -> int:
    policy = following(ceph, settings).policy
    rows, failed = [], 0
    for item in cleanup.plan_flatten(ceph, policy):
        row = {"image": item.target, "depth": item.depth, "result": "planned"}
        if args.execute:
            try:
                cleanup.flatten(ceph, item, policy, on_progress=functools.partial(
                    progress, what=item.target))
                progress(1, 1, item.target)  # librbd stops short of total
                row["result"] = "flattened"
            except errors.TrackedError as exc:
                failed += 1
                row["result"] = f"failed: {exc}"
        rows.append(row)
    emit(rows, args.format, ("image", "depth", "result"))
    report_failures(rows, "image")
    plan_only(not args.execute and bool(rows))
    return 1 if failed else 0
