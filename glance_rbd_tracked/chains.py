"""Instance snapshots as clone chains, and their roll-back.

A chain for one disk is (1) a snapshot of the disk, (2) a clone of (1) in the
store's pool named by the Glance image id, (3) the snapshot ``snap`` of (2),
whose location Glance publishes.  Every step is journalled first (an
``Intent`` in the store's journal object), so that killing the process at any
step leaves a state that :func:`rollback` (run by ``glance-rbd-tracked
cleanup --execute``) undoes.  When a chain cannot be made, the same intent
covers an in-cluster copy, then a copy streamed through this host.
"""

from __future__ import annotations

from collections.abc import Iterable
import concurrent.futures
import contextlib
import dataclasses
import enum
import functools
import logging
import time

from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import lineage
from glance_rbd_tracked import locations
from glance_rbd_tracked import ports
from glance_rbd_tracked import schema
from glance_rbd_tracked import specs

LOG = logging.getLogger(__name__)


class Path(enum.StrEnum):
    """How a snapshot image is made, in the order they are tried."""

    CHAIN = "chain"    # a clone: nothing copied
    COPY = "copy"      # a copy inside the cluster
    STREAM = "stream"  # a copy through this host (the source is elsewhere)


PATHS = tuple(Path)
#: The points between the steps of a chain snapshot (``on_step`` names).
STEPS = ("intent", "record", "snapshot", "chain", "seal", "hop", "done")


@dataclasses.dataclass(frozen=True)
class Request:
    """Snapshot disk ``source`` (``pool/image``) as the Glance image of id
    ``glance_id`` (which names the chain's clone; the records' ``image_id``
    fields hold RBD ids)."""

    source: str
    glance_id: str


@dataclasses.dataclass(frozen=True)
class Result:
    source: str
    glance_id: str
    location: str
    path: Path
    depth: int
    needs_flatten: bool
    seconds: float
    fallbacks: tuple[str, ...] = ()


def snapshot(ceph: ports.Backend, requests: Iterable[Request],
             policy: core.Policy, *, now: lifecycle.Clock = lifecycle.utcnow,
             on_step: lifecycle.Step = lifecycle.no_step,
             paths: Iterable[str] = PATHS,
             source: ports.Backend | None = None) -> list[Result]:
    """Make one chain per request, all at once: the monitor commits
    concurrent snapshot creations together.  All or nothing: when one
    fails, the chains the others made (not published yet) are removed and
    the first error is raised.

    ``source`` holds the disks when they are not in the store's cluster;
    then neither a clone nor an in-cluster copy can be made, and the data
    streams through this host from a snapshot of the source.
    """
    requests = list(requests)
    order = tuple(Path(p) for p in paths)
    if not requests:
        return []
    with concurrent.futures.ThreadPoolExecutor(len(requests)) as workers:
        futures = [workers.submit(_build, ceph, r, policy, now, on_step,
                                  order, source or ceph)
                   for r in requests]
        concurrent.futures.wait(futures)
    failed = [f.exception() for f in futures if f.exception() is not None]
    if not failed:
        return [f.result() for f in futures]
    for future in futures:
        if future.exception() is None:
            made = future.result()
            LOG.warning("removing %s: another disk of the same call failed",
                        made.location)
            lifecycle.delete(ceph, policy.pool, made.glance_id, policy)
    raise failed[0]  # type: ignore[misc]


def refusal(ceph: ports.Backend, request: Request,
            policy: core.Policy) -> str | None:
    """Why :func:`snapshot` would refuse ``request`` before acting, or
    None; reads, changes nothing."""
    try:
        state = _source(ceph, request, policy)
        _check_free(ceph, state, core.chain_snapshot_name(request.glance_id),
                    _target(policy, request), policy)
    except errors.TrackedError as exc:
        return str(exc)
    return None


def _source(src: ports.Backend, request: Request,
            policy: core.Policy) -> core.ImageState:
    """The state of the disk to snapshot; NotOwned when the store may not
    make a chain of it."""
    source = specs.ImageSpec.parse(request.source)
    refused = core.check_chain_pool(source.pool_spec, policy)
    if refused is None:
        state = src.images.state(source.pool_spec, source.name)
        refused = core.check_chain_source(state, policy)
    if refused is not None:
        raise errors.NotOwned(f"cannot snapshot {request.source}: "
                              f"{refused.reason}")
    return state


def _target(policy: core.Policy, request: Request) -> specs.ImageSpec:
    """Where the chain's clone (2) goes: the Glance id in the store's
    pool."""
    return specs.ImageSpec.in_pool(policy.pool, request.glance_id)


