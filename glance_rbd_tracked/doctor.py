"""What the store needs from the cluster's configuration, and whether it
has it: the pure evaluation behind ``glance-rbd-tracked doctor``.

Rules this module owns:

* Clone format 2 is in effect when the client asks for it, or when it
  leaves the choice to librbd (``auto``) and the cluster requires mimic or
  later clients.  Only then can a chain's source snapshot leave the disk
  (moved to the trash namespace).
* On clone format 2, stock Nova and Cinder leave nothing behind only where
  the pool of the disks and volumes has ``rbd_move_parent_to_trash_on_remove``
  (librbd then keeps a removed disk in the RBD trash while chains need it).
  On clone format 1 that option does nothing, and they leave every disk or
  volume that carries a chain snapshot until it is retired.
* The store reads and writes its own pool and every chain pool, and lists
  the clones of snapshots (``class-read`` on ``rbd_children``) in every pool
  of the cluster: librbd looks for clones in all of them.
* The store's op timeout outlasts the cluster's failure detection.  An op
  sent to an OSD that died waits until the cluster marks that OSD down
  (its peers report it after ``osd_heartbeat_grace``, and they look every
  ``osd_heartbeat_interval``), and is only then sent again to the OSD that
  takes over; a store that gives up sooner fails requests that the other
  copies could have served.
* The cluster keeps one chain policy per store pool (see
  :mod:`glance_rbd_tracked.policy`): the one glance-api's configuration
  sets (:func:`policy.wanted`).  Every service that recorded the policy it
  runs with (a view) runs with the cluster's; a view that differs is
  reported with what differs and why (its override, or not yet re-read).
"""

from __future__ import annotations

import dataclasses
import enum
import math

from glance_rbd_tracked import core
from glance_rbd_tracked import policy as policy_mod

RELEASES = ("argonaut", "bobtail", "cuttlefish", "dumpling", "emperor",
            "firefly", "giant", "hammer", "infernalis", "jewel", "kraken",
            "luminous", "mimic", "nautilus", "octopus", "pacific", "quincy",
            "reef", "squid", "tentacle")
PARENT_TO_TRASH = "rbd_move_parent_to_trash_on_remove"


@dataclasses.dataclass(frozen=True)
class PoolFacts:
    """What was read about one pool; None: could not be told."""

    name: str
    exists: bool
    parent_to_trash: bool | None = None
    can_read: bool | None = None
    can_write: bool | None = None
    can_list_clones: bool | None = None


@dataclasses.dataclass(frozen=True)
class Facts:
    require_min_compat_client: str | None
    client_clone_format: str  # the client's rbd_default_clone_format
    user: str
    store_pool: str
    chain_pools: tuple[str, ...]
    pools: tuple[PoolFacts, ...]
    op_timeout: float | None = None  # the store's rbd_tracked_op_timeout
    # seconds; None: could not be told.  The grace is the longer of the
    # OSDs' (when they report a silent peer) and the monitors' (when they
    # act on such reports).
    osd_heartbeat_grace: float | None = None
    osd_heartbeat_interval: float | None = None
    failure_detection_from: str = ""  # where those two were read


@dataclasses.dataclass(frozen=True)
class ServiceView:
    """The chain policy one service recorded that it runs with; ``policy``
    None: its record could not be read (``error`` says why)."""

    key: str
    service: str = ""
    host: str = ""
    source: str = ""
    since: str = ""
    policy: core.Policy | None = None
    error: str = ""


@dataclasses.dataclass(frozen=True)
class PolicyFacts:
    store_pool: str
    wanted: core.Policy  # glance-api's configuration over the cluster's
    cluster: core.Policy | None  # None: it keeps none (or cannot be read)
    cluster_error: str = ""
    views: tuple[ServiceView, ...] = ()
    refresh: float = 60.0  # seconds a service may take to re-read it


class Status(enum.StrEnum):
    OK = "ok"
    FIX = "fix"


@dataclasses.dataclass(frozen=True)
class Finding:
    check: str
    subject: str
    status: Status
    detail: str
    fix: str = ""
    settable: bool = False  # doctor --execute can set it


def clone_format(facts: Facts) -> int:
    """The clone format new clones get."""
    if facts.client_clone_format in ("1", "2"):
        return int(facts.client_clone_format)
    release = facts.require_min_compat_client or "luminous"
    known = release in RELEASES
    return 2 if known and RELEASES.index(release) >= RELEASES.index(
        "mimic") else 1


