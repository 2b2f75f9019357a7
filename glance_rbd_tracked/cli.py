"""``glance-rbd-tracked``: the operator's command line.

Data goes to stdout, logs to stderr.  Exit codes: 0 done, 1 failure or
partial failure, 2 usage error.  Errors become exit codes in :func:`main`
alone; the traceback goes to the log (``--debug``), the user gets a sentence.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import sys
from typing import Any, Sequence

from glance_rbd_tracked import __version__
from glance_rbd_tracked import chains
from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import lineage
from glance_rbd_tracked import schema

LOG = logging.getLogger("glance_rbd_tracked.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glance-rbd-tracked",
        description="Inspect and maintain images of the rbd_tracked store.")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {__version__}")
    parser.add_argument("--ceph-conf", default=None,
                        help="ceph.conf to use (default: librados' search, "
                             "or $CEPH_CONF)")
    parser.add_argument("--user", default=None, help="cephx user (id)")
    parser.add_argument("--pool", default="images",
                        help="the store's pool (default: images)")
    parser.add_argument("--chain-pools", default="vms,volumes",
                        help="pools of disks and volumes the store may "
                             "snapshot and retire (default: vms,volumes)")
    parser.add_argument("--max-clone-depth", type=int, default=5,
                        help="chains deeper than this need flattening")
    parser.add_argument("--debug", action="store_true",
                        help="log details and tracebacks to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    show = sub.add_parser("show", help="an image, its records and lineage")
    show.add_argument("target", help="an rbd:// location or pool/image")
    show.add_argument("--format", choices=("table", "json", "dot"),
                      default="table")

    snap = sub.add_parser("snapshot", help="snapshot disks as clone chains")
    snap.add_argument("pairs", nargs="+", metavar="POOL/DISK=IMAGE_ID",
                      help="a source disk and the Glance image id to create")
    snap.add_argument("--paths", default=",".join(chains.PATHS),
                      help="paths to try in order (default: "
                           "chain,copy,stream)")
    snap.add_argument("--format", choices=("table", "json"), default="table")

    retire = sub.add_parser("retire", help="destroy disks, or retire them "
                            "while snapshot images depend on them")
    retire.add_argument("disks", nargs="+", metavar="POOL/DISK")
    retire.add_argument("--format", choices=("table", "json"),
                        default="table")

    cleanup = sub.add_parser("cleanup", help="reclaim what nothing needs "
                             "(shows the plan unless --execute)")
    cleanup.add_argument("--execute", action="store_true",
                         help="act on the plan")
    cleanup.add_argument("--grace", type=float, default=600.0,
                         help="seconds an operation may be in flight before "
                              "it counts as interrupted (default 600)")
    cleanup.add_argument("--format", choices=("table", "json"),
                         default="table")

    flatten = sub.add_parser("flatten", help="flatten chain images deeper "
                             "than --max-clone-depth (plan unless --execute)")
    flatten.add_argument("--execute", action="store_true")
    flatten.add_argument("--format", choices=("table", "json"),
                         default="table")
    return parser


def parse_target(target: str, default_pool: str) -> tuple[str | None, str, str]:
    """``(fsid, pool, image)`` from an rbd:// location, pool/image or image."""
    if target.startswith("rbd://"):
        parts = target[len("rbd://"):].split("/")
        if len(parts) == 4 and all(parts):
            return parts[0], parts[1], parts[2]
        if len(parts) == 1 and parts[0]:
            return None, default_pool, parts[0]
        raise errors.NotOwned(f"{target!r} is not an rbd:// location of the "
                              "form rbd://fsid/pool/image/snapshot")
    pool, _, image = target.rpartition("/")
    if not image:
        raise errors.NotOwned(f"{target!r} names no image")
    return None, pool or default_pool, image


