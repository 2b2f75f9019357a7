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
* A snapshot the store did not make is never removed, on any path: a disk
  or volume that carries one is retired, not removed, and stays until its
  owner removes that snapshot.  The snapshots the store makes on disks are
  the chain snapshots it has a record of.
* An image in the RBD trash is not gone.  One that librbd parked there
  until its last clone goes (source ``user_parent``) is librbd's to remove.
  One its owner moved there (Cinder does, when a snapshot blocks the
  removal) is finished by the store once only the store's own snapshots
  kept it: they go when nothing clones them, then the image leaves the
  trash (not before the deferment its owner set).  One that has left the
  trash by the time it is read is not the trash's business any more.
* A half-built chain is rolled back only as far as it is the store's own
  and unused: a target somebody already clones is kept and recorded as a
  finished chain instead.
* Nothing here performs I/O or reads a clock: callers pass the image's state
  and ``now`` in, and execute the returned decision; before each destructive
  step the executor re-reads the cluster and asks again.

The plans over many images (cleanup, flatten) are in :mod:`plans`.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import re

from glance_rbd_tracked import errors
from glance_rbd_tracked import schema
from glance_rbd_tracked import specs

STOCK_SNAPSHOT = "snap"
_GLANCE_ID = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclasses.dataclass(frozen=True)
class Snap:
    """One snapshot and the clones that hang off it (``pool/image`` specs).

    A snapshot removed while format-2 clones use it moves to the ``trash``
    namespace under a new name; ``original`` is the name it had."""

    name: str
    children: tuple[str, ...] = ()
    protected: bool = False
    namespace: str = "user"
    original: str = ""
    id: int | None = None  # RBD's snapshot id (never reused in a pool)

    @property
    def names(self) -> frozenset[str]:
        return frozenset({self.name, self.original} - {""})


#: Where an image in the RBD trash came from (librbd's trash sources).
TRASH_USER = "user"                # rbd trash mv; what Cinder does
TRASH_USER_PARENT = "user_parent"  # removed while clones need it: librbd's
TRASH_REMOVING = "removing"        # a removal that did not finish


@dataclasses.dataclass(frozen=True)
class Trash:
    """An image in the RBD trash: who put it there, when, and until when
    its owner wants it kept."""

    source: str
    deleted: datetime.datetime
    deferred_until: datetime.datetime


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
    trash: Trash | None = None  # in the RBD trash (not removing)

    @property
    def spec(self) -> str:
        return f"{self.pool}/{self.name}"

    def snap(self, name: str) -> Snap | None:
        """The snapshot called ``name``, or that was, before it moved to
        the trash namespace."""
        return next((s for s in self.snaps if name in s.names), None)


@dataclasses.dataclass(frozen=True)
class Policy:
    """The store's configuration as far as decisions are concerned."""

    pool: str
    adopt_stock_images: bool = True
    chain_pools: frozenset[str] = frozenset({"vms", "volumes"})
    max_clone_depth: int = 5


class Phase(enum.Enum):
    """Where an image is in its life, as far as the deciders care; the
    first that applies, in this order."""

    REMOVING = "removing"    # librbd's removal of it did not finish
    TRASHED = "trashed"      # in the RBD trash
    RETIRING = "retiring"    # marked retired, not renamed yet (interrupted)
    RETIRED = "retired"      # marked retired and renamed: pending deletion
    OWNED = "owned"          # carries the store's owner record
    ADOPTABLE = "adoptable"  # the stock driver's, and the policy adopts it
    FOREIGN = "foreign"      # none of these: not the store's, as it stands


def phase(state: ImageState, policy: Policy | None = None) -> Phase:
    """The image's :class:`Phase`, derived once for every decider;
    ``policy`` None: adoption is not considered (never ADOPTABLE)."""
    if state.removing:
        return Phase.REMOVING
    if state.trash is not None:
        return Phase.TRASHED
    retired = state.records.retired
    if retired is not None:
        return (Phase.RETIRING if state.name == retired.original_name
                else Phase.RETIRED)
    if state.records.owner is not None:
        return Phase.OWNED
    if _adoptable(state, policy):
        return Phase.ADOPTABLE
    return Phase.FOREIGN


