"""Pure plans over many images: what cleanup and flatten would do.

Rules this module owns:

* A plan is made from what was read (a :class:`Survey`) and ``now``; making
  it changes nothing, and every item says why.
* An operation journalled less than ``grace`` ago may still be running: it
  is waited for, never rolled back or finished.
* An upload journalled more than ``grace`` ago is finished only once its
  writer is gone (nothing watches the image any more).
* What cannot be read (a corrupt record, a journal entry this release does
  not know) is reported with the image, the key and why, and skipped; it
  never stops the rest.
* A chain link whose clone is gone means its source snapshot is orphaned:
  releasing it also reclaims the retired source, so that source is not
  planned a second time.
* A retired image is planned as :func:`core.decide_reclaim` decides, an
  image in the RBD trash that carries records of the store as
  :func:`core.decide_trashed` does; one that left the trash between the
  listing and the read of its state (restored, or being removed) is
  absent from the plan: whatever vanished meanwhile is gone.
* Flatten selects chain images deeper than the policy allows.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
import dataclasses
import datetime
import enum

from glance_rbd_tracked import core
from glance_rbd_tracked import errors
from glance_rbd_tracked import schema
from glance_rbd_tracked import specs


class Kind(enum.StrEnum):
    """What a cleanup item is about."""

    INTENT = "intent"                    # an operation that did not finish
    ORPHAN_SNAPSHOT = "orphan-snapshot"  # a chain snapshot whose clone is gone
    RETIRED = "retired"                  # an image pending deletion
    TRASHED = "trashed"                  # an image in the RBD trash
    CORRUPT = "corrupt"                  # a record or entry that does not parse


class Action(enum.StrEnum):
    ROLL_BACK = "roll back"
    FINISH_DELETE = "finish delete"
    FINISH_RETIRE = "finish retire"
    TRIM = "trim"
    REMOVE = "remove"
    FINISH_UPLOAD = "finish upload"
    KEEP = "keep"
    WAIT = "wait"
    SKIP = "skip"

    @property
    def acts(self) -> bool:
        return self not in (Action.KEEP, Action.WAIT, Action.SKIP)


_FINISH = {schema.Op.CHAIN: Action.ROLL_BACK,
           schema.Op.RETIRE: Action.FINISH_RETIRE,
           schema.Op.DELETE: Action.FINISH_DELETE,
           schema.Op.UPLOAD: Action.FINISH_UPLOAD}


@dataclasses.dataclass(frozen=True)
class Item:
    """One candidate of a cleanup plan."""

    kind: Kind
    target: str            # what it acts on
    action: Action
    reason: str
    journal_key: str = ""  # the journal entry it settles, if any
    image_id: str = ""     # the image, for one in the RBD trash

    @property
    def actionable(self) -> bool:
        return self.action.acts

    @property
    def failed(self) -> bool:
        """Planned as a failure: something that must be looked at."""
        return self.kind is Kind.CORRUPT


@dataclasses.dataclass(frozen=True)
class Survey:
    """What cleanup read: the journal, the image names of every pool it
    looks at, the state of every retired image among them, and of every
    image in their RBD trash; who still writes the images of old uploads;
    and what could not be read (``pool/image`` or journal key, and why)."""

    journal: schema.Journal
    images: Mapping[str, frozenset[str]]
    retired: tuple[core.ImageState, ...]
    trashed: tuple[core.ImageState, ...] = ()
    writers: Mapping[str, tuple[str, ...]] = dataclasses.field(
        default_factory=dict)
    unreadable: tuple[tuple[str, str], ...] = ()


def plan_cleanup(survey: Survey, now: datetime.datetime,
                 grace: datetime.timedelta) -> list[Item]:
    """What cleanup would do, in order: what could not be read, intents,
    orphans, retired images, images in the trash."""
    items = [Item(Kind.CORRUPT, what, Action.SKIP, why)
             for what, why in (*survey.journal.bad, *survey.unreadable)]
    for intent in survey.journal.intents:
        age = now - parse_timestamp(intent.started)
        writers = survey.writers.get(intent.target, ())
        if age < grace:
            items.append(Item(Kind.INTENT, intent.target, Action.WAIT,
                              f"{intent.op} in flight for "
                              f"{int(age.total_seconds())} s"))
        elif intent.op is schema.Op.UPLOAD and writers:
            items.append(Item(Kind.INTENT, intent.target, Action.WAIT,
                              "upload still written by "
                              f"{', '.join(writers)}"))
        else:
            items.append(Item(Kind.INTENT, intent.target, _FINISH[intent.op],
                              f"{intent.op} interrupted {intent.started}",
                              intent.key))
    released: set[str] = set()
    for link in survey.journal.links:
        try:
            target = specs.ImageSpec.parse(link.target)
            source = str(specs.SnapSpec.parse(link.source).image)
        except errors.Invalid as exc:  # reported, never acted on
            items.append(Item(Kind.CORRUPT, link.key, Action.SKIP, str(exc)))
            continue
        listed = survey.images.get(target.pool_spec, frozenset())
        # a chain image Glance deleted while instances boot from it is
        # retired, not gone
        if target.name not in listed and \
                core.retired_name(target.name) not in listed:
            items.append(Item(Kind.ORPHAN_SNAPSHOT, link.source, Action.TRIM,
                              f"its clone {link.target} is gone", link.key))
            released |= {source, core.retired_name(source)}
    busy = core.busy_snapshots(survey.journal)
    for state in sorted(survey.retired, key=lambda s: s.spec):
        if state.spec in released:
            continue  # releasing the orphaned snapshot reclaims it as well
        decision = core.decide_reclaim(state, now, busy)
        items.append(Item(Kind.RETIRED, state.spec, _ACTIONS.get(
            type(decision), Action.KEEP), _reason(decision)))
    for state in sorted(survey.trashed, key=lambda s: (s.spec, s.image_id)):
        records = state.records
        if not (records.snaps or records.owner or records.retired):
            continue  # not the store's business
        decision = core.decide_trashed(state, now, busy)
        if isinstance(decision, core.Absent):
            continue  # it left the trash after the listing
        items.append(Item(Kind.TRASHED, state.spec, _ACTIONS.get(
            type(decision), Action.KEEP), _reason(decision),
            image_id=state.image_id))
    return items


_ACTIONS = {core.Remove: Action.REMOVE, core.Trim: Action.TRIM}


def _reason(decision: core.Decision) -> str:
    if isinstance(decision, core.Trim):
        return f"nothing clones {', '.join(decision.snapshots)} any more"
    return getattr(decision, "reason", "nothing depends on it")


def retired_names(images: Mapping[str, Iterable[str]]) -> list[str]:
    """``pool/name`` of every retired image among ``images``."""
    return [f"{pool}/{name}" for pool, names in sorted(images.items())
            for name in sorted(names) if name.endswith(schema.RETIRED_SUFFIX)]


@dataclasses.dataclass(frozen=True)
class Flatten:
    """A chain image to flatten, and the link it settles."""

    target: str
    depth: int
    link: schema.ChainLink


def plan_flatten(links: Iterable[schema.ChainLink],
                 depths: Mapping[str, int],
                 max_depth: int) -> list[Flatten]:
    """Chain images deeper than ``max_depth``, in the order of ``links``
    (``depths`` has no entry for one that is gone)."""
    return [Flatten(link.target, depths[link.target], link)
            for link in links
            if link.target in depths and depths[link.target] > max_depth]


def parse_timestamp(stamp: str) -> datetime.datetime:
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.UTC)
