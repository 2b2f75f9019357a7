"""Pure decisions about what the store may do to an image.

Rules this module owns:

* The store removes only what it owns: an image with an owner record of its
  own (see :mod:`schema`), or, when adoption is enabled, an image in the
  store's pool that glance_store's stock rbd driver wrote (named by a Glance
  image id, location snapshot ``snap``).  Anything else is refused.
* An image is removed only when none of its snapshots, in any snapshot
  namespace, has a clone, and every user snapshot on it is one the store owns.
  Otherwise deleting it from Glance *retires* it: it is renamed with
  ``RETIRED_SUFFIX`` and marked, and a later reclaim removes it once the last
  dependant is gone.
* A half-built chain is rolled back only as far as it is the store's own
  and unused: a target somebody already clones is kept and recorded as a
  finished chain instead.
* Nothing here performs I/O or reads a clock: callers pass the image's state
  and ``now`` in, and execute the returned decision; before each destructive
  step the executor re-reads the cluster and asks again.

The plans over many images (cleanup, flatten) are in :mod:`plans`.
"""

from __future__ import annotations

from collections.abc import Iterable
import dataclasses
import datetime
import re

from glance_rbd_tracked import schema

STOCK_SNAPSHOT = "snap"
_GLANCE_ID = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclasses.dataclass(frozen=True)
class Snap:
    """One snapshot and the clones that hang off it (``pool/image`` specs)."""

    name: str
    children: tuple[str, ...] = ()
    protected: bool = False
    namespace: str = "user"


@dataclasses.dataclass(frozen=True)
class ImageState:
    """What the cluster says about one image, read in one go."""

    pool: str
    name: str
    image_id: str
    snaps: tuple[Snap, ...] = ()
    records: schema.Records = dataclasses.field(
        default_factory=schema.Records)
    parent: str | None = None  # "pool/image@snap" when the image is a clone
    # librbd moved it to the trash to remove it and did not finish (its
    # remover died, or gave up racing another one); nothing can open it by
    # name, yet `rbd ls` still lists it
    removing: bool = False

    @property
    def spec(self) -> str:
        return f"{self.pool}/{self.name}"

    def snap(self, name: str) -> Snap | None:
        return next((s for s in self.snaps if s.name == name), None)


@dataclasses.dataclass(frozen=True)
class Policy:
    """The store's configuration as far as decisions are concerned."""

    pool: str
    adopt_stock_images: bool = True
    chain_pools: frozenset[str] = frozenset({"vms", "volumes"})
    max_clone_depth: int = 5


@dataclasses.dataclass(frozen=True)
class Remove:
    """Unprotect and remove ``snapshots`` in order, then the image itself."""

    snapshots: tuple[str, ...]
    reason: str = "nothing depends on it"


@dataclasses.dataclass(frozen=True)
class Retire:
    """Rename the image to ``new_name`` and write ``records`` onto it."""

    new_name: str
    records: tuple[schema.OwnerRecord | schema.RetiredRecord, ...]
    reason: str


@dataclasses.dataclass(frozen=True)
class Trim:
    """Remove ``snapshots`` (and the records of them) but keep the image."""

    snapshots: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Keep:
    """Leave the image as it is for now."""

    reason: str


@dataclasses.dataclass(frozen=True)
class Refuse:
    """The store must not touch this image."""

    reason: str


Decision = Remove | Retire | Trim | Keep | Refuse


def check_cluster(fsid: str | None, our_fsid: str) -> Refuse | None:
    """Refuse a location in another cluster: an image of the same name here
    would be another image."""
    if fsid is not None and fsid != our_fsid:
        return Refuse(f"it is in cluster {fsid}, not in this store's "
                      f"cluster {our_fsid}")
    return None


def check_location(fsid: str | None, pool: str | None, our_fsid: str,
                   policy: Policy) -> Refuse | None:
    """Refuse a location that points outside the store's cluster and pool."""
    refusal = check_cluster(fsid, our_fsid)
    if refusal is not None:
        return refusal
    if pool is not None and pool != policy.pool:
        return Refuse(f"it is in pool {pool!r}, not in this store's pool "
                      f"{policy.pool!r}")
    return None


def owned_snapshots(state: ImageState,
                    policy: Policy | None) -> frozenset[str] | None:
    """Names of the snapshots the store may remove from the image, or None
    if it does not own the image at all.

    A retired disk (retired, no owner record) was handed over by its owner to
    be destroyed: all its snapshots are the store's to remove once childless.
    """
    records = state.records
    tracked = {r.snapshot for r in records.snaps}
    if records.owner is not None:
        return frozenset({records.owner.snapshot} | tracked)
    if records.retired is not None:
        return frozenset(s.name for s in _user_snaps(state))
    if (policy is not None and policy.adopt_stock_images
            and state.pool == policy.pool
            and _GLANCE_ID.match(state.name)
            and {s.name for s in _user_snaps(state)} <= {STOCK_SNAPSHOT}):
        return frozenset({STOCK_SNAPSHOT})
    return None