def _build(ceph: ports.Backend, request: Request, policy: core.Policy,
           now: lifecycle.Clock, step: lifecycle.Step,
           paths: tuple[Path, ...], src: ports.Backend) -> Result:
    began = time.monotonic()
    state = _source(src, request, policy)
    spool, sname = state.pool, state.name
    foreign = src is not ceph and src.fsid() != ceph.fsid()
    stamp = schema.timestamp(now())
    snap = core.chain_snapshot_name(request.glance_id)
    target = _target(policy, request)
    source_image = specs.ImageSpec.in_pool(spool, sname)
    source_snap = str(source_image.at(snap))
    # a source in another cluster is named with its fsid, so that nothing
    # here ever mistakes it for a same-named image of the store's cluster
    source = (specs.in_cluster(src.fsid(), source_image) if foreign
              else str(source_image))
    intent = schema.Intent(op=schema.Op.CHAIN, target=str(target),
                           source=source, snapshot=snap, started=stamp)
    _check_free(ceph, state, snap, target, policy)
    step("intent")
    ceph.journal.update(policy.pool, put={intent.key: schema.to_json(intent)})
    try:
        step("record")
        src.changes.set_records(spool, sname, state.image_id, [
            schema.SnapRecord(image_id=state.image_id, snapshot=snap,
                              clone=str(target), created=stamp)])
        step("snapshot")
        src.changes.snapshot(spool, sname, state.image_id, snap)
        path, fallbacks, clone_format = _make_target(
            ceph, src if foreign else None, source_snap,
            policy, request.glance_id, now, step, paths)
        if path is Path.CHAIN and core.moves_to_trash(clone_format):
            step("hop")
            _trash_source_snapshot(ceph, state, snap)
    except errors.AlreadyExists:
        # Somebody else made the target meanwhile: it is not ours to remove.
        LOG.warning("snapshot of %s failed; rolling back", request.source)
        rollback(ceph, intent, policy, include_target=False, source=src)
        raise
    except BaseException as exc:
        if errors.timed_out(exc):
            # rolling back now would wait the timeout out again at each
            # step: the intent stays, and cleanup rolls it back
            LOG.warning("snapshot of %s failed; the cluster did not answer, "
                        "cleanup rolls it back", request.source)
            raise
        LOG.warning("snapshot of %s failed; rolling back", request.source)
        rollback(ceph, intent, policy, source=src)
        raise
    step("done")
    if path is Path.CHAIN:
        link = schema.ChainLink(target=str(target), source=source_snap,
                                created=stamp)
        ceph.journal.update(policy.pool, put={link.key: schema.to_json(link)},
                            remove=[intent.key])
    else:  # a copy does not need the source snapshot any more
        ceph.journal.update(policy.pool, remove=[intent.key])
        _release_source(src, source_snap, policy, foreign)
    depth = lineage.depth(ceph.images, policy.pool, request.glance_id)
    location = locations.format(ceph.fsid(), policy.pool, request.glance_id,
                                core.STOCK_SNAPSHOT)
    LOG.info("snapshot of %s is %s (%s)", request.source, location, path)
    return Result(source=request.source, glance_id=request.glance_id,
                  location=location, path=path, depth=depth,
                  needs_flatten=depth > policy.max_clone_depth,
                  seconds=time.monotonic() - began, fallbacks=fallbacks)


def _check_free(ceph: ports.Backend, source: core.ImageState, snap: str,
                target: specs.ImageSpec, policy: core.Policy) -> None:
    """Refuse before acting when the names a chain would take are taken:
    a roll-back may then remove whatever it finds under them."""
    if source.snap(snap) is not None or source.records.snap(snap) is not None:
        raise errors.AlreadyExists(f"{source.spec} already has the chain "
                                   f"snapshot {snap}")
    if schema.intent_key(schema.Op.CHAIN, str(target)) in \
            ceph.journal.entries(policy.pool):
        raise errors.AlreadyExists(f"a snapshot into {target} is in flight")
    try:
        ceph.images.state(target.pool_spec, target.name)
    except errors.NotFound:
        return
    raise errors.AlreadyExists(f"{target} exists already")


def _release_source(src: ports.Backend, source_snap: str,
                    policy: core.Policy, foreign: bool) -> None:
    """Drop the source snapshot a copy no longer needs."""
    if not foreign:
        lifecycle.release(src, source_snap, policy)
        return
    # the other cluster has no journal of ours: remove just our snapshot
    spec = specs.SnapSpec.parse(source_snap)
    lifecycle.settle(src, spec.pool_spec, spec.name,
                     functools.partial(core.decide_drop_snapshot,
                                       snapshot=spec.snapshot))