def evaluate(facts: Facts) -> list[Finding]:
    """Every check, in a stable order: the cluster, the store's op timeout,
    then each pool."""
    fmt = clone_format(facts)
    findings = [Finding(
        "clone format", "cluster", Status.OK if fmt == 2 else Status.FIX,
        f"clones are made in format {fmt} (require_min_compat_client "
        f"{facts.require_min_compat_client or 'unknown'}, client "
        f"rbd_default_clone_format {facts.client_clone_format})"
        + ("" if fmt == 2 else ": a chain's source snapshot stays on the "
           "disk, and stock Nova and Cinder leave such disks and volumes "
           "until they are retired"),
        "" if fmt == 2 else "ceph osd set-require-min-compat-client mimic "
        "(once every client is mimic or later)")]
    findings.extend(_op_timeout(facts))
    by_name = {p.name: p for p in facts.pools}
    ours = (facts.store_pool, *facts.chain_pools)
    for name in ours:
        pool = by_name[name]
        role = "store pool" if name == facts.store_pool else "chain pool"
        if not pool.exists:
            findings.append(Finding("exists", name, Status.FIX,
                                    f"the {role} does not exist",
                                    f"ceph osd pool create {name}; "
                                    f"rbd pool init {name}"))
            continue
        findings.extend(_access(facts.user, pool))
        if name in facts.chain_pools and name != facts.store_pool:
            findings.append(_parent_to_trash(pool, fmt))
    for pool in facts.pools:  # librbd lists clones in every pool
        if pool.name not in ours and pool.can_list_clones is not None:
            findings.extend(f for f in _access(facts.user, pool)
                            if f.check == "list clones")
    return findings


def failure_detection(facts: Facts) -> float | None:
    """The longest an OSD that died may stay up in the cluster's map:
    ``osd_heartbeat_grace`` + ``osd_heartbeat_interval`` seconds."""
    grace, interval = facts.osd_heartbeat_grace, facts.osd_heartbeat_interval
    return None if grace is None or interval is None else grace + interval


def _op_timeout(facts: Facts) -> list[Finding]:
    bound = failure_detection(facts)
    timeout = facts.op_timeout
    if bound is None or timeout is None:
        return []
    how = (f"osd_heartbeat_grace {facts.osd_heartbeat_grace:g} s + "
           f"osd_heartbeat_interval {facts.osd_heartbeat_interval:g} s = "
           f"{bound:g} s" + (f", read from {facts.failure_detection_from}"
                             if facts.failure_detection_from else ""))
    if timeout > bound:
        return [Finding(
            "op timeout", "store", Status.OK,
            f"rbd_tracked_op_timeout {timeout:g} s outlasts the time the "
            f"cluster may take to mark down an OSD that died ({how}), after "
            "which its ops go to the OSD that takes over")]
    return [Finding(
        "op timeout", "store", Status.FIX,
        f"rbd_tracked_op_timeout {timeout:g} s is not longer than the time "
        f"the cluster may take to mark down an OSD that died ({how}): "
        "requests that reach such an OSD fail before they are sent to the "
        "OSD that takes over, though the other copies could serve them",
        f"set rbd_tracked_op_timeout above {bound:g} (say "
        f"{math.ceil(bound) + 10}) in the store's section of glance-api's "
        "configuration, or shorten the cluster's failure detection (ceph "
        "config set global osd_heartbeat_grace SECONDS: the monitors use it "
        "too)")]


def _access(user: str, pool: PoolFacts) -> list[Finding]:
    checks = (("read", pool.can_read, f"allow r pool={pool.name}"),
              ("write", pool.can_write, f"allow w pool={pool.name}"),
              ("list clones", pool.can_list_clones,
               "allow class-read object_prefix rbd_children"))
    found = []
    for check, allowed, cap in checks:
        if allowed is None:
            continue
        found.append(Finding(
            check, pool.name, Status.OK if allowed else Status.FIX,
            f"client.{user} {'may' if allowed else 'may not'} {check} in "
            f"{pool.name}",
            "" if allowed else f"add to client.{user}'s osd caps: "
            f"profile rbd pool={pool.name} (or at least {cap})"))
    return found


