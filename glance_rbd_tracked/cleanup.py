"""Cleanup and flatten: read the cluster, plan (:mod:`plans`), act.

Cleanup finishes or rolls back what crashed processes left in the journal,
releases chain snapshots whose clone somebody else removed, and reclaims
retired images nothing needs any more.  Flatten copies the data of chain
images that are deeper than the policy allows into them, then releases
their sources.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
import concurrent.futures
import datetime
import logging
import threading

from glance_rbd_tracked import chains
from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import lineage
from glance_rbd_tracked import plans
from glance_rbd_tracked import ports
from glance_rbd_tracked import schema

LOG = logging.getLogger(__name__)
Progress = Callable[[int, int, str], None]


def survey(ceph: ports.Backend, policy: core.Policy) -> plans.Survey:
    """Read what cleanup plans from: the journal, one directory listing per
    pool, and the state of each retired image."""
    intents, links = schema.load_journal(ceph.journal.entries(policy.pool))
    images = {pool: frozenset(ceph.images.list_images(pool))
              for pool in sorted({policy.pool, *policy.chain_pools})}
    retired = []
    for spec in plans.retired_names(images):
        pool, name = chains.split(spec)
        try:
            retired.append(ceph.images.state(pool, name))
        except errors.NotFound:
            continue  # reclaimed meanwhile
    return plans.Survey(intents=tuple(intents), links=tuple(links),
                        images=images, retired=tuple(retired))


def plan(ceph: ports.Backend, policy: core.Policy, now: datetime.datetime,
         grace: datetime.timedelta) -> list[plans.Item]:
    """What cleanup would do.  Its cost grows with the candidates: the
    journal, and one directory listing per pool for retired names."""
    return plans.plan_cleanup(survey(ceph, policy), now, grace)


def execute(ceph: ports.Backend, items: Iterable[plans.Item],
            policy: core.Policy, progress: Progress | None = None,
            workers: int = 32) -> list[tuple[plans.Item, str]]:
    """Carry out a plan, several items at once (the monitor commits their
    snapshot removals together); returns (item, error) for every failure.
    Items that touch the same image are safe together: each step re-reads
    and decides again."""
    todo = [i for i in items if i.actionable]
    intents = {i.key: i for i in schema.load_journal(
        ceph.journal.entries(policy.pool))[0]}
    failures: list[tuple[plans.Item, str]] = []
    lock = threading.Lock()
    done = [0]

    def one(item: plans.Item) -> None:
        try:
            _execute(ceph, item, policy, intents)
        except errors.NotFound:
            LOG.info("%s is gone already", item.target)  # settled meanwhile
        except errors.TrackedError as exc:
            LOG.warning("cleanup of %s failed: %s", item.target, exc)
            with lock:
                failures.append((item, str(exc)))
        with lock:
            done[0] += 1
            if progress:
                progress(done[0], len(todo), item.target)

    if todo:
        with concurrent.futures.ThreadPoolExecutor(
                min(workers, len(todo))) as pool:
            list(pool.map(one, todo))
    return failures


def _execute(ceph: ports.Backend, item: plans.Item, policy: core.Policy,
             intents: dict[str, schema.Intent]) -> None:
    if item.kind is plans.Kind.INTENT:
        intent = intents.get(item.journal_key)
        if intent is None:
            return  # finished meanwhile
        if intent.op is schema.Op.CHAIN:
            chains.rollback(ceph, intent, policy)
            return
        pool, name = chains.split(intent.target)
        if intent.op is schema.Op.RETIRE:
            lifecycle.finish_retire(ceph, pool, name)
        else:
            try:
                lifecycle.delete(ceph, pool, name, policy)
            except errors.NotFound:
                lifecycle.release(ceph, intent.source, policy)
        ceph.journal.update(policy.pool, remove=[intent.key])
    elif item.kind is plans.Kind.ORPHAN_SNAPSHOT:
        lifecycle.release(ceph, item.target, policy)
        ceph.journal.update(policy.pool, remove=[item.journal_key])
    else:
        pool, name = chains.split(item.target)
        lifecycle.reclaim(ceph, pool, name, policy)


# -- flatten ----------------------------------------------------------------------

def plan_flatten(ceph: ports.Backend,
                 policy: core.Policy) -> list[plans.Flatten]:
    """Chain images deeper than ``policy.max_clone_depth``."""
    _, links = schema.load_journal(ceph.journal.entries(policy.pool))
    depths = {}
    for link in links:
        pool, name = chains.split(link.target)
        try:
            depths[link.target] = lineage.depth(ceph.images, pool, name)
        except errors.NotFound:
            continue
    return plans.plan_flatten(links, depths, policy.max_clone_depth)


def flatten(ceph: ports.Backend, item: plans.Flatten, policy: core.Policy,
            on_progress: Callable[[int, int], None] | None = None) -> None:
    """Flatten one chain image, then release the source it no longer
    needs and forget its link."""
    pool, name = chains.split(item.target)
    ceph.changes.flatten(pool, name, on_progress=on_progress)
    lifecycle.release(ceph, item.link.source, policy)
    ceph.journal.update(policy.pool, remove=[item.link.key])
