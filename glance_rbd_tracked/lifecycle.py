"""Read, decide, act: the loop that applies core decisions to the cluster.

The cluster can change between reading an image and acting on it (Nova or
Cinder may clone a snapshot at any moment).  The adapter re-checks right
before each destructive step and raises Conflict; this loop then reads the
image again and decides again, as often as its :class:`Backoff` allows.
Removals of clones and retirements are journalled first, so that cleanup
can finish them after a crash.
"""

from __future__ import annotations

from collections.abc import Callable
import contextlib
import dataclasses
import datetime
import functools
import logging
import time

from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import ports
from glance_rbd_tracked import schema
from glance_rbd_tracked import specs

LOG = logging.getLogger(__name__)
Clock = Callable[[], datetime.datetime]
Step = Callable[[str], None]


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def no_step(name: str) -> None:
    """Where a test can stop the process between steps."""


@dataclasses.dataclass(frozen=True)
class Backoff:
    """How often to decide again after a Conflict, and how long to wait
    before each new attempt."""

    attempts: int = 8
    pause: Callable[[float], None] = time.sleep

    def wait(self, attempt: int) -> None:
        self.pause(0.05 * attempt)


BACKOFF = Backoff()


# -- deleting and reclaiming ---------------------------------------------------

def delete(ceph: ports.Backend, pool: str, name: str, policy: core.Policy,
           now: Clock = utcnow, on_step: Step = no_step, *,
           snapshot: str | None = None,
           backoff: Backoff = BACKOFF) -> core.Decision:
    """Delete an image for Glance: remove it, or retire it while in use;
    after a removal, release its parent (a chain's snapshot, a retired
    disk, a retired image) as far up as nothing else needs it.
    ``snapshot``: the one the image's location names; NotFound, and
    nothing changes, if the image has no such snapshot."""
    return _journalled(ceph, pool, name, policy, now, on_step, backoff,
                       lambda st: core.decide_delete(st, policy, now(),
                                                     snapshot))


def retire(ceph: ports.Backend, pool: str, name: str, policy: core.Policy,
           now: Clock = utcnow, on_step: Step = no_step, *,
           backoff: Backoff = BACKOFF) -> core.Decision:
    """What Nova or Cinder call instead of removing a disk or volume."""
    return _journalled(ceph, pool, name, policy, now, on_step, backoff,
                       lambda st: core.decide_retire(st, policy, now()))


def reclaim(ceph: ports.Backend, pool: str, name: str,
            policy: core.Policy | None = None, now: Clock = utcnow,
            on_step: Step = no_step, *,
            backoff: Backoff = BACKOFF) -> core.Decision:
    """Remove what of a retired image nothing depends on any more, then
    release its parent (journalled like a delete)."""
    policy = policy or core.Policy(pool=pool)
    busy = busy_snapshots(ceph, policy)
    return _journalled(ceph, pool, name, policy, now, on_step, backoff,
                       lambda st: core.decide_reclaim(st, now(), busy))


def finish_delete(ceph: ports.Backend, pool: str, name: str,
                  policy: core.Policy, now: Clock = utcnow, *,
                  backoff: Backoff = BACKOFF) -> core.Decision:
    """Finish a removal journalled and interrupted
    (``core.decide_finish_delete``), then release the parent."""
    busy = busy_snapshots(ceph, policy)
    return _journalled(ceph, pool, name, policy, now, no_step, backoff,
                       lambda st: core.decide_finish_delete(st, policy, now(),
                                                            busy))


def reclaim_trashed(ceph: ports.Backend, pool: str, image_id: str,
                    policy: core.Policy, now: Clock = utcnow, *,
                    backoff: Backoff = BACKOFF) -> core.Decision:
    """Finish an image in the RBD trash (``core.decide_trashed``), then
    release its parent."""
    busy = busy_snapshots(ceph, policy)
    decision, state = settle(
        ceph, pool, "", lambda st: core.decide_trashed(st, now(), busy),
        backoff, image_id=image_id)
    if isinstance(decision, core.Remove) and state.parent:
        release(ceph, state.parent, policy, now=now, backoff=backoff)
    return decision


def _journalled(ceph: ports.Backend, pool: str, name: str,
                policy: core.Policy, now: Clock, on_step: Step,
                backoff: Backoff,
                decide: Callable[[core.ImageState], core.Decision]
                ) -> core.Decision:
    """Decide and act with the intent journalled first, so that cleanup can
    finish an interrupted removal (release the parent, or the source of a
    chain image something flattened) or retirement (the rename)."""
    journalled: list[schema.Intent] = []
    sources: list[str] = []

    def journal_first(state: core.ImageState, decision: core.Decision) -> None:
        source = state.parent or _flattened_chain_source(ceph, policy, state)
        op = core.journalled_op(decision, source)
        if op is None:
            return
        intent = schema.Intent(op=op, target=state.spec,
                               source=source or "", snapshot="",
                               started=schema.timestamp(now()))
        if op is schema.Op.DELETE:
            sources.append(intent.source)
        on_step(f"{op}-intent")
        # the key may hold the intent of another worker, of a newer
        # release too: what this one does not know of it stays
        held = ceph.journal.entries(policy.pool).get(intent.key)
        ceph.journal.update(policy.pool, put={
            intent.key: schema.supersede(intent, held, intent.key)})
        journalled.append(intent)
        on_step(f"{op}-apply")

    decision, state = settle(ceph, pool, name, decide, backoff,
                             before=journal_first)
    removed = isinstance(decision, core.Remove)
    if removed and sources:
        release(ceph, sources[-1], policy, on_step=on_step, backoff=backoff)
    if journalled:
        on_step(f"{journalled[-1].op}-done")
        ceph.journal.update(policy.pool, remove={
            *(i.key for i in journalled),
            *(link_keys(state) if removed else ())})
    return decision


