"""Pure decisions of a copy to another cluster: what it may start from,
and what it sends.

Rules this module owns:

* A copy starts from an image already in the other cluster only when that
  image says, in its origin record, that it holds exactly what an ancestor
  of the source holds: the same cluster (fsid), pool, RBD image id and
  snapshot id (a snapshot id is never reused in a pool, and a snapshot
  never changes), and the same size; and when the record is the image's
  own: written for its RBD id (a clone's copy of its parent's record is
  dropped when read, :func:`schema.records_of`) and for the snapshot id
  its location snapshot has now (not left over from a snapshot removed
  and made again).  Identity on both sides stands for content: each side
  is a snapshot that cannot change, and the record is written only after
  a faithful copy of one into the other.  Anything else, or any doubt, is
  a whole copy.  The image must also be the store's own, live (not
  retired, not in the trash) and have its location snapshot, protected:
  the copy is a clone of it, which keeps it there from then on.
* The nearest such ancestor wins: it leaves the least to send.
* What is sent is the content of the source where it differs from the
  ancestor's, compared in blocks of ``1 << BLOCK_ORDER`` bytes, and only
  in whole objects of the copy: librbd writes a whole object of a clone
  without reading the parent's first (a partial write would copy the
  parent's object up over the link and back).  The copy's object size is
  the one with the least cost: its bytes on the link, and ``OBJECT_COST``
  for each object (see there).

Nothing here performs I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
import dataclasses

from glance_rbd_tracked import core
from glance_rbd_tracked import schema

#: Blocks compared: 64 KiB, the smallest object a copy writes.
BLOCK_ORDER = 16
#: The largest object a copy writes: RBD's default, 4 MiB.
MAX_ORDER = 22
#: What each object written costs besides its data, in bytes on the link:
#: 2 KiB that do cross it (a RADOS write and its reply, measured over the
#: veth link), and 62 KiB that stand for what small objects cost the edge
#: afterwards: librbd reads a clone object by object, and an untouched
#: clone of 64 KiB objects reads at about half the speed of one of 4 MiB
#: (560-620 against 1,200-1,400 MiB/s, sequential 4 MiB reads, measured;
#: 32 KiB objects: 330-350 MiB/s).  So an object size below 4 MiB is
#: chosen only where it saves more than 64 KiB of link per extra object:
#: changes scattered over the image get small objects, one region of
#: changes gets large ones.
OBJECT_COST = 64 << 10


@dataclasses.dataclass(frozen=True)
class Identity:
    """A snapshot, as a copy of it is told apart from anything else."""

    fsid: str
    pool: str
    image_id: str
    snap_id: int
    snapshot: str
    size: int

    def origin(self, image_id: str, snap_id: int,
               copied: str) -> schema.OriginRecord:
        """The origin record of a faithful copy of this snapshot: the
        copy's RBD id and its location snapshot's id."""
        return schema.OriginRecord(
            image_id=image_id, snap_id=str(snap_id), fsid=self.fsid,
            pool=self.pool,
            source_id=self.image_id, source_snap_id=str(self.snap_id),
            snapshot=self.snapshot, size=str(self.size), copied=copied)

    def copied_by(self, origin: schema.OriginRecord | None) -> bool:
        """Whether ``origin`` says its image is a copy of this snapshot."""
        return origin is not None and (
            origin.fsid, origin.pool, origin.source_id,
            origin.source_snap_id, origin.snapshot, origin.size) == (
            self.fsid, self.pool, self.image_id, str(self.snap_id),
            self.snapshot, str(self.size))


@dataclasses.dataclass(frozen=True)
class Layer:
    """One image of the source's lineage, read at the snapshot the layer
    above was cloned from (the source's own location snapshot for the
    first).  ``overlap``: how much of its parent it still shows (its size
    when it has no parent)."""

    name: str
    identity: Identity
    overlap: int

    @property
    def spec(self) -> str:
        return (f"{self.identity.pool}/{self.name}@"
                f"{self.identity.snapshot}")


@dataclasses.dataclass(frozen=True)
class Base:
    """Start from ``name`` in the other cluster: a copy of ``layers[index]``
    of the source's lineage."""

    name: str
    index: int
    reason: str


@dataclasses.dataclass(frozen=True)
class Whole:
    """Copy every byte: no ancestor is in the other cluster as it is here."""

    reason: str


Start = Base | Whole


def choose_start(lineage: Sequence[Layer], store_pool: str,
                 there: Mapping[str, core.ImageState | None]) -> Start:
    """Where a copy of ``lineage[0]`` starts.  ``there`` maps the names of
    the ancestors in ``store_pool`` (the only ones another cluster may hold
    copies of: Glance images) to their state in the other cluster's store
    pool, None where it has no such image."""
    why: list[str] = []
    for index, layer in enumerate(lineage[1:], start=1):
        if layer.identity.pool != store_pool or layer.name not in there:
            continue
        refusal = check_base(layer.identity, there[layer.name])
        if refusal is None:
            return Base(layer.name, index,
                        f"{layer.name} is there, a copy of {layer.spec}")
        why.append(f"{layer.name}: {refusal.reason}")
    if not why:
        return Whole("no ancestor of it is a Glance image of the store")
    return Whole("; ".join(why))


