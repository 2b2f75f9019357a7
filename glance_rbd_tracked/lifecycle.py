"""Read, decide, act: the loop that applies core decisions to the cluster.

The cluster can change between reading an image and acting on it (Nova or
Cinder may clone a snapshot at any moment).  The adapter re-checks right
before each destructive step and raises Conflict; this loop then reads the
image again and decides again, a bounded number of times.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Callable, Iterable, Protocol

from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import schema

LOG = logging.getLogger(__name__)
ATTEMPTS = 8


class ClusterAPI(Protocol):
    """What this module needs from :class:`glance_rbd_tracked.cluster.Cluster`."""

    def state(self, pool: str, name: str) -> core.ImageState: ...

    def apply(self, state: core.ImageState,
              decision: core.Decision) -> None: ...

    def journal(self, pool: str) -> dict[str, str]: ...

    def journal_update(self, pool: str, put: dict[str, str] | None = None,
                       remove: Iterable[str] = ()) -> None: ...


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


# -- deleting and reclaiming ---------------------------------------------------

def _no_step(name: str) -> None:
    """Where a test can stop the process between steps."""


def delete(cluster: ClusterAPI, pool: str, name: str, policy: core.Policy,
           now: Callable[[], datetime.datetime] = utcnow,
           on_step: Callable[[str], None] = _no_step) -> core.Decision:
    """Delete an image for Glance: remove it, or retire it while in use;
    after a removal, release its parent (a chain's snapshot, a retired
    disk, a retired image) as far up as nothing else needs it."""
    return _journalled(cluster, pool, name, policy, now, on_step,
                       lambda st: core.decide_delete(st, policy, now()))


def retire(cluster: ClusterAPI, pool: str, name: str, policy: core.Policy,
           now: Callable[[], datetime.datetime] = utcnow,
           on_step: Callable[[str], None] = _no_step) -> core.Decision:
    """What Nova or Cinder call instead of removing a disk or volume."""
    return _journalled(cluster, pool, name, policy, now, on_step,
                       lambda st: core.decide_retire(st, policy, now()))


def _journalled(cluster: ClusterAPI, pool: str, name: str,
                policy: core.Policy, now: Callable[[], datetime.datetime],
                on_step: Callable[[str], None],
                decide: Callable[[core.ImageState], core.Decision]
                ) -> core.Decision:
    """Decide and act with the intent journalled first, so that cleanup can
    finish an interrupted removal (release the parent) or retirement
    (the rename)."""
    journalled: list[schema.Intent] = []

    def journal_first(state: core.ImageState, decision: core.Decision) -> None:
        if isinstance(decision, core.Remove) and state.parent:
            op = "delete"
        elif isinstance(decision, core.Retire):
            op = "retire"
        else:
            return
        intent = schema.Intent(op=op, target=state.spec,
                               source=state.parent or "", snapshot="",
                               started=schema.timestamp(now()))
        on_step(f"{op}-intent")
        cluster.journal_update(policy.pool,
                               put={intent.key: schema.to_json(intent)})
        journalled.append(intent)
        on_step(f"{op}-apply")

    decision, state = _settle(cluster, pool, name, decide, journal_first)
    removed = isinstance(decision, core.Remove)
    if removed and state.parent:
        release(cluster, state.parent, policy, on_step=on_step)
    if journalled:
        on_step(f"{journalled[-1].op}-done")
        cluster.journal_update(policy.pool, remove={
            *(i.key for i in journalled),
            *(_link_keys(state) if removed else ())})
    return decision


def _link_keys(state: core.ImageState) -> set[str]:
    """The journal's chain links of a removed image, under its current and
    (if it was retired) its original name."""
    names = {state.name}
    if state.records.retired is not None:
        names.add(state.records.retired.original_name)
    return {schema.ChainLink(f"{state.pool}/{n}", "", "").key for n in names}


def finish_retire(cluster: ClusterAPI, pool: str, name: str) -> None:
    """Finish a retirement interrupted between marking and renaming."""
    try:
        state = cluster.state(pool, name)
    except errors.NotFound:
        return  # renamed already, or gone
    decision = core.decide_finish_retire(state)
    if isinstance(decision, core.Retire):
        cluster.apply(state, decision)


def reclaim(cluster: ClusterAPI, pool: str, name: str,
            policy: core.Policy | None = None,
            now: Callable[[], datetime.datetime] = utcnow,
            on_step: Callable[[str], None] = _no_step) -> core.Decision:
    """Remove what of a retired image nothing depends on any more, then
    release its parent (journalled like a delete)."""
    policy = policy or core.Policy(pool=pool)
    busy = busy_snapshots(cluster, policy)
    return _journalled(cluster, pool, name, policy, now, on_step,
                       lambda st: core.decide_reclaim(st, busy))


def release(cluster: ClusterAPI, parent: str | None, policy: core.Policy,
            settled: frozenset[str] = frozenset(),
            on_step: Callable[[str], None] = _no_step) -> None:
    """A clone of ``parent`` (``pool/image@snap``) is gone: remove what of
    the parent and its ancestors is now unneeded, stopping at the first that
    is still needed or that lies outside the store's pools.  ``settled``
    names journalled chain snapshots the caller is rolling back."""
    while parent:
        pool, name, _ = core.parent_of(parent)
        if pool != policy.pool and pool not in policy.chain_pools:
            return
        busy = busy_snapshots(cluster, policy) - settled
        on_step(f"release {pool}/{name}")
        try:
            decision, state = _settle(cluster, pool, name,
                                      lambda st: core.decide_reclaim(st, busy))
        except errors.NotFound:
            if name.endswith(schema.RETIRED_SUFFIX):
                return
            # a spec recorded before its image was retired (a chain link)
            parent = f"{pool}/{core.retired_name(name)}@"
            continue
        if not isinstance(decision, core.Remove):
            return
        if state.parent:  # a chain clone retired before: forget its link
            cluster.journal_update(policy.pool, remove=_link_keys(state))
        parent = state.parent


def busy_snapshots(cluster: ClusterAPI, policy: core.Policy) -> frozenset[str]:
    """Chain snapshots that operations in flight are building."""
    intents, _ = schema.load_journal(cluster.journal(policy.pool))
    return frozenset(i.snapshot for i in intents if i.op == "chain")


def _settle(cluster: ClusterAPI, pool: str, name: str,
            decide: Callable[[core.ImageState], core.Decision],
            before: Callable[[core.ImageState, core.Decision], None]
            | None = None) -> tuple[core.Decision, core.ImageState]:
    for attempt in range(1, ATTEMPTS + 1):
        state = cluster.state(pool, name)
        decision = decide(state)
        if isinstance(decision, core.Refuse):
            LOG.warning("not touching %s/%s: %s", pool, name, decision.reason)
            raise errors.NotOwned(
                f"the store does not remove {pool}/{name}: {decision.reason}")
        if isinstance(decision, core.Keep):
            LOG.info("keeping %s/%s: %s", pool, name, decision.reason)
            return decision, state
        try:
            if before is not None:
                before(state, decision)
            cluster.apply(state, decision)
            return decision, state
        except errors.Conflict as exc:
            LOG.info("attempt %d on %s/%s: %s", attempt, pool, name, exc)
            last = exc
            time.sleep(0.05 * attempt)
    raise errors.Conflict(
        f"gave up on {pool}/{name} after {ATTEMPTS} attempts ({last}); "
        "try again")