def describe(state: core.ImageState, policy: core.Policy) -> dict[str, Any]:
    """A JSON-ready view of one image with stable keys."""
    owned = core.owned_snapshots(state, policy)
    records = state.records
    return {
        "pool": state.pool,
        "image": state.name,
        "id": state.image_id,
        "owned": owned is not None,
        "owner": dataclasses.asdict(records.owner) if records.owner else None,
        "retired": (dataclasses.asdict(records.retired)
                    if records.retired else None),
        "inherited_records": list(records.inherited),
        "snapshots": [{"name": s.name, "namespace": s.namespace,
                       "protected": s.protected, "children": list(s.children)}
                      for s in state.snaps],
        "blocked_by": core.dependants(state, owned or frozenset()),
    }


def _table(view: dict[str, Any]) -> str:
    lines = [f"image      {view['pool']}/{view['image']} (id {view['id']})",
             f"owned      {'yes' if view['owned'] else 'no'}"]
    if view["owner"]:
        owner = view["owner"]
        lines.append(f"owner      {owner['kind']} since {owner['created']}")
    if view["retired"]:
        retired = view["retired"]
        lines.append(f"retired    since {retired['since']} (was "
                     f"{retired['original_name']}): {retired['reason']}")
    if view["inherited_records"]:
        lines.append("inherited  " + ", ".join(view["inherited_records"])
                     + " (ignored)")
    for snap in view["snapshots"]:
        flags = [snap["namespace"]] + (["protected"] if snap["protected"]
                                       else [])
        lines.append(f"snapshot   {snap['name']} [{', '.join(flags)}] "
                     f"{len(snap['children'])} clone(s)")
        lines.extend(f"  clone    {child}" for child in snap["children"])
    for why in view["blocked_by"]:
        lines.append(f"kept by    {why}")
    return "\n".join(lines)


def _policy(args: argparse.Namespace) -> core.Policy:
    pools = frozenset(p for p in args.chain_pools.split(",") if p)
    return core.Policy(pool=args.pool, chain_pools=pools,
                       max_clone_depth=args.max_clone_depth)


def _emit(rows: list[dict[str, Any]], fmt: str, columns: Sequence[str]) -> None:
    if fmt == "json":
        print(json.dumps(rows, indent=2, sort_keys=True))
        return
    widths = [max([len(c)] + [len(str(r[c])) for r in rows]) for c in columns]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)))
    for row in rows:
        print("  ".join(str(row[c]).ljust(w) for c, w in zip(columns, widths)))


def _progress(done: int, total: int, what: str) -> None:
    """A progress bar on stderr; the line ends when done reaches total."""
    width, total = 30, max(total, 1)
    filled = width * done // total
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] "
          f"{100 * done // total:3d}% {what}",
          end="\n" if done >= total else "", file=sys.stderr, flush=True)


def _cmd_show(args: argparse.Namespace, cluster: Any) -> int:
    fsid, pool, image = parse_target(args.target, args.pool)
    if fsid is not None and fsid != cluster.fsid():
        raise errors.NotOwned(f"{args.target} is in cluster {fsid}, not in "
                              f"{cluster.fsid()}")
    policy = _policy(args)
    view = describe(cluster.state(pool, image), policy)
    tree = lineage.walk(cluster, pool, image, policy)
    if args.format == "json":
        view["lineage"] = json.loads(lineage.to_json(tree))
        print(json.dumps(view, indent=2, sort_keys=True))
    elif args.format == "dot":
        print(lineage.to_dot(tree))
    else:
        print(_table(view))
        print("\nlineage:")
        print(lineage.to_text(tree))
    return 0


def _cmd_snapshot(args: argparse.Namespace, cluster: Any) -> int:
    requests = []
    for pair in args.pairs:
        source, sep, image_id = pair.partition("=")
        if not sep or not image_id:
            raise UsageError(f"{pair!r} is not POOL/DISK=IMAGE_ID")
        requests.append(chains.Request(source, image_id))
    paths = tuple(p for p in args.paths.split(",") if p)
    if not paths or set(paths) - set(chains.PATHS):
        raise UsageError(f"--paths takes some of {','.join(chains.PATHS)}")
    results = chains.snapshot(cluster, requests, _policy(args), paths=paths)
    _emit([{"source": r.source, "image_id": r.image_id,
            "location": r.location, "path": r.path, "depth": r.depth,
            "needs_flatten": r.needs_flatten,
            "seconds": round(r.seconds, 3), "fallbacks": list(r.fallbacks)}
           for r in results], args.format,
          ("source", "location", "path", "depth", "seconds"))
    return 0


