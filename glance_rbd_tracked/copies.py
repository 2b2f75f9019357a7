"""Copies of Glance images to another cluster that send only what differs
from an ancestor already there.

A copy of image ``I`` from the store pool of cluster A (the *source*) to
the store pool of cluster B (the *target*, an edge site) is planned from
A's side alone, but for one lookup in B: the lineage of ``I@snap`` in A,
the ancestor that B holds a faithful copy of (:func:`delta.choose_start`),
and where ``I`` differs from that ancestor, compared block by block in A.
Then, in B, under an upload intent in B's journal (so that cleanup in B
removes what a killed copy left): a clone of the ancestor's copy, the
changed objects written whole over it, the location snapshot, and last
the origin record that lets later copies start from ``I``.  A copy with
no such ancestor writes every byte, as an upload does.

Nothing is written in A.  What the copy reads there are snapshots, through
handles that fail a read of a removed snapshot, so a copy never outlives
its source unnoticed; in B the clone holds its ancestor from the first
step on (deleting it there retires it).  The ancestor is checked again
once the clone exists: if it was replaced between the plan and the clone,
the copy is removed again and fails (Conflict).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
import dataclasses
import logging

from glance_rbd_tracked import core
from glance_rbd_tracked import delta
from glance_rbd_tracked import errors
from glance_rbd_tracked import lifecycle
from glance_rbd_tracked import locations
from glance_rbd_tracked import ports
from glance_rbd_tracked import schema
from glance_rbd_tracked import specs
from glance_rbd_tracked import uploads

LOG = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
SNAPSHOT = core.STOCK_SNAPSHOT
#: The points between the steps of a copy (``on_step`` names).
STEPS = ("planned", "written", "checked", "origin")


def no_progress(done: int, total: int) -> None:
    """Progress of a copy: bytes sent of the bytes to send."""


@dataclasses.dataclass(frozen=True)
class Copy:
    """A planned copy: the source's lineage in A, where it starts, and for
    a start from an ancestor, that ancestor's copy in B as it was read
    (``base``, to check it again once cloned)."""

    plan: delta.Plan
    lineage: tuple[delta.Layer, ...]
    base: delta.Layer | None = None

    @property
    def source(self) -> delta.Layer:
        return self.lineage[0]


@dataclasses.dataclass(frozen=True)
class Result:
    image: str
    location: str
    start: str
    order: int
    objects: int
    sent: int
    size: int
    faithful: bool


def plan(source: ports.Backend, target: ports.Backend, source_pool: str,
         target_pool: str, image: str) -> Copy:
    """Plan the copy of Glance image ``image``; reads, changes nothing."""
    lineage = source.deltas.lineage(source_pool, image, SNAPSHOT)
    there: dict[str, core.ImageState | None] = {}
    for name in delta.ancestors(lineage, source_pool):
        try:
            there[name] = target.images.state(target_pool, name)
        except errors.NotFound:
            there[name] = None
    start = delta.choose_start(lineage, source_pool, there)
    identity = lineage[0].identity
    if isinstance(start, delta.Whole):
        return Copy(delta.Plan(image, identity, start), tuple(lineage))
    base = target.deltas.lineage(target_pool, start.name, SNAPSHOT)[0]
    own = [source.deltas.own_blocks(layer)
           for layer in lineage[:start.index]]
    candidates = delta.to_compare(own, lineage, start.index)
    changed = source.deltas.changed(lineage[0], lineage[start.index],
                                    candidates)
    order = delta.object_order(changed, identity.size)
    return Copy(delta.Plan(image, identity, start, order,
                           delta.objects_to_write(changed, order)),
                tuple(lineage), base)


def execute(source: ports.Backend, target: ports.Backend, copy: Copy,
            target_pool: str, *, now: lifecycle.Clock = lifecycle.utcnow,
            on_progress: Progress = no_progress,
            on_step: lifecycle.Step = lifecycle.no_step,
            depth: int = 4) -> Result:
    """Carry ``copy`` out from the source snapshot's own data."""
    p = copy.plan
    total = p.bytes
    on_step("planned")

    def whole() -> Iterable[bytes]:
        layer = copy.source
        return _counted(source.data.read(layer.identity.pool, layer.name,
                                         SNAPSHOT), total, on_progress)

    def objects() -> Iterator[tuple[int, bytes]]:
        return _counted_pieces(
            source.deltas.objects(copy.source, p.objects, p.order, depth),
            total, on_progress)

    sent = _write(target, copy, target_pool, whole, objects, now=now,
                  depth=depth)
    on_step("written")
    return _finish(target, copy, target_pool, sent, faithful=True, now=now,
                   on_step=on_step)


