"""What a copy to another cluster reads in the cluster it copies from:
the source's lineage, what each layer wrote, where the source differs from
an ancestor, and the objects to send.

Everything here reads snapshots through shared read-only handles
(:mod:`.handles`), so it never keeps anybody from removing them; a
snapshot removed while it is read fails the read (NotFound), never reads
as zeros.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from collections.abc import Iterator
import errno
import functools
from typing import Any

from glance_rbd_tracked import delta
from glance_rbd_tracked import errors
from glance_rbd_tracked.ceph.connection import Connection
from glance_rbd_tracked.ceph.connection import io_error

#: Blocks read at a time when comparing: 4 MiB.
RUN_BLOCKS = 64


class Deltas:
    """Implements :class:`glance_rbd_tracked.ports.DeltaReads`."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def lineage(self, pool: str, name: str,
                snapshot: str) -> list[delta.Layer]:
        """``pool/name@snapshot`` and every ancestor, nearest first."""
        layers: list[delta.Layer] = []
        spec: tuple[str, str, str] | None = (pool, name, snapshot)
        while spec is not None:
            layer, spec = self.connection.reading(
                functools.partial(self._layer, *spec))
            layers.append(layer)
            if len(layers) > 64:
                raise errors.CorruptMetadata(
                    f"the lineage of {pool}/{name} is more than 64 deep")
        return layers

    def _layer(self, pool: str, name: str, snapshot: str
               ) -> tuple[delta.Layer, tuple[str, str, str] | None]:
        c = self.connection
        # at the head, moved to the snapshot by its id: a parent snapshot
        # may be in the trash namespace, where no name opens it
        with c.ioctx(pool) as ioctx, \
                c.image(ioctx, name, read_only=True) as image, \
                c.translated(f"reading {pool}/{name}@{snapshot}"):
            snap_id = next((s["id"] for s in image.list_snaps()
                            if s["name"] == snapshot), None)
            if snap_id is None:
                raise errors.NotFound(f"{pool}/{name} has no snapshot "
                                      f"{snapshot}")
            image.set_snap_by_id(snap_id)
            size = image.size()
            try:
                parent = image.get_parent_image_spec()
            except c.rbd.ImageNotFound:
                parent = None
            overlap = image.overlap() if parent else size
            identity = delta.Identity(
                fsid=c.fsid(), pool=pool, image_id=image.id(),
                snap_id=int(snap_id), snapshot=snapshot, size=size)
        up = None
        if parent is not None:
            ppool = parent["pool_name"]
            if parent.get("pool_namespace"):
                ppool = f"{ppool}/{parent['pool_namespace']}"
            up = (ppool, parent["image_name"], parent["snap_name"])
        return delta.Layer(name=name, identity=identity, overlap=overlap), up

    def own_blocks(self, layer: delta.Layer) -> frozenset[int]:
        """The blocks the layer itself holds data in (not its parent)."""
        c = self.connection
        extents: list[tuple[int, int]] = []

        def found(offset: int, length: int, exists: bool) -> int:
            if exists:
                extents.append((offset, length))
            return 0

        i = layer.identity
        with c.ioctx(i.pool) as ioctx, \
                c.image(ioctx, layer.name, snapshot=i.snapshot,
                        snap_id=i.snap_id, read_only=True) as image, \
                c.translated(f"listing what {layer.spec} wrote"):
            image.diff_iterate(0, i.size, None, found,
                               include_parent=False)
            c.handles.check(ioctx, image)
        return delta.blocks_of(extents)

    def changed(self, source: delta.Layer, base: delta.Layer,
                blocks: Iterable[int], depth: int = 4) -> frozenset[int]:
        """Of ``blocks``, those where ``source`` and ``base`` differ (a
        block beyond the base's end differs unless the source holds zeros
        there)."""
        runs = _runs(sorted(blocks), source.identity.size)
        ours = self._read_runs(source, runs, depth)
        theirs = self._read_runs(base, runs, depth)
        changed: list[int] = []
        for first, _ in runs:
            mine, other = next(ours), next(theirs)
            if len(other) < len(mine):  # past the base's end: zeros there
                other = other + bytes(len(mine) - len(other))
            changed.extend(delta.changed_blocks(first, mine, other))
        for done in (ours, theirs):  # each checks its snapshot at its end
            next(done, None)
        return frozenset(changed)

    def objects(self, layer: delta.Layer, numbers: Iterable[int], order: int,
                depth: int = 4) -> Iterator[tuple[int, bytes]]:
        """``(offset, data)`` of each object ``numbers`` of ``1 << order``
        bytes, in order, ``depth`` reads ahead."""
        size = layer.identity.size
        runs = [delta.extent(n, order, size) for n in numbers]
        for (offset, _), data in zip(runs, self._read(layer, runs, depth), strict=True):
            yield offset, data

    def _read_runs(self, layer: delta.Layer, runs: list[tuple[int, int]],
                   depth: int) -> Iterator[bytes]:
        size = layer.identity.size
        extents = []
        for first, count in runs:
            offset = first << delta.BLOCK_ORDER
            # (past the end of a smaller base: nothing to read, zeros)
            extents.append((offset, max(0, min(count << delta.BLOCK_ORDER,
                                               size - offset))))
        return self._read(layer, extents, depth)

    def _read(self, layer: delta.Layer, extents: list[tuple[int, int]],
              depth: int) -> Iterator[bytes]:
        c = self.connection
        i = layer.identity
        what = f"reading {layer.spec}"
        with c.ioctx(i.pool) as ioctx, \
                c.image(ioctx, layer.name, snapshot=i.snapshot,
                        snap_id=i.snap_id, read_only=True) as image:
            pending: collections.deque = collections.deque()
            todo = iter(extents)
            try:
                while True:
                    while len(pending) < max(depth, 1):
                        nxt = next(todo, None)
                        if nxt is None:
                            break
                        pending.append(_aio_read(c, image, *nxt))
                    if not pending:
                        break
                    completion, box, length = pending.popleft()
                    completion.wait_for_complete_and_cb()
                    result = completion.get_return_value()
                    if result < 0 or (length and not box):
                        raise io_error(min(result, -errno.EIO), what,
                                       c.timeout)
                    yield box[0] if box else b""
                # librbd reads a removed image as zeros: the data counts
                # only if the snapshot is still there once all is read
                c.handles.check(ioctx, image)
            finally:
                for completion, _, _ in pending:
                    completion.wait_for_complete_and_cb()


def _aio_read(c: Connection, image: Any, offset: int,
              length: int) -> tuple[Any, list, int]:
    box: list[bytes] = []

    def done(_completion: Any, data: bytes | None) -> None:
        if data is not None:
            box.append(data)

    with c.translated("reading"):
        return image.aio_read(offset, length, done), box, length


def _runs(blocks: list[int], size: int) -> list[tuple[int, int]]:
    """Sorted blocks as ``(first, count)`` runs of at most RUN_BLOCKS."""
    runs: list[tuple[int, int]] = []
    for block in blocks:
        if runs and runs[-1][0] + runs[-1][1] == block \
                and runs[-1][1] < RUN_BLOCKS:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((block, 1))
    return runs
