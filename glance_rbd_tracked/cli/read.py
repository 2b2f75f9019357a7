"""Read commands: they change nothing, except ``doctor --execute``, which
sets the pool options it found missing and the chain policy kept in the
cluster."""

from __future__ import annotations

import argparse
import dataclasses
import json
import socket
from typing import Any

from glance_rbd_tracked import ceph as ceph_mod
from glance_rbd_tracked import core
from glance_rbd_tracked import delta
from glance_rbd_tracked import doctor
from glance_rbd_tracked import errors
from glance_rbd_tracked import lineage
from glance_rbd_tracked import policy as policy_mod
from glance_rbd_tracked import ports
from glance_rbd_tracked import schema
from glance_rbd_tracked import settings as settings_mod
from glance_rbd_tracked.cli.common import add_execute
from glance_rbd_tracked.cli.common import add_format
from glance_rbd_tracked.cli.common import emit
from glance_rbd_tracked.cli.common import following
from glance_rbd_tracked.cli.common import parse_target
from glance_rbd_tracked.cli.common import plan_only
from glance_rbd_tracked.cli.common import report


def add_commands(sub: Any) -> None:
    show = sub.add_parser("show", help="an image, its records and lineage")
    show.add_argument("target", help="an rbd:// location, POOL/IMAGE, or "
                                     "IMAGE in the store's pool")
    show.add_argument("--across", action="append", default=[],
                      metavar="BACKEND",
                      help="also the image of the same name in this "
                           "rbd_tracked backend (another cluster, an edge "
                           "site), and whether it is a copy of this one "
                           "(repeatable)")
    add_format(show, "dot")
    show.set_defaults(run=show_image)

    check = sub.add_parser(
        "doctor", help="check the cluster and pool settings the store "
        "needs (--execute sets the pool options it can)")
    add_execute(check)
    add_format(check)
    check.set_defaults(run=run_doctor)


def run_doctor(args: argparse.Namespace, ceph: ports.Backend,
               settings: settings_mod.Settings) -> int:
    """Exit 0 when everything is as the store needs it, 1 otherwise."""
    def evaluate() -> tuple[list[doctor.Finding], core.Policy]:
        chain = policy_facts(ceph, settings)
        wanted = chain.wanted
        pools = tuple(sorted(wanted.chain_pools))
        return (doctor.evaluate(ceph.setup.facts(wanted.pool, pools))
                + doctor.evaluate_policy(chain)), wanted

    findings, wanted = evaluate()
    results = {}
    if args.execute:
        for f in findings:
            if f.status is doctor.Status.FIX and f.settable:
                try:
                    _SETTERS[f.check](ceph, f, wanted)
                    results[f] = "set"
                except errors.TrackedError as exc:
                    results[f] = f"failed: {exc}"
        if results:  # what the cluster says now
            findings, _ = evaluate()
    rows = [{"check": f.check, "subject": f.subject, "status": f.status,
             "detail": f.detail, "fix": f.fix} for f in findings]
    emit(rows, args.format, ("subject", "check", "status", "detail"))
    to_fix = [f for f in findings if f.status is doctor.Status.FIX]
    if args.format != "json":
        for f in to_fix:
            print(f"fix {f.subject}: {f.fix}")
    plan_only(not args.execute and any(f.settable for f in to_fix))
    for f, outcome in results.items():
        if outcome != "set":
            report(f"{f.check} on {f.subject}", outcome)
    return 1 if to_fix else 0


def policy_facts(ceph: ports.Backend,
                 settings: settings_mod.Settings) -> doctor.PolicyFacts:
    """The chain policy kept in the store's pool, glance-api's, and every
    service's view of it, as read."""
    pool, error = settings.pool, ""
    try:
        cluster = settings_mod.cluster_policy(ceph.setup, pool)
    except errors.TrackedError as exc:
        cluster, error = None, str(exc)
    views = []
    for key, value in sorted(ceph.setup.pool_metadata_with(
            pool, policy_mod.VIEW_KEY_PREFIX).items()):
        try:
            view, seen = policy_mod.load_view(key, value)
        except errors.CorruptMetadata as exc:
            views.append(doctor.ServiceView(key, error=str(exc)))
            continue
        views.append(doctor.ServiceView(
            key, view.service, view.host, view.source, view.since,
            dataclasses.replace(seen, pool=pool)))
    return doctor.PolicyFacts(
        store_pool=pool, cluster=cluster, cluster_error=error,
        wanted=policy_mod.wanted(pool, settings.local, cluster),
        views=tuple(views), refresh=settings_mod.Policies.REFRESH)