def ancestors(lineage: Sequence[Layer], store_pool: str) -> list[str]:
    """The names to look up in the other cluster for :func:`choose_start`."""
    return [layer.name for layer in lineage[1:]
            if layer.identity.pool == store_pool]


def check_base(identity: Identity,
               state: core.ImageState | None) -> core.Refuse | None:
    """Why ``state`` (in the other cluster) may not stand for ``identity``
    (here); None when it may."""
    if state is None:
        return core.Refuse("not there")
    if state.trash is not None or state.removing:
        return core.Refuse("it is in the RBD trash")
    records = state.records
    if records.owner is None:
        return core.Refuse("it is not the store's")
    if records.retired is not None:
        return core.Refuse("it is pending deletion there")
    snap = state.snap(records.owner.snapshot)
    if snap is None or snap.namespace != "user" or not snap.protected:
        return core.Refuse(f"it has no protected snapshot "
                           f"{records.owner.snapshot}")
    if records.origin is None:
        return core.Refuse("it has no origin record: its content is not "
                           "known to be the same")
    o = records.origin  # its own: one inherited by a clone is dropped
    if snap.id is None or o.snap_id != str(snap.id):
        return core.Refuse(
            f"its snapshot {records.owner.snapshot} is not the one copied "
            f"onto (id {snap.id}, the origin record says {o.snap_id})")
    if not identity.copied_by(o):
        return core.Refuse(
            f"it is a copy of {o.pool}/{o.source_id}@{o.snapshot} (snapshot "
            f"id {o.source_snap_id}) of cluster {o.fsid}, not of "
            f"{identity.pool}/{identity.image_id}@{identity.snapshot} "
            f"(snapshot id {identity.snap_id}) of {identity.fsid}")
    return None


def blocks_of(extents: Iterable[tuple[int, int]]) -> frozenset[int]:
    """The blocks that ``(offset, length)`` extents touch."""
    blocks: set[int] = set()
    for offset, length in extents:
        if length > 0:
            first = offset >> BLOCK_ORDER
            last = (offset + length - 1) >> BLOCK_ORDER
            blocks.update(range(first, last + 1))
    return frozenset(blocks)


def to_compare(own: Iterable[frozenset[int]], lineage: Sequence[Layer],
               base: int) -> frozenset[int]:
    """The blocks where the source may differ from ``lineage[base]``: those
    a layer above it wrote (``own``, one set per layer), and all beyond
    the least any of them shows of its parent (those read as zeros, or not
    at all in the base)."""
    size = lineage[0].identity.size
    shown = min([layer.overlap for layer in lineage[:base]]
                + [lineage[base].identity.size])
    beyond = blocks_of([(shown, size - shown)]) if shown < size else set()
    blocks: set[int] = set(beyond)
    for layer_blocks in own:
        blocks |= layer_blocks
    last = (size - 1) >> BLOCK_ORDER if size else -1
    return frozenset(b for b in blocks if b <= last)


def changed_blocks(first: int, ours: bytes, theirs: bytes) -> list[int]:
    """The blocks, numbered from ``first``, where two equal-length runs of
    data starting at block ``first`` differ."""
    if ours == theirs:
        return []
    step = 1 << BLOCK_ORDER
    return [first + i // step for i in range(0, len(ours), step)
            if ours[i:i + step] != theirs[i:i + step]]


def object_order(blocks: Iterable[int], size: int) -> int:
    """The object size (as an order) of the least cost to send ``blocks``
    of an image of ``size`` bytes (see ``OBJECT_COST``); the larger on a
    tie."""
    blocks = frozenset(blocks)
    best, best_cost = MAX_ORDER, None
    for order in range(MAX_ORDER, BLOCK_ORDER - 1, -1):
        objects = objects_to_write(blocks, order)
        cost = sum(extent(o, order, size)[1] + OBJECT_COST for o in objects)
        if best_cost is None or cost < best_cost:
            best, best_cost = order, cost
    return best


def objects_to_write(blocks: Iterable[int], order: int) -> tuple[int, ...]:
    """The objects of ``1 << order`` bytes that hold ``blocks``."""
    shift = order - BLOCK_ORDER
    return tuple(sorted({b >> shift for b in blocks}))


def extent(number: int, order: int, size: int) -> tuple[int, int]:
    """``(offset, length)`` of object ``number`` in an image of ``size``."""
    offset = number << order
    return offset, max(0, min(1 << order, size - offset))


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a copy does: ``start``, and for a Base, the objects of
    ``1 << order`` bytes it writes over it."""

    image: str
    source: Identity
    start: Start
    order: int = MAX_ORDER
    objects: tuple[int, ...] = ()

    @property
    def bytes(self) -> int:
        """The data it sends (a whole copy: all of it)."""
        if isinstance(self.start, Whole):
            return self.source.size
        return sum(extent(o, self.order, self.source.size)[1]
                   for o in self.objects)