def dependants(state: ImageState, owned: frozenset[str]) -> list[str]:
    """Why the image cannot be removed yet; empty when it can."""
    why = []
    for snap in state.snaps:
        if snap.children:
            why.append(f"snapshot {snap.name} ({snap.namespace}) has "
                       f"{len(snap.children)} clone(s): "
                       f"{', '.join(sorted(snap.children))}")
        elif snap.namespace == "user" and snap.name not in owned:
            why.append(f"snapshot {snap.name} was not made by this store")
    return why


def decide_delete(state: ImageState, policy: Policy,
                  now: datetime.datetime) -> Decision:
    """What deleting the image from Glance does to it."""
    if state.removing:
        return _finish_removal(state)
    retired = state.records.retired
    if retired is not None:
        if state.name == retired.original_name:
            # Marked, but the rename did not happen (a crash in between).
            return Retire(retired_name(state.name), (), retired.reason)
        return Keep("it is already pending deletion")
    owned = owned_snapshots(state, policy)
    if owned is None:
        return Refuse(f"{state.pool}/{state.name} has no ownership record of "
                      "this store and was not written by the stock rbd driver")
    why = dependants(state, owned)
    if not why:
        return Remove(_removable(state, owned))
    records: list[schema.OwnerRecord | schema.RetiredRecord] = []
    if state.records.owner is None:
        # Adopted stock image: record the adoption, the new name hides it.
        records.append(schema.OwnerRecord(
            image_id=state.image_id, kind=schema.Kind.STOCK,
            snapshot=STOCK_SNAPSHOT, created=schema.timestamp(now)))
    reason = "; ".join(why)
    records.append(schema.RetiredRecord(
        image_id=state.image_id, original_name=state.name,
        since=schema.timestamp(now), reason=reason))
    return Retire(retired_name(state.name), tuple(records), reason)


def decide_reclaim(state: ImageState,
                   busy: frozenset[str] = frozenset()) -> Decision:
    """What can go now: a retired image whose dependants are gone, or the
    store's chain snapshots (step 1) whose clone is gone.

    ``busy`` names snapshots that an operation in flight is building.
    """
    if state.removing:
        return _finish_removal(state)
    records = state.records
    retired = records.retired is not None
    owned = owned_snapshots(state, None) or frozenset()
    if retired and not dependants(state, owned) and not owned & busy:
        return Remove(_removable(state, owned))
    disposable = {r.snapshot for r in records.snaps}
    if retired and records.owner is None:
        disposable |= owned  # a retired disk: every snapshot may go
    idle = tuple(s.name for s in _user_snaps(state)
                 if s.name in disposable - busy and not s.children)
    # records of chain snapshots that were never made (an interrupted chain)
    idle += tuple(sorted({r.snapshot for r in records.snaps} - busy
                         - {s.name for s in state.snaps}))
    if idle:
        return Trim(idle)
    if retired:
        return Keep("; ".join(dependants(state, owned))
                    or "an operation is in flight on it")
    return Keep("it is not pending deletion and none of its chain "
                "snapshots is orphaned")


def decide_retire(state: ImageState, policy: Policy,
                  now: datetime.datetime) -> Decision:
    """What destroying an instance disk or volume does: remove it when
    nothing hangs off it, else retire it until the last clone is gone."""
    if state.removing:
        return _finish_removal(state)
    if state.pool not in policy.chain_pools:
        return Refuse(f"pool {state.pool!r} is not one the store retires "
                      f"disks in ({', '.join(sorted(policy.chain_pools))})")
    if state.records.owner is not None:
        return Refuse(f"{state.spec} is a Glance image of this store; "
                      "delete it through Glance")
    retired = state.records.retired
    if retired is not None:
        if state.name == retired.original_name:
            return Retire(retired_name(state.name), (), retired.reason)
        return Keep("it is already pending deletion")
    cloned = [s for s in state.snaps if s.children]
    if not cloned:
        return Remove(tuple(s.name for s in _user_snaps(state)))
    reason = "; ".join(dependants(state, frozenset(
        s.name for s in state.snaps)))
    record = schema.RetiredRecord(
        image_id=state.image_id, original_name=state.name,
        since=schema.timestamp(now), reason=reason)
    return Retire(retired_name(state.name), (record,), reason)


def decide_finish_retire(state: ImageState) -> Decision:
    """Rename an image that was marked retired but not renamed."""
    retired = state.records.retired
    if (retired is not None and state.name == retired.original_name
            and not state.removing):
        return Retire(retired_name(state.name), (), retired.reason)
    return Keep("no interrupted retirement")