def _trash_source_snapshot(ceph: ports.Backend, source: core.ImageState,
                           snap: str) -> None:
    """Move the chain's source snapshot to the trash namespace; the chain
    works without it, so a failure is only logged."""
    try:
        ceph.changes.trash_snapshot(source.pool, source.name,
                                    source.image_id, snap)
    except errors.TrackedError as exc:
        LOG.warning("%s@%s stays a user snapshot (%s): stock Nova and Cinder "
                    "cannot remove %s while the chain needs it", source.spec,
                    snap, exc, source.spec)


def _make_target(ceph: ports.Backend, foreign: ports.Backend | None,
                 source_snap: str, policy: core.Policy, name: str,
                 now: lifecycle.Clock, step: lifecycle.Step,
                 paths: tuple[Path, ...]
                 ) -> tuple[Path, tuple[str, ...], int]:
    """Build (2) and (3) by the first path that works; remove the partial
    objects of each failed path before trying the next, when
    :func:`core.after_path_failure` says the attempt goes on.  ``foreign``
    is the source's cluster when it is not the store's.  Returns the path,
    why earlier paths failed, and the clone format of a chain (0
    otherwise)."""
    failures: list[str] = []
    for path in paths:
        if foreign is not None and path is not Path.STREAM:
            failures.append(f"{path}: the source is in cluster "
                            f"{foreign.fsid()}, not in the store's")
            continue
        clone_format = 0
        try:
            step(path)
            if path is Path.CHAIN:
                clone_format = ceph.changes.clone(source_snap, policy.pool,
                                                  name)
            elif path is Path.COPY:
                ceph.changes.copy(source_snap, policy.pool, name)
            else:
                _stream(ceph, foreign or ceph, source_snap, policy.pool,
                        name, now)
            if path is not Path.STREAM:
                step("seal")
                kind = (schema.Kind.CHAIN if path is Path.CHAIN
                        else schema.Kind.COPY)
                ceph.changes.seal(policy.pool, name,
                                  core.owner_record(kind, now()))
            return path, tuple(failures), clone_format
        except BaseException as exc:
            if not core.after_path_failure(exc).next_path:
                raise
            LOG.warning("%s of %s failed: %s", path, source_snap, exc)
            failures.append(f"{path}: {exc}")
            _remove_unpublished(ceph, policy.pool, name)
    raise errors.ClusterError(f"could not snapshot {source_snap}: "
                              + "; ".join(failures))


def _stream(ceph: ports.Backend, src: ports.Backend, source_snap: str,
            pool: str, name: str, now: lifecycle.Clock) -> None:
    spool, simage, ssnap = specs.SnapSpec.parse(source_snap).parts
    size, chunks = src.data.read_sized(spool, simage, ssnap)
    ceph.data.write_new(pool, name, chunks,
                        size=size, order=22,
                        record=core.owner_record(schema.Kind.COPY, now()),
                        thin=True)


def _remove_unpublished(ceph: ports.Backend, pool: str,
                        name: str) -> core.ImageState | None:
    """Remove a half-built (2); what stands there if it is cloned already
    (None once it is gone)."""
    try:
        decision, state = lifecycle.settle(ceph, pool, name,
                                           core.decide_unpublished)
    except errors.NotFound:
        return None
    if isinstance(decision, core.Keep):
        return state
    LOG.info("removed the partial %s", state.spec)
    return None


def rollback(ceph: ports.Backend, intent: schema.Intent, policy: core.Policy,
             include_target: bool = True,
             source: ports.Backend | None = None) -> str:
    """Undo an unfinished chain: remove (3) and (2) unless somebody already
    clones them, then release (1).  Safe to repeat.  ``source`` is the
    cluster of a source outside the store's cluster, if at hand."""
    pool, name = specs.ImageSpec.parse(intent.target).parts
    target = None
    if include_target:
        with contextlib.suppress(errors.NotFound):
            target = ceph.images.state(pool, name)
    plan = core.decide_rollback(intent, target)
    if plan.remove_target:
        kept = _remove_unpublished(ceph, pool, name)
        if kept is not None:  # cloned meanwhile: the chain stays
            plan = core.decide_rollback(intent, kept)
    LOG.info("roll-back of %s: %s (%s)", intent.target, plan.outcome,
             plan.reason)
    if plan.link is not None:
        ceph.journal.update(policy.pool,
                            put={plan.link.key: schema.to_json(plan.link)})
    if plan.release is not None:
        if plan.release_in is None:
            lifecycle.release(ceph, plan.release, policy,
                              rolling_back=frozenset({intent.snapshot}))
        elif source is not None and source.fsid() == plan.release_in:
            _release_source(source, plan.release, policy, foreign=True)
        else:
            LOG.warning("snapshot %s is in cluster %s, out of reach; "
                        "remove it there", plan.release, plan.release_in)
    ceph.journal.update(policy.pool, remove=[intent.key])
    return plan.outcome
