"""``glance-rbd-tracked``: the operator's command line.

Data goes to stdout, logs to stderr.  Exit codes: 0 done, 1 failure or
partial failure, 2 usage error.  Errors become exit codes in :func:`main`
alone; the traceback goes to the log (``--debug``), the user gets a sentence.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from typing import Any, Sequence

from glance_rbd_tracked import __version__
from glance_rbd_tracked import core
from glance_rbd_tracked import errors

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
    parser.add_argument("--debug", action="store_true",
                        help="log details and tracebacks to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="what the store knows about an image")
    show.add_argument("target", help="an rbd:// location or pool/image")
    show.add_argument("--format", choices=("table", "json"), default="table")
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


def _cmd_show(args: argparse.Namespace, cluster: Any) -> int:
    fsid, pool, image = parse_target(args.target, args.pool)
    if fsid is not None and fsid != cluster.fsid():
        raise errors.NotOwned(f"{args.target} is in cluster {fsid}, not in "
                              f"{cluster.fsid()}")
    view = describe(cluster.state(pool, image), core.Policy(pool=args.pool))
    if args.format == "json":
        print(json.dumps(view, indent=2, sort_keys=True))
    else:
        print(_table(view))
    return 0


def main(argv: Sequence[str] | None = None, cluster: Any = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if cluster is None:
            from glance_rbd_tracked import cluster as cluster_mod
            cluster = cluster_mod.Cluster(args.ceph_conf, args.user)
        return _cmd_show(args, cluster)
    except errors.TrackedError as exc:
        LOG.debug("command failed", exc_info=True)
        print(f"glance-rbd-tracked: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