def _flattened_chain_source(ceph: ports.Backend, policy: core.Policy,
                            state: core.ImageState) -> str | None:
    """The source snapshot of a chain image that has no parent any more
    (something flattened it, Cinder's stock delete for one): its journal
    link still names it, and it is released when the image goes."""
    owner = state.records.owner
    if state.parent or owner is None or owner.kind is not schema.Kind.CHAIN:
        return None
    keys = link_keys(state)
    links = schema.parse_journal(ceph.journal.entries(policy.pool)).links
    return next((link.source for link in links if link.key in keys), None)


def link_keys(state: core.ImageState) -> set[str]:
    """The journal's chain links of a removed image, under its current and
    (if it was retired) its original name."""
    names = {state.name}
    if state.records.retired is not None:
        names.add(state.records.retired.original_name)
    return {schema.ChainLink(f"{state.pool}/{n}", "", "").key for n in names}


def finish_retire(ceph: ports.Backend, pool: str, name: str) -> None:
    """Finish a retirement interrupted between marking and renaming."""
    with contextlib.suppress(errors.NotFound):  # renamed already, or gone
        settle(ceph, pool, name, core.decide_finish_retire)


def release(ceph: ports.Backend, parent: str | None, policy: core.Policy,
            rolling_back: frozenset[str] = frozenset(), on_step: Step = no_step,
            *, now: Clock = utcnow, backoff: Backoff = BACKOFF) -> None:
    """A clone of ``parent`` (``pool/image@snap``) is gone: remove what of
    the parent and its ancestors is now unneeded, stopping at the first that
    is still needed or that lies outside the store's pools.  ``rolling_back``
    names journalled chain snapshots the caller is rolling back.  Where it
    stops is :func:`core.release_bound`'s and :func:`core.release_next`'s."""
    while parent and core.release_bound(parent, policy) is None:
        pool, name, _ = specs.SnapSpec.parse(parent).parts
        busy = busy_snapshots(ceph, policy) - rolling_back
        on_step(f"release {pool}/{name}")
        decision: core.Decision | None
        state: core.ImageState | None
        try:
            decision, state = settle(
                ceph, pool, name,
                functools.partial(core.decide_reclaim, busy=busy, now=now()),
                backoff)
        except errors.NotFound:
            decision = state = None
        step = core.release_next(parent, decision, state)
        if step.forget_links and state is not None:
            ceph.journal.update(policy.pool, remove=link_keys(state))
        parent = step.next


def busy_snapshots(ceph: ports.Backend, policy: core.Policy) -> frozenset[str]:
    """Chain snapshots that operations in flight are building."""
    return core.busy_snapshots(schema.parse_journal(
        ceph.journal.entries(policy.pool)))


def settle(ceph: ports.Backend, pool: str, name: str,
           decide: Callable[[core.ImageState], core.Decision],
           backoff: Backoff = BACKOFF,
           before: Callable[[core.ImageState, core.Decision], None]
           | None = None, image_id: str | None = None
           ) -> tuple[core.Decision, core.ImageState]:
    """Read, decide and act until an action holds, or give up with a
    Conflict after ``backoff.attempts`` (at once when another worker held
    the lease for the whole of its wait: Busy); a Refuse raises NotOwned.  The
    image is ``pool/name``, or the image of id ``image_id``.  An action
    counts only once a re-read shows it done (Unfinished otherwise)."""
    def read(name: str) -> core.ImageState:
        if image_id is not None:
            return ceph.images.by_id(pool, image_id)
        return ceph.images.state(pool, name)

    last: errors.Conflict | None = None
    for attempt in range(1, backoff.attempts + 1):
        state = read(name)
        decision = decide(state)
        if isinstance(decision, core.Refuse):
            LOG.warning("not touching %s/%s: %s", pool, name, decision.reason)
            raise errors.NotOwned(
                f"the store does not remove {pool}/{name}: {decision.reason}")
        if isinstance(decision, core.Absent):
            raise errors.NotFound(decision.reason)
        if isinstance(decision, core.Keep):
            LOG.info("keeping %s/%s: %s", pool, name, decision.reason)
            return decision, state
        try:
            if before is not None:
                before(state, decision)
            ceph.changes.apply(state, decision)
            _check_done(decision, state, read)
            return decision, state
        except errors.Busy:
            raise  # the lease's own wait is the bound
        except errors.Conflict as exc:
            LOG.info("attempt %d on %s/%s: %s", attempt, pool, name, exc)
            last = exc
            backoff.wait(attempt)
    raise errors.Conflict(
        f"gave up on {pool}/{name or image_id} after {backoff.attempts} "
        f"attempts ({last}); try again")


def _check_done(decision: core.Decision, state: core.ImageState,
                read: Callable[[str], core.ImageState]) -> None:
    """Re-read the image and raise Unfinished unless the decision shows."""
    name = decision.new_name if isinstance(decision, core.Retire) \
        else state.name
    after: core.ImageState | None = None
    for candidate in dict.fromkeys((name, state.name)):
        try:
            after = read(candidate)
            break
        except errors.NotFound:
            continue
    why = core.unfinished(decision, state, after)
    if why is not None:
        raise errors.Unfinished(f"{type(decision).__name__.lower()} of "
                                f"{state.spec} did not hold: {why}")