def receive(source: ports.Backend, target: ports.Backend, copy: Copy,
            target_pool: str, chunks: Iterable[bytes], *, size: int,
            on_chunk: Callable[[bytes], None] = lambda chunk: None,
            now: lifecycle.Clock = lifecycle.utcnow,
            depth: int = 4) -> Result:
    """Carry ``copy`` out from ``chunks``, what Glance streams to a store
    (``size`` bytes announced; 0: unknown), which may hold anything: the
    image in B holds exactly ``chunks``.  Each chunk is compared with the
    source's data at its offset (read in A): where they differ, the chunk's
    objects are written too, and the copy is not recorded as faithful
    (no origin record: nothing starts from it)."""
    p = copy.plan
    layer = copy.source
    if size not in (0, p.source.size):
        raise errors.SizeMismatch(
            f"{size} bytes announced for a copy of {layer.spec}, which "
            f"holds {p.source.size}")
    verdict = {"faithful": True}
    order = p.order if isinstance(p.start, delta.Base) else delta.MAX_ORDER
    planned = frozenset(p.objects)
    chunk_size = 8 << 20  # a whole number of objects of any order

    def compared() -> Iterator[tuple[int, bytes, bytes]]:
        """(offset, the stream's data, the source's data) of each chunk."""
        ours = source.data.read(layer.identity.pool, layer.name, SNAPSHOT,
                                chunk_size=chunk_size)
        offset = 0
        for chunk in _rechunk(chunks, chunk_size):
            on_chunk(chunk)
            if offset + len(chunk) > p.source.size:
                raise errors.SizeMismatch(
                    f"the stream has more than the {p.source.size} bytes "
                    f"of {layer.spec}")
            theirs = next(ours, b"")
            if theirs != chunk:
                verdict["faithful"] = False
            yield offset, chunk, theirs
            offset += len(chunk)
        next(ours, None)  # the source's end: its snapshot is checked there
        if offset != p.source.size:
            raise errors.SizeMismatch(
                f"the stream ended after {offset} of the "
                f"{p.source.size} bytes of {layer.spec}")

    def whole() -> Iterable[bytes]:
        return (data for _, data, _ in compared())

    def objects() -> Iterator[tuple[int, bytes]]:
        step = 1 << order
        for offset, data, theirs in compared():
            for at in range(0, len(data), step):
                piece = data[at:at + step]
                if ((offset + at) >> order) in planned \
                        or piece != theirs[at:at + step]:
                    yield offset + at, piece

    sent = _write(target, copy, target_pool, whole, objects, now=now,
                  depth=depth)
    return _finish(target, copy, target_pool, sent,
                   faithful=verdict["faithful"], now=now)


def _write(target: ports.Backend, copy: Copy, pool: str,
           whole: Callable[[], Iterable[bytes]],
           objects: Callable[[], Iterator[tuple[int, bytes]]], *,
           now: lifecycle.Clock, depth: int) -> int:
    p = copy.plan
    record = core.owner_record(schema.Kind.UPLOAD, now())

    def write() -> int:
        if isinstance(p.start, delta.Whole):
            return target.data.write_new(
                pool, p.image, whole(), size=p.source.size,
                order=delta.MAX_ORDER, record=record, thin=True, depth=depth)
        start = specs.ImageSpec.in_pool(pool, p.start.name).at(SNAPSHOT)
        return target.data.write_clone(
            pool, p.image, str(start), objects(),
            size=p.source.size, order=p.order, record=record, depth=depth)

    return uploads.journalled(target, pool, p.image, write, now=now)


def _finish(target: ports.Backend, copy: Copy, pool: str, sent: int, *,
            faithful: bool, now: lifecycle.Clock,
            on_step: lifecycle.Step = lifecycle.no_step) -> Result:
    """Check the ancestor the copy was cloned from, then record the
    origin of a faithful copy."""
    p = copy.plan
    made = target.deltas.lineage(pool, p.image, SNAPSHOT)
    if copy.base is not None:
        got = made[1].identity if len(made) > 1 else None
        if got != copy.base.identity:
            LOG.warning("the ancestor of %s/%s changed under the copy "
                        "(%s, not %s); removing the copy", pool, p.image,
                        got, copy.base.identity)
            lifecycle.delete(target, pool, p.image, core.Policy(pool=pool))
            raise errors.Conflict(f"{copy.base.spec} was replaced while it "
                                  "was copied onto; plan again")
    on_step("checked")
    if faithful:
        own = made[0].identity
        target.changes.set_records(pool, p.image, own.image_id, [
            p.source.origin(own.image_id, own.snap_id,
                            schema.timestamp(now()))])
        on_step("origin")
    start = (f"{p.start.name}@{SNAPSHOT}" if isinstance(p.start, delta.Base)
             else "whole")
    location = locations.format(target.fsid(), pool, p.image, SNAPSHOT)
    LOG.info("copied %s to %s from %s: %d bytes sent", p.image, location,
             start, sent)
    return Result(image=p.image, location=location, start=start,
                  order=p.order if isinstance(p.start, delta.Base)
                  else delta.MAX_ORDER,
                  objects=len(p.objects), sent=sent, size=p.source.size,
                  faithful=faithful)


def _rechunk(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """``chunks`` as pieces of ``size`` bytes (the last may be shorter)."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


def _counted(chunks: Iterable[bytes], total: int,
             on_progress: Progress) -> Iterator[bytes]:
    done = 0
    for chunk in chunks:
        done += len(chunk)
        on_progress(done, total)
        yield chunk


def _counted_pieces(pieces: Iterable[tuple[int, bytes]], total: int,
                    on_progress: Progress) -> Iterator[tuple[int, bytes]]:
    done = 0
    for offset, data in pieces:
        done += len(data)
        on_progress(done, total)
        yield offset, data
