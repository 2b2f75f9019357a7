"""Instance snapshots as clone chains, their roll-back, and cleanup.

A chain for one disk is (1) a snapshot of the disk, (2) a clone of (1) in the
store's pool named by the Glance image id, (3) the snapshot ``snap`` of (2),
whose location Glance publishes.  Every step is journalled first (an
``Intent`` in the store's journal object), so that killing the process at any
step leaves a state :func:`execute` (``glance-rbd-tracked cleanup
--execute``) rolls back.  When a chain cannot be made, the same intent covers
an in-cluster copy, then a copy streamed through this host.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import logging
import threading
import time
from typing import Callable, Iterable

from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import schema

LOG = logging.getLogger(__name__)

PATHS = ("chain", "copy", "stream")
#: The points between the steps of a chain snapshot (``on_step`` names).
STEPS = ("intent", "record", "snapshot", "chain", "seal", "done")
Step = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Request:
    """Snapshot disk ``source`` (``pool/image``) as Glance image ``image_id``."""

    source: str
    image_id: str


@dataclasses.dataclass(frozen=True)
class Result:
    source: str
    image_id: str
    location: str
    path: str
    depth: int
    needs_flatten: bool
    seconds: float
    fallbacks: tuple[str, ...] = ()


def split(spec: str) -> tuple[str, str]:
    pool, _, name = spec.rpartition("/")
    if not pool or not name:
        raise errors.NotOwned(f"{spec!r} is not of the form pool/image")
    return pool, name


def snapshot(cluster, requests: Iterable[Request], policy: core.Policy, *,
             now: Callable[[], datetime.datetime] = lifecycle.utcnow,
             on_step: Step | None = None,
             paths: tuple[str, ...] = PATHS,
             source_cluster=None) -> list[Result]:
    """Make one chain per request, all at once: the monitor commits
    concurrent snapshot creations together.  All or nothing: when one
    fails, the chains the others made (not published yet) are removed and
    the first error is raised.

    ``source_cluster`` holds the disks when they are not in the store's
    cluster; then neither a clone nor an in-cluster copy can be made, and
    the data streams through this host from a snapshot of the source.
    """
    requests = list(requests)
    if not requests:
        return []
    with concurrent.futures.ThreadPoolExecutor(len(requests)) as workers:
        futures = [workers.submit(_build, cluster, r, policy, now,
                                  on_step or (lambda step: None), paths,
                                  source_cluster or cluster)
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
            lifecycle.delete(cluster, policy.pool, made.image_id, policy)
    raise failed[0]


def _build(cluster, request: Request, policy: core.Policy,
           now: Callable[[], datetime.datetime], step: Step,
           paths: tuple[str, ...], src) -> Result:
    began = time.monotonic()
    spool, sname = split(request.source)
    refusal = core.check_chain_pool(spool, policy)
    if refusal is None:
        state = src.state(spool, sname)
        refusal = core.check_chain_source(state, policy)
    if refusal is not None:
        raise errors.NotOwned(f"cannot snapshot {request.source}: "
                              f"{refusal.reason}")
    foreign = src is not cluster and src.fsid() != cluster.fsid()
    stamp = schema.timestamp(now())
    snap = core.chain_snapshot_name(request.image_id)
    target = f"{policy.pool}/{request.image_id}"
    # a source in another cluster is named with its fsid, so that nothing
    # here ever mistakes it for a same-named image of the store's cluster
    source = f"{src.fsid()}:{state.spec}" if foreign else state.spec
    intent = schema.Intent(op="chain", target=target, source=source,
                           snapshot=snap, started=stamp)
    _check_free(cluster, state, snap, intent, policy)
    step("intent")
    cluster.journal_update(policy.pool,
                           put={intent.key: schema.to_json(intent)})
    try:
        step("record")
        src.set_records(spool, sname, state.image_id, [schema.SnapRecord(
            image_id=state.image_id, snapshot=snap, clone=target,
            created=stamp)])
        step("snapshot")
        src.snapshot(spool, sname, state.image_id, snap)
        path, fallbacks = _make_target(
            cluster, src if foreign else None, f"{state.spec}@{snap}",
            policy, request.image_id, stamp, step, paths)
    except errors.AlreadyExists:
        # Somebody else made the target meanwhile: it is not ours to remove.
        LOG.warning("snapshot of %s failed; rolling back", request.source)
        rollback(cluster, intent, policy, include_target=False,
                 source_cluster=src)
        raise
    except BaseException:
        LOG.warning("snapshot of %s failed; rolling back", request.source)
        rollback(cluster, intent, policy, source_cluster=src)
        raise
    step("done")
    if path == "chain":
        link = schema.ChainLink(target=target, source=f"{state.spec}@{snap}",
                                created=stamp)
        cluster.journal_update(policy.pool,
                               put={link.key: schema.to_json(link)},
                               remove=[intent.key])
    else:  # a copy does not need the source snapshot any more
        cluster.journal_update(policy.pool, remove=[intent.key])
        _release_source(src, f"{state.spec}@{snap}", policy, foreign)
    depth = cluster.depth(policy.pool, request.image_id)
    location = (f"rbd://{cluster.fsid()}/{policy.pool}/{request.image_id}/"
                f"{core.STOCK_SNAPSHOT}")
    LOG.info("snapshot of %s is %s (%s)", request.source, location, path)
    return Result(source=request.source, image_id=request.image_id,
                  location=location, path=path, depth=depth,
                  needs_flatten=depth > policy.max_clone_depth,
                  seconds=time.monotonic() - began, fallbacks=fallbacks)


def _check_free(cluster, source: core.ImageState, snap: str,
                intent: schema.Intent, policy: core.Policy) -> None:
    """Refuse before acting when the names a chain would take are taken:
    a roll-back may then remove whatever it finds under them."""
    if source.snap(snap) is not None or source.records.snap(snap) is not None:
        raise errors.AlreadyExists(f"{source.spec} already has the chain "
                                   f"snapshot {snap}")
    if intent.key in cluster.journal(policy.pool):
        raise errors.AlreadyExists(f"a snapshot into {intent.target} is in "
                                   "flight")
    pool, name = split(intent.target)
    try:
        cluster.state(pool, name)
    except errors.NotFound:
        return
    raise errors.AlreadyExists(f"{intent.target} exists already")


def _release_source(src, source_snap: str, policy: core.Policy,
                    foreign: bool) -> None:
    """Drop the source snapshot a copy no longer needs."""
    if not foreign:
        lifecycle.release(src, source_snap, policy)
        return
    # the other cluster has no journal of ours: remove just our snapshot
    pool, name, snap = core.parent_of(source_snap)
    state = src.state(pool, name)
    src.apply(state, core.Trim((snap,)))


def _make_target(cluster, foreign_src, source_snap: str, policy: core.Policy,
                 name: str, stamp: str, step: Step,
                 paths: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """Build (2) and (3) by the first path that works; remove the partial
    objects of each failed path before trying the next.  ``foreign_src``
    is the source's cluster when it is not the store's."""
    failures: list[str] = []
    for path in paths:
        if foreign_src is not None and path != "stream":
            failures.append(f"{path}: the source is in cluster "
                            f"{foreign_src.fsid()}, not in the store's")
            continue
        try:
            step(path)
            if path == "chain":
                cluster.clone(source_snap, policy.pool, name)
            elif path == "copy":
                cluster.copy(source_snap, policy.pool, name)
            else:
                _stream(cluster, foreign_src or cluster, source_snap,
                        policy.pool, name)
            if path != "stream":
                step("seal")
                cluster.seal(policy.pool, name, schema.OwnerRecord(
                    image_id="", kind=schema.KIND_CHAIN if path == "chain"
                    else schema.KIND_COPY, snapshot=core.STOCK_SNAPSHOT,
                    created=stamp))
            return path, tuple(failures)
        except (errors.NotOwned, errors.CorruptMetadata, errors.NoSpace,
                errors.AlreadyExists):
            raise
        except errors.TrackedError as exc:
            LOG.warning("%s of %s failed: %s", path, source_snap, exc)
            failures.append(f"{path}: {exc}")
            _remove_unpublished(cluster, policy.pool, name)
    raise errors.ClusterError(f"could not snapshot {source_snap}: "
                              + "; ".join(failures))


def _stream(cluster, src, source_snap: str, pool: str, name: str) -> None:
    spool, simage, ssnap = core.parent_of(source_snap)
    size = src.size(spool, simage, ssnap)
    cluster.write_new(pool, name, src.read(spool, simage, ssnap),
                      size=size, order=22, snapshot=core.STOCK_SNAPSHOT,
                      owner_kind=schema.KIND_COPY, now=lifecycle.utcnow,
                      thin=True)


def _remove_unpublished(cluster, pool: str, name: str) -> bool:
    """Remove a half-built (2); False if it is gone or already in use."""
    try:
        state = cluster.state(pool, name)
    except errors.NotFound:
        return False
    if any(s.children for s in state.snaps):
        return False
    cluster.apply(state, core.Remove(tuple(s.name for s in state.snaps
                                           if s.namespace == "user")))
    LOG.info("removed the partial %s", state.spec)
    return True


def rollback(cluster, intent: schema.Intent, policy: core.Policy,
             include_target: bool = True, source_cluster=None) -> str:
    """Undo an unfinished chain: remove (3) and (2) unless somebody already
    clones them, then release (1).  Safe to repeat.

    The target's name was free when the intent was journalled (see
    :func:`_check_free`), so what stands there now was made by this
    operation, unless it is plainly somebody else's.
    """
    pool, name = split(intent.target)
    outcome = "rolled back"
    target = None
    if include_target:
        try:
            target = cluster.state(pool, name)
        except errors.NotFound:
            pass
    if target is not None and not _ours(target, intent):
        LOG.warning("%s was not made by the interrupted snapshot; leaving "
                    "it alone", intent.target)
        target = None
    if target is not None and any(s.children for s in target.snaps):
        outcome = "kept: already cloned"
        link = schema.ChainLink(target=intent.target,
                                source=f"{intent.source}@{intent.snapshot}",
                                created=intent.started)
        cluster.journal_update(policy.pool,
                               put={link.key: schema.to_json(link)})
    elif target is not None:
        _remove_unpublished(cluster, pool, name)
    if outcome == "rolled back":
        fsid, colon, source = intent.source.rpartition(":")
        if not colon:
            lifecycle.release(cluster, f"{source}@{intent.snapshot}",
                              policy, settled=frozenset({intent.snapshot}))
        elif source_cluster is not None and source_cluster.fsid() == fsid:
            _release_source(source_cluster, f"{source}@{intent.snapshot}",
                            policy, foreign=True)
        else:
            LOG.warning("snapshot %s@%s is in cluster %s, out of reach; "
                        "remove it there", source, intent.snapshot, fsid)
    cluster.journal_update(policy.pool, remove=[intent.key])
    return outcome


def _ours(target: core.ImageState, intent: schema.Intent) -> bool:
    owner = target.records.owner
    if owner is not None:
        return owner.kind in (schema.KIND_CHAIN, schema.KIND_COPY)
    return target.parent == f"{intent.source}@{intent.snapshot}"


# -- cleanup ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Item:
    """One candidate of a cleanup plan."""

    kind: str      # intent | orphan-snapshot | retired
    target: str    # what it acts on
    action: str    # roll back | finish delete | trim | remove | keep | wait
    reason: str
    journal_key: str = ""  # the journal entry it settles, if any

    @property
    def actionable(self) -> bool:
        return self.action not in ("keep", "wait")


def plan(cluster, policy: core.Policy, now: datetime.datetime,
         grace: datetime.timedelta) -> list[Item]:
    """What cleanup would do.  Its cost grows with the candidates: the
    journal, and one directory listing per pool for retired names."""
    intents, links = schema.load_journal(cluster.journal(policy.pool))
    busy = frozenset(i.snapshot for i in intents if i.op == "chain")
    items: list[Item] = []
    for intent in intents:
        age = now - _parse(intent.started)
        if age < grace:
            items.append(Item("intent", intent.target, "wait",
                              f"{intent.op} in flight for {age.seconds} s"))
        else:
            items.append(Item(
                "intent", intent.target, {"chain": "roll back",
                                          "retire": "finish retire"}.get(
                                              intent.op, "finish delete"),
                f"{intent.op} interrupted {intent.started}", intent.key))
    listings = {pool: set(cluster.list_images(pool))
                for pool in sorted({policy.pool, *policy.chain_pools})}
    released: set[str] = set()
    for link in links:
        pool, name = split(link.target)
        if name not in listings.get(pool, set()):
            items.append(Item("orphan-snapshot", link.source, "trim",
                              f"its clone {link.target} is gone", link.key))
            source = link.source.rpartition("@")[0]
            released |= {source, core.retired_name(source)}
    for pool, names in listings.items():
        for name in sorted(n for n in names
                           if n.endswith(schema.RETIRED_SUFFIX)):
            if f"{pool}/{name}" in released:
                # releasing the orphaned snapshot reclaims it as well
                continue
            try:
                state = cluster.state(pool, name)
            except errors.NotFound:
                continue
            decision = core.decide_reclaim(state, busy)
            action = {core.Remove: "remove", core.Trim: "trim"}.get(
                type(decision), "keep")
            reason = getattr(decision, "reason", "nothing depends on it")
            items.append(Item("retired", state.spec, action, reason))
    return items


def execute(cluster, items: Iterable[Item], policy: core.Policy,
            progress: Callable[[int, int, Item], None] | None = None,
            workers: int = 32) -> list[tuple[Item, str]]:
    """Carry out a plan, several items at once (the monitor commits their
    snapshot removals together); returns (item, error) for every failure.
    Items that touch the same image are safe together: each step re-reads
    and decides again."""
    todo = [i for i in items if i.actionable]
    intents = {i.key: i for i in schema.load_journal(
        cluster.journal(policy.pool))[0]}
    failures: list[tuple[Item, str]] = []
    lock = threading.Lock()
    done = [0]

    def one(item: Item) -> None:
        try:
            _execute(cluster, item, policy, intents)
        except errors.NotFound:
            LOG.info("%s is gone already", item.target)  # settled meanwhile
        except errors.TrackedError as exc:
            LOG.warning("cleanup of %s failed: %s", item.target, exc)
            with lock:
                failures.append((item, str(exc)))
        with lock:
            done[0] += 1
            if progress:
                progress(done[0], len(todo), item)

    if todo:
        with concurrent.futures.ThreadPoolExecutor(
                min(workers, len(todo))) as pool:
            list(pool.map(one, todo))
    return failures


def _execute(cluster, item: Item, policy: core.Policy,
             intents: dict[str, schema.Intent]) -> None:
    if item.kind == "intent":
        intent = intents.get(item.journal_key)
        if intent is None:
            return  # finished meanwhile
        if intent.op == "chain":
            rollback(cluster, intent, policy)
            return
        pool, name = split(intent.target)
        if intent.op == "retire":
            lifecycle.finish_retire(cluster, pool, name)
        else:
            try:
                lifecycle.delete(cluster, pool, name, policy)
            except errors.NotFound:
                lifecycle.release(cluster, intent.source, policy)
        cluster.journal_update(policy.pool, remove=[intent.key])
    elif item.kind == "orphan-snapshot":
        lifecycle.release(cluster, item.target, policy)
        cluster.journal_update(policy.pool, remove=[item.journal_key])
    else:
        pool, name = split(item.target)
        lifecycle.reclaim(cluster, pool, name, policy)


def _parse(stamp: str) -> datetime.datetime:
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc)