#: The phases of an image marked retired, renamed or not.
PENDING_DELETION = frozenset({Phase.RETIRING, Phase.RETIRED})


@dataclasses.dataclass(frozen=True)
class Remove:
    """Unprotect and remove ``snapshots`` in order, then the image itself;
    ``break_locks``: first break the exclusive lock a dead writer left on
    it (blocklisting that client, as Ceph's own tools do)."""

    snapshots: tuple[str, ...]
    reason: str = "nothing depends on it"
    break_locks: bool = False


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
    reason: str = "nothing clones them any more"


@dataclasses.dataclass(frozen=True)
class Keep:
    """Leave the image as it is for now."""

    reason: str


@dataclasses.dataclass(frozen=True)
class Refuse:
    """The store must not touch this image."""

    reason: str


@dataclasses.dataclass(frozen=True)
class Absent:
    """What the caller named is not there (a location whose snapshot does
    not exist): nothing is done."""

    reason: str


Decision = Remove | Retire | Trim | Keep | Refuse | Absent


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

    A disk or volume the store retired was handed over by its owner to be
    destroyed, but only the chain snapshots the store made on it are the
    store's; any other snapshot keeps it until its owner removes it.
    """
    records = state.records
    tracked = {r.snapshot for r in records.snaps}
    if records.owner is not None:
        return frozenset({records.owner.snapshot} | tracked)
    if records.retired is not None or state.trash is not None:
        return frozenset(tracked)
    if _adoptable(state, policy):
        return frozenset({STOCK_SNAPSHOT})
    return None


def _adoptable(state: ImageState, policy: Policy | None) -> bool:
    """An image glance_store's stock rbd driver wrote into the store's
    pool, which the policy lets the store adopt (records aside)."""
    return (policy is not None and policy.adopt_stock_images
            and state.pool == policy.pool
            and _GLANCE_ID.match(state.name) is not None
            and {s.name for s in _user_snaps(state)} <= {STOCK_SNAPSHOT})


def dependants(state: ImageState, owned: frozenset[str]) -> list[str]:
    """Why the image cannot be removed yet; empty when it can."""
    why = []
    for snap in state.snaps:
        if snap.children:
            why.append(f"snapshot {_label(snap)} has "
                       f"{len(snap.children)} clone(s): "
                       f"{', '.join(sorted(snap.children))}")
        elif snap.namespace == "user" and snap.name not in owned:
            why.append(f"snapshot {snap.name} was not made by this store")
    return why


def _label(snap: Snap) -> str:
    if snap.original:
        return f"{snap.original} ({snap.namespace}: {snap.name})"
    return f"{snap.name} ({snap.namespace})"


def decide_delete(state: ImageState, policy: Policy,
                  now: datetime.datetime,
                  snapshot: str | None = None) -> Decision:
    """What deleting the image from Glance does to it; ``snapshot`` is the
    one its location names (a location is followed exactly: a snapshot
    that is not there changes nothing)."""
    now_in = phase(state, policy)
    if now_in is Phase.REMOVING:
        return _finish_removal(state)
    if now_in is Phase.TRASHED:
        return decide_trashed(state, now)
    if now_in is Phase.RETIRING:
        return _finish_rename(state)
    if now_in is Phase.RETIRED:
        return Keep("it is already pending deletion")
    owned = owned_snapshots(state, policy)
    if owned is None:  # Phase.FOREIGN
        return Refuse(f"{state.pool}/{state.name} has no ownership record of "
                      "this store and was not written by the stock rbd driver")
    if snapshot is not None and state.snap(snapshot) is None:
        return Absent(f"{state.spec} has no snapshot {snapshot}")
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


def decide_reclaim(state: ImageState, now: datetime.datetime,
                   busy: frozenset[str] = frozenset()) -> Decision:
    """What can go now: a retired image whose dependants are gone, or the
    store's chain snapshots (step 1) whose clone is gone.

    ``busy`` names snapshots that an operation in flight is building.
    """
    now_in = phase(state)
    if now_in is Phase.REMOVING:
        return _finish_removal(state)
    if now_in is Phase.TRASHED:
        return decide_trashed(state, now, busy)
    retired = now_in in PENDING_DELETION
    owned = owned_snapshots(state, None) or frozenset()
    if retired and not dependants(state, owned) and not owned & busy:
        return Remove(_removable(state, owned))
    idle = _idle_chain_snapshots(state, busy)
    stays = ("; ".join(dependants(state, owned))
             or "an operation is in flight on it")
    if idle:
        return Trim(idle, "chain snapshots of the store that nothing clones "
                    "any more" + (f"; the image stays: {stays}"
                                  if retired else ""))
    if retired:
        return Keep(stays)
    return Keep("it is not pending deletion and none of its chain "
                "snapshots is orphaned")


def _idle_chain_snapshots(state: ImageState,
                          busy: frozenset[str]) -> tuple[str, ...]:
    """The store's chain snapshots on the image that nothing clones any
    more, and records of chain snapshots that are gone (never made, or
    removed by librbd from the trash namespace with their last clone)."""
    made = {r.snapshot for r in state.records.snaps} - busy
    # (a trash-namespace one librbd could not remove with its last clone,
    # say for want of write access to this pool, by its trash name)
    idle = tuple(s.name for s in state.snaps
                 if (s.original or s.name) in made and not s.children
                 and s.namespace in ("user", "trash"))
    present = frozenset().union(*(s.names for s in state.snaps))
    return idle + tuple(sorted(made - present))


def decide_trashed(state: ImageState, now: datetime.datetime,
                   busy: frozenset[str] = frozenset()) -> Decision:
    """An image in the RBD trash (see the module's rules); Absent when the
    read shows it no longer there: it was listed in the trash, then
    restored, or librbd is removing it (``rbd rm`` parks an image in the
    trash as ``removing`` on its way out, and puts it back if that fails)."""
    trash = state.trash
    if phase(state) is not Phase.TRASHED or trash is None:
        return Absent(f"{state.spec} is no longer in the RBD trash")
    idle = _idle_chain_snapshots(state, busy)
    if trash.source == TRASH_USER_PARENT:
        # only records can be idle here: librbd took the snapshots
        return Trim(idle, "records of chain snapshots librbd removed with "
                    "their last clone") if idle else Keep(
            "librbd parked it in the trash and removes it when its last "
            "clone is gone")
    owned = owned_snapshots(state, None) or frozenset()
    if not owned:
        return Keep("it is in the RBD trash and not the store's")
    why = dependants(state, owned)
    if why and idle:
        return Trim(idle, "chain snapshots of the store that nothing clones "
                    f"any more; the image stays in the trash: {'; '.join(why)}")
    if why:
        return Keep("; ".join(why))
    if trash.deferred_until > now:
        return Trim(idle, "chain snapshots of the store that nothing clones "
                    "any more; its owner keeps the image in the trash until "
                    f"{schema.timestamp(trash.deferred_until)}") if idle \
            else Keep(
            f"its owner keeps it in the trash until "
            f"{schema.timestamp(trash.deferred_until)}")
    return Remove(tuple(s.name for s in _user_snaps(state)),
                  f"its owner moved it to the trash ({trash.source}) and "
                  "only the store's snapshots kept it there")


def decide_retire(state: ImageState, policy: Policy,
                  now: datetime.datetime) -> Decision:
    """What destroying an instance disk or volume does: remove it when
    nothing hangs off it and it carries no snapshot the store did not make,
    else retire it until the last clone (and the last snapshot of others)
    is gone."""
    now_in = phase(state, policy)
    if now_in is Phase.REMOVING:
        return _finish_removal(state)
    if now_in is Phase.TRASHED:
        return decide_trashed(state, now)
    if state.pool not in policy.chain_pools:
        return Refuse(f"pool {state.pool!r} is not one the store retires "
                      f"disks in ({', '.join(sorted(policy.chain_pools))})")
    # before the phase: a retired Glance image carries its owner record
    # still, and is Glance's to delete all the same
    if state.records.owner is not None:
        return Refuse(f"{state.spec} is a Glance image of this store; "
                      "delete it through Glance")
    if now_in is Phase.RETIRING:
        return _finish_rename(state)
    if now_in is Phase.RETIRED:
        return Keep("it is already pending deletion")
    why = dependants(state, frozenset(r.snapshot
                                      for r in state.records.snaps))
    if not why:
        return Remove(tuple(s.name for s in _user_snaps(state)))
    reason = "; ".join(why)
    record = schema.RetiredRecord(
        image_id=state.image_id, original_name=state.name,
        since=schema.timestamp(now), reason=reason)
    return Retire(retired_name(state.name), (record,), reason)


def decide_finish_delete(state: ImageState, policy: Policy,
                         now: datetime.datetime,
                         busy: frozenset[str] = frozenset()) -> Decision:
    """Finish a journalled removal that was interrupted, decided again the
    way it was decided: a retired image is reclaimed, an image of the
    store's pool deleted, a disk or volume of a chain pool retired (its
    owner destroyed it; it has no record of the store to delete it by).
    One being removed or in the RBD trash is finished as reclaim does."""
    if phase(state) in (Phase.REMOVING, Phase.TRASHED, Phase.RETIRED):
        return decide_reclaim(state, now, busy)
    if state.pool == policy.pool:
        return decide_delete(state, policy, now)
    return decide_retire(state, policy, now)


def decide_finish_retire(state: ImageState) -> Decision:
    """Rename an image that was marked retired but not renamed."""
    if phase(state) is Phase.RETIRING:
        return _finish_rename(state)
    return Keep("no interrupted retirement")


def _finish_rename(state: ImageState) -> Retire:
    """Marked retired, but the rename did not happen (a crash in between):
    finish it (the image is in :attr:`Phase.RETIRING`)."""
    retired = state.records.retired
    assert retired is not None
    return Retire(retired_name(state.name), (), retired.reason)


def unfinished(decision: Decision, before: ImageState,
               after: ImageState | None) -> str | None:
    """Why a re-read (``after``: the image under its name once the decision
    was carried out, or for a Retire under its old name if the new one has
    none; None if there is none) does not show ``decision`` done; None when
    it does."""
    same = after is not None and after.image_id == before.image_id
    if isinstance(decision, Remove):
        return f"{before.spec} is still there" if same else None
    if not same or after is None:
        # another worker removed it meanwhile: what was to go is gone
        return None
    if isinstance(decision, Retire):
        if after.name != decision.new_name:
            return f"{after.spec} was not renamed to {decision.new_name}"
        if after.records.retired is None:
            return f"{after.spec} is not marked retired"
        return None
    if isinstance(decision, Trim):
        left = sorted(name for name in decision.snapshots
                      if after.snap(name) or after.records.snap(name))
        if left:
            return f"{after.spec} still has {', '.join(left)}"
    return None


def journalled_op(decision: Decision, source: str | None) -> schema.Op | None:
    """What a delete, retirement or reclaim journals before it carries out
    ``decision``, so that cleanup can finish it after a crash: a removal
    that leaves a parent to release (``source``: the image's parent, or the
    source of a chain image something flattened) as a DELETE, a retirement
    (its rename) as a RETIRE; None: nothing would be left to finish."""
    if isinstance(decision, Remove) and source:
        return schema.Op.DELETE
    if isinstance(decision, Retire):
        return schema.Op.RETIRE
    return None


def release_bound(spec: str, policy: Policy) -> str | None:
    """Why releasing ``spec`` (``pool/image@snap``) goes no further, before
    reading it: it lies outside the store's pools (or names none).  None:
    it may go on."""
    try:
        pool = specs.SnapSpec.parse(spec).pool_spec
    except errors.Invalid as exc:
        return str(exc)
    if pool != policy.pool and pool not in policy.chain_pools:
        return (f"pool {pool!r} is neither the store's nor one it makes "
                "chains from")
    return None


@dataclasses.dataclass(frozen=True)
class ReleaseStep:
    """Where a release goes after deciding on one image of the family:
    ``next``, the parent to release next (None: it stops here);
    ``forget_links``, the image removed was a chain clone retired before,
    whose journal links go with it."""

    next: str | None
    reason: str
    forget_links: bool = False


def release_next(spec: str, decision: Decision | None,
                 state: ImageState | None) -> ReleaseStep:
    """The step after releasing ``spec``: ``decision`` is what was decided
    on its image, ``state`` that image; both None when there is no image of
    that name.  A release goes up only past an image it removed."""
    image = specs.SnapSpec.parse(spec).image
    if decision is None:
        if image.name.endswith(schema.RETIRED_SUFFIX):
            return ReleaseStep(None, f"{image} is gone")
        # a spec recorded before its image was retired (a chain link)
        return ReleaseStep(str(image.renamed(retired_name(image.name)).at("")),
                           f"{image} is gone; it may be retired")
    if not isinstance(decision, Remove):
        return ReleaseStep(None, f"{image} stays: {decision.reason}")
    parent = state.parent if state is not None else None
    if not parent:
        return ReleaseStep(None, f"{image} is removed and had no parent")
    return ReleaseStep(parent, f"{image} is removed; its parent may go too",
                       forget_links=True)


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
    return Trim((snapshot,), "the store made it and nothing clones it")


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
    fsid, source = specs.cluster_of(intent.source)
    return Rollback("rolled back", f"{intent.op} interrupted" + note,
                    remove_target=target is not None,
                    release=f"{source}@{intent.snapshot}", release_in=fsid)


def _made_by(target: ImageState, intent: schema.Intent) -> bool:
    owner = target.records.owner
    if owner is not None:
        return owner.kind in (schema.Kind.CHAIN, schema.Kind.COPY)
    return target.parent == f"{intent.source}@{intent.snapshot}"


def moves_to_trash(clone_format: int) -> bool:
    """Whether a chain's source snapshot (1) moves to the trash namespace
    once its clone (2) exists.  With clone format 2 it can: the source then
    carries no user snapshot, so that Nova and Cinder remove it as they
    always do (librbd keeps it in the trash while the chain needs it).  A
    format-1 clone needs its parent snapshot protected where it is."""
    return clone_format >= 2


@dataclasses.dataclass(frozen=True)
class PathFailure:
    """What the failure of one path of a chain (a clone, a copy, a stream)
    means: ``next_path``, remove what the path made and try the next one;
    otherwise the attempt ends, the error goes up and the chain is rolled
    back (by cleanup, when the cluster did not answer)."""

    next_path: bool
    reason: str


#: Errors that end the attempt whatever path met them, in the order looked
#: up (the first class the error is an instance of).
_ENDS_ATTEMPT: tuple[tuple[type[errors.TrackedError], str], ...] = (
    (errors.NotOwned, "the store may not make a chain of it by any path"),
    (errors.CorruptMetadata, "a record does not parse: every path would "
     "meet it"),
    (errors.NoSpace, "the cluster or the pool is full: a copy needs more "
     "space than a clone"),
    (errors.AlreadyExists, "somebody else made the target meanwhile: it is "
     "not the store's to remove"),
)


def after_path_failure(exc: BaseException) -> PathFailure:
    """Whether a chain moves on to its next path after ``exc``."""
    for kind, reason in _ENDS_ATTEMPT:
        if isinstance(exc, kind):
            return PathFailure(False, reason)
    if errors.timed_out(exc):
        return PathFailure(False, "the cluster did not answer: another "
                           "path, or removing this one, would wait again")
    if isinstance(exc, errors.TrackedError):
        return PathFailure(True, "this path failed; another may not")
    return PathFailure(False, "not an error of the store's: a bug, or the "
                       "process is stopping")


def busy_snapshots(journal: schema.Journal) -> frozenset[str]:
    """Chain snapshots that operations in flight are building, also those
    of chain intents whose entry does not parse (their key names the
    target, and so the snapshot)."""
    busy = {i.snapshot for i in journal.intents if i.op == schema.Op.CHAIN}
    prefix = schema.intent_key(schema.Op.CHAIN, "")
    busy |= {chain_snapshot_name(key.rpartition("/")[2])
             for key, _ in journal.bad if key.startswith(prefix)}
    return frozenset(busy)


def decide_partial(state: ImageState, writers: tuple[str, ...]) -> Decision:
    """An upload of the store's that did not finish (its snapshot was never
    made): removed, the lock of its dead writer broken, once nothing
    watches it any more; ``writers`` are the clients that do."""
    owner = state.records.owner
    if owner is None or owner.kind != schema.Kind.UPLOAD:
        return Refuse(f"{state.spec} is not an upload of this store")
    if state.snap(owner.snapshot) is not None:
        return Keep(f"{state.spec} is a finished upload")
    if phase(state) in (Phase.TRASHED, *PENDING_DELETION):
        return Keep(f"{state.spec} is pending deletion")
    if writers:
        return Keep(f"{state.spec} is still written by {', '.join(writers)}")
    return Remove(tuple(s.name for s in _user_snaps(state)),
                  "an upload that did not finish, whose writer is gone",
                  break_locks=True)


def takes_upload_name(existing: ImageState | None) -> bool:
    """Whether what stands under a new upload's name must be replaced
    (:func:`decide_partial`) or refused before the upload: an image in the
    RBD trash keeps its name there no longer, and nothing is nothing."""
    return existing is not None and phase(existing) is not Phase.TRASHED


def upload_intent_done(decision: Decision, writers: tuple[str, ...]) -> bool:
    """Whether cleanup may drop the intent of an upload that did not
    finish, once :func:`decide_partial` decided on its image: when the
    image is removed, or nothing writes it any more (it is finished,
    pending deletion, or gone); while a writer is there, it stays."""
    return isinstance(decision, Remove) or not writers


@dataclasses.dataclass(frozen=True)
class PoolSpace:
    """How much more a pool may take, as the monitors last heard it from
    the mgr: its quota (0: none), what it stores, and what the cluster can
    still write into it (``MAX AVAIL``: after replication and the full
    ratio), in bytes."""

    pool: str
    quota: int
    used: int
    available: int


def space_matters(size: int, thin: bool) -> bool:
    """Whether an upload announced as ``size`` bytes (0: unknown) can be
    checked against the pool's space.  With thin provisioning chunks of
    zeros are not written, so the announced size says nothing of what will
    be."""
    return size > 0 and not thin


def check_space(size: int, space: PoolSpace | None,
                thin: bool = False) -> Refuse | None:
    """Whether an upload announced as ``size`` bytes fits in the pool,
    before anything is written: Ceph flags a pool full only once the mgr
    has reported its usage, and until then takes a whole upload past the
    quota.  ``space`` None: the mgr has not reported the pool yet (it was
    created seconds ago), nothing to check against."""
    if space is None or not space_matters(size, thin):
        return None
    if space.quota and space.used + size > space.quota:
        return Refuse(f"{size} bytes do not fit in the quota of pool "
                      f"{space.pool!r}: {space.used} of {space.quota} "
                      "bytes are used")
    if size > space.available:
        return Refuse(f"{size} bytes do not fit in pool {space.pool!r}: "
                      f"the cluster can write {space.available} more bytes "
                      "into it")
    return None


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