def decide_unpublished(state: ImageState) -> Remove | Keep:
    """A half-built chain target (2): removed with its snapshots, unless
    somebody clones it already."""
    if any(s.children for s in state.snaps):
        return Keep("it is cloned already")
    return Remove(tuple(s.name for s in _user_snaps(state)),
                  "a partial chain target")


def decide_drop_snapshot(state: ImageState, snapshot: str) -> Trim | Keep:
    """Remove one snapshot the store made, once nothing clones it."""
    snap = state.snap(snapshot)
    if snap is None:
        return Keep(f"{state.spec}@{snapshot} is gone already")
    if snap.children:
        return Keep(f"{state.spec}@{snapshot} has clones")
    return Trim((snapshot,))


@dataclasses.dataclass(frozen=True)
class Rollback:
    """How to undo a chain that was not finished.

    ``remove_target``: the half-built target (2) goes.  ``link``: the target
    is cloned already, so it stays and is recorded as a finished chain.
    ``release``: the source snapshot (1) to release, ``pool/image@snap``,
    in the store's cluster, or in cluster ``release_in`` when set.
    """

    outcome: str
    reason: str
    remove_target: bool = False
    link: schema.ChainLink | None = None
    release: str | None = None
    release_in: str | None = None


def decide_rollback(intent: schema.Intent,
                    target: ImageState | None) -> Rollback:
    """Undo an unfinished chain ``intent``; ``target`` is what stands under
    the target's name now (None: nothing, or not to be looked at).

    The name was free when the intent was journalled, so what stands there
    was made by this operation, unless it is plainly somebody else's."""
    note = ""
    if target is not None and not _made_by(target, intent):
        note = (f"; {intent.target} was not made by the interrupted "
                "snapshot and is left alone")
        target = None
    if target is not None and any(s.children for s in target.snaps):
        link = schema.ChainLink(target=intent.target,
                                source=f"{intent.source}@{intent.snapshot}",
                                created=intent.started)
        return Rollback("kept: already cloned",
                        f"{intent.target} is cloned already; the chain "
                        "stays" + note, link=link)
    fsid, colon, source = intent.source.rpartition(":")
    return Rollback("rolled back", f"{intent.op} interrupted" + note,
                    remove_target=target is not None,
                    release=f"{source}@{intent.snapshot}",
                    release_in=fsid if colon else None)


def _made_by(target: ImageState, intent: schema.Intent) -> bool:
    owner = target.records.owner
    if owner is not None:
        return owner.kind in (schema.Kind.CHAIN, schema.Kind.COPY)
    return target.parent == f"{intent.source}@{intent.snapshot}"


def busy_snapshots(intents: Iterable[schema.Intent]) -> frozenset[str]:
    """Chain snapshots that operations in flight are building."""
    return frozenset(i.snapshot for i in intents if i.op == schema.Op.CHAIN)


def owner_record(kind: schema.Kind, now: datetime.datetime,
                 snapshot: str = STOCK_SNAPSHOT) -> schema.OwnerRecord:
    """The owner record of a new image; the adapter fills in its RBD id."""
    return schema.OwnerRecord(image_id="", kind=kind, snapshot=snapshot,
                              created=schema.timestamp(now))


def check_chain_pool(pool: str, policy: Policy) -> Refuse | None:
    """Whether the store may make chains from images in ``pool``."""
    if pool not in policy.chain_pools:
        return Refuse(f"pool {pool!r} is not one the store makes chains "
                      f"from ({', '.join(sorted(policy.chain_pools))})")
    return None


def check_chain_source(state: ImageState, policy: Policy) -> Refuse | None:
    """Whether the store may make a chain from this source image."""
    refusal = check_chain_pool(state.pool, policy)
    if refusal is not None:
        return refusal
    if state.records.retired is not None:
        return Refuse(f"{state.spec} is pending deletion")
    return None


def chain_snapshot_name(clone_name: str) -> str:
    """The name of a chain's step-1 snapshot on the source disk."""
    return f"rbd_tracked-{clone_name}"


def parent_of(spec: str) -> tuple[str, str, str]:
    """Split ``pool/image@snap`` (the pool may hold a namespace)."""
    image_spec, _, snap = spec.rpartition("@")
    pool, _, name = image_spec.rpartition("/")
    return pool, name, snap


def retired_name(name: str) -> str:
    return name + schema.RETIRED_SUFFIX


def _finish_removal(state: ImageState) -> Decision:
    """A removal librbd started is finished, whoever started it: the image
    left the directory, so nothing can open or clone it any more."""
    if state.snaps:  # librbd checks there are none before it starts
        return Keep("its removal was interrupted, yet it has snapshots")
    return Remove((), "its removal was interrupted; finishing it")


def _user_snaps(state: ImageState) -> list[Snap]:
    return [s for s in state.snaps if s.namespace == "user"]


def _removable(state: ImageState, owned: frozenset[str]) -> tuple[str, ...]:
    return tuple(s.name for s in _user_snaps(state) if s.name in owned)