def _set_policy(ceph: ports.Backend, finding: doctor.Finding,
                wanted: core.Policy) -> None:
    record = policy_mod.to_record(wanted, settings_mod.utcnow(),
                                  socket.gethostname())
    ceph.setup.set_pool_metadata(wanted.pool, policy_mod.POLICY_KEY,
                                 policy_mod.dump(record))


def _set_pool_option(ceph: ports.Backend, finding: doctor.Finding,
                     wanted: core.Policy) -> None:
    ceph.setup.set_pool_option(finding.subject, finding.check, "true")


#: what doctor --execute does for each settable check
_SETTERS = {doctor.POLICY_CHECK: _set_policy,
            doctor.PARENT_TO_TRASH: _set_pool_option}


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
        "trash": None if state.trash is None else {
            "source": state.trash.source,
            "since": schema.timestamp(state.trash.deleted),
            "deferred_until": schema.timestamp(state.trash.deferred_until)},
        "removing": state.removing,
        "snapshots": [{"name": s.name, "namespace": s.namespace,
                       "original_name": s.original or s.name,
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
    if view["trash"]:
        trash = view["trash"]
        lines.append(f"trash      {trash['source']} since {trash['since']}, "
                     f"kept at least until {trash['deferred_until']}")
    if view["removing"]:
        lines.append("removing   its removal did not finish")
    if view["inherited_records"]:
        lines.append("inherited  " + ", ".join(view["inherited_records"])
                     + " (ignored)")
    for snap in view["snapshots"]:
        flags = [snap["namespace"]] + (["protected"] if snap["protected"]
                                       else [])
        if snap["original_name"] != snap["name"]:
            flags.append(f"was {snap['original_name']}")
        lines.append(f"snapshot   {snap['name']} [{', '.join(flags)}] "
                     f"{len(snap['children'])} clone(s)")
        lines.extend(f"  clone    {child}" for child in snap["children"])
    for why in view["blocked_by"]:
        lines.append(f"kept by    {why}")
    return "\n".join(lines)


def show_image(args: argparse.Namespace, ceph: ports.Backend,
               settings: settings_mod.Settings) -> int:
    fsid, pool, image = parse_target(args.target, settings.pool)
    policy = following(ceph, settings).policy
    refusal = core.check_cluster(fsid, ceph.fsid())
    if refusal is not None:
        raise errors.NotOwned(f"{args.target}: {refusal.reason}")
    view = describe(ceph.images.state(pool, image), policy)
    tree = lineage.walk(ceph.images, pool, image, policy)
    across = {backend: _across(args, ceph, pool, image, backend)
              for backend in args.across}
    if args.format == "json":
        view["lineage"] = json.loads(lineage.to_json(tree))
        view["across"] = {b: {"fsid": fsid, "copy": verdict,
                              "lineage": json.loads(lineage.to_json(t))}
                          for b, (fsid, verdict, t) in across.items()}
        print(json.dumps(view, indent=2, sort_keys=True))
    elif args.format == "dot":
        print(lineage.to_dot(tree + [n for _, _, t in across.values()
                                     for n in t]))
    else:
        print(_table(view))
        print("\nlineage:")
        print(lineage.to_text(tree))
        for backend, (fsid, verdict, other) in across.items():
            print(f"\nin backend {backend} (cluster {fsid}): {verdict}")
            if other:
                print(lineage.to_text(other))
    return 0


def _across(args: argparse.Namespace, ceph: ports.Backend, pool: str,
            image: str, backend: str
            ) -> tuple[str, str, list[lineage.Node]]:
    """The image of the same name in another backend's cluster: its fsid,
    whether it is a faithful copy of this one (and why not), its
    lineage there."""
    there = settings_mod.load(args.config_file, args.config_dir, backend)
    other = ceph_mod.connect(there.ceph_conf, there.user,
                             timeout=there.timeout,
                             connect_timeout=there.connect_timeout)
    try:
        fsid = other.fsid()
        try:
            state = other.images.state(there.pool, image)
        except errors.NotFound:
            return fsid, "not there", []
        source = ceph.deltas.lineage(pool, image, core.STOCK_SNAPSHOT)[0]
        refusal = delta.check_base(source.identity, state)
        verdict = ("a copy of this image" if refusal is None
                   else f"not a copy of this image: {refusal.reason}")
        return fsid, verdict, lineage.walk(other.images, there.pool, image,
                                           following(other, there).policy)
    finally:
        other.close()