def _parent_to_trash(pool: PoolFacts, fmt: int) -> Finding:
    if pool.parent_to_trash:
        return Finding(PARENT_TO_TRASH, pool.name, Status.OK,
                       "stock Nova and Cinder remove disks and volumes that "
                       "chain images depend on; librbd keeps them in the RBD "
                       "trash until the last chain image is deleted")
    detail = ("not set: on clone format 2 stock Nova cannot remove a disk "
              "whose snapshot a chain image uses (it leaves it for good), "
              "and stock Cinder flattens the chain image"
              if fmt == 2 else "not set (it takes effect once clones are "
              "format 2)")
    return Finding(PARENT_TO_TRASH, pool.name, Status.FIX, detail,
                   f"rbd config pool set {pool.name} {PARENT_TO_TRASH} true",
                   settable=True)


POLICY_CHECK = "chain policy"
VIEW_CHECK = "service policy"


def evaluate_policy(facts: PolicyFacts) -> list[Finding]:
    """The cluster's chain policy against glance-api's configuration, then
    every service's view against the cluster's, by service and host."""
    pool, wanted, cluster = facts.store_pool, facts.wanted, facts.cluster
    key = policy_mod.POLICY_KEY
    set_it = "glance-rbd-tracked doctor --execute"
    if facts.cluster_error:
        found = [Finding(
            POLICY_CHECK, pool, Status.FIX,
            f"the chain policy kept in pool {pool} cannot be read "
            f"({facts.cluster_error}): services that follow it fail",
            f"run a release that reads it; if it is damaged: rbd pool "
            f"metadata remove {pool} {key}, then {set_it}")]
    elif cluster is None:
        found = [Finding(
            POLICY_CHECK, pool, Status.FIX,
            f"pool {pool} keeps no chain policy: every service runs with its "
            "own options; doctor --execute sets glance-api's, "
            + policy_mod.describe(wanted), set_it, settable=True)]
    elif not policy_mod.same(cluster, wanted):
        found = [Finding(
            POLICY_CHECK, pool, Status.FIX,
            f"the chain policy kept in pool {pool} is not glance-api's "
            "configuration: "
            + ", ".join(policy_mod.differences(cluster, wanted)),
            f"{set_it} (or take those options out of glance-api's "
            "configuration)", settable=True)]
    else:
        found = [Finding(POLICY_CHECK, pool, Status.OK,
                         f"pool {pool} keeps the chain policy "
                         + policy_mod.describe(cluster))]
    reference = cluster or wanted
    for view in sorted(facts.views, key=lambda v: v.key):
        found.append(_view(facts, view, reference, cluster is not None))
    return found


def _view(facts: PolicyFacts, view: ServiceView, reference: core.Policy,
          kept: bool) -> Finding:
    pool = facts.store_pool
    subject = view.key.removeprefix(policy_mod.VIEW_KEY_PREFIX)
    forget = f"rbd pool metadata remove {pool} {view.key}"
    if view.policy is None:
        return Finding(VIEW_CHECK, subject, Status.FIX,
                       f"its record cannot be read ({view.error})", forget)
    theirs = "the cluster's" if kept else "the one doctor --execute sets"
    since = f"since {view.since}"
    if policy_mod.same(view.policy, reference):
        how = " (its own options, the same)" \
            if view.source != policy_mod.Source.CLUSTER else ""
        return Finding(VIEW_CHECK, subject, Status.OK,
                       f"runs with {theirs} chain policy{how}, {since}")
    what = ", ".join(policy_mod.differences(reference, view.policy))
    if view.source == policy_mod.Source.OVERRIDE:
        return Finding(
            VIEW_CHECK, subject, Status.FIX,
            f"overrides {theirs} chain policy with its own options, {since}: "
            f"{what}",
            "set its policy_override option false (or its options equal to "
            f"the cluster's) and restart it; a service that is gone: {forget}")
    why = ("the cluster kept none when it read it" if view.source ==
           policy_mod.Source.LOCAL else "it read an older one")
    return Finding(
        VIEW_CHECK, subject, Status.FIX,
        f"runs with another chain policy than {theirs} ({why}), {since}: "
        f"{what}",
        f"nothing while it runs: it reads the cluster's again within "
        f"{facts.refresh:g} s; if it is gone: {forget}")
