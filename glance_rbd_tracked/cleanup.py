"""Cleanup and flatten: read the cluster, plan (:mod:`plans`), act.

Cleanup finishes or rolls back what crashed processes left in the journal,
releases chain snapshots whose clone somebody else removed, reclaims
retired images nothing needs any more, and finishes images their owners
moved to the RBD trash that only the store's snapshots kept there.  Flatten
copies the data of chain images that are deeper than the policy allows into
them, then releases their sources.

Nothing is reported done that a re-read does not show done: each action
re-reads what it changed, a journal entry is dropped only once what it
tracks is gone, and after executing, the plan is made again; an item still
in it failed.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
import concurrent.futures
import datetime
import functools
import logging
import threading
from typing import Any

from glance_rbd_tracked import chains
from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import lineage
from glance_rbd_tracked import plans
from glance_rbd_tracked import ports
from glance_rbd_tracked import schema
from glance_rbd_tracked import specs
from glance_rbd_tracked import uploads

LOG = logging.getLogger(__name__)
Progress = Callable[[int, int, str], None]


def survey(ceph: ports.Backend, policy: core.Policy) -> plans.Survey:
    """Read what cleanup plans from: the journal, one directory listing and
    one read of the RBD trash per pool, the state of each retired or
    trashed image, and who writes the image of each journalled upload.  An
    image that cannot be read is noted and the survey goes on."""
    journal = schema.parse_journal(ceph.journal.entries(policy.pool))
    pools = sorted({policy.pool, *policy.chain_pools})
    images = {pool: frozenset(ceph.images.list_images(pool)) for pool in pools}
    unreadable: list[tuple[str, str]] = []

    def read(what: str, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except errors.NotFound:
            return None  # gone meanwhile
        except errors.CorruptMetadata as exc:
            LOG.warning("skipping %s: %s", what, exc)
            unreadable.append((what, str(exc)))
            return None

    retired = [read(spec, functools.partial(ceph.images.state,
                                            *specs.ImageSpec.parse(spec).parts))
               for spec in plans.retired_names(images)]
    trashed = [read(f"{pool}/{name}", functools.partial(ceph.images.by_id,
                                                        pool, image_id))
               for pool in pools for name, image_id in ceph.images.trash(pool)]
    writers = {}
    for intent in journal.intents:
        if intent.op is schema.Op.UPLOAD:
            state = read(intent.target, functools.partial(
                ceph.images.state, *specs.ImageSpec.parse(intent.target).parts))
            if state is not None:
                writers[intent.target] = ceph.images.writers(state.pool,
                                                              state.image_id)
    return plans.Survey(journal=journal, images=images,
                        retired=tuple(s for s in retired if s),
                        trashed=tuple(s for s in trashed if s),
                        writers=writers, unreadable=tuple(unreadable))


def plan(ceph: ports.Backend, policy: core.Policy, now: datetime.datetime,
         grace: datetime.timedelta) -> list[plans.Item]:
    """What cleanup would do.  Its cost grows with the candidates: the
    journal, and one directory listing per pool for retired names."""
    return plans.plan_cleanup(survey(ceph, policy), now, grace)


def execute(ceph: ports.Backend, items: Iterable[plans.Item],
            policy: core.Policy, progress: Progress | None = None,
            workers: int = 32, now: lifecycle.Clock = lifecycle.utcnow
            ) -> list[tuple[plans.Item, str]]:
    """Carry out a plan, several items at once (the monitor commits their
    snapshot removals together); returns (item, error) for every failure,
    including every item a new plan still shows to do.  Items that touch
    the same image are safe together: each step re-reads and decides
    again."""
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
        failures += _still_to_do(ceph, policy, todo, failures, now())
    return failures


def _still_to_do(ceph: ports.Backend, policy: core.Policy,
                 done: list[plans.Item],
                 failures: list[tuple[plans.Item, str]],
                 now: datetime.datetime) -> list[tuple[plans.Item, str]]:
    """The items that ran without an error, yet a new plan still has."""
    failed = {item for item, _ in failures}
    again = {(i.kind, i.target, i.image_id): i
             for i in plan(ceph, policy, now, datetime.timedelta(0))
             if i.actionable}
    return [(item, f"not done: still to {again[key].action}: "
                   f"{again[key].reason}")
            for item in done if item not in failed
            and (key := (item.kind, item.target, item.image_id)) in again]


Handler = Callable[[ports.Backend, plans.Item, core.Policy,
                    dict[str, schema.Intent]], None]


def _execute(ceph: ports.Backend, item: plans.Item, policy: core.Policy,
             intents: dict[str, schema.Intent]) -> None:
    """Carry out one item by the handler of its kind and action; the
    decision was the plan's, and each handler decides again only on what
    it re-reads."""
    handler = HANDLERS.get((item.kind, item.action))
    if handler is None:
        raise errors.Invalid(f"no cleanup handler for {item.action} of "
                             f"{item.kind} {item.target}")
    handler(ceph, item, policy, intents)


def _roll_back(ceph: ports.Backend, item: plans.Item, policy: core.Policy,
               intents: dict[str, schema.Intent]) -> None:
    """An interrupted chain: undone (:func:`chains.rollback`)."""
    intent = intents.get(item.journal_key)
    if intent is not None:  # else finished meanwhile
        chains.rollback(ceph, intent, policy)


def _finish_retire(ceph: ports.Backend, item: plans.Item,
                   policy: core.Policy,
                   intents: dict[str, schema.Intent]) -> None:
    """An interrupted retirement: renamed, then its intent dropped."""
    intent = intents.get(item.journal_key)
    if intent is None:
        return  # finished meanwhile
    lifecycle.finish_retire(ceph, *specs.ImageSpec.parse(intent.target).parts)
    ceph.journal.update(policy.pool, remove=[intent.key])


def _finish_delete(ceph: ports.Backend, item: plans.Item,
                   policy: core.Policy,
                   intents: dict[str, schema.Intent]) -> None:
    """An interrupted removal: finished, or, when the image is gone, its
    parent released; then its intent dropped."""
    intent = intents.get(item.journal_key)
    if intent is None:
        return  # finished meanwhile
    pool, name = specs.ImageSpec.parse(intent.target).parts
    try:
        lifecycle.finish_delete(ceph, pool, name, policy)
    except errors.NotFound:
        lifecycle.release(ceph, intent.source, policy)
    ceph.journal.update(policy.pool, remove=[intent.key])


def _finish_upload(ceph: ports.Backend, item: plans.Item,
                   policy: core.Policy,
                   intents: dict[str, schema.Intent]) -> None:
    """An upload that did not finish (:func:`uploads.finish`)."""
    intent = intents.get(item.journal_key)
    if intent is not None:
        uploads.finish(ceph, intent, policy)


def _release_orphan(ceph: ports.Backend, item: plans.Item,
                    policy: core.Policy,
                    intents: dict[str, schema.Intent]) -> None:
    """A chain snapshot whose clone is gone: released, its link dropped."""
    _release_link(ceph, item.target, item.journal_key, policy)


def _reclaim_retired(ceph: ports.Backend, item: plans.Item,
                     policy: core.Policy,
                     intents: dict[str, schema.Intent]) -> None:
    pool, name = specs.ImageSpec.parse(item.target).parts
    lifecycle.reclaim(ceph, pool, name, policy)


def _reclaim_trashed(ceph: ports.Backend, item: plans.Item,
                     policy: core.Policy,
                     intents: dict[str, schema.Intent]) -> None:
    pool, _ = specs.ImageSpec.parse(item.target).parts
    lifecycle.reclaim_trashed(ceph, pool, item.image_id, policy)


_K, _A = plans.Kind, plans.Action
#: What carries out each (kind, action) a plan may name.
HANDLERS: dict[tuple[plans.Kind, plans.Action], Handler] = {
    (_K.INTENT, _A.ROLL_BACK): _roll_back,
    (_K.INTENT, _A.FINISH_RETIRE): _finish_retire,
    (_K.INTENT, _A.FINISH_DELETE): _finish_delete,
    (_K.INTENT, _A.FINISH_UPLOAD): _finish_upload,
    (_K.ORPHAN_SNAPSHOT, _A.TRIM): _release_orphan,
    (_K.RETIRED, _A.REMOVE): _reclaim_retired,
    (_K.RETIRED, _A.TRIM): _reclaim_retired,
    (_K.TRASHED, _A.REMOVE): _reclaim_trashed,
    (_K.TRASHED, _A.TRIM): _reclaim_trashed,
}


def _release_link(ceph: ports.Backend, source: str, key: str,
                  policy: core.Policy) -> None:
    """Release the source snapshot ``source`` a chain no longer needs, then
    forget its link ``key``, once the snapshot is seen gone."""
    lifecycle.release(ceph, source, policy)
    left = _snapshot_left(ceph, source)
    if left is not None:
        raise errors.Unfinished(f"{source} is still there ({left})")
    ceph.journal.update(policy.pool, remove=[key])


def _snapshot_left(ceph: ports.Backend, spec: str) -> str | None:
    """Where the chain snapshot ``pool/image@snap`` (or a record of it) is
    still found: on the image of that name, its retired name, or in the
    RBD trash; None when it is gone."""
    pool, name, snap = specs.SnapSpec.parse(spec).parts
    for candidate in (name, core.retired_name(name)):
        try:
            state = ceph.images.state(pool, candidate)
        except errors.NotFound:
            continue
        if state.snap(snap) is not None or state.records.snap(snap):
            where = " in the RBD trash" if state.trash else ""
            return f"on {state.spec}{where}"
    return None


# -- flatten ----------------------------------------------------------------------

def plan_flatten(ceph: ports.Backend,
                 policy: core.Policy) -> list[plans.Flatten]:
    """Chain images deeper than ``policy.max_clone_depth``."""
    _, links = schema.load_journal(ceph.journal.entries(policy.pool))
    depths = {}
    for link in links:
        pool, name = specs.ImageSpec.parse(link.target).parts
        try:
            depths[link.target] = lineage.depth(ceph.images, pool, name)
        except errors.NotFound:
            continue
    return plans.plan_flatten(links, depths, policy.max_clone_depth)


def flatten(ceph: ports.Backend, item: plans.Flatten, policy: core.Policy,
            on_progress: Callable[[int, int], None] | None = None) -> None:
    """Flatten one chain image, then release the source it no longer
    needs and forget its link (each once a re-read shows it done)."""
    pool, name = specs.ImageSpec.parse(item.target).parts
    state = ceph.images.state(pool, name)
    if state.parent is not None:
        ceph.changes.flatten(state, on_progress=on_progress)
        after = ceph.images.state(pool, name)
        if after.parent is not None:
            raise errors.Unfinished(f"{item.target} still has the parent "
                                    f"{after.parent}")
    _release_link(ceph, item.link.source, item.link.key, policy)