def _cmd_retire(args: argparse.Namespace, cluster: Any) -> int:
    rows, failed = [], 0
    for spec in args.disks:
        pool, name = chains.split(spec)
        try:
            decision = lifecycle.retire(cluster, pool, name, _policy(args))
            outcome = {core.Remove: "removed", core.Retire: "retired"}.get(
                type(decision), "kept")
            rows.append({"disk": spec, "outcome": outcome,
                         "reason": getattr(decision, "reason", "")})
        except errors.TrackedError as exc:
            failed += 1
            rows.append({"disk": spec, "outcome": "failed", "reason": str(exc)})
    _emit(rows, args.format, ("disk", "outcome", "reason"))
    return 1 if failed else 0


def _cmd_cleanup(args: argparse.Namespace, cluster: Any) -> int:
    policy = _policy(args)
    now = lifecycle.utcnow()
    items = chains.plan(cluster, policy, now,
                        datetime.timedelta(seconds=args.grace))
    failures: dict[chains.Item, str] = {}
    if args.execute:
        failures = dict(chains.execute(
            cluster, items, policy,
            progress=lambda done, total, item: _progress(done, total,
                                                         item.target)))
    rows = [{"kind": i.kind, "target": i.target, "action": i.action,
             "reason": i.reason,
             "result": ("failed: " + failures[i] if i in failures
                        else ("done" if args.execute and i.actionable
                              else "planned" if i.actionable else "-"))}
            for i in items]
    _emit(rows, args.format, ("kind", "target", "action", "result", "reason"))
    if not args.execute and any(i.actionable for i in items):
        print("(plan only: run with --execute to act)", file=sys.stderr)
    return 1 if failures else 0


def _cmd_flatten(args: argparse.Namespace, cluster: Any) -> int:
    policy = _policy(args)
    _, links = schema.load_journal(cluster.journal(policy.pool))
    rows, failed = [], 0
    for link in links:
        pool, name = chains.split(link.target)
        try:
            depth = cluster.depth(pool, name)
        except errors.NotFound:
            continue
        if depth <= policy.max_clone_depth:
            continue
        row = {"image": link.target, "depth": depth, "result": "planned"}
        if args.execute:
            try:
                cluster.flatten(pool, name, on_progress=lambda d, t: _progress(
                    d, t, link.target))
                _progress(1, 1, link.target)  # librbd stops short of total
                row["result"] = "flattened"
                lifecycle.release(cluster, link.source, policy)
                cluster.journal_update(policy.pool, remove=[link.key])
            except errors.TrackedError as exc:
                failed += 1
                row["result"] = f"failed: {exc}"
        rows.append(row)
    _emit(rows, args.format, ("image", "depth", "result"))
    return 1 if failed else 0


class UsageError(Exception):
    pass


COMMANDS = {"show": _cmd_show, "snapshot": _cmd_snapshot,
            "retire": _cmd_retire, "cleanup": _cmd_cleanup,
            "flatten": _cmd_flatten}


def main(argv: Sequence[str] | None = None, cluster: Any = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    owned = cluster is None
    try:
        if owned:
            from glance_rbd_tracked import cluster as cluster_mod
            cluster = cluster_mod.Cluster(args.ceph_conf, args.user)
        return COMMANDS[args.command](args, cluster)
    except UsageError as exc:
        print(f"glance-rbd-tracked: {exc}", file=sys.stderr)
        return 2
    except errors.TrackedError as exc:
        LOG.debug("command failed", exc_info=True)
        print(f"glance-rbd-tracked: {exc}", file=sys.stderr)
        return 1
    finally:
        # A librados client left to the interpreter's exit crashes it now
        # and then (its threads outlive the objects they use).
        if owned and cluster is not None:
            cluster.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
