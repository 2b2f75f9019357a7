"""Read, decide, act: the loop that applies core decisions to the cluster.

The cluster can change between reading an image and acting on it (Nova or
Cinder may clone a snapshot at any moment).  The adapter re-checks right
before each destructive step and raises Conflict; this loop then reads the
image again and decides again, a bounded number of times.
"""

from __future__ import annotations

import datetime
import logging
from typing import Callable, Protocol

from glance_rbd_tracked import core
from glance_rbd_tracked import errors

LOG = logging.getLogger(__name__)
ATTEMPTS = 5


class ClusterAPI(Protocol):
    """What the loop needs from :class:`glance_rbd_tracked.cluster.Cluster`."""

    def state(self, pool: str, name: str) -> core.ImageState: ...

    def apply(self, state: core.ImageState,
              decision: core.Decision) -> None: ...


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def delete(cluster: ClusterAPI, pool: str, name: str, policy: core.Policy,
           now: Callable[[], datetime.datetime] = utcnow) -> core.Decision:
    """Delete an image for Glance: remove it, or retire it while in use."""
    return _settle(cluster, pool, name,
                   lambda state: core.decide_delete(state, policy, now()))


def reclaim(cluster: ClusterAPI, pool: str, name: str) -> core.Decision:
    """Remove a retired image if nothing depends on it any more."""
    return _settle(cluster, pool, name, core.decide_reclaim)


def _settle(cluster: ClusterAPI, pool: str, name: str,
            decide: Callable[[core.ImageState], core.Decision]
            ) -> core.Decision:
    for attempt in range(1, ATTEMPTS + 1):
        state = cluster.state(pool, name)
        decision = decide(state)
        if isinstance(decision, core.Refuse):
            LOG.warning("not touching %s/%s: %s", pool, name, decision.reason)
            raise errors.NotOwned(
                f"the store does not remove {pool}/{name}: {decision.reason}")
        if isinstance(decision, core.Keep):
            LOG.info("keeping %s/%s: %s", pool, name, decision.reason)
            return decision
        try:
            cluster.apply(state, decision)
            return decision
        except errors.Conflict as exc:
            LOG.info("attempt %d on %s/%s: %s", attempt, pool, name, exc)
    raise errors.Conflict(
        f"{pool}/{name} kept changing during {ATTEMPTS} attempts; try again")
